"""Helpers of tests/lane_gke.py: the gke stack previewed by the real engine against no cluster.

- `engine_problems()`: what the gke preview needs of ENGINE_BIN (the CLI, the Python language host, the
  kubernetes and random providers; not docker or command, which the gke stack does not use).
- `offline_kubeconfig(port)`: a kubeconfig whose only cluster is https://127.0.0.1:<port>, a port nothing
  listens on. pulumi-kubernetes (provider/pkg/provider/provider.go, Configure) then fails to load the API
  server's schema and marks the cluster unreachable; in a preview its Check skips the OpenAPI validation
  and its Create returns the inputs as they are, so every object is previewed without a cluster.
- `pulumi(project, ...)`: `Project.pulumi` with extra environment (the lane's env drops PULUMI_* from
  ours): `streaming=True` sets PULUMI_ENABLE_STREAMING_JSON_PREVIEW, so `preview --json` prints the
  engine's events, one JSON object a line, policy events included (the default `--json` digest leaves
  every policy event out).
- `Preview.parse(stdout)`: those events as steps, per-resource policy summaries and violations.
- `pack_policies()`: every policy the pack declares, with its enforcement level.
- `write_crafted_program(dir)`: a one-Deployment program for the crafted violation.
"""

from __future__ import annotations

import json
import socket
import subprocess
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import lane as L

BINARIES = ("pulumi", "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-kubernetes",
            "pulumi-resource-random")
# The line pulumi-kubernetes logs (-v=3) when its gvkExists finds the cluster marked unreachable
# (provider.go gvkExists): the provider took its unreachable-cluster path.
UNREACHABLE_LOG = "gvkExists check failed due to unreachable cluster"
SECRET_SIG, SECRET_VALUE = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"


def engine_problems() -> list[str]:
    problems = [f"{L.ENGINE_BIN / b} is missing (tools/engine/build.sh builds it)"
                for b in BINARIES if not (L.ENGINE_BIN / b).is_file()]
    random = L.ENGINE_BIN / "pulumi-resource-random"
    if random.is_file():
        try:
            out = subprocess.run([str(random), "-version"], capture_output=True, text=True, timeout=30)
            have = out.stdout.strip().lstrip("v")
            if out.returncode == 0 and have != L.pinned("pulumi-random"):
                problems.append(f"{random} reports version {have}, the SDK pins "
                                f"pulumi-random=={L.pinned('pulumi-random')}")
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{random} -version failed: {exc}")
    return problems


# ------------------------------------------------------------------ no cluster


def offline_kubeconfig(port: int) -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        clusters:
        - name: offline
          cluster:
            server: https://127.0.0.1:{port}
            insecure-skip-tls-verify: true
        contexts:
        - name: offline
          context: {{cluster: offline, user: offline, namespace: octollm}}
        current-context: offline
        users:
        - name: offline
          user: {{token: offline-preview}}
        """)


def refused(port: int) -> bool:
    """True when nothing accepts a connection on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False


# ------------------------------------------------------------------ the CLI


def pulumi(project: L.Project, *args: str, env: dict[str, str] | None = None, streaming: bool = False,
           cwd: Path | None = None, timeout: float = 900, input: str | None = None) -> L.Step:
    cmd = ["pulumi", *args, "--non-interactive"]
    full = {**project.env(), **(env or {})}
    if streaming:
        full["PULUMI_ENABLE_STREAMING_JSON_PREVIEW"] = "1"
    t0 = time.monotonic()
    try:
        r = subprocess.run(cmd, cwd=cwd or project.dir, env=full, capture_output=True, text=True,
                           timeout=timeout, input=input)
        step = L.Step(cmd, r.returncode, r.stdout, r.stderr, time.monotonic() - t0)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        step = L.Step(cmd, -1, out, f"timed out after {timeout}s", time.monotonic() - t0)
    project.log.append(step)
    return step


# ------------------------------------------------------------------ reading the event stream


def engine_urn(mock_urn: str) -> str:
    """The URN the engine gives a resource the mock engine registered. Pulumi's mocks
    (pulumi.runtime.mocks) put the root stack's type into its children's type chain
    (`pulumi:pulumi:Stack$octollm:index:DataServices`); the engine leaves the root stack out."""
    return mock_urn.replace("::pulumi:pulumi:Stack$", "::", 1)


def urn_type(urn: str) -> str:
    """The resource's own type (the last of the `parent$child` chain)."""
    return urn.split("::")[-2].rsplit("$", 1)[-1]


@dataclass
class Preview:
    steps: dict[str, str] = field(default_factory=dict)  # urn -> op
    inputs: dict[str, dict] = field(default_factory=dict)  # urn -> new inputs (secrets wrapped)
    analyzed: dict[str, dict] = field(default_factory=dict)  # urn -> {"passed": [...], "failed": [...]}
    remediated: dict[str, dict] = field(default_factory=dict)
    violations: list[dict] = field(default_factory=list)  # policyEvent payloads
    diagnostics: list[dict] = field(default_factory=list)  # warnings and errors (no debug)
    packs: set[str] = field(default_factory=set)
    summary: dict | None = None

    @classmethod
    def parse(cls, stdout: str) -> "Preview":
        p = cls()
        for line in stdout.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                e = json.loads(line)
            except ValueError:
                continue
            if "resourcePreEvent" in e:
                m = e["resourcePreEvent"]["metadata"]
                p.steps[m["urn"]] = m["op"]
                p.inputs[m["urn"]] = (m.get("new") or {}).get("inputs") or {}
            for key, into in (("policyAnalyzeSummaryEvent", p.analyzed), ("policyRemediateSummaryEvent", p.remediated)):
                if key in e:
                    s = e[key]
                    p.packs.add(s.get("policyPackName", ""))
                    got = into.setdefault(s["resourceUrn"], {"passed": [], "failed": []})
                    got["passed"] += s.get("passed") or []
                    got["failed"] += s.get("failed") or []
            if "policyEvent" in e:
                p.violations.append(e["policyEvent"])
            if "diagnosticEvent" in e and e["diagnosticEvent"].get("severity") in ("warning", "error"):
                p.diagnostics.append(e["diagnosticEvent"])
            if "summaryEvent" in e:
                p.summary = e["summaryEvent"]
        return p

    def resources(self) -> set[str]:
        """Every resource the preview steps through, except the stack itself."""
        return {u for u in self.steps if urn_type(u) != "pulumi:pulumi:Stack"}


def is_secret(v) -> bool:
    """A value the engine's event stream shows as secret."""
    return isinstance(v, dict) and v.get(SECRET_SIG) == SECRET_VALUE


# ------------------------------------------------------------------ the pack


_PACK_POLICIES = """
import json, runpy, sys
import pulumi_policy
built = {}
pulumi_policy.PolicyPack = lambda **kw: built.update(kw)
sys.path.insert(0, sys.argv[1])
runpy.run_path(sys.argv[1] + "/__main__.py", run_name="__main__")
print(json.dumps({"name": built["name"],
                  "policies": {p.name: p.enforcement_level.value for p in built["policies"]}}))
"""


def pack_policies(pack: Path = L.ROOT / "policy") -> tuple[str, dict[str, str]]:
    """(pack name, {policy name: enforcement level}) as policy/__main__.py builds them."""
    r = subprocess.run([str(L.ROOT / ".venv" / "bin" / "python"), "-c", _PACK_POLICIES, str(pack)],
                       capture_output=True, text=True, timeout=120, cwd=pack)
    if r.returncode != 0:
        raise AssertionError(f"the policy pack does not load: {r.stderr[-2000:]}")
    doc = json.loads(r.stdout)
    return doc["name"], doc["policies"]


# ------------------------------------------------------------------ the crafted violation

CRAFTED_NAME = "crafted-host-network"

_CRAFTED = '''\
"""One Deployment that passes every policy of the pack, unless config `hostNetwork` is true."""

import pulumi
import pulumi_kubernetes as k8s

cfg = pulumi.Config()
provider = k8s.Provider("offline", kubeconfig=cfg.require_secret("kubeconfig"), namespace="octollm")
probe = {"httpGet": {"path": "/health", "port": 8080}, "periodSeconds": 10}
pod = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001},
    "containers": [{
        "name": "app", "image": "ghcr.io/octollm/orchestrator:0.1.0",
        "ports": [{"containerPort": 8080}],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"},
                      "limits": {"cpu": "100m", "memory": "128Mi"}},
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
        "readinessProbe": probe, "livenessProbe": probe,
    }],
}
if cfg.get_bool("hostNetwork"):
    pod["hostNetwork"] = True
labels = {"app.kubernetes.io/name": "crafted"}
k8s.apps.v1.Deployment(
    "%s",
    metadata={"name": "crafted", "namespace": "octollm", "labels": labels},
    spec={"replicas": 1, "selector": {"matchLabels": labels},
          "template": {"metadata": {"labels": labels}, "spec": pod}},
    opts=pulumi.ResourceOptions(provider=provider))
''' % CRAFTED_NAME


def write_crafted_program(directory: Path) -> Path:
    """A project of its own (Pulumi.yaml, __main__.py, .venv linked to the repository's)."""
    directory.mkdir(parents=True)
    (directory / "Pulumi.yaml").write_text(
        "name: octollm-policy-crafted\n"
        "description: one object for the policy pack to refuse\n"
        "runtime:\n  name: python\n  options:\n    toolchain: pip\n    virtualenv: .venv\n")
    (directory / "__main__.py").write_text(_CRAFTED)
    (directory / ".venv").symlink_to(L.ROOT / ".venv")
    return directory
