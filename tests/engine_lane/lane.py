"""Drive the real Pulumi CLI over a scratch copy of the project (a ProgramTest, in Python).

`Project.copy()` copies the repository's files (tracked, plus new ones not ignored) into a scratch
directory, links `.venv` (Pulumi.yaml's virtualenv) and the policy pack's `venv` to the repository's
virtualenv (it holds the pinned pulumi and pulumi-policy), and gives the CLI its own PULUMI_HOME,
a file backend and a passphrase there, so no state of the working tree is read or written.
Plugins are never downloaded: automatic acquisition is off and the providers come from ENGINE_BIN
on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "octollm-infra"
ENGINE_BIN = Path(os.environ.get("OCTOLLM_ENGINE_BIN", ROOT / "build" / "engine" / "bin"))
# Same as components.platforms.docker_host.PARALLEL, the Makefile's PARALLEL and the workflows' --parallel.
PARALLEL = "8"
# What the program needs of the engine: the CLI, the Python language host, and its providers.
ENGINE_BINARIES = ("pulumi", "pulumi-language-python", "pulumi-resource-docker", "pulumi-resource-random",
                   "pulumi-resource-command")
PROVIDER_PINS = {"pulumi-resource-docker": "pulumi-docker", "pulumi-resource-random": "pulumi-random",
                 "pulumi-resource-command": "pulumi-command"}


def pinned(dist: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(rf"^{re.escape(dist)}==([^\s;#]+)", line)
        if m:
            return m.group(1)
    raise LookupError(f"requirements.txt does not pin {dist}")


def engine_problems() -> list[str]:
    """Why the engine in ENGINE_BIN cannot run the program (missing binaries, provider versions)."""
    problems = []
    for name in ENGINE_BINARIES:
        if not (ENGINE_BIN / name).is_file():
            problems.append(f"{ENGINE_BIN / name} is missing (tools/engine/build.sh builds it)")
    for binary, dist in PROVIDER_PINS.items():
        path = ENGINE_BIN / binary
        if not path.is_file():
            continue
        # A plugin found on PATH is used whatever its version; the SDK asks for the pinned one.
        try:
            out = subprocess.run([str(path), "-version"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            problems.append(f"{path} -version failed: {exc}")
            continue
        # The bridged providers and our command provider (tools/engine/providers/command) print their
        # version; a provider without such a flag reports it to the engine only (GetPluginInfo).
        text = out.stdout.strip()
        have = text.lstrip("v") if out.returncode == 0 and re.fullmatch(r"v?\d+\.\d+\.\d+\S*", text) else None
        if have is not None and have != pinned(dist):
            problems.append(f"{binary} reports version {have}, the program's SDK pins {dist}=={pinned(dist)}")
    return problems


def project_files(root: Path = ROOT) -> list[str]:
    """The repository's files: tracked ones present in the work tree, and new ones git does not ignore."""
    out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout.decode()
    return sorted({f for f in out.split("\0") if f and (root / f).is_file()})


@dataclass
class Step:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return (self.stdout + "\n" + self.stderr).strip()

    def json(self) -> dict:
        return json.loads(self.stdout)


@dataclass
class Project:
    dir: Path
    home: Path
    state: Path
    passphrase: str = "engine-lane"
    log: list[Step] = field(default_factory=list)
    # Set over the environment the CLI inherits: SSH_AUTH_SOCK, the agent the remote commands log in through.
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def copy(cls, scratch: Path) -> "Project":
        proj = scratch / "project"
        proj.mkdir(parents=True)
        for rel in project_files():
            dest = proj / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest)
        venv = ROOT / ".venv"
        (proj / ".venv").symlink_to(venv)
        (proj / "policy" / "venv").symlink_to(venv)
        home, state = scratch / "pulumi-home", scratch / "state"
        home.mkdir()
        state.mkdir()
        return cls(proj, home, state)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
        env.update({
            "PATH": f"{ENGINE_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
            "PULUMI_HOME": str(self.home),
            "PULUMI_SKIP_UPDATE_CHECK": "1",
            "PULUMI_BACKEND_URL": f"file://{self.state}",
            "PULUMI_CONFIG_PASSPHRASE": self.passphrase,
            # Never download a plugin: a missing or mismatched one is an error to report.
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            # `pulumi up --plan` is an experimental flag.
            "PULUMI_EXPERIMENTAL": "true",
            "PULUMI_COPILOT": "false",
        })
        env.update(self.extra_env)
        return env

    def pulumi(self, *args: str, timeout: float = 900, input: str | None = None) -> Step:
        cmd = ["pulumi", *args, "--non-interactive"]
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, cwd=self.dir, env=self.env(), capture_output=True, text=True,
                               timeout=timeout, input=input)
            step = Step(cmd, r.returncode, r.stdout, r.stderr, time.monotonic() - t0)
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            step = Step(cmd, -1, out, f"timed out after {timeout}s", time.monotonic() - t0)
        self.log.append(step)
        return step

    # ------------------------------------------------------------------ stack files

    def stack_file(self, stack: str) -> Path:
        return self.dir / f"Pulumi.{stack}.yaml"

    def read_config(self, stack: str) -> dict:
        doc = yaml.safe_load(self.stack_file(stack).read_text()) or {}
        return {k.partition(":")[2]: v for k, v in (doc.get("config") or {}).items()
                if k.startswith(PROJECT + ":")}

    def write_config(self, stack: str, config: dict) -> None:
        """Replace the stack's `octollm-infra:` keys (keeping encryptionsalt and other namespaces)."""
        path = self.stack_file(stack)
        doc = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
        other = {k: v for k, v in (doc.get("config") or {}).items() if not k.startswith(PROJECT + ":")}
        doc["config"] = {**other, **{f"{PROJECT}:{k}": v for k, v in config.items()}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def predict(self, stack: str, before: Path, after: Path) -> dict:
        """The mock engine's change set between two stack files (tests/test_change_sets.py's diff)."""
        r = subprocess.run([str(self.dir / ".venv" / "bin" / "python"), "tests/engine_lane/predict.py",
                            stack, str(before), str(after)], cwd=self.dir, capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(self.dir)}, timeout=300)
        if r.returncode != 0:
            raise AssertionError(f"prediction failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout)


# ------------------------------------------------------------------ reading a preview

CHANGE_OPS = {"create", "update", "replace", "create-replacement", "delete-replaced", "delete",
              "discard", "import", "import-replacement", "read-replacement"}


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def change_set(preview: dict) -> dict:
    """Resource names a `pulumi preview --json` would create, delete, and change (update/replace),
    and under "ops" each such resource's operation."""
    out: dict = {"added": set(), "removed": set(), "changed": set(), "ops": {}}
    for s in preview.get("steps") or []:
        op, name = s.get("op"), urn_name(s.get("urn", ""))
        if op in CHANGE_OPS:
            out["ops"][name] = op
        if op == "create":
            out["added"].add(name)
        elif op in ("delete", "discard"):
            out["removed"].add(name)
        elif op in CHANGE_OPS:
            out["changed"].add(name)
    return out


def _get(obj, path: str):
    """A value at a detailedDiff path such as `healthcheck.interval`, `ports[0].ip`, `envs[3]`."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if obj is None:
            return None
        if part.startswith("["):
            i = int(part[1:-1])
            obj = obj[i] if isinstance(obj, list) and i < len(obj) else None
        else:
            obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def describe_changes(preview: dict) -> list[str]:
    """One line per changed field: resource, operation, field, old value -> new value."""
    lines = []
    for s in preview.get("steps") or []:
        op = s.get("op")
        if op not in CHANGE_OPS:
            continue
        name, typ = urn_name(s.get("urn", "")), s.get("urn", "").split("::")[-2] if "::" in s.get("urn", "") else ""
        old_in = (s.get("oldState") or {}).get("inputs") or {}
        old_out = (s.get("oldState") or {}).get("outputs") or {}
        new = (s.get("newState") or {}).get("inputs") or {}
        diff = s.get("detailedDiff") or {}
        if not diff:
            keys = s.get("diffReasons") or s.get("replaceReasons") or []
            diff = {k: {"kind": "update"} for k in keys}
        if not diff:
            lines.append(f"{name} ({typ}): {op}")
            continue
        for path, d in sorted(diff.items()):
            kind = d.get("kind", "?")
            # inputDiff false: the provider compared its stored state (what it read back) with the inputs.
            was = _get(old_in, path) if d.get("inputDiff") else _get(old_out, path)
            where = "inputs" if d.get("inputDiff") else "state"
            lines.append(f"{name} ({typ}): {op}: {path} [{kind}] {where} {json.dumps(was)} -> "
                         f"program {json.dumps(_get(new, path))}")
    return lines
