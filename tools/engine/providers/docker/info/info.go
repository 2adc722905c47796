// Package info describes the Pulumi "docker" provider as a bridge over the Terraform docker
// provider (kreuzwerker), whose SDKv2 and plugin-framework halves are muxed. build.sh compiles
// it into pulumi-tfgen-docker (writes schema.json and bridge-metadata.json) and into
// pulumi-resource-docker (embeds both).
//
// Not covered: docker:index/image:Image, which the published provider implements natively
// (outside Terraform); its Go source is not available to this build.
package info

import (
	"context"

	pftfbridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/pf/tfbridge"
	bridge "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge"
	"github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfbridge/tokens"
	shimv2 "github.com/pulumi/pulumi-terraform-bridge/v3/pkg/tfshim/sdk-v2"
	"github.com/terraform-providers/terraform-provider-docker/shim"
)

// Version is stamped by build.sh from requirements.txt (pulumi-docker==X).
var Version = "0.0.0-dev"

// Provider returns the bridge description; metadata is bridge-metadata.json ("{}" at tfgen time).
func Provider(metadata []byte) bridge.ProviderInfo {
	ctx := context.Background()
	p := pftfbridge.MuxShimWithPF(ctx,
		shimv2.NewProvider(shim.NewSDKv2Provider(Version)()),
		shim.NewFrameworkProvider(Version)())
	prov := bridge.ProviderInfo{
		P:            p,
		Name:         "docker",
		DisplayName:  "Docker",
		Version:      Version,
		Publisher:    "Pulumi",
		GitHubOrg:    "kreuzwerker",
		Description:  "A Pulumi package for interacting with Docker in Pulumi programs",
		License:      "Apache-2.0",
		Homepage:     "https://pulumi.io",
		Repository:   "https://github.com/pulumi/pulumi-docker",
		MetadataInfo: bridge.NewProviderMetadata(metadata),
		// Names as the published SDK spells them (the bridge would pluralize these lists).
		Config: map[string]*bridge.SchemaInfo{
			"registry_auth": {Name: "registryAuth"},
		},
		Resources: map[string]*bridge.ResourceInfo{
			"docker_container": {Fields: map[string]*bridge.SchemaInfo{
				"command":           {Name: "command"},
				"networks_advanced": {Name: "networksAdvanced"},
			}},
			// The published SDK calls the Terraform docker_image resource RemoteImage.
			"docker_image": {Tok: "docker:index/remoteImage:RemoteImage"},
			// ... and docker_config ServiceConfig.
			"docker_config": {Tok: "docker:index/serviceConfig:ServiceConfig"},
		},
		DataSources: map[string]*bridge.DataSourceInfo{
			"docker_image": {Tok: "docker:index/getRemoteImage:getRemoteImage"},
		},
	}
	prov.MustComputeTokens(tokens.SingleModule("docker_", "index", tokens.MakeStandard("docker")))
	return prov
}
