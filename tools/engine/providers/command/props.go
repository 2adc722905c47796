package main

import (
	"fmt"
	"math"
	"sort"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"google.golang.org/protobuf/types/known/structpb"
)

// How properties cross the wire in both directions: secrets and unknowns are kept as such (the
// engine is told we accept secrets), resource references pass through untouched, nulls are absent.
var wire = plugin.MarshalOptions{
	KeepUnknowns:  true,
	KeepSecrets:   true,
	KeepResources: true,
	SkipNulls:     true,
}

func unmarshal(label string, s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	opts := wire
	opts.Label = label
	m, err := plugin.UnmarshalProperties(s, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	return m, nil
}

func marshal(label string, m resource.PropertyMap) (*structpb.Struct, error) {
	opts := wire
	opts.Label = label
	return plugin.MarshalProperties(m, opts)
}

// plain strips the secret and output markers off a value: the bare value, whether any of the
// markers said secret, and whether the value is not known yet.
func plain(v resource.PropertyValue) (bare resource.PropertyValue, secret, unknown bool) {
	for {
		switch {
		case v.IsSecret():
			secret = true
			v = v.SecretValue().Element
		case v.IsComputed():
			return v, secret, true
		case v.IsOutput():
			o := v.OutputValue()
			secret = secret || o.Secret
			if !o.Known {
				return v, secret, true
			}
			v = o.Element
		default:
			return v, secret, false
		}
	}
}

// present reports whether m holds a non-null value at k.
func present(m resource.PropertyMap, k string) bool {
	v, ok := m[resource.PropertyKey(k)]
	return ok && !v.IsNull()
}

// str reads an optional string; nil when absent or not a known string.
func str(m resource.PropertyMap, k string) *string {
	v, ok := m[resource.PropertyKey(k)]
	if !ok {
		return nil
	}
	b, _, unknown := plain(v)
	if unknown || !b.IsString() {
		return nil
	}
	s := b.StringValue()
	return &s
}

func boolean(m resource.PropertyMap, k string) *bool {
	v, ok := m[resource.PropertyKey(k)]
	if !ok {
		return nil
	}
	b, _, unknown := plain(v)
	if unknown || !b.IsBool() {
		return nil
	}
	x := b.BoolValue()
	return &x
}

func number(m resource.PropertyMap, k string) *float64 {
	v, ok := m[resource.PropertyKey(k)]
	if !ok {
		return nil
	}
	b, _, unknown := plain(v)
	if unknown || !b.IsNumber() {
		return nil
	}
	x := b.NumberValue()
	return &x
}

func stringList(m resource.PropertyMap, k string) []string {
	v, ok := m[resource.PropertyKey(k)]
	if !ok {
		return nil
	}
	b, _, unknown := plain(v)
	if unknown || !b.IsArray() {
		return nil
	}
	var out []string
	for _, e := range b.ArrayValue() {
		eb, _, _ := plain(e)
		if eb.IsString() {
			out = append(out, eb.StringValue())
		}
	}
	return out
}

func stringMap(m resource.PropertyMap, k string) map[string]string {
	v, ok := m[resource.PropertyKey(k)]
	if !ok {
		return nil
	}
	b, _, unknown := plain(v)
	if unknown || !b.IsObject() {
		return nil
	}
	out := map[string]string{}
	for ek, ev := range b.ObjectValue() {
		eb, _, _ := plain(ev)
		if eb.IsString() {
			out[string(ek)] = eb.StringValue()
		}
	}
	return out
}

func object(m resource.PropertyMap, k string) resource.PropertyMap {
	v, ok := m[resource.PropertyKey(k)]
	if !ok {
		return nil
	}
	b, _, unknown := plain(v)
	if unknown || !b.IsObject() {
		return nil
	}
	return b.ObjectValue()
}

// secretStrings collects every string under a secret marker in v (the values a log line or an
// error message must never show).
func secretStrings(v resource.PropertyValue, inSecret bool, acc *[]string) {
	switch {
	case v.IsSecret():
		secretStrings(v.SecretValue().Element, true, acc)
	case v.IsOutput():
		o := v.OutputValue()
		secretStrings(o.Element, inSecret || o.Secret, acc)
	case v.IsString():
		if inSecret && v.StringValue() != "" {
			*acc = append(*acc, v.StringValue())
		}
	case v.IsArray():
		for _, e := range v.ArrayValue() {
			secretStrings(e, inSecret, acc)
		}
	case v.IsObject():
		for _, k := range v.ObjectValue().StableKeys() {
			secretStrings(v.ObjectValue()[k], inSecret, acc)
		}
	}
}

func isIntegral(f float64) bool { return f == math.Trunc(f) && !math.IsInf(f, 0) }

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
