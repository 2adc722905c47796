"""doctor: run each host's preflight directly over SSH, without Pulumi, and print a table.

    python -m tooling.doctor -s homelab          # reads Pulumi.homelab.yaml
    python -m tooling.doctor --file my-stack.yaml --hosts server80

For every host it checks (1) that the Docker API answers through `ssh … docker system dial-stdio`
with exactly the SSH options the docker provider is given (verified host key included), and (2) the
same read-only preflight script `pulumi up` runs there first. With --api-only (the preview key's
check) it also asks the API for a change it must refuse, and reports whether the key is read-only.
Exit status 1 when anything fails, 2 when the stack's config is invalid, 3 when --api-only finds that
the key it was given can change a host (the Docker engine itself answered a POST).

    python -m tooling.doctor -s homelab --identity-files   # the identity files, one a line (for ssh-add)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from components.config.loading import identity_files
from components.config.schema import ConfigError, HostConfig, StackConfig, load_stack_config
from components.platforms.docker_host import docker_dial_command, docker_ssh_opts, ensure_ssh_control_dir, ssh_control_path_problem
from .mock_engine import read_stack_file
from components.config.inventory import preflight_spec
from components.host_scripts import preflight



@dataclass
class HostReport:
    host: str
    api: str = "-"
    api_ok: bool = False
    preflight_ok: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    preflight_skipped: bool = False
    read_only: bool | None = None  # --api-only on an SSH host: whether the API refused a change

    @property
    def ok(self) -> bool:
        return self.api_ok and self.preflight_ok and self.read_only is not False


def ssh_command(name: str, host: HostConfig, remote: list[str]) -> list[str]:
    """ssh with the docker provider's options (so it shares the provider's connection to the host)."""
    assert host.ssh is not None
    return ["ssh", *docker_ssh_opts(name, host), "-T", "-l", host.ssh.user, "-p", str(host.ssh.port),
            "--", host.address, *remote]


def check_api(name: str, host: HostConfig, timeout: int) -> tuple[bool, str]:
    """GET /_ping through the same transport pulumi-docker uses."""
    request = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"
    if host.kind == "local":
        cmd = ["docker", "system", "dial-stdio"]
    else:
        cmd = docker_dial_command(name, host)
    try:
        out = subprocess.run(cmd, input=request, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"no answer within {timeout}s"
    except FileNotFoundError as exc:
        return False, f"{exc.filename} is not installed here"
    head = out.stdout.split(b"\r\n", 1)[0].decode(errors="replace")
    if out.stdout.startswith(b"HTTP/1.") and b" 200 " in head.encode():
        version = next((line.split(b":", 1)[1].strip().decode() for line in out.stdout.split(b"\r\n")
                        if line.lower().startswith(b"api-version:")), "?")
        return True, f"ok (API {version})"
    err = out.stderr.decode(errors="replace").strip().splitlines()
    return False, (err[-1] if err else head or f"exit status {out.returncode}")


# The marker of the read-only proxy's refusals (tools/host/preview-credential.sh, REFUSAL).
PROXY_REFUSAL = b"refused by the octollm read-only Docker proxy"
# A container name the engine cannot hold (a name starts with [a-zA-Z0-9]) nor read as an ID prefix (not
# hex): an engine that is reached with this POST answers 404 and changes nothing.
READ_ONLY_PROBE = "_octollm-doctor-read-only-probe"


def check_read_only(name: str, host: HostConfig, timeout: int) -> tuple[bool | None, str]:
    """(True, …) when the API refuses a POST with the read-only proxy's 403, (False, …) when the engine
    answers it itself (the key can change the host), (None, why) when there was no answer."""
    request = (f"POST /containers/{READ_ONLY_PROBE}/kill HTTP/1.0\r\nHost: docker\r\n"
               "Content-Length: 0\r\n\r\n").encode()
    try:
        out = subprocess.run(docker_dial_command(name, host), input=request, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"no answer within {timeout}s"
    except FileNotFoundError as exc:
        return None, f"{exc.filename} is not installed here"
    head = out.stdout.split(b"\r\n", 1)[0].decode(errors="replace")
    if not out.stdout.startswith(b"HTTP/1."):
        err = out.stderr.decode(errors="replace").strip().splitlines()
        return None, err[-1] if err else f"exit status {out.returncode}"
    if head.split()[1:2] == ["403"] and PROXY_REFUSAL in out.stdout:
        return True, "yes"
    return False, (f"NO: the Docker engine itself answered a POST ({head}); this key can change the host. "
                   "A preview key must log in through the proxy of tools/host/preview-credential.sh")


def run_preflight(name: str, host: HostConfig, script: str, timeout: int) -> tuple[bool, list[str], list[str]]:
    cmd = ["bash", "-s"] if host.kind == "local" else ssh_command(name, host, ["bash", "-s"])
    try:
        out = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, [f"preflight did not finish within {timeout}s"], []
    warnings = [l.split(": ", 2)[-1] for l in out.stdout.splitlines() if l.startswith("warning: ")]
    if out.returncode == 0:
        return True, [], warnings
    problems = [l[4:] for l in out.stderr.splitlines() if l.startswith("  - ")]
    return False, problems or [out.stderr.strip() or f"exit status {out.returncode}"], warnings


def diagnose(cfg: StackConfig, stack: str, hosts: list[str] | None = None, timeout: int = 120,
             api_only: bool = False) -> list[HostReport]:
    reports = []
    for name, host in sorted(cfg.hosts.items()):
        if hosts and name not in hosts:
            continue
        r = HostReport(name)
        if host.kind == "ssh":
            ensure_ssh_control_dir()  # where ssh puts the shared connection's socket
            problem = ssh_control_path_problem(name, host)
            if problem:  # ssh would exit at once, for doctor and the docker provider alike
                r.api, r.problems = "cannot start ssh", [problem]
                reports.append(r)
                continue
        r.api_ok, r.api = check_api(name, host, timeout=min(timeout, 30))
        if api_only:
            r.preflight_ok, r.preflight_skipped = r.api_ok, True
            if r.api_ok and host.kind == "ssh":
                r.read_only, detail = check_read_only(name, host, timeout=min(timeout, 30))
                if r.read_only is not True:
                    r.problems.append(f"read-only: {detail}")
        elif r.api_ok or host.kind == "local":
            r.preflight_ok, r.problems, r.warnings = run_preflight(
                name, host, preflight(preflight_spec(cfg, name, stack)), timeout)
        else:
            r.problems = ["preflight not run: the host cannot be reached"]
        reports.append(r)
    return reports


def render(reports: list[HostReport]) -> str:
    width = max([len(r.host) for r in reports] + [4])
    lines = [f"{'HOST':<{width}}  {'DOCKER API OVER SSH':<28}  PREFLIGHT"]
    for r in reports:
        pre = "not run (--api-only)" if r.preflight_skipped else "ok" if r.preflight_ok else f"FAILED ({len(r.problems)})"
        if r.read_only is not None:
            pre += f"  read-only: {'yes' if r.read_only else 'NO'}"
        lines.append(f"{r.host:<{width}}  {r.api[:28]:<28}  {pre}")
        for p in r.problems:
            lines.append(f"{'':<{width}}    - {p}")
        for w in r.warnings:
            lines.append(f"{'':<{width}}    ! {w}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tooling.doctor", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", default=None)
    ap.add_argument("--file", type=Path, default=None, help="a Pulumi.<stack>.yaml (default: from -s)")
    ap.add_argument("--hosts", nargs="*", default=None)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--api-only", action="store_true",
                    help="check the Docker API only: what the read-only preview key allows (its forced "
                         "command runs no preflight script); fails unless the API refuses a change")
    ap.add_argument("--identity-files", action="store_true",
                    help="print the stack's SSH identity files, one a line, and check nothing (what "
                         "`make up` loads into its ssh-agent)")
    a = ap.parse_args(argv)
    if a.file is None and a.stack is None:
        ap.error("give -s STACK or --file")
    path = a.file or Path(f"Pulumi.{a.stack}.yaml")
    stack = a.stack or path.stem.split(".", 1)[-1]
    try:
        # Secrets are not needed to check hosts (and are encrypted in the file anyway).
        cfg, _ = load_stack_config(read_stack_file(path)[0])
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return 2
    if a.identity_files:
        for path in identity_files(cfg):
            print(path)
        return 0
    if cfg.platform == "kubernetes":
        from . import preflight_kubernetes  # the cluster's checks: its API server, the namespace, GPU nodes

        return preflight_kubernetes.run(path, stack, timeout=min(a.timeout, 30), api_only=a.api_only)
    if cfg.platform != "docker":
        print(f"stack {stack!r} has no Docker hosts to check", file=sys.stderr)
        return 2
    reports = diagnose(cfg, stack, a.hosts, a.timeout, api_only=a.api_only)
    print(render(reports))
    if any(r.read_only is False for r in reports):
        return 3
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
