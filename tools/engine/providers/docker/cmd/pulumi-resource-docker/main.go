// pulumi-resource-docker is the Pulumi docker provider, bridged over the Terraform docker provider.
package main

import (
	"context"
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	"octollm.invalid/engine/docker/info"
)

//go:embed schema.json
var schema []byte

//go:embed bridge-metadata.json
var metadata []byte

func main() {
	tfbridge.MainWithMuxer(context.Background(), "docker", info.Provider(metadata), schema)
}
