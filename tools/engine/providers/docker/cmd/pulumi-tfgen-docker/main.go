// pulumi-tfgen-docker generates the schema and bridge metadata that pulumi-resource-docker embeds.
package main

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfgen"

	"octollm.invalid/engine/docker/info"
)

func main() {
	tfgen.MainWithMuxer("docker", info.Provider([]byte("{}")))
}
