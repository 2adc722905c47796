package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

// server is the provider's gRPC face (pulumirpc.ResourceProvider).
type server struct {
	pulumirpc.UnimplementedResourceProviderServer

	engine  *engineLog // nil when started without an engine (tests)
	version string
	dialer  dialer

	// Ended by Cancel: every command in flight, and any started after, stops.
	ctx    context.Context
	cancel context.CancelFunc
}

func newServer(engine *engineLog, version string) *server {
	ctx, cancel := context.WithCancel(context.Background())
	return &server{engine: engine, version: version, ctx: ctx, cancel: cancel}
}

// runCtx: a context that ends with the request's or with Cancel.
func (s *server) runCtx(req context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(req)
	stop := context.AfterFunc(s.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// status: a status line about urn (what a command prints, a dial being retried).
func (s *server) status(ctx context.Context, urn string) func(string) {
	if s.engine == nil {
		return nil
	}
	return func(msg string) { s.engine.log(ctx, pulumirpc.LogSeverity_INFO, urn, msg, true) }
}

func (s *server) warning(ctx context.Context, urn string) func(string) {
	if s.engine == nil {
		return nil
	}
	return func(msg string) { s.engine.log(ctx, pulumirpc.LogSeverity_WARNING, urn, msg, false) }
}

func (s *server) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: s.version}, nil
}

func (s *server) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	js, err := schemaJSON(s.version)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetSchemaResponse{Schema: js}, nil
}

// The provider has no configuration: whatever the provider resource carries (its version) is kept.
func (s *server) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (s *server) DiffConfig(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, err := unmarshal("olds", req.GetOldInputs())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal("news", req.GetNews())
	if err != nil {
		return nil, err
	}
	delete(olds, "version")
	delete(news, "version")
	resp := diff(olds, news, nil)
	resp.Replaces = nil // nothing in a command provider's configuration replaces it
	for k, d := range resp.DetailedDiff {
		resp.DetailedDiff[k] = &pulumirpc.PropertyDiff{Kind: unreplace(d.Kind), InputDiff: d.InputDiff}
	}
	return resp, nil
}

func unreplace(k pulumirpc.PropertyDiff_Kind) pulumirpc.PropertyDiff_Kind {
	switch k {
	case pulumirpc.PropertyDiff_ADD_REPLACE:
		return pulumirpc.PropertyDiff_ADD
	case pulumirpc.PropertyDiff_DELETE_REPLACE:
		return pulumirpc.PropertyDiff_DELETE
	case pulumirpc.PropertyDiff_UPDATE_REPLACE:
		return pulumirpc.PropertyDiff_UPDATE
	}
	return k
}

func (s *server) Configure(context.Context, *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true, AcceptResources: true}, nil
}

// typeOf: the resource type a request is about, refused unless this provider implements it.
func typeOf(urn string) (string, error) {
	t := string(resource.URN(urn).Type())
	if _, ok := inputKinds[t]; !ok {
		return "", status.Errorf(codes.Unimplemented,
			"%s is not implemented by this provider (it implements %s and %s of pulumi-command 1.2.1)",
			t, localCommand, remoteCommand)
	}
	return t, nil
}

func (s *server) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	typ, err := typeOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal("news", req.GetNews())
	if err != nil {
		return nil, err
	}
	inputs, failures := check(typ, news)
	st, err := marshal("inputs", inputs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: st, Failures: failures}, nil
}

func (s *server) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	typ, err := typeOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	olds, err := unmarshal("olds", req.GetOlds())
	if err != nil {
		return nil, err
	}
	oldInputs, err := unmarshal("oldInputs", req.GetOldInputs())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal("news", req.GetNews())
	if err != nil {
		return nil, err
	}
	return diff(oldInputsOf(typ, oldInputs, olds), news, req.GetIgnoreChanges()), nil
}

// withOutputs: a command's state, its inputs plus what it printed; stdout and stderr are secret when
// a secret went into the command (its script, stdin, environment, interpreter or directory).
func withOutputs(inputs resource.PropertyMap, sp *spec, stdout, stderr resource.PropertyValue) resource.PropertyMap {
	out := inputs.Copy()
	if sp.secretOutput {
		stdout, stderr = makeSecret(stdout), makeSecret(stderr)
	}
	out["stdout"], out["stderr"] = stdout, stderr
	return out
}

var unknownString = resource.MakeComputed(resource.NewStringProperty(""))

func (s *server) run(ctx context.Context, urn string, sp *spec, command string, prev previous) (string, string, error) {
	ctx, cancel := s.runCtx(ctx)
	defer cancel()
	if sp.remote {
		d := s.dialer
		d.status = s.status(ctx, urn)
		return runRemote(ctx, d, sp, command, prev, s.status(ctx, urn), s.warning(ctx, urn))
	}
	return runLocal(ctx, sp, command, prev, s.status(ctx, urn))
}

func newID(name string) (string, error) {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return name + hex.EncodeToString(b), nil
}

// Create runs `create` (when set). During a preview nothing runs and stdout/stderr are unknown.
func (s *server) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	typ, err := typeOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	inputs, err := unmarshal("properties", req.GetProperties())
	if err != nil {
		return nil, err
	}
	sp, err := parseSpec(typ, inputs)
	if err != nil {
		return nil, err
	}
	id, err := newID(string(resource.URN(req.GetUrn()).Name()))
	if err != nil {
		return nil, err
	}
	var state resource.PropertyMap
	switch {
	case req.GetPreview():
		state = withOutputs(inputs, sp, unknownString, unknownString)
	case sp.create == nil:
		state = withOutputs(inputs, sp, resource.NewStringProperty(""), resource.NewStringProperty(""))
	default:
		stdout, stderr, err := s.run(ctx, req.GetUrn(), sp, *sp.create, previous{})
		if err != nil {
			return nil, err
		}
		state = withOutputs(inputs, sp, resource.NewStringProperty(stdout), resource.NewStringProperty(stderr))
	}
	props, err := marshal("state", state)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

// Read returns the state as it is: a command's outputs are what it printed when it last ran, and
// nothing on a host can be read back to compare them with (pulumi-command does the same).
func (s *server) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	if _, err := typeOf(req.GetUrn()); err != nil {
		return nil, err
	}
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

func previousOf(state resource.PropertyMap) previous {
	var p previous
	if v := str(state, "stdout"); v != nil {
		p.stdout = *v
	}
	if v := str(state, "stderr"); v != nil {
		p.stderr = *v
	}
	return p
}

// Update runs `update`, or `create` when there is no update, with the previous run's stdout and stderr
// in PULUMI_COMMAND_STDOUT/STDERR. With neither, the old outputs stay.
func (s *server) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
	typ, err := typeOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	olds, err := unmarshal("olds", req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := unmarshal("news", req.GetNews())
	if err != nil {
		return nil, err
	}
	sp, err := parseSpec(typ, news)
	if err != nil {
		return nil, err
	}
	oldOut, oldErr := olds["stdout"], olds["stderr"]
	if oldOut.IsNull() {
		oldOut = resource.NewStringProperty("")
	}
	if oldErr.IsNull() {
		oldErr = resource.NewStringProperty("")
	}
	cmd := sp.update
	if cmd == nil {
		cmd = sp.create
	}
	var state resource.PropertyMap
	switch {
	case req.GetPreview():
		// Unknown until it runs, when any input is unknown or differs from the state's.
		if inputsMoved(typ, olds, news) {
			oldOut, oldErr = unknownString, unknownString
		}
		state = withOutputs(news, sp, oldOut, oldErr)
	case cmd == nil:
		state = withOutputs(news, sp, oldOut, oldErr)
	default:
		stdout, stderr, err := s.run(ctx, req.GetUrn(), sp, *cmd, previousOf(olds))
		if err != nil {
			return nil, err
		}
		state = withOutputs(news, sp, resource.NewStringProperty(stdout), resource.NewStringProperty(stderr))
	}
	props, err := marshal("state", state)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func inputsMoved(typ string, olds, news resource.PropertyMap) bool {
	for name := range inputKinds[typ] {
		k := resource.PropertyKey(name)
		nv, old := news[k], olds[k]
		if nv.ContainsUnknowns() {
			return true
		}
		if _, had := olds[k]; had && !nv.DeepEquals(old) {
			return true
		}
	}
	return false
}

// Delete runs `delete` (when set) with the inputs and outputs in the state.
func (s *server) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	typ, err := typeOf(req.GetUrn())
	if err != nil {
		return nil, err
	}
	state, err := unmarshal("properties", req.GetProperties())
	if err != nil {
		return nil, err
	}
	sp, err := parseSpec(typ, state)
	if err != nil {
		return nil, err
	}
	if sp.delete == nil {
		return &emptypb.Empty{}, nil
	}
	if _, _, err := s.run(ctx, req.GetUrn(), sp, *sp.delete, previousOf(state)); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

// Cancel stops every command in flight (the engine sends it when it is interrupted, before it
// shuts the provider down).
func (s *server) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	s.cancel()
	return &emptypb.Empty{}, nil
}

func (s *server) Invoke(_ context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	return nil, status.Errorf(codes.Unimplemented, "%s is not implemented by this provider", req.GetTok())
}
