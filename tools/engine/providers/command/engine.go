package main

import (
	"context"
	"strings"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// engineLog sends log messages to the engine that started the provider (its address is the
// plugin's one argument).
type engineLog struct {
	conn   *grpc.ClientConn
	client pulumirpc.EngineClient
}

func dialEngine(addr string) (*engineLog, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		rpcutil.GrpcChannelOptions())
	if err != nil {
		return nil, err
	}
	return &engineLog{conn: conn, client: pulumirpc.NewEngineClient(conn)}, nil
}

// log: a message about the resource urn. An ephemeral one is a status line, shown while the
// resource is being worked on and not kept in the final output.
func (e *engineLog) log(ctx context.Context, sev pulumirpc.LogSeverity, urn, msg string, ephemeral bool) {
	if e == nil {
		return
	}
	_, _ = e.client.Log(ctx, &pulumirpc.LogRequest{
		Severity: sev, Urn: urn, Message: strings.ToValidUTF8(msg, "\uFFFD"), Ephemeral: ephemeral,
	})
}
