// pulumi-language-python: a small Python language host for the Pulumi engine.
//
// The upstream host (module github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3)
// is not served by the Go module proxy this project can reach, so tools/engine/build.sh builds
// this one instead, against github.com/pulumi/pulumi/sdk/v3 at the CLI's version. It implements
// the LanguageRuntime gRPC service as far as octollm-infra needs it:
//
//   - Run: runs the program with the interpreter of the project's virtualenv (runtime.options
//     virtualenv/toolchain), through the pulumi-language-python-exec script that build.sh puts
//     next to this binary (it comes from the sdk/v3 module).
//   - RunPlugin: runs policy packs (PulumiPolicy.yaml, `python -m pulumi.policy`) and Python
//     plugin directories (PulumiPlugin.yaml) in their own virtualenv; the CLI uses this for
//     `pulumi preview --policy-pack policy`.
//   - GetRequiredPackages: reports the resource plugins named by the pulumi-plugin.json files of
//     the packages installed in the virtualenv.
//   - InstallDependencies, GetProgramDependencies, About, GetPluginInfo, Handshake.
//
// Everything else (code generation, Pack, Link, GenerateProject, ...) answers Unimplemented.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// Version is stamped by build.sh (-ldflags -X main.Version=...).
var Version = "0.0.0-dev"

const (
	execScriptName = "pulumi-language-python-exec"
	// Exit code with which the exec script says it already showed the user an actionable message.
	exitAfterUserMessage = 32
)

// listPluginsScript prints the pulumi-plugin.json documents of every installed distribution that
// declares a resource plugin.
const listPluginsScript = `
import json, importlib.metadata as md
out, seen = [], set()
for dist in md.distributions():
    for f in dist.files or []:
        if f.name != "pulumi-plugin.json":
            continue
        try:
            doc = json.loads(f.read_text())
        except Exception:
            continue
        if not isinstance(doc, dict) or not doc.get("resource") or not doc.get("name"):
            continue
        key = (doc.get("name"), doc.get("version"))
        if key not in seen:
            seen.add(key)
            out.append(doc)
print(json.dumps(out))
`

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	tracing       string
	execScript    string
}

// pluginDoc is the part of pulumi-plugin.json the engine needs.
type pluginDoc struct {
	Name             string `json:"name"`
	Version          string `json:"version"`
	Server           string `json:"server"`
	Parameterization *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Value   []byte `json:"value"`
	} `json:"parameterization"`
}

func main() {
	fs := flag.NewFlagSet("pulumi-language-python", flag.ContinueOnError)
	tracing := fs.String("tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	// Flags older engines pass; options now arrive in each request's ProgramInfo.
	_ = fs.String("virtualenv", "", "ignored")
	_ = fs.String("root", "", "ignored")
	_ = fs.String("toolchain", "", "ignored")
	_ = fs.String("typechecker", "", "ignored")
	_ = fs.Bool("logtostderr", false, "ignored")
	_ = fs.Int("v", 0, "ignored")
	if err := fs.Parse(os.Args[1:]); err != nil {
		cmdutil.Exit(err)
	}
	logging.InitLogging(false, 0, false)

	h := &host{tracing: *tracing, execScript: findExecScript()}
	if args := fs.Args(); len(args) > 0 {
		h.engineAddress = args[0]
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start language host RPC server: %w", err))
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host RPC stopped serving: %w", err))
	}
}

func findExecScript() string {
	if self, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(self); err == nil {
			self = real
		}
		candidate := filepath.Join(filepath.Dir(self), execScriptName)
		if _, err := os.Stat(candidate); err == nil {
			return candidate
		}
	}
	if p, err := exec.LookPath(execScriptName); err == nil {
		return p
	}
	return execScriptName
}

// resolveToolchain maps the runtime options of Pulumi.yaml / PulumiPolicy.yaml / PulumiPlugin.yaml
// (virtualenv, toolchain) onto the sdk's python toolchain helper.
func resolveToolchain(info *pulumirpc.ProgramInfo) (toolchain.Toolchain, error) {
	opts := toolchain.PythonOptions{}
	var options map[string]any
	if info != nil {
		opts.Root = info.GetRootDirectory()
		opts.ProgramDir = info.GetProgramDirectory()
		options = optionsMap(info.GetOptions())
	}
	if opts.ProgramDir == "" {
		opts.ProgramDir = opts.Root
	}
	if v, ok := options["virtualenv"].(string); ok {
		opts.Virtualenv = v
	}
	switch tc, _ := options["toolchain"].(string); tc {
	case "", "pip":
		opts.Toolchain = toolchain.Pip
		if tc == "" {
			opts.Toolchain = toolchain.Auto
		}
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	case "uv":
		opts.Toolchain = toolchain.Uv
	default:
		return nil, fmt.Errorf("unsupported python toolchain %q", tc)
	}
	return toolchain.ResolveToolchain(opts)
}

func optionsMap(s *structpb.Struct) map[string]any {
	if s == nil {
		return nil
	}
	return s.AsMap()
}

// ensureVenv creates a missing virtualenv (installing requirements.txt) the way `pulumi install`
// would, and otherwise validates it.
func ensureVenv(ctx context.Context, tc toolchain.Toolchain, dir string, stdout, stderr io.Writer) error {
	if err := tc.ValidateVenv(ctx); err == nil {
		return nil
	}
	return tc.EnsureVenv(ctx, dir, false /*useLanguageVersionTools*/, true /*showOutput*/, stdout, stderr)
}

func (h *host) Handshake(
	_ context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.engineAddress = req.GetEngineAddress()
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: Version}, nil
}

func (h *host) listPlugins(ctx context.Context, info *pulumirpc.ProgramInfo) ([]pluginDoc, error) {
	tc, err := resolveToolchain(info)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", listPluginsScript)
	if err != nil {
		return nil, err
	}
	cmd.Dir = info.GetProgramDirectory()
	out, err := cmd.Output()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return nil, fmt.Errorf("listing python packages failed: %w: %s", err, exitErr.Stderr)
		}
		return nil, fmt.Errorf("listing python packages failed: %w", err)
	}
	var docs []pluginDoc
	if err := json.Unmarshal(out, &docs); err != nil {
		return nil, fmt.Errorf("parsing python package list: %w", err)
	}
	return docs, nil
}

func withV(version string) string {
	if version == "" || strings.HasPrefix(version, "v") {
		return version
	}
	return "v" + version
}

func (h *host) GetRequiredPackages(
	ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	docs, err := h.listPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, d := range docs {
		dep := &pulumirpc.PackageDependency{
			Kind:    "resource",
			Name:    d.Name,
			Version: withV(d.Version),
			Server:  d.Server,
		}
		if p := d.Parameterization; p != nil {
			dep.Parameterization = &pulumirpc.PackageParameterization{
				Name: p.Name, Version: withV(p.Version), Value: p.Value,
			}
		}
		resp.Packages = append(resp.Packages, dep)
	}
	return resp, nil
}

func (h *host) GetRequiredPlugins(
	ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	docs, err := h.listPlugins(ctx, req.GetInfo())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, d := range docs {
		if d.Parameterization != nil {
			continue
		}
		resp.Plugins = append(resp.Plugins, &pulumirpc.PluginDependency{
			Kind: "resource", Name: d.Name, Version: withV(d.Version), Server: d.Server,
		})
	}
	return resp, nil
}

func (h *host) execArgs(req *pulumirpc.RunRequest) []string {
	args := []string{"-u", h.execScript}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", h.engineAddress)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", fmt.Sprintf("%v", req.GetDryRun()))
	add("parallel", fmt.Sprint(req.GetParallel()))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())
	add("root_directory", req.GetInfo().GetRootDirectory())
	program := req.GetInfo().GetEntryPoint()
	if program == "" {
		program = req.GetProgram()
	}
	if program == "" {
		program = "."
	}
	if dir := req.GetInfo().GetProgramDirectory(); dir != "" && !filepath.IsAbs(program) {
		program = filepath.Join(dir, program)
	}
	args = append(args, program)
	return append(args, req.GetArgs()...)
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	if err := ensureVenv(ctx, tc, req.GetInfo().GetProgramDirectory(), os.Stdout, os.Stderr); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	cmd, err := tc.Command(ctx, h.execArgs(req)...)
	if err != nil {
		return nil, err
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	if cfg := req.GetConfig(); cfg != nil {
		b, err := json.Marshal(cfg)
		if err != nil {
			return nil, fmt.Errorf("serializing config: %w", err)
		}
		env = append(env, "PULUMI_CONFIG="+string(b))
	}
	keys := req.GetConfigSecretKeys()
	if keys == nil {
		keys = []string{}
	}
	b, err := json.Marshal(keys)
	if err != nil {
		return nil, fmt.Errorf("serializing config secret keys: %w", err)
	}
	env = append(env, "PULUMI_CONFIG_SECRET_KEYS="+string(b))
	cmd.Env = env
	cmd.Dir = req.GetPwd()
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr

	if err := cmd.Run(); err != nil {
		// Make sure the engine sees what the program printed before it failed.
		_ = os.Stdout.Sync()
		_ = os.Stderr.Sync()
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.ExitStatus() == exitAfterUserMessage {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("problem executing program (could not run language executor): %v", err),
		}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

func (h *host) RunPlugin(req *pulumirpc.RunPluginRequest, server pulumirpc.LanguageRuntime_RunPluginServer) error {
	ctx := server.Context()
	info := req.GetInfo()
	dir := info.GetProgramDirectory()
	if dir == "" {
		dir = req.GetProgram()
	}
	tc, err := resolveToolchain(info)
	if err != nil {
		return err
	}
	closer, stdout, stderr, err := rpcutil.MakeRunPluginStreams(server, false)
	if err != nil {
		return err
	}
	defer closer.Close()

	if err := ensureVenv(ctx, tc, dir, stdout, stderr); err != nil {
		return err
	}

	var args []string
	switch req.GetKind() {
	case "analyzer":
		// pulumi.policy's entry point takes the engine address, then the policy pack directory.
		args = append([]string{"-u", "-m", "pulumi.policy"}, req.GetArgs()...)
		args = append(args, dir)
	default:
		entry := info.GetEntryPoint()
		if entry == "" {
			entry = "."
		}
		args = append([]string{"-u", filepath.Join(dir, entry)}, req.GetArgs()...)
	}
	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return err
	}
	env := req.GetEnv()
	if venv, err := tc.VirtualEnvPath(ctx); err == nil && venv != "" {
		env = toolchain.ActivateVirtualEnv(env, venv)
	}
	cmd.Env = env
	cmd.Dir = req.GetPwd()
	cmd.Stdout, cmd.Stderr = stdout, stderr

	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return server.Send(&pulumirpc.RunPluginResponse{
				Output: &pulumirpc.RunPluginResponse_Exitcode{Exitcode: int32(exitErr.ExitCode())},
			})
		}
		return fmt.Errorf("problem executing plugin program: %w", err)
	}
	return closer.Close()
}

func (h *host) InstallDependencies(
	req *pulumirpc.InstallDependenciesRequest, server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	closer, stdout, stderr, err := rpcutil.MakeInstallDependenciesStreams(server, req.GetIsTerminal())
	if err != nil {
		return err
	}
	defer closer.Close()
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return err
	}
	dir := req.GetDirectory()
	if dir == "" {
		dir = req.GetInfo().GetProgramDirectory()
	}
	if err := tc.InstallDependencies(server.Context(), dir, req.GetUseLanguageVersionTools(),
		true /*showOutput*/, stdout, stderr); err != nil {
		return err
	}
	return closer.Close()
}

func (h *host) GetProgramDependencies(
	ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pkgs {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return resp, nil
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, err := resolveToolchain(req.GetInfo())
	if err != nil {
		return nil, err
	}
	about, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: about.PythonExecutable,
		Version:    about.PythonVersion.String(),
	}, nil
}
