package main

import "encoding/json"

// The package schema GetSchema answers with: the two resources this provider implements and the
// connection type, with pulumi-command 1.2.1's property names, types, defaults, secrets and
// replaceOnChanges. (The engine does not read it for preview, up, refresh or destroy; tools that
// generate code or show documentation do.)
func schemaJSON(version string) (string, error) {
	str := map[string]any{"type": "string"}
	secretStr := map[string]any{"type": "string", "secret": true}
	boolean := map[string]any{"type": "boolean"}
	strList := map[string]any{"type": "array", "items": str}
	strMap := map[string]any{"type": "object", "additionalProperties": str}
	triggers := map[string]any{"type": "array", "items": map[string]any{"$ref": "pulumi.json#/Any"},
		"replaceOnChanges": true}
	logging := func(ns string) map[string]any {
		return map[string]any{"$ref": "#/types/command:" + ns + ":Logging"}
	}
	loggingType := map[string]any{"type": "string", "enum": []any{
		map[string]any{"value": "stdout"}, map[string]any{"value": "stderr"},
		map[string]any{"value": "stdoutAndStderr"}, map[string]any{"value": "none"}}}
	common := func(ns string) map[string]any {
		return map[string]any{
			"create": str, "update": str, "delete": str, "stdin": str, "environment": strMap,
			"addPreviousOutputInEnv": boolean, "logging": logging(ns), "triggers": triggers,
		}
	}
	outputs := func(in map[string]any) map[string]any {
		out := map[string]any{"stdout": str, "stderr": str}
		for k, v := range in {
			out[k] = v
		}
		return out
	}
	localIn := common("local")
	localIn["interpreter"] = strList
	localIn["dir"] = str
	remoteIn := common("remote")
	remoteIn["connection"] = map[string]any{"$ref": "#/types/command:remote:Connection", "secret": true}
	schema := map[string]any{
		"name":        "command",
		"displayName": "Command",
		"version":     version,
		"description": "Runs commands and scripts, locally or over SSH, as resources.",
		"config":      map[string]any{},
		"provider":    map[string]any{},
		"types": map[string]any{
			"command:local:Logging":  loggingType,
			"command:remote:Logging": loggingType,
			"command:remote:Connection": map[string]any{
				"type": "object",
				"properties": map[string]any{
					"host":               str,
					"port":               map[string]any{"type": "number", "default": 22},
					"user":               map[string]any{"type": "string", "default": "root"},
					"password":           secretStr,
					"privateKey":         secretStr,
					"privateKeyPassword": secretStr,
					"agentSocketPath":    str,
					"dialErrorLimit":     map[string]any{"type": "integer", "default": 10},
					"perDialTimeout":     map[string]any{"type": "integer", "default": 15},
					"hostKey":            str,
				},
				"required": []string{"host"},
			},
		},
		"resources": map[string]any{
			localCommand: map[string]any{
				"inputProperties": localIn,
				"properties":      outputs(localIn),
				"required":        []string{"stdout", "stderr"},
			},
			remoteCommand: map[string]any{
				"inputProperties": remoteIn,
				"requiredInputs":  []string{"connection"},
				"properties":      outputs(remoteIn),
				"required":        []string{"connection", "stdout", "stderr"},
			},
		},
	}
	b, err := json.Marshal(schema)
	return string(b), err
}
