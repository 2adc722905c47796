// pulumi-tfgen-random generates the schema and bridge metadata that pulumi-resource-random embeds.
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	"octollm.invalid/engine/random/info"
)

func main() {
	tfgen.Main("random", info.Provider([]byte("{}")))
}
