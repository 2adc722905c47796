// Package info describes the Pulumi "random" provider as a bridge over the Terraform random
// provider. build.sh compiles it twice: into pulumi-tfgen-random (writes schema.json and
// bridge-metadata.json) and into pulumi-resource-random (embeds both).
package info

import (
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	bridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	"github.com/terraform-providers/terraform-provider-random/shim"
)

// Version is stamped by build.sh from requirements.txt (pulumi-random==X).
var Version = "0.0.0-dev"

// Provider returns the bridge description; metadata is bridge-metadata.json ("{}" at tfgen time).
func Provider(metadata []byte) bridge.ProviderInfo {
	prov := bridge.ProviderInfo{
		P:            tfbridge.ShimProvider(shim.NewProvider()),
		Name:         "random",
		DisplayName:  "random",
		Version:      Version,
		Publisher:    "Pulumi",
		GitHubOrg:    "hashicorp",
		Description:  "A Pulumi package to safely use randomness in Pulumi programs.",
		License:      "Apache-2.0",
		Homepage:     "https://pulumi.io",
		Repository:   "https://github.com/pulumi/pulumi-random",
		MetadataInfo: bridge.NewProviderMetadata(metadata),
	}
	// The published SDK keeps the "random_" prefix in its names: random_password is
	// random:index/randomPassword:RandomPassword.
	prov.MustComputeTokens(tokens.SingleModule("", "index", tokens.MakeStandard("random")))
	return prov
}
