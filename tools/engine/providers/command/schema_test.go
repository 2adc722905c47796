package main

import (
	"encoding/json"
	"testing"
)

func TestSchemaDescribesBothResourcesAndTheConnection(t *testing.T) {
	js, err := schemaJSON("1.2.1")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Name, Version string
		Types         map[string]struct {
			Properties map[string]struct {
				Default any
				Secret  bool
			}
		}
		Resources map[string]struct {
			InputProperties map[string]struct {
				ReplaceOnChanges bool
				Secret           bool
			}
			RequiredInputs []string
		}
	}
	if err := json.Unmarshal([]byte(js), &s); err != nil {
		t.Fatal(err)
	}
	if s.Name != "command" || s.Version != "1.2.1" {
		t.Errorf("name %q version %q", s.Name, s.Version)
	}
	conn := s.Types["command:remote:Connection"].Properties
	for k, want := range map[string]any{"port": 22.0, "user": "root", "dialErrorLimit": 10.0, "perDialTimeout": 15.0} {
		if conn[k].Default != want {
			t.Errorf("connection.%s default %v, want %v", k, conn[k].Default, want)
		}
	}
	if !conn["privateKey"].Secret || !conn["password"].Secret {
		t.Errorf("connection secrets not marked")
	}
	for _, r := range []string{localCommand, remoteCommand} {
		in := s.Resources[r].InputProperties
		for name := range inputKinds[r] {
			if _, ok := in[name]; !ok && inputKinds[r][name] != kUnsupported {
				t.Errorf("%s: input %s missing from the schema", r, name)
			}
		}
		if !in["triggers"].ReplaceOnChanges || in["create"].ReplaceOnChanges {
			t.Errorf("%s: replaceOnChanges wrong", r)
		}
	}
	if !s.Resources[remoteCommand].InputProperties["connection"].Secret {
		t.Errorf("remote connection not secret")
	}
}
