"""The real Pulumi engine over the real program: ProgramTest's sequence on `dev` and on `realtest`.

For each stack, from a scratch copy of the project (tests/engine_lane/lane.py): `pulumi stack init`,
config, `pulumi preview` (with the policy pack, and without), `pulumi up`, then the assertions that
only a real engine can make:

- a second preview changes nothing (`--expect-no-changes`): every input is stored by the providers in
  the form the program wrote it; a difference is printed field by field (old -> new);
- a refresh finds no drift (`refresh --preview-only --expect-no-changes`);
- one config knob (an image tag on dev, an added arm on realtest) previews exactly the resources the
  mock engine predicts for it (tests/test_change_sets.py's diff, tests/engine_lane/predict.py);
- `preview --save-plan` then `up --plan` applies that change, and nothing is left to change after it;
- `state unprotect --all` + `destroy` removes everything, and the protected data stays on disk.

Images come from a registry on 127.0.0.1 holding busybox stand-ins (tests/engine_lane/standin.py).
`dev` uses the local Docker socket; `realtest` is one SSH host: an sshd on 127.0.0.1 (key-only,
generated host key, pinned in the stack config) in front of the same dockerd, reached with the
program's own SSH options. pulumi runs there as `make up` runs it: under an ssh-agent holding the write
key, which the remote commands log in through (their inputs carry no key). A second, read-only key (the
preview credential of tools/host/preview-credential.sh, its proxy a haproxy on a local socket) then
previews the deployed stack and saves the plan that the write key applies: the inputs are the same, so
the preview shows no change and `up --plan` matches. Wall times and the SSH connections sshd accepted
are printed at the end.

Without dockerd, sshd, the registry, bash-static or a complete engine in build/engine/bin (or
OCTOLLM_ENGINE_BIN) these tests skip with the reason; with OCTOLLM_REQUIRE_REAL_HOST=1 (CI) they fail.
"""

from __future__ import annotations

import contextlib
import copy
import os
import pwd
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from components.config.catalog import IMAGES
from components.config.schema import load_stack_config
from components.platforms.docker_host import ssh_control_path
from engine_lane import lane as L
from engine_lane import standin
from loopback import start_sshd
from test_preview_credential import keygen, proxy, root_user, script  # noqa: F401 - proxy, root_user: fixtures
from test_real_host import dockerd, unavailable  # noqa: F401 - dockerd is a fixture

SUBNET = "172.31.250.0/24"
GATEWAY = "172.31.250.1"
TAG = "0.1.0"
# catalog.IMAGES keys of the monitoring stack the realtest estate deploys (as stand-ins).
MONITORING_IMAGES = ("prometheus", "grafana", "loki", "blackbox-exporter", "redis-exporter", "postgres-exporter",
                     "node-exporter", "cadvisor", "alloy")

# ------------------------------------------------------------------ what the lane measured

TIMINGS: list[tuple[str, str, float, str]] = []  # (stack, step, seconds, note)
LANE_START = time.monotonic()


def record(stack: str, step: str, seconds: float, note: str = "") -> None:
    TIMINGS.append((stack, step, seconds, note))


class _Report:
    """Prints the lane's timings in pytest's terminal summary (after every teardown, never captured)."""

    def pytest_terminal_summary(self, terminalreporter):
        tr = terminalreporter
        if not TIMINGS:
            return
        tr.write_sep("-", "engine lane: wall times (s); SSH connections the loopback sshd saw")
        for stack, step, seconds, note in TIMINGS:
            tr.write_line(f"  {stack:9} {step:48} {seconds:7.1f}  {note}")
        tr.write_line(f"  whole lane, from this module's import: {time.monotonic() - LANE_START:.1f}s")


@pytest.fixture(scope="session")
def lane_report(request):
    plugin = _Report()
    if not request.config.pluginmanager.is_registered(plugin):
        request.config.pluginmanager.register(plugin, "engine-lane-report")
    yield


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def engine():
    problems = L.engine_problems()
    if problems:
        unavailable("the Pulumi engine cannot run the program: " + "; ".join(problems))
    return L.ENGINE_BIN


@pytest.fixture(scope="session")
def registry(dockerd, tmp_path_factory, lane_report):
    t0 = time.monotonic()
    try:
        reg = standin.Registry(tmp_path_factory.mktemp("registry")).start()
    except standin.Unavailable as exc:
        unavailable(str(exc))
    pushed: list[str] = []

    def push(images: list[standin.Image]) -> None:
        t = time.monotonic()
        try:
            pushed.extend(standin.push(images, tar))
        except standin.Unavailable as exc:
            unavailable(str(exc))
        record("-", f"import + push {len(images)} stand-in images", time.monotonic() - t)

    try:
        tar = standin.rootfs_tar()
    except standin.Unavailable as exc:
        reg.stop()
        unavailable(str(exc))
    reg.push = push  # type: ignore[attr-defined]
    reg.pushed = pushed  # type: ignore[attr-defined]
    record("-", "registry start + stand-in rootfs", time.monotonic() - t0)
    yield reg
    reg.stop()
    for ref in pushed:  # kept locally by the provider (keep_locally) after destroy
        subprocess.run(["docker", "rmi", ref], capture_output=True)


@pytest.fixture(scope="session")
def lane_sshd(tmp_path_factory):
    """The loopback sshd of the real-host tests (tests/loopback.py), logging every connection (VERBOSE)."""
    try:
        s = start_sshd(tmp_path_factory.mktemp("lane-sshd"), extra_config="LogLevel VERBOSE\n")
    except RuntimeError as exc:
        unavailable(str(exc))
    yield {"port": s.port, "dir": s.dir, "host_key": s.host_key, "identity": s.identity, "user": s.user,
           "log": s.log}
    s.stop()


@dataclass
class Agent:
    proc: subprocess.Popen
    sock: str

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_agent(d: Path, key: Path) -> Agent:
    """A private ssh-agent (foreground, on a socket in d) holding `key`."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        unavailable("ssh-agent / ssh-add are not installed (Debian package openssh-client)")
    d.mkdir(parents=True, exist_ok=True)
    sock = d / "agent.sock"
    proc = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if sock.exists() or proc.poll() is not None:
            break
        time.sleep(0.05)
    add = subprocess.run(["ssh-add", "-q", str(key)], env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
                         capture_output=True, text=True, timeout=30)
    if add.returncode != 0:
        proc.terminate()
        unavailable(f"ssh-add {key} failed: {add.stderr.strip()}")
    return Agent(proc, str(sock))


def fingerprint(key: Path) -> str:
    return subprocess.run(["ssh-keygen", "-l", "-f", str(key)], capture_output=True, text=True,
                          check=True).stdout.split()[1]


@pytest.fixture(scope="session")
def write_agent(lane_sshd):
    """The agent `make up` would start: the stack's identity file (the write key) in it."""
    agent = start_agent(lane_sshd["dir"] / "write-agent", Path(lane_sshd["identity"]))
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def preview_credential(lane_sshd, proxy, root_user):
    """A second key on the lane's sshd, set up by tools/host/preview-credential.sh: forced onto the
    read-only proxy (GET and HEAD only) in front of the same dockerd; and an agent holding it."""
    d = lane_sshd["dir"]
    key = keygen(d / "preview_key")
    out = script("--no-proxy-container", "--user", root_user, "--socket-dir", str(proxy["dir"] / "sock"),
                 "--authorized-keys", str(d / "authorized_keys"), "--key", str(d / "preview_key.pub"))
    assert out.returncode == 0, out.stdout + out.stderr
    agent = start_agent(d / "preview-agent", key)
    yield {"key": key, "agent": agent.sock, "fingerprint": fingerprint(key),
           "write_fingerprint": fingerprint(Path(lane_sshd["identity"]))}
    agent.stop()


def close_shared_connection(lane: "Lane") -> None:
    """End the host's shared SSH connection (docker_host.ssh_control_path): a connection made with one
    key must not carry the calls made while the other is in use."""
    cfg, _ = load_stack_config(lane.project.read_config(lane.stack))
    path = ssh_control_path("box", cfg.hosts["box"]).replace("~", pwd.getpwuid(os.getuid()).pw_dir, 1)
    if os.path.exists(path):
        subprocess.run(["ssh", "-o", f"ControlPath={path}", "-O", "exit", "box"], capture_output=True, timeout=30)


@contextlib.contextmanager
def read_only_key(lane: "Lane", cred: dict):
    """As the preview workflow runs: the preview key at the identityFile path and alone in the agent."""
    identity = Path(lane.sshd["identity"])
    pub = identity.with_suffix(".pub")
    saved = identity.read_bytes(), pub.read_bytes(), lane.project.extra_env["SSH_AUTH_SOCK"]
    close_shared_connection(lane)
    identity.write_bytes(cred["key"].read_bytes())
    pub.write_bytes(cred["key"].with_suffix(".pub").read_bytes())
    lane.project.extra_env["SSH_AUTH_SOCK"] = cred["agent"]
    try:
        yield
    finally:
        close_shared_connection(lane)
        identity.write_bytes(saved[0])
        pub.write_bytes(saved[1])
        lane.project.extra_env["SSH_AUTH_SOCK"] = saved[2]


def accepted_keys(log: Path, since: int) -> set[str]:
    """Fingerprints of the keys sshd accepted a login with, after offset `since` of its log."""
    text = log.read_bytes()[since:].decode(errors="replace")
    return set(re.findall(r"Accepted publickey for \S+ from \S+ port \d+ ssh2: \S+ (SHA256:\S+)", text))


def ssh_counts(log: Path, since: int) -> tuple[int, int, int]:
    """(connections opened, publickey logins accepted, new log offset) in sshd's log after `since`."""
    if not log.exists():
        return 0, 0, since
    data = log.read_bytes()
    text = data[since:].decode(errors="replace")
    return text.count("Connection from "), text.count("Accepted publickey"), len(data)


# ------------------------------------------------------------------ the two stacks


@dataclass
class Lane:
    stack: str
    project: L.Project
    data_paths: list[Path]  # must exist after destroy (with what the services wrote there)
    data_files: list[Path]
    knob: Callable[[dict], None]  # changes one thing in the stack config
    knob_name: str
    sshd: dict | None = None
    up_ok: bool = False
    up_attempted: bool = False
    destroyed: bool = False

    def pulumi(self, *args: str, step: str | None = None, **kw) -> L.Step:
        offset = self.sshd["log"].stat().st_size if self.sshd and self.sshd["log"].exists() else 0
        r = self.project.pulumi(*args, "--stack", self.stack, **kw)
        if step:
            note = ""
            if self.sshd:
                opened, accepted, _ = ssh_counts(self.sshd["log"], offset)
                note = f"ssh: {opened} connections, {accepted} publickey logins"
            record(self.stack, step + ("" if r.returncode == 0 else f" (FAILED rc={r.returncode})"), r.seconds, note)
        return r

    def require_up(self):
        if not self.up_ok:
            pytest.fail(f"{self.stack}: the first `pulumi up` did not succeed, so this step cannot run")


def dev_config(project: L.Project, data: Path, images: dict[str, str]) -> None:
    """The dev stack as committed, with its data under the scratch directory and the stand-in image."""
    # The committed layout: appdataRoot /var/tmp/octollm-dev (absent on a fresh machine), the store in it.
    sets = [("hosts.local.appdataRoot", str(data)), ("modelStores.models.path", str(data / "ollama")),
            ("images.ollama", images["ollama"])]
    for key, value in sets:
        r = project.pulumi("config", "set", "--path", key, value, "--stack", "dev")
        assert r.returncode == 0, r.output


def realtest_config(sshd: dict, data: Path, registry: str, images: dict[str, str]) -> tuple[dict, int]:
    """One SSH host (the loopback sshd, host key pinned) with Ollama, the data services, OctoLLM (two
    arms) and the monitoring stack; and a free port for the arm the knob adds."""
    ports = iter(standin.stable_ports(16))
    host_ports = standin.stable_ports(2)
    limits = {"cpus": 0.5, "memoryGb": 0.5}
    return {
        "platform": "docker",
        "hosts": {"box": {
            "kind": "ssh", "address": "127.0.0.1", "publishAddress": "127.0.0.1",
            "ssh": {"user": sshd["user"], "port": sshd["port"], "identityFile": sshd["identity"],
                    "hostKey": sshd["host_key"]},
            "cpuThreads": 16, "memoryGb": 16, "appdataRoot": str(data / "appdata"),
            "dataOwner": f"{os.getuid()}:{os.getgid()}", "containerPrefix": "lane-",
            "networks": {"lane-net": {"subnet": SUBNET, "gateway": GATEWAY}},
            "exporters": {"nodeExporter": host_ports[0], "cadvisor": host_ports[1], "gpuExporter": "none"},
        }},
        "modelStores": {"models": {"host": "box", "path": str(data / "models")}},
        "inference": {"ollama": {
            "host": "box", "engine": "ollama", "network": "lane-net", "port": next(ports),
            "models": ["qwen2.5:0.5b"], "numParallel": 1, "limits": {"cpus": 1, "memoryGb": 1},
            "modelStore": "models"}},
        "dataServices": {
            "host": "box", "network": "lane-net",
            "postgres": {"port": next(ports), "database": "octollm", "user": "octollm", "limits": limits},
            "redis": {"port": next(ports), "limits": limits},
            "qdrant": {"httpPort": next(ports), "grpcPort": next(ports), "limits": limits}},
        "octollm": {
            "host": "box", "network": "lane-net", "imageRegistry": f"{registry}/octollm", "imageTag": TAG,
            "llmEndpoint": "ollama",
            "orchestrator": {"port": next(ports), "limits": limits},
            "reflex": {"port": next(ports), "limits": limits},
            "arms": {"planner": {"port": next(ports), "limits": limits},
                     "coder": {"port": next(ports), "limits": limits}}},
        "monitoring": {
            "host": "box", "network": "lane-net", "prometheusPort": next(ports), "grafanaPort": next(ports),
            "lokiPort": next(ports), "blackboxPort": next(ports), "retention": "1d",
            # node-exporter, cadvisor and Alloy: cadvisor bind-mounts /dev/disk, which a sandboxed
            # machine may lack (OCTOLLM_LANE_HOST_EXPORTERS=1 deploys them where it exists).
            "scrapeHosts": ["box"] if os.environ.get("OCTOLLM_LANE_HOST_EXPORTERS") == "1" else []},
        "images": {k: images[k] for k in MONITORING_IMAGES + ("ollama", "postgres", "redis", "qdrant")},
    }, next(ports)


@pytest.fixture(scope="module", params=["dev", "realtest"])
def lane(request, engine, registry, tmp_path_factory):
    stack = request.param
    scratch = tmp_path_factory.mktemp(f"lane-{stack}")
    reg = registry.address
    images = {k: standin.standin_ref(reg, IMAGES[k].ref)
              for k in ("ollama", "postgres", "redis", "qdrant", *MONITORING_IMAGES)}
    project = L.Project.copy(scratch)
    data = scratch / ("octollm-dev" if stack == "dev" else "data")
    sshd = None
    if stack == "dev":
        registry.push([standin.Image(images["ollama"], "ollama"),
                       standin.Image(standin.standin_ref(reg, "ollama/ollama:0.12.7"), "ollama", variant="2")])
        images = {"ollama": images["ollama"]}
        r = project.pulumi("stack", "init", "dev")
        assert r.returncode == 0, r.output
        dev_config(project, data, images)
        new_ollama = standin.standin_ref(reg, "ollama/ollama:0.12.7")

        def knob(cfg):
            cfg["images"]["ollama"] = new_ollama
        lane = Lane(stack, project, data_paths=[data / "ollama"],
                    data_files=[data / "ollama/models/manifests/registry.ollama.ai/library/qwen2.5/0.5b"],
                    knob=knob, knob_name="images.ollama: 0.12.6 -> 0.12.7")
    else:
        sshd = request.getfixturevalue("lane_sshd")
        data.mkdir()  # the pool the appdata root and the model store live on
        cfg, spare = realtest_config(sshd, data, reg, images)
        registry.push([standin.Image(images[k], *standin.ROLES[k]) for k in
                       ("postgres", "redis", "qdrant", *MONITORING_IMAGES)]
                      + [standin.Image(f"{reg}/octollm/{n}:{TAG}", "octollm")
                         for n in ("orchestrator", "reflex-layer", "arm-planner", "arm-coder", "arm-critic")]
                      + ([] if images["ollama"] in registry.pushed else [standin.Image(images["ollama"], "ollama")]))
        project.write_config(stack, cfg)
        project.extra_env["SSH_AUTH_SOCK"] = request.getfixturevalue("write_agent").sock
        r = project.pulumi("stack", "init", stack)
        assert r.returncode == 0, r.output

        def knob(c):
            c["octollm"]["arms"]["critic"] = {"port": spare, "limits": {"cpus": 0.5, "memoryGb": 0.5}}
        appdata = data / "appdata"
        lane = Lane(stack, project, data_paths=[appdata / d for d in ("postgres", "redis", "qdrant", "prometheus",
                                                                      "grafana", "loki")] + [data / "models"],
                    data_files=[appdata / "postgres/pgdata/PG_VERSION", appdata / "redis/appendonly.aof",
                                data / "models/models/manifests/registry.ollama.ai/library/qwen2.5/0.5b"],
                    knob=knob, knob_name="octollm.arms.critic added", sshd=sshd)
    yield lane
    if lane.up_attempted and not lane.destroyed:
        left = state_names(lane)
        lane.pulumi("state", "unprotect", "--all", "--yes")
        r = lane.pulumi("destroy", "--yes", "--parallel", L.PARALLEL, step="destroy (teardown)")
        if r.returncode != 0:
            print(r.output[-3000:])
        # What a failed destroy left on the daemon, by the names this scratch stack's state holds (and
        # nothing else: another deployment of `dev` on this daemon is not ours to remove).
        for kind, names in (("container", left["containers"]), ("network", left["networks"])):
            for n in names:
                subprocess.run(["docker", kind, "rm", *(["-f"] if kind == "container" else []), n],
                               capture_output=True)


def state_names(lane: Lane) -> dict[str, list[str]]:
    """Container and network names in the stack's state."""
    out: dict[str, list[str]] = {"containers": [], "networks": []}
    r = lane.pulumi("stack", "export")
    if r.returncode != 0:
        return out
    for res in (r.json().get("deployment") or {}).get("resources") or []:
        kind = {"docker:index/container:Container": "containers",
                "docker:index/network:Network": "networks"}.get(res.get("type"))
        name = (res.get("outputs") or {}).get("name")
        if kind and isinstance(name, str):
            out[kind].append(name)
    return out


def fail_with(step: L.Step, what: str, extra: str = "") -> None:
    # The engine repeats a failed command's whole script; the lines that say what went wrong come first.
    key = [ln.strip() for ln in step.output.splitlines()
           if re.search(r"error:|problem\(s\)|^\s+- |FAILED|Error", ln) and len(ln) < 400]
    pytest.fail(f"{what} (exit {step.returncode}, {step.seconds:.1f}s):\n{extra}\n--- key lines ---\n"
                + "\n".join(dict.fromkeys(key))[:4000] + f"\n--- output (tail) ---\n{step.output[-2500:]}")


# ------------------------------------------------------------------ the sequence


def test_preview_with_the_policy_pack(lane):
    r = lane.pulumi("preview", "--diff", "--policy-pack", "policy", "--parallel", L.PARALLEL,
                    step="preview --policy-pack policy")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: `pulumi preview --policy-pack policy` failed")
    # pulumi-policy skips (and reports as advisory) a policy that reads a value unknown during preview:
    # a mandatory check that did not run is not a pass.
    skipped = sorted(set(re.findall(r"can't run policy '([^']+)'", r.output)))
    assert not skipped, (f"{lane.stack}: {len(skipped)} policies did not run during the preview "
                         f"(a value they read is unknown until apply): {skipped}\n" + r.output[-3000:])


def test_first_up(lane):
    r = lane.pulumi("preview", "--diff", "--parallel", L.PARALLEL, step="preview")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: `pulumi preview` failed")
    lane.up_attempted = True
    r = lane.pulumi("up", "--yes", "--skip-preview", "--parallel", L.PARALLEL, step="first up")
    missing = list(dict.fromkeys(re.findall(
        r"- (\S+) does not exist \(is the pool or array that holds it mounted\?\)", r.output)))
    scratch = str(lane.project.dir.parent)
    if r.returncode != 0 and missing and all(m.startswith(scratch) for m in missing):
        # The preflight wants a directory that only this stack would create (on a fresh machine nothing
        # has made it yet). Report that, then create it as an operator would and go on with the lane.
        for m in missing:
            Path(m).mkdir(parents=True, exist_ok=True)
        again = lane.pulumi("up", "--yes", "--skip-preview", "--parallel", L.PARALLEL, step="first up (after mkdir)")
        lane.up_ok = again.returncode == 0
        fail_with(r, f"{lane.stack}: the first `pulumi up` on a fresh host stops in the preflight: it requires "
                     f"{missing} to exist before anything runs, yet they are directories the stack itself creates "
                     f"(the appdata root, which holds the model store); after mkdir the retry "
                     f"{'succeeded' if lane.up_ok else 'failed too'}")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: the first `pulumi up` failed")
    lane.up_ok = True
    running = state_names(lane)["containers"]
    assert running, f"{lane.stack}: no container in the state after up"
    for name in running:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Status}}", name],
                               capture_output=True, text=True).stdout.strip()
        assert state == "running", f"{name} is {state}"


def test_the_policy_pack_passes_on_the_deployed_stack(lane):
    """With every value known (images pulled, ids in the state), every policy runs and none is violated."""
    lane.require_up()
    r = lane.pulumi("preview", "--policy-pack", "policy", "--parallel", L.PARALLEL,
                    step="preview --policy-pack policy (deployed)")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: `pulumi preview --policy-pack policy` fails on the deployed stack")
    skipped = sorted(set(re.findall(r"can't run policy '([^']+)'", r.output)))
    mandatory = sorted(set(re.findall(r"\[mandatory\]\s+(\S+)", r.output)))
    assert not skipped and not mandatory, (f"{lane.stack}: policies skipped {skipped}, mandatory violations "
                                           f"{mandatory}\n" + r.output[-3000:])


def test_a_second_preview_changes_nothing(lane):
    lane.require_up()
    r = lane.pulumi("preview", "--expect-no-changes", "--diff", "--parallel", L.PARALLEL,
                    step="preview --expect-no-changes")
    if r.returncode != 0:
        j = lane.pulumi("preview", "--json", "--parallel", L.PARALLEL)
        try:
            lines = L.describe_changes(j.json())
        except ValueError:
            lines = [j.output[-3000:]]
        fail_with(r, f"{lane.stack}: a second preview after `up` proposes changes; field by field:",
                  "\n".join(lines))


def test_refresh_finds_no_drift(lane):
    lane.require_up()
    r = lane.pulumi("refresh", "--preview-only", "--expect-no-changes", "--diff", "--parallel", L.PARALLEL,
                    step="refresh --preview-only --expect-no-changes")
    if r.returncode != 0:
        j = lane.pulumi("refresh", "--preview-only", "--json", "--parallel", L.PARALLEL)
        try:
            lines = L.describe_changes(j.json())
        except ValueError:
            lines = [j.output[-3000:]]
        fail_with(r, f"{lane.stack}: refresh finds a difference between the state and the host:", "\n".join(lines))


def test_a_preview_with_the_read_only_key_changes_nothing_after_an_up_with_the_write_key(lane, request):
    """The key is no input of a remote command: the preview credential previews the estate the write key
    deployed without an update of any command. With --refresh, as the drift workflow runs it: a plain
    preview compares with the state and opens no SSH connection, a refresh reads the host, so the
    login shows that the preview key (and only it) was in use."""
    if lane.sshd is None:
        pytest.skip("the dev stack has no SSH host")
    lane.require_up()
    cred = request.getfixturevalue("preview_credential")
    since = lane.sshd["log"].stat().st_size
    with read_only_key(lane, cred):
        r = lane.pulumi("preview", "--refresh", "--json", "--parallel", L.PARALLEL,
                        step="preview --refresh --json (read-only key)")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: a preview with the read-only preview key failed")
    changes = L.change_set(r.json())["ops"]
    assert not changes, (f"{lane.stack}: with the preview key the preview proposes {sorted(changes.items())}\n"
                         + "\n".join(L.describe_changes(r.json())))
    accepted = accepted_keys(lane.sshd["log"], since)
    assert accepted == {cred["fingerprint"]}, (f"the preview logged in with {accepted}, not only the preview key "
                                               f"{cred['fingerprint']} (write key: {cred['write_fingerprint']})")


def test_one_knob_previews_exactly_the_predicted_change_set(lane):
    lane.require_up()
    # What a preview proposes before the knob: nothing, unless the second-preview test failed (then
    # those changes are reported there, and only what the knob adds to them is compared here).
    base = lane.pulumi("preview", "--json", "--parallel", L.PARALLEL)
    if base.returncode != 0:
        fail_with(base, f"{lane.stack}: preview before the knob failed")
    baseline = L.change_set(base.json())
    before = lane.project.dir / f"before-{lane.stack}.yaml"
    shutil.copy(lane.project.stack_file(lane.stack), before)
    cfg = copy.deepcopy(lane.project.read_config(lane.stack))
    lane.knob(cfg)
    lane.project.write_config(lane.stack, cfg)
    predicted = lane.project.predict(lane.stack, before, lane.project.stack_file(lane.stack))
    r = lane.pulumi("preview", "--json", "--parallel", L.PARALLEL, step=f"preview --json ({lane.knob_name})")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: preview of {lane.knob_name} failed")
    seen = L.change_set(r.json())
    # A resource the baseline already changes counts only when the knob changes what happens to it.
    real = {k: {n for n in seen[k] if baseline["ops"].get(n) != seen["ops"][n]} for k in ("added", "removed", "changed")}
    want = {k: set(v) for k, v in predicted.items()}
    note = (f"  (without the knob the preview already proposes: {sorted(baseline['ops'].items())})\n"
            if baseline["ops"] else "")
    assert real == want, (f"{lane.stack}: {lane.knob_name}: the real preview and the mock engine disagree\n"
                          f"  real:      {sorted(real.items())}\n  predicted: {sorted(want.items())}\n{note}"
                          + "\n".join(L.describe_changes(r.json())))


def test_a_saved_plan_applies_the_change_and_nothing_is_left(lane, request):
    """As the deploy workflow: on the SSH host the plan is saved with the read-only key and applied with the
    write key; the plan matches because no key is among the inputs."""
    lane.require_up()
    plan = lane.project.dir / f"plan-{lane.stack}.json"
    keys = read_only_key(lane, request.getfixturevalue("preview_credential")) if lane.sshd else contextlib.nullcontext()
    with keys:
        r = lane.pulumi("preview", "--save-plan", str(plan), "--parallel", L.PARALLEL,
                        step="preview --save-plan" + (" (read-only key)" if lane.sshd else ""))
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: `pulumi preview --save-plan` failed")
    r = lane.pulumi("up", "--plan", str(plan), "--yes", "--skip-preview", "--parallel", L.PARALLEL,
                    step=f"up --plan ({lane.knob_name})")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: `pulumi up --plan` did not apply the saved plan")
    r = lane.pulumi("preview", "--expect-no-changes", "--parallel", L.PARALLEL,
                    step="preview --expect-no-changes (after plan)")
    if r.returncode != 0:
        j = lane.pulumi("preview", "--json", "--parallel", L.PARALLEL)
        fail_with(r, f"{lane.stack}: after `up --plan` a preview still proposes changes:",
                  "\n".join(L.describe_changes(j.json())))


def test_destroy_removes_everything_and_keeps_the_data(lane):
    lane.require_up()
    deployed = state_names(lane)
    r = lane.pulumi("state", "unprotect", "--all", "--yes")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: `pulumi state unprotect --all` failed")
    r = lane.pulumi("destroy", "--yes", "--parallel", L.PARALLEL, step="destroy")
    if r.returncode != 0:
        fail_with(r, f"{lane.stack}: `pulumi destroy` failed")
    lane.destroyed = True
    on_daemon = {k: set(subprocess.run(["docker", k[:-1], "ls", *(["-a"] if k == "containers" else []),
                                        "--format", "{{.Names}}" if k == "containers" else "{{.Name}}"],
                                       capture_output=True, text=True).stdout.split()) for k in deployed}
    left = {k: sorted(set(v) & on_daemon[k]) for k, v in deployed.items()}
    assert left == {"containers": [], "networks": []}, f"{lane.stack}: left after destroy: {left}"
    missing = [str(p) for p in lane.data_paths + lane.data_files if not p.exists()]
    assert not missing, f"{lane.stack}: destroy removed protected data: {missing}"
