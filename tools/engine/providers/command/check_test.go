package main

import (
	"context"
	"strings"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

const testHostKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHhtfh3aPkCt7b5qFmNvC+tUGf/7JhmQ4K8GS6c3YtSx"

func props(kv ...any) resource.PropertyMap {
	m := resource.PropertyMap{}
	for i := 0; i < len(kv); i += 2 {
		m[resource.PropertyKey(kv[i].(string))] = resource.NewPropertyValue(kv[i+1])
	}
	return m
}

func failureFor(t *testing.T, failures []*pulumirpc.CheckFailure, prop string) string {
	t.Helper()
	for _, f := range failures {
		if f.Property == prop {
			return f.Reason
		}
	}
	t.Fatalf("no check failure for %q in %v", prop, failures)
	return ""
}

func connectionOf(t *testing.T, m resource.PropertyMap) resource.PropertyMap {
	t.Helper()
	v := m["connection"]
	if !v.IsSecret() {
		t.Fatalf("connection is not secret: %v", v)
	}
	return v.SecretValue().Element.ObjectValue()
}

func TestCheckFillsInTheConnectionDefaults(t *testing.T) {
	in := props("create", "true", "connection", map[string]any{"host": "10.0.0.5", "privateKey": "KEY"})
	out, failures := check(remoteCommand, in)
	if len(failures) > 0 {
		t.Fatalf("unexpected failures: %v", failures)
	}
	conn := connectionOf(t, out)
	want := map[string]any{"user": "root", "port": 22.0, "dialErrorLimit": 10.0, "perDialTimeout": 15.0}
	for k, v := range want {
		if got := conn[resource.PropertyKey(k)]; !got.DeepEquals(resource.NewPropertyValue(v)) {
			t.Errorf("connection.%s = %v, want %v", k, got, v)
		}
	}
	if !conn["privateKey"].IsSecret() {
		t.Errorf("connection.privateKey is not secret")
	}
	if _, ok := out["addPreviousOutputInEnv"]; ok {
		// pulumi-command 1.2.1 has no schema default for it: absent means true when a command runs.
		t.Errorf("check added addPreviousOutputInEnv")
	}
}

func TestCheckKeepsExplicitConnectionValuesEvenZero(t *testing.T) {
	in := props("connection", map[string]any{"host": "h", "user": "ops", "port": 2222.0,
		"dialErrorLimit": 0.0, "perDialTimeout": 0.0})
	out, failures := check(remoteCommand, in)
	if len(failures) > 0 {
		t.Fatalf("unexpected failures: %v", failures)
	}
	conn := connectionOf(t, out)
	for k, v := range map[string]any{"user": "ops", "port": 2222.0, "dialErrorLimit": 0.0, "perDialTimeout": 0.0} {
		if got := conn[resource.PropertyKey(k)]; !got.DeepEquals(resource.NewPropertyValue(v)) {
			t.Errorf("connection.%s = %v, want %v", k, got, v)
		}
	}
	sp, err := parseSpec(remoteCommand, out)
	if err != nil {
		t.Fatal(err)
	}
	if sp.conn.dialErrorLimit != 0 || sp.conn.perDialTimeout != 0 || sp.conn.port != 2222 || sp.conn.user != "ops" {
		t.Errorf("spec connection = %+v", sp.conn)
	}
}

func TestCheckKeepsASecretConnectionSecretAndDefaultsInsideIt(t *testing.T) {
	conn := resource.MakeSecret(resource.NewPropertyValue(map[string]any{"host": "h"}))
	out, failures := check(remoteCommand, resource.PropertyMap{"connection": conn})
	if len(failures) > 0 {
		t.Fatalf("unexpected failures: %v", failures)
	}
	if got := connectionOf(t, out)["port"]; !got.DeepEquals(resource.NewNumberProperty(22)) {
		t.Errorf("port = %v", got)
	}
	if out["connection"].SecretValue().Element.IsSecret() {
		t.Errorf("the connection is wrapped in two secrets")
	}
}

func TestCheckLocalAddsNothing(t *testing.T) {
	in := props("create", "echo hi", "interpreter", []any{"/bin/bash", "-c"}, "dir", "/tmp",
		"environment", map[string]any{"A": "b"}, "stdin", "x", "triggers", []any{1.0, "a"})
	out, failures := check(localCommand, in)
	if len(failures) > 0 {
		t.Fatalf("unexpected failures: %v", failures)
	}
	if !out.DeepEquals(in) {
		t.Errorf("check changed local inputs:\n got %v\nwant %v", out, in)
	}
}

func TestCheckRefusesWhatItCannotRun(t *testing.T) {
	_, failures := check(localCommand, props("create", 3.0, "interpreter", []any{"/bin/sh", 1.0},
		"environment", map[string]any{"A": true}, "logging", "loud", "bogus", "x", "assetPaths", []any{"*.txt"}))
	for prop, want := range map[string]string{
		"create":      "must be a string",
		"interpreter": "interpreter[1] must be a string",
		"environment": `environment["A"] must be a string`,
		"logging":     "must be one of stdout, stderr, stdoutAndStderr, none",
		"bogus":       `has no input "bogus"`,
		"assetPaths":  "not implemented by this provider",
	} {
		if got := failureFor(t, failures, prop); !strings.Contains(got, want) {
			t.Errorf("%s: %q does not say %q", prop, got, want)
		}
	}
	_, failures = check(remoteCommand, props("create", "true"))
	if got := failureFor(t, failures, "connection"); !strings.Contains(got, "missing required property") {
		t.Errorf("connection: %q", got)
	}
	_, failures = check(remoteCommand, props("connection", map[string]any{"port": 22.5, "dialErrorLimit": 1.5,
		"hostKey": "not a key", "proxy": map[string]any{"host": "b"}}))
	for prop, want := range map[string]string{
		"connection.host":           "missing required property 'connection.host'",
		"connection.dialErrorLimit": "must be an integer",
		"connection.hostKey":        "not a public key in authorized_keys form",
		"connection.proxy":          "bastion host is not implemented",
	} {
		if got := failureFor(t, failures, prop); !strings.Contains(got, want) {
			t.Errorf("%s: %q does not say %q", prop, got, want)
		}
	}
}

func TestCheckAcceptsAValidHostKeyAndUnknownValues(t *testing.T) {
	unknown := resource.MakeComputed(resource.NewStringProperty(""))
	in := resource.PropertyMap{
		"create":     unknown,
		"connection": resource.NewPropertyValue(map[string]any{"host": "h", "hostKey": testHostKey + " comment"}),
	}
	in["connection"].ObjectValue()["privateKey"] = unknown
	out, failures := check(remoteCommand, in)
	if len(failures) > 0 {
		t.Fatalf("unexpected failures: %v", failures)
	}
	if !out["create"].IsComputed() {
		t.Errorf("an unknown create is no longer unknown: %v", out["create"])
	}
	if _, err := parseHostKey(testHostKey); err != nil {
		t.Error(err)
	}
}

func TestAPreviewNeedsNoKnownConnection(t *testing.T) {
	s := newServer(nil, "1.2.1")
	in := props("create", "true")
	in["connection"] = resource.MakeSecret(resource.MakeComputed(resource.NewStringProperty("")))
	st, err := marshal("in", in)
	if err != nil {
		t.Fatal(err)
	}
	urn := "urn:pulumi:t::p::command:remote:Command::r"
	resp, err := s.Create(context.Background(), &pulumirpc.CreateRequest{Urn: urn, Properties: st, Preview: true})
	if err != nil {
		t.Fatalf("preview of a command whose connection is unknown: %v", err)
	}
	out, _ := unmarshal("out", resp.Properties)
	if !out["stdout"].IsComputed() {
		t.Errorf("stdout = %v", out["stdout"])
	}
	if _, err := s.Create(context.Background(), &pulumirpc.CreateRequest{Urn: urn, Properties: st}); err == nil {
		t.Errorf("ran a command without a connection")
	}
}

func TestSpecMarksOutputsSecretWhenACommandInputIsSecret(t *testing.T) {
	plain := props("create", "cat", "stdin", "hello")
	sp, _ := parseSpec(localCommand, plain)
	if sp.secretOutput || len(sp.secrets) != 0 {
		t.Fatalf("plain inputs made secret outputs: %+v", sp)
	}
	withSecret := plain.Copy()
	withSecret["stdin"] = resource.MakeSecret(resource.NewStringProperty("hunter2 line\nsecond"))
	sp, _ = parseSpec(localCommand, withSecret)
	if !sp.secretOutput || len(sp.secrets) != 1 {
		t.Fatalf("a secret stdin did not make the outputs secret: %+v", sp)
	}
	// The connection's secrets (the key) do not make what the command prints secret.
	remote := props("create", "true")
	remote["connection"] = resource.MakeSecret(resource.NewPropertyValue(map[string]any{"host": "h"}))
	sp, _ = parseSpec(remoteCommand, remote)
	if sp.secretOutput {
		t.Fatalf("a secret connection made the outputs secret")
	}
	st := withOutputs(withSecret, mustSpec(t, localCommand, withSecret), resource.NewStringProperty("x"),
		resource.NewStringProperty(""))
	if !st["stdout"].IsSecret() || !st["stderr"].IsSecret() {
		t.Errorf("stdout/stderr not secret: %v", st)
	}
}

func mustSpec(t *testing.T, typ string, m resource.PropertyMap) *spec {
	t.Helper()
	sp, err := parseSpec(typ, m)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

func TestRedactorHidesWholeSecretsAndTheirLines(t *testing.T) {
	r := newRedactor([]string{"user=admin\nfi\npassword=hunter22\n", "xyz"})
	got := r.apply("cat: password=hunter22: no such file; user=admin; xyz; if ... fi")
	if strings.Contains(got, "hunter22") || strings.Contains(got, "user=admin") || strings.Contains(got, "xyz") {
		t.Errorf("secret shown: %q", got)
	}
	if !strings.Contains(got, "if ... fi") {
		t.Errorf("a short line of a secret blanked out ordinary text: %q", got)
	}
}
