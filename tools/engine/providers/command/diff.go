package main

import (
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// Inputs whose change replaces the resource (a new create, after or before the old delete) instead of
// updating it (running update, or create again when there is no update). In pulumi-command 1.2.1 that
// is `triggers` only: its schema marks it replaceOnChanges, and its SDKs add replace_on_changes
// ["triggers[*]"] to every command, so a change anywhere inside the list replaces.
var replaceOnChanges = map[string]bool{"triggers": true}

// diff compares a command's old inputs with its new ones, field by field (pulumi-command compares
// inputs with inputs, never with the outputs it stored).
func diff(oldInputs, news resource.PropertyMap, ignoreChanges []string) *pulumirpc.DiffResponse {
	olds := withoutInternal(oldInputs)
	news = withoutInternal(news)
	for _, p := range ignoreChanges {
		path, err := resource.ParsePropertyPath(p)
		if err != nil {
			continue
		}
		if v, ok := path.Get(resource.NewObjectProperty(olds)); ok {
			obj := resource.NewObjectProperty(news)
			if path.Set(obj, v) {
				news = obj.ObjectValue()
			}
		}
	}
	resp := &pulumirpc.DiffResponse{
		Changes:         pulumirpc.DiffResponse_DIFF_NONE,
		HasDetailedDiff: true,
		DetailedDiff:    map[string]*pulumirpc.PropertyDiff{},
	}
	od := olds.Diff(news)
	if od == nil || !od.AnyChanges() {
		return resp
	}
	resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
	diffs, replaces := map[string]bool{}, map[string]bool{}
	for path, pd := range plugin.NewDetailedDiffFromObjectDiff(od, false) {
		head := topLevel(path)
		k := pd.Kind
		if replaceOnChanges[head] {
			k = k.AsReplace()
		}
		diffs[head] = true
		if k.IsReplace() {
			replaces[head] = true
		}
		resp.DetailedDiff[path] = &pulumirpc.PropertyDiff{Kind: rpcKind(k), InputDiff: pd.InputDiff}
	}
	resp.Diffs = sortedSet(diffs)
	resp.Replaces = sortedSet(replaces)
	return resp
}

// oldInputsOf: the inputs a Diff compares with. The engine sends them; a state written without them
// (an old engine) holds the inputs among its outputs.
func oldInputsOf(typ string, oldInputs, olds resource.PropertyMap) resource.PropertyMap {
	if len(oldInputs) > 0 {
		return oldInputs
	}
	out := resource.PropertyMap{}
	for name := range inputKinds[typ] {
		if v, ok := olds[resource.PropertyKey(name)]; ok {
			out[resource.PropertyKey(name)] = v
		}
	}
	return out
}

func withoutInternal(m resource.PropertyMap) resource.PropertyMap {
	out := resource.PropertyMap{}
	for k, v := range m {
		if !strings.HasPrefix(string(k), "__") {
			out[k] = v
		}
	}
	return out
}

func topLevel(path string) string {
	if pp, err := resource.ParsePropertyPath(path); err == nil && len(pp) > 0 {
		if s, ok := pp[0].(string); ok {
			return s
		}
	}
	return path
}

func rpcKind(k plugin.DiffKind) pulumirpc.PropertyDiff_Kind {
	switch k {
	case plugin.DiffAdd:
		return pulumirpc.PropertyDiff_ADD
	case plugin.DiffAddReplace:
		return pulumirpc.PropertyDiff_ADD_REPLACE
	case plugin.DiffDelete:
		return pulumirpc.PropertyDiff_DELETE
	case plugin.DiffDeleteReplace:
		return pulumirpc.PropertyDiff_DELETE_REPLACE
	case plugin.DiffUpdateReplace:
		return pulumirpc.PropertyDiff_UPDATE_REPLACE
	default:
		return pulumirpc.PropertyDiff_UPDATE
	}
}

func sortedSet(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
