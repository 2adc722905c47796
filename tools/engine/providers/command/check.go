package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"golang.org/x/crypto/ssh"
)

const (
	localCommand  = "command:local:Command"
	remoteCommand = "command:remote:Command"
)

// kind is what an input property holds.
type kind int

const (
	kString kind = iota
	kBool
	kNumber
	kInteger
	kStringList
	kStringMap
	kAnyList
	kLogging
	kConnection
	// Part of pulumi-command 1.2.1's interface that this provider does not implement: refused at
	// Check with a message saying so, rather than accepted and ignored.
	kUnsupported
)

var commonInputs = map[string]kind{
	"create":                 kString,
	"update":                 kString,
	"delete":                 kString,
	"stdin":                  kString,
	"environment":            kStringMap,
	"addPreviousOutputInEnv": kBool,
	"logging":                kLogging,
	"triggers":               kAnyList,
}

// inputKinds: the inputs of each resource (pulumi-command 1.2.1's schema).
var inputKinds = map[string]map[string]kind{
	localCommand: with(commonInputs, map[string]kind{
		"interpreter":  kStringList,
		"dir":          kString,
		"assetPaths":   kUnsupported,
		"archivePaths": kUnsupported,
	}),
	remoteCommand: with(commonInputs, map[string]kind{
		"connection": kConnection,
	}),
}

var connectionKinds = map[string]kind{
	"host":               kString,
	"port":               kNumber,
	"user":               kString,
	"password":           kString,
	"privateKey":         kString,
	"privateKeyPassword": kString,
	"agentSocketPath":    kString,
	"dialErrorLimit":     kInteger,
	"perDialTimeout":     kInteger,
	"hostKey":            kString,
	"proxy":              kUnsupported,
}

// Connection fields that are secret in pulumi-command's schema, whatever the program sent.
var connectionSecrets = []string{"password", "privateKey", "privateKeyPassword"}

// What Check fills in when a connection field is absent (the schema defaults of pulumi-command
// 1.2.1; an explicit value, zero included, is kept).
var connectionDefaults = map[string]resource.PropertyValue{
	"user":           resource.NewStringProperty("root"),
	"port":           resource.NewNumberProperty(22),
	"dialErrorLimit": resource.NewNumberProperty(10),
	"perDialTimeout": resource.NewNumberProperty(15),
}

var loggingValues = []string{"stdout", "stderr", "stdoutAndStderr", "none"}

var unsupportedWhy = map[string]string{
	"assetPaths":   "reading files back as assets after the command is not implemented by this provider",
	"archivePaths": "reading files back as an archive after the command is not implemented by this provider",
	"proxy":        "connecting through a bastion host is not implemented by this provider",
}

func with(a, b map[string]kind) map[string]kind {
	out := map[string]kind{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// check validates a resource's inputs and returns them with pulumi-command's defaults and secret
// markings applied: the whole remote connection is secret, and inside it password, privateKey and
// privateKeyPassword. Values not known yet (preview) pass; their checks run when they are known.
func check(typ string, news resource.PropertyMap) (resource.PropertyMap, []*pulumirpc.CheckFailure) {
	kinds, ok := inputKinds[typ]
	if !ok {
		return news, []*pulumirpc.CheckFailure{{Reason: fmt.Sprintf("unknown resource type %s", typ)}}
	}
	out := news.Copy()
	var failures []*pulumirpc.CheckFailure
	fail := func(prop, format string, args ...any) {
		failures = append(failures, &pulumirpc.CheckFailure{Property: prop, Reason: fmt.Sprintf(format, args...)})
	}
	for _, k := range news.StableKeys() {
		name := string(k)
		if strings.HasPrefix(name, "__") || news[k].IsNull() {
			continue
		}
		kd, known := kinds[name]
		if !known {
			fail(name, "%s has no input %q", typ, name)
			continue
		}
		if kd == kConnection {
			conn, connFailures := checkConnection(news[k])
			out[k] = conn
			failures = append(failures, connFailures...)
			continue
		}
		if reason := checkValue(name, kd, news[k]); reason != "" {
			fail(name, "%s", reason)
		}
	}
	if typ == remoteCommand && !present(news, "connection") {
		fail("connection", "missing required property 'connection'")
	}
	return out, failures
}

// checkValue: why v cannot be a value of kind kd, or "" when it can (or is not known yet).
func checkValue(name string, kd kind, v resource.PropertyValue) string {
	b, _, unknown := plain(v)
	if unknown {
		return ""
	}
	switch kd {
	case kUnsupported:
		return fmt.Sprintf("%s: %s", name, unsupportedWhy[name[strings.LastIndex(name, ".")+1:]])
	case kString:
		if !b.IsString() {
			return fmt.Sprintf("%s must be a string, not %s", name, b.TypeString())
		}
	case kBool:
		if !b.IsBool() {
			return fmt.Sprintf("%s must be a boolean, not %s", name, b.TypeString())
		}
	case kNumber:
		if !b.IsNumber() {
			return fmt.Sprintf("%s must be a number, not %s", name, b.TypeString())
		}
	case kInteger:
		if !b.IsNumber() || !isIntegral(b.NumberValue()) {
			return fmt.Sprintf("%s must be an integer, not %s", name, describe(b))
		}
	case kLogging:
		if !b.IsString() {
			return fmt.Sprintf("%s must be a string, not %s", name, b.TypeString())
		}
		for _, ok := range loggingValues {
			if b.StringValue() == ok {
				return ""
			}
		}
		return fmt.Sprintf("%s must be one of %s, not %q", name, strings.Join(loggingValues, ", "), b.StringValue())
	case kAnyList:
		if !b.IsArray() {
			return fmt.Sprintf("%s must be a list, not %s", name, b.TypeString())
		}
	case kStringList:
		if !b.IsArray() {
			return fmt.Sprintf("%s must be a list of strings, not %s", name, b.TypeString())
		}
		for i, e := range b.ArrayValue() {
			if eb, _, u := plain(e); !u && !eb.IsString() {
				return fmt.Sprintf("%s[%d] must be a string, not %s", name, i, eb.TypeString())
			}
		}
	case kStringMap:
		if !b.IsObject() {
			return fmt.Sprintf("%s must be a map of strings, not %s", name, b.TypeString())
		}
		obj := b.ObjectValue()
		for _, k := range obj.StableKeys() {
			if eb, _, u := plain(obj[k]); !u && !eb.IsString() {
				return fmt.Sprintf("%s[%q] must be a string, not %s", name, k, eb.TypeString())
			}
		}
	}
	return ""
}

func describe(v resource.PropertyValue) string {
	if v.IsNumber() {
		return fmt.Sprintf("%v", v.NumberValue())
	}
	return v.TypeString()
}

// checkConnection checks a remote connection, fills in its defaults and marks it secret.
func checkConnection(v resource.PropertyValue) (resource.PropertyValue, []*pulumirpc.CheckFailure) {
	var failures []*pulumirpc.CheckFailure
	fail := func(prop, format string, args ...any) {
		failures = append(failures, &pulumirpc.CheckFailure{
			Property: "connection." + prop, Reason: fmt.Sprintf(format, args...)})
	}
	b, _, unknown := plain(v)
	if unknown {
		return makeSecret(v), nil
	}
	if !b.IsObject() {
		return makeSecret(v), []*pulumirpc.CheckFailure{{Property: "connection",
			Reason: fmt.Sprintf("connection must be an object, not %s", b.TypeString())}}
	}
	conn := b.ObjectValue().Copy()
	for _, k := range conn.StableKeys() {
		name := string(k)
		if conn[k].IsNull() {
			delete(conn, k)
			continue
		}
		kd, known := connectionKinds[name]
		if !known {
			fail(name, "a connection has no field %q", name)
			continue
		}
		if reason := checkValue("connection."+name, kd, conn[k]); reason != "" {
			fail(name, "%s", reason)
		}
	}
	if !present(conn, "host") {
		fail("host", "missing required property 'connection.host'")
	}
	if hk := str(conn, "hostKey"); hk != nil {
		if _, err := parseHostKey(*hk); err != nil {
			fail("hostKey", "%v", err)
		}
	}
	names := make([]string, 0, len(connectionDefaults))
	for name := range connectionDefaults {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if !present(conn, name) {
			conn[resource.PropertyKey(name)] = connectionDefaults[name]
		}
	}
	for _, name := range connectionSecrets {
		if k := resource.PropertyKey(name); present(conn, name) {
			conn[k] = makeSecret(conn[k])
		}
	}
	return makeSecret(resource.NewObjectProperty(conn)), failures
}

func makeSecret(v resource.PropertyValue) resource.PropertyValue {
	if v.IsSecret() {
		return v
	}
	if v.IsOutput() {
		o := v.OutputValue()
		o.Secret = true
		return resource.NewOutputProperty(o)
	}
	return resource.MakeSecret(v)
}

// parseHostKey reads connection.hostKey: one public key in authorized_keys form ("ssh-ed25519 AAAA…",
// a comment allowed), as `ssh-keyscan host | cut -d' ' -f2-` prints it.
func parseHostKey(s string) (ssh.PublicKey, error) {
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(s))
	if err != nil {
		return nil, fmt.Errorf("connection.hostKey is not a public key in authorized_keys form "+
			"(\"ssh-ed25519 AAAA…\"): %v", err)
	}
	return key, nil
}
