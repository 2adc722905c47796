// Command pulumi-resource-command is octollm-infra's own implementation of the interface of the
// Pulumi command provider, pulumi-command 1.2.1: the resources command:local:Command and
// command:remote:Command as the pulumi-command Python SDK sends them. It is a resource provider
// plugin the Pulumi engine starts and talks to over gRPC. tools/engine/README.md says what it
// covers and what it leaves out.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/grpclog"
)

// Version is the pulumi-command release whose interface this implements, reported to the engine
// (tools/engine/build.sh sets it from the pin in requirements.txt, after checking they agree).
var Version = "1.2.1"

func main() {
	if err := serve(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "pulumi-resource-command: %v\n", err)
		os.Exit(1)
	}
}

// serve speaks the plugin protocol: listen on a free loopback port, print it on the first line of
// stdout, serve until the engine goes away (health check) or sends SIGINT.
func serve(args []string) error {
	fs := flag.NewFlagSet("pulumi-resource-command", flag.ContinueOnError)
	version := fs.Bool("version", false, "print the version and exit")
	_ = fs.String("tracing", "", "ignored (no tracing)")
	_ = fs.Bool("logtostderr", false, "ignored")
	_ = fs.Int("v", 0, "ignored")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *version {
		fmt.Println(Version)
		return nil
	}
	// gRPC's own logging would go to stderr, which the engine shows as the provider's output.
	grpclog.SetLoggerV2(grpclog.NewLoggerV2(io.Discard, io.Discard, os.Stderr))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var engine *engineLog
	if rest := fs.Args(); len(rest) > 0 {
		var err error
		if engine, err = dialEngine(rest[0]); err != nil {
			return fmt.Errorf("could not connect to the engine at %s: %w", rest[0], err)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		if err := rpcutil.Healthcheck(ctx, rest[0], 5*time.Minute, cancel); err != nil {
			return fmt.Errorf("could not start the engine health check: %w", err)
		}
	}
	done := make(chan bool)
	go func() {
		<-ctx.Done()
		close(done)
	}()
	srv := newServer(engine, Version)
	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: done,
		Init: func(g *grpc.Server) error {
			pulumirpc.RegisterResourceProviderServer(g, srv)
			return nil
		},
	})
	if err != nil {
		return err
	}
	fmt.Printf("%d\n", handle.Port)
	return <-handle.Done
}
