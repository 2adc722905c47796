"""Run the real __main__.py against a real Pulumi.<stack>.yaml under Pulumi's mock engine.

`run_stack()` returns every registration the program made (type, name, inputs with secrets
marked, parent, provider, options, dependencies) and the stack's exported outputs. The tests and
the offline plan (`python -m tooling.plan`) both use it.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.stack import run_in_stack, run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "octollm-infra"
SECRET_SIG = rpc._special_sig_key
SECRET_VALUE = rpc._special_secret_sig


@dataclass
class Registration:
    type: str
    name: str
    urn: str
    parent: str
    provider: str
    protect: bool
    retain_on_delete: bool
    delete_before_replace: bool
    dependencies: list[str]
    inputs: dict  # secrets unwrapped
    raw: dict  # wire form: secrets wrapped in {SECRET_SIG: SECRET_VALUE, "value": …}
    ignore_changes: list[str]
    aliases: list[str] = field(default_factory=list)  # former names this resource is also known by
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)  # input -> URNs it came from

    def is_secret(self, key: str) -> bool:
        v = self.raw.get(key)
        return isinstance(v, dict) and v.get(SECRET_SIG) == SECRET_VALUE


@dataclass
class Result:
    stack: str
    registrations: list[Registration]
    outputs: dict
    raw_outputs: dict
    logs: list[tuple[str, str]] = field(default_factory=list)
    error: BaseException | None = None

    def of_type(self, t: str) -> list[Registration]:
        return [r for r in self.registrations if r.type == t]

    def by_name(self, name: str) -> Registration:
        found = [r for r in self.registrations if r.name == name]
        assert len(found) == 1, f"{name}: {len(found)} registrations"
        return found[0]

    def names(self) -> set[str]:
        return {r.name for r in self.registrations}

    def urn_of(self, name: str) -> str:
        return self.by_name(name).urn

    def name_of_urn(self, urn: str) -> str:
        return urn.rsplit("::", 1)[-1]

    def containers(self) -> dict[str, Registration]:
        return {r.inputs["name"]: r for r in self.of_type("docker:index/container:Container")}

    def fingerprint(self) -> str:
        """Byte-exact serialisation of everything registered. Registration order is not an input
        (the engine orders by dependencies), so rows are sorted by URN; list order inside inputs is kept."""
        rows = sorted([r.urn, r.type, r.parent, r.provider, r.protect, r.retain_on_delete,
                       r.delete_before_replace, sorted(r.dependencies), r.raw] for r in self.registrations)
        return json.dumps(rows, sort_keys=False)

    def plain_strings(self) -> list[str]:
        """Every string registered outside a secret wrapper (inputs of all resources, and outputs)."""
        out: list[str] = []
        for r in self.registrations:
            _plain_strings(r.raw, out)
        _plain_strings(self.raw_outputs, out)
        return out


class Mocks(pmocks.Mocks):
    def new_resource(self, args: pmocks.MockResourceArgs):
        state = dict(args.inputs)
        if args.typ == "docker:index/remoteImage:RemoteImage":
            state["imageId"] = f"{args.inputs['name']}@id"
        elif args.typ == "random:index/randomPassword:RandomPassword":
            rotation = (args.inputs.get("keepers") or {}).get("rotation")
            state["result"] = f"generated-{args.name}" + (f"-{rotation}" if rotation else "")
        elif args.typ.startswith("command:"):
            state.setdefault("stdout", "")
            state.setdefault("stderr", "")
        return f"{args.name}-id", state

    def call(self, args: pmocks.MockCallArgs):
        return {}


class RecordingMonitor(pmocks.MockMonitor):
    def __init__(self, mocks):
        super().__init__(mocks)
        self.registrations: list[Registration] = []
        self.outputs: dict[str, Any] = {}

    def RegisterResource(self, request):
        resp = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            raw = json_format.MessageToDict(request.object)
            inputs = pmocks.rpc.deserialize_properties(request.object)
            self.registrations.append(Registration(
                type=request.type, name=request.name, urn=resp.urn, parent=request.parent,
                provider=request.provider, protect=bool(request.protect),
                retain_on_delete=bool(request.retainOnDelete),
                delete_before_replace=bool(request.deleteBeforeReplace),
                dependencies=list(request.dependencies), inputs=unwrap(inputs), raw=raw,
                ignore_changes=list(request.ignoreChanges),
                aliases=sorted({a.spec.name for a in request.aliases if a.HasField("spec") and a.spec.name}
                               | {a.urn.rsplit("::", 1)[-1] for a in request.aliases if a.urn}
                               | {u.rsplit("::", 1)[-1] for u in request.aliasURNs}),
                property_dependencies={k: sorted(v.urns) for k, v in request.propertyDependencies.items()}))
        return resp

    def RegisterResourceOutputs(self, request):
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack":
            # set_mocks also finishes a placeholder root stack with no outputs; its RPC can land
            # after the program's, so merge rather than overwrite.
            self.outputs.update(json_format.MessageToDict(request.outputs))
        return super().RegisterResourceOutputs(request)


def _plain_strings(v, out: list[str]) -> None:
    if isinstance(v, dict):
        if v.get(SECRET_SIG) == SECRET_VALUE:
            return
        for x in v.values():
            _plain_strings(x, out)
    elif isinstance(v, list):
        for x in v:
            _plain_strings(x, out)
    elif isinstance(v, str):
        # provider inputs travel JSON-encoded
        if v[:1] in "[{":
            try:
                _plain_strings(json.loads(v), out)
                return
            except ValueError:
                pass
        out.append(v)


# An update (not a preview) of an SSH stack refuses to start without an agent; the mock engine runs no
# command, so a path nothing listens on stands in for one.
MOCK_SSH_AGENT = "/nonexistent/octollm-mock-ssh-agent.sock"

STAND_IN_KEYS = ("octollm_unraid", "id_ed25519", "homelab_ed25519")  # the identity files the stack files name


def stand_in_ssh_home(home: Path) -> str:
    """A HOME whose ~/.ssh holds private-key-shaped stand-ins for the identity files the stack files
    name (owner-only, as the program requires); their content is never used under the mock engine."""
    (home / ".ssh").mkdir(mode=0o700, exist_ok=True)
    for name in STAND_IN_KEYS:
        key = home / ".ssh" / name
        key.write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\n{name}\n-----END OPENSSH PRIVATE KEY-----\n")
        key.chmod(0o600)
    return str(home)


def unwrap(v):
    if isinstance(v, dict):
        if v.get(SECRET_SIG) == SECRET_VALUE:
            return unwrap(v.get("value"))
        return {k: unwrap(x) for k, x in v.items()}
    if isinstance(v, list):
        return [unwrap(x) for x in v]
    return v


def read_stack_file(path: Path) -> tuple[dict, list[str]]:
    """The `octollm-infra:` keys of a Pulumi.<stack>.yaml: plain values, and the names of the
    encrypted (`secure:`) ones, which cannot be read without the stack's secrets provider.

    (Self-contained on purpose: the offline plan copies this module into older revisions.)"""
    doc = yaml.safe_load(Path(path).read_text()) or {}
    plain, encrypted = {}, []
    for key, value in (doc.get("config") or {}).items():
        ns, _, k = key.partition(":")
        if ns != PROJECT or not k:
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            encrypted.append(k)
        else:
            plain[k] = value
    return plain, encrypted


def stack_config(stack: str, root: Path | None = None) -> dict:
    """The stack file's `octollm-infra:` keys, as the YAML gives them."""
    return read_stack_file((root or ROOT) / f"Pulumi.{stack}.yaml")[0]


def run_stack(stack: str, config: dict | None = None, secrets: dict | None = None,
              home: str | None = None, preview: bool = False, program: Path | None = None,
              project: str = PROJECT, ssh_agent: str | None = MOCK_SSH_AGENT) -> Result:
    """Run __main__.py with `config` (default: the stack file) plus `secrets` as secret config.

    program/project: another Pulumi program (an example) and the project its config keys belong to.
    ssh_agent: the SSH_AUTH_SOCK the program sees (None: unset); nothing dials it under the mock engine."""
    cfg = copy.deepcopy(stack_config(stack) if config is None and program is None else (config or {}))
    secrets = secrets or {}
    wire = {}
    for k, v in {**cfg, **secrets}.items():
        wire[f"{project}:{k}"] = v if isinstance(v, str) else json.dumps(v)
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pmocks.set_mocks(mocks, project=project, stack=stack, preview=preview, monitor=monitor)
    settings.set_root_resource(None)  # type: ignore[arg-type]
    secret_keys = [f"{project}:{k}" for k in secrets]
    pulumi.runtime.set_all_config(wire, secret_keys)
    logs: list[tuple[str, str]] = []
    error = None
    # The program reads its config as the language host hands it over: in the environment.
    saved_env = {k: os.environ.get(k) for k in ("HOME", "PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS", "SSH_AUTH_SOCK")}
    if ssh_agent is None:
        os.environ.pop("SSH_AUTH_SOCK", None)
    else:
        os.environ["SSH_AUTH_SOCK"] = ssh_agent
    os.environ["PULUMI_CONFIG"] = json.dumps(wire)
    os.environ["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(secret_keys)
    if home is not None:
        os.environ["HOME"] = home
    engine = settings.SETTINGS.engine
    orig_log = engine.Log

    def capture(req):
        logs.append((["debug", "info", "warning", "error"][req.severity], req.message))
        return orig_log(req)

    engine.Log = capture
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _sync_await(run_pulumi_func(lambda: run_in_stack(
                lambda: runpy.run_path(str(program or ROOT / "__main__.py"), run_name="__main__"))))
    except BaseException as exc:  # noqa: BLE001 - the test inspects it
        error = exc
    finally:
        engine.Log = orig_log
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return Result(stack, monitor.registrations, unwrap(monitor.outputs), monitor.outputs, logs, error)
