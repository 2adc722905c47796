// pulumi-resource-random is the Pulumi random provider, bridged over the Terraform random provider.
package main

import (
	"context"
	_ "embed"

	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"

	"octollm.invalid/engine/random/info"
)

//go:embed schema.json
var schema []byte

//go:embed bridge-metadata.json
var metadata []byte

func main() {
	tfbridge.Main(context.Background(), "random", info.Provider(metadata),
		tfbridge.ProviderMetadata{PackageSchema: schema})
}
