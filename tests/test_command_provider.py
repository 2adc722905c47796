"""Our pulumi-resource-command (tools/engine/providers/command) driven by the real Pulumi engine.

A scratch project with the pinned pulumi-command Python SDK registers command.local.Command and
command.remote.Command resources described by its `spec` config; the CLI, our Python language host
and our command provider come from build/engine/bin (or OCTOLLM_ENGINE_BIN). Checked here:

- a local command's create, a no-change preview, an update (update runs, with the previous stdout in
  PULUMI_COMMAND_STDOUT), a trigger change (a replace: create of the new one, then delete of the
  old), refresh, and delete on destroy; stdout/stderr are unknown in a preview;
- secrets: a secret stdin makes stdout/stderr secret in the state and is never printed, and a failing
  secret script is not shown;
- a remote command over a loopback sshd with the pinned host key: it runs, and delete runs on destroy;
- a wrong pinned host key: refused at once with a clear error, no login, nothing run on the host;
- the dial retries: a host that refuses connections fails after dialErrorLimit + 1 tries.

Without the engine binaries, sshd or ssh these tests skip with the reason; with
OCTOLLM_REQUIRE_REAL_HOST=1 (CI) they fail.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from engine_lane import lane as L
from loopback import free_port, start_sshd
from test_real_host import unavailable

STACK = "t"
NEEDED = ("pulumi", "pulumi-language-python", "pulumi-language-python-exec", "pulumi-resource-command")

PROGRAM = '''\
import json

import pulumi
import pulumi_command as command

spec = json.loads(pulumi.Config().require("spec"))


def secret_or_plain(kw, name):
    if "secret_" + name in kw:
        kw[name] = pulumi.Output.secret(kw.pop("secret_" + name))


for name, kw in spec.get("local", {}).items():
    kw = dict(kw)
    for field in ("stdin", "create"):
        secret_or_plain(kw, field)
    c = command.local.Command(name, **kw)
    pulumi.export(name + "-stdout", c.stdout)
    pulumi.export(name + "-stderr", c.stderr)

for name, kw in spec.get("remote", {}).items():
    kw = dict(kw)
    conn = dict(kw.pop("connection"))
    with open(conn.pop("identity")) as f:
        key = pulumi.Output.secret(f.read())
    c = command.remote.Command(name, connection=command.remote.ConnectionArgs(private_key=key, **conn), **kw)
    pulumi.export(name + "-stdout", c.stdout)
'''


@pytest.fixture(scope="module")
def engine():
    missing = [n for n in NEEDED if not (L.ENGINE_BIN / n).is_file()]
    if missing:
        unavailable(f"{', '.join(missing)} missing in {L.ENGINE_BIN} (tools/engine/build.sh builds them)")
    out = subprocess.run([str(L.ENGINE_BIN / "pulumi-resource-command"), "-version"], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == L.pinned("pulumi-command"), out
    return L.ENGINE_BIN


class Scratch:
    """A one-stack project in a scratch directory, run by the real CLI (tests/engine_lane/lane.py's Project)."""

    def __init__(self, root: Path):
        d = root / "project"
        d.mkdir()
        (d / "Pulumi.yaml").write_text(
            "name: cmdtest\nruntime:\n  name: python\n  options:\n"
            f"    virtualenv: {L.ROOT / '.venv'}\n")
        (d / "__main__.py").write_text(PROGRAM)
        (root / "home").mkdir()
        (root / "state").mkdir()
        self.project = L.Project(d, root / "home", root / "state")
        r = self.project.pulumi("stack", "init", STACK)
        assert r.returncode == 0, r.output

    def run(self, *args: str, check: bool = False) -> L.Step:
        r = self.project.pulumi(*args, "--stack", STACK, timeout=300)
        if check:
            assert r.returncode == 0, f"pulumi {' '.join(args)} failed ({r.returncode}):\n{r.output[-4000:]}"
        return r

    def spec(self, spec: dict) -> None:
        self.run("config", "set", "spec", json.dumps(spec), check=True)

    def up(self, check: bool = True) -> L.Step:
        return self.run("up", "--yes", "--skip-preview", check=check)

    def preview(self) -> dict:
        r = self.run("preview", "--json", check=True)
        return r.json()

    def ops(self) -> dict[str, str]:
        """Resource name -> what a preview would do to it (same, create, update, replace, ...)."""
        return {L.urn_name(s["urn"]): s["op"] for s in self.preview().get("steps") or []
                if "pulumi:pulumi:Stack" not in s["urn"] and "pulumi:providers:" not in s["urn"]}

    def outputs(self) -> dict:
        return self.run("stack", "output", "--json", "--show-secrets", check=True).json()

    def state(self) -> str:
        return self.run("stack", "export", check=True).stdout

    def resource_state(self, name: str) -> dict:
        for res in json.loads(self.state())["deployment"]["resources"]:
            if res["urn"].endswith("::" + name):
                return res
        raise KeyError(name)


def is_secret(v) -> bool:
    return isinstance(v, dict) and v.get("4dabf18193072939515e22adb298388d") == "1b47061264138c4ac30d75fd1eb44270"


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_local_command_create_update_replace_delete(engine, tmp_path):
    p = Scratch(tmp_path)
    log, work = tmp_path / "log", tmp_path / "work"
    work.mkdir()

    def spec(greeting: str, trigger: str) -> dict:
        return {"local": {"c": {
            "create": f'echo "create $(cat) $GREETING in $PWD" >> {log}; echo out-create; echo err >&2',
            "update": f'echo "update prev=$PULUMI_COMMAND_STDOUT/$PULUMI_COMMAND_STDERR $GREETING" >> {log}; '
                      'echo out-update',
            "delete": f'echo "delete prev=$PULUMI_COMMAND_STDOUT" >> {log}',
            "stdin": "in-1", "environment": {"GREETING": greeting},
            "interpreter": ["/bin/bash", "-c"], "dir": str(work), "triggers": [trigger]}}}

    p.spec(spec("hello", "t1"))
    assert p.ops()["c"] == "create"
    r = p.run("preview", check=True)  # nothing runs, and what it would print is not known yet
    assert re.search(r"c-stdout: +\[unknown\]", r.output) and re.search(r"c-stderr: +\[unknown\]", r.output), \
        r.output[-2000:]
    assert not log.exists(), "a preview ran the command"

    p.up()
    assert lines(log) == [f"create in-1 hello in {work}"]
    assert p.outputs()["c-stdout"] == "out-create" and p.outputs()["c-stderr"] == "err"
    assert p.run("preview", "--expect-no-changes").returncode == 0

    p.spec(spec("hi", "t1"))  # an input that is not a trigger: update
    assert p.ops()["c"] == "update"
    p.up()
    assert lines(log)[1:] == ["update prev=out-create/err hi"]
    assert p.outputs()["c-stdout"] == "out-update" and p.outputs()["c-stderr"] == ""

    p.spec(spec("hi", "t2"))  # a trigger: replace, the new one created before the old is deleted
    assert p.ops()["c"] == "replace"
    p.up()
    assert lines(log)[2:] == [f"create in-1 hi in {work}", "delete prev=out-update"]

    refresh = p.run("refresh", "--preview-only", "--expect-no-changes")
    assert refresh.returncode == 0, refresh.output[-3000:]
    p.run("destroy", "--yes", check=True)
    assert lines(log)[4:] == ["delete prev=out-create"]


def test_secrets_are_kept_secret_and_never_printed(engine, tmp_path):
    p = Scratch(tmp_path)
    word = "s3cr3t-" + str(time.time_ns())
    p.spec({"local": {"s": {"create": "cat; echo done", "secret_stdin": word + "\n"}}})
    r = p.up()
    assert word not in r.output
    state = p.resource_state("s")
    assert is_secret(state["outputs"]["stdin"]) and is_secret(state["outputs"]["stdout"]), state["outputs"]
    assert word not in p.state()
    assert p.outputs()["s-stdout"] == f"{word}\ndone"
    assert word not in p.run("stack", "output").output

    # A failing secret script: the error says it failed, and shows neither the script nor its output.
    p.spec({"local": {"s": {"create": "cat; echo done", "secret_stdin": word + "\n"},
                      "bad": {"secret_create": f"echo token-{word} >&2; exit 3"}}})
    r = p.up(check=False)
    assert r.returncode != 0
    assert "exit status 3: running [secret] (the command is secret, so its output is not shown)" in r.output
    assert word not in r.output


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    try:
        s = start_sshd(tmp_path_factory.mktemp("cmd-sshd"), extra_config="LogLevel VERBOSE\n")
    except RuntimeError as exc:
        unavailable(str(exc))
    yield s
    s.stop()


def connection(sshd, **kw) -> dict:
    return {"host": "127.0.0.1", "port": sshd.port, "user": sshd.user, "identity": sshd.identity,
            "host_key": sshd.host_key, "dial_error_limit": 15, "per_dial_timeout": 15, **kw}


def logins(sshd, since: int) -> int:
    return sshd.log.read_bytes()[since:].decode(errors="replace").count("Accepted publickey")


def test_remote_command_over_ssh_with_the_pinned_host_key(engine, sshd, tmp_path):
    p = Scratch(tmp_path)
    marker = tmp_path / "marker"
    since = sshd.log.stat().st_size

    def spec(stdin: str) -> dict:
        return {"remote": {"r": {"connection": connection(sshd), "stdin": stdin,
                                 "create": f"cat > {marker}; echo made-$(cat {marker})",
                                 "delete": f"rm {marker}"}}}

    p.spec(spec("one"))
    p.up()
    assert marker.read_text() == "one"
    assert p.outputs()["r-stdout"] == "made-one"
    assert is_secret(p.resource_state("r")["outputs"]["connection"])
    assert logins(sshd, since) == 1
    assert p.run("preview", "--expect-no-changes").returncode == 0

    p.spec(spec("two"))  # no update command: create runs again
    assert p.ops()["r"] == "update"
    p.up()
    assert marker.read_text() == "two" and p.outputs()["r-stdout"] == "made-two"

    p.run("destroy", "--yes", check=True)
    assert not marker.exists()
    assert logins(sshd, since) == 3


def test_a_wrong_host_key_is_refused_and_nothing_runs(engine, sshd, tmp_path):
    p = Scratch(tmp_path)
    marker = tmp_path / "marker"
    since = sshd.log.stat().st_size
    p.spec({"remote": {"r": {"connection": connection(sshd, host_key=sshd.other_key),
                             "create": f"touch {marker}"}}})
    t0 = time.monotonic()
    r = p.up(check=False)
    took = time.monotonic() - t0
    assert r.returncode != 0
    assert re.search(rf"host key verification failed for 127\.0\.0\.1:{sshd.port}: the server presented "
                     r"ssh-ed25519 SHA256:\S+, but connection\.hostKey pins ssh-ed25519 SHA256:\S+; "
                     r"refusing to connect, nothing was run", r.output), r.output[-3000:]
    assert not marker.exists()
    assert logins(sshd, since) == 0
    # Not retried: dial_error_limit 15 would take about 36 s of waits.
    assert took < 30, f"took {took:.1f}s"
    assert "r" not in {L.urn_name(x["urn"]) for x in json.loads(p.state())["deployment"].get("resources") or []}


def test_a_refusing_host_is_dialled_dial_error_limit_plus_one_times(engine, tmp_path):
    p = Scratch(tmp_path)
    port = free_port()  # nothing listens there
    p.spec({"remote": {"r": {"connection": {"host": "127.0.0.1", "port": port, "user": "nobody",
                                            "identity": str(_throwaway_key(tmp_path)), "dial_error_limit": 3},
                             "create": "true"}}})
    t0 = time.monotonic()
    r = p.up(check=False)
    took = time.monotonic() - t0
    assert r.returncode != 0
    assert "after 4 failed attempts" in r.output and "connection refused" in r.output, r.output[-3000:]
    assert took < 60, f"took {took:.1f}s"


def _throwaway_key(d: Path) -> Path:
    key = d / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key
