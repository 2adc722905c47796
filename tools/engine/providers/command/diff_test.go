package main

import (
	"reflect"
	"testing"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

func remoteInputs(change func(resource.PropertyMap)) resource.PropertyMap {
	m := props("create", "mkdir -p /srv", "update", "true", "stdin", "data", "triggers", []any{"a", 1.0},
		"environment", map[string]any{"A": "1"})
	m["connection"] = resource.MakeSecret(resource.NewPropertyValue(map[string]any{
		"host": "10.0.0.5", "port": 22.0, "user": "root", "dialErrorLimit": 15.0, "perDialTimeout": 15.0,
		"privateKey": "KEY"}))
	if change != nil {
		change(m)
	}
	return m
}

func TestDiffRules(t *testing.T) {
	cases := []struct {
		name            string
		change          func(resource.PropertyMap)
		ignore          []string
		diffs, replaces []string
		detailed        map[string]pulumirpc.PropertyDiff_Kind
	}{
		{name: "nothing changed"},
		{name: "create changed: update", change: func(m resource.PropertyMap) {
			m["create"] = resource.NewStringProperty("mkdir -p /srv/x")
		}, diffs: []string{"create"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"create": pulumirpc.PropertyDiff_UPDATE}},
		{name: "stdin changed: update", change: func(m resource.PropertyMap) {
			m["stdin"] = resource.NewStringProperty("other")
		}, diffs: []string{"stdin"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"stdin": pulumirpc.PropertyDiff_UPDATE}},
		{name: "delete added: update", change: func(m resource.PropertyMap) {
			m["delete"] = resource.NewStringProperty("rm -rf /srv")
		}, diffs: []string{"delete"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"delete": pulumirpc.PropertyDiff_ADD}},
		{name: "environment value changed: update", change: func(m resource.PropertyMap) {
			m["environment"] = resource.NewPropertyValue(map[string]any{"A": "2"})
		}, diffs: []string{"environment"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"environment.A": pulumirpc.PropertyDiff_UPDATE}},
		{name: "connection changed: update", change: func(m resource.PropertyMap) {
			m["connection"] = resource.MakeSecret(resource.NewPropertyValue(map[string]any{
				"host": "10.0.0.6", "port": 22.0, "user": "root", "dialErrorLimit": 15.0,
				"perDialTimeout": 15.0, "privateKey": "KEY"}))
		}, diffs: []string{"connection"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"connection": pulumirpc.PropertyDiff_UPDATE}},
		{name: "a trigger changed: replace", change: func(m resource.PropertyMap) {
			m["triggers"] = resource.NewPropertyValue([]any{"b", 1.0})
		}, diffs: []string{"triggers"}, replaces: []string{"triggers"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"triggers[0]": pulumirpc.PropertyDiff_UPDATE_REPLACE}},
		{name: "a trigger added: replace", change: func(m resource.PropertyMap) {
			m["triggers"] = resource.NewPropertyValue([]any{"a", 1.0, "c"})
		}, diffs: []string{"triggers"}, replaces: []string{"triggers"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"triggers[2]": pulumirpc.PropertyDiff_ADD_REPLACE}},
		{name: "triggers removed: replace", change: func(m resource.PropertyMap) {
			delete(m, "triggers")
		}, diffs: []string{"triggers"}, replaces: []string{"triggers"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"triggers": pulumirpc.PropertyDiff_DELETE_REPLACE}},
		{name: "trigger and create changed: replace for the trigger only", change: func(m resource.PropertyMap) {
			m["triggers"] = resource.NewPropertyValue([]any{"a", 2.0})
			m["create"] = resource.NewStringProperty("true")
		}, diffs: []string{"create", "triggers"}, replaces: []string{"triggers"},
			detailed: map[string]pulumirpc.PropertyDiff_Kind{
				"triggers[1]": pulumirpc.PropertyDiff_UPDATE_REPLACE, "create": pulumirpc.PropertyDiff_UPDATE}},
		{name: "an unknown create: update", change: func(m resource.PropertyMap) {
			m["create"] = resource.MakeComputed(resource.NewStringProperty(""))
		}, diffs: []string{"create"}, detailed: map[string]pulumirpc.PropertyDiff_Kind{
			"create": pulumirpc.PropertyDiff_UPDATE}},
		{name: "ignored change", ignore: []string{"stdin"}, change: func(m resource.PropertyMap) {
			m["stdin"] = resource.NewStringProperty("other")
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := diff(remoteInputs(nil), remoteInputs(c.change), c.ignore)
			want := pulumirpc.DiffResponse_DIFF_NONE
			if len(c.diffs) > 0 {
				want = pulumirpc.DiffResponse_DIFF_SOME
			}
			if resp.Changes != want {
				t.Errorf("changes = %v, want %v", resp.Changes, want)
			}
			if !reflect.DeepEqual(resp.Diffs, c.diffs) {
				t.Errorf("diffs = %v, want %v", resp.Diffs, c.diffs)
			}
			if !reflect.DeepEqual(resp.Replaces, c.replaces) {
				t.Errorf("replaces = %v, want %v", resp.Replaces, c.replaces)
			}
			got := map[string]pulumirpc.PropertyDiff_Kind{}
			for k, v := range resp.DetailedDiff {
				got[k] = v.Kind
			}
			if len(got) > 0 || len(c.detailed) > 0 {
				if !reflect.DeepEqual(got, c.detailed) {
					t.Errorf("detailed = %v, want %v", got, c.detailed)
				}
			}
			if !resp.HasDetailedDiff {
				t.Errorf("no detailed diff")
			}
		})
	}
}

func TestDiffFallsBackToTheStateWithoutOldInputs(t *testing.T) {
	state := remoteInputs(nil)
	state["stdout"] = resource.NewStringProperty("printed")
	state["stderr"] = resource.NewStringProperty("")
	olds := oldInputsOf(remoteCommand, nil, state)
	if _, ok := olds["stdout"]; ok {
		t.Fatalf("outputs taken for inputs: %v", olds)
	}
	if resp := diff(olds, remoteInputs(nil), nil); resp.Changes != pulumirpc.DiffResponse_DIFF_NONE {
		t.Errorf("the same inputs differ from the state: %v", resp)
	}
}

func TestUpdatePreviewKnowsTheOutputsOnlyWhenNothingMoved(t *testing.T) {
	olds := remoteInputs(nil)
	olds["stdout"] = resource.NewStringProperty("x")
	if inputsMoved(remoteCommand, olds, remoteInputs(nil)) {
		t.Errorf("unchanged inputs moved")
	}
	if !inputsMoved(remoteCommand, olds, remoteInputs(func(m resource.PropertyMap) {
		m["stdin"] = resource.NewStringProperty("y")
	})) {
		t.Errorf("a changed stdin did not move")
	}
	if !inputsMoved(remoteCommand, olds, remoteInputs(func(m resource.PropertyMap) {
		m["stdin"] = resource.MakeComputed(resource.NewStringProperty(""))
	})) {
		t.Errorf("an unknown stdin did not move")
	}
	// A new input, unknown: the state has nothing to compare it with, and it still moves.
	if !inputsMoved(remoteCommand, olds, remoteInputs(func(m resource.PropertyMap) {
		m["delete"] = resource.MakeComputed(resource.NewStringProperty(""))
	})) {
		t.Errorf("an unknown new delete did not move")
	}
	// A new input that is known is a change the Diff reported; alone it does not make outputs unknown
	// (pulumi-command compares with the state's inputs only where the state has them).
	if inputsMoved(remoteCommand, olds, remoteInputs(func(m resource.PropertyMap) {
		m["delete"] = resource.NewStringProperty("rm -rf /srv")
	})) {
		t.Errorf("a known new delete moved")
	}
}
