// pulumi-resource-kubernetes serves the Pulumi kubernetes provider from the
// github.com/pulumi/pulumi-kubernetes/provider/v4 module. build.sh writes the two embedded files
// from the module's cmd/pulumi-resource-kubernetes/{schema,terraform-mapping}.json (minified, with
// the schema's version set), as the upstream build does before compiling its own main package.
package main

import (
	_ "embed"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
)

//go:embed schema-embed.json
var pulumiSchema []byte

//go:embed terraform-mapping-embed.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, pulumiSchema, terraformMapping)
}
