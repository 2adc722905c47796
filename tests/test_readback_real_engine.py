"""The read-back rules held against a real Docker engine, and clean stops.

Every container the docker stacks register is created through the Engine API the way the provider's
create does (NanoCPUs from `cpus`, Go durations in nanoseconds, memory in MiB), started, inspected,
and formatted as the provider's Read formats it; the result must equal the registered input. The
image is a local stand-in (busybox, no registry): what is compared is what the engine keeps, not
what the real image runs. Every address bound is on 127.0.0.0/8.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import time
import urllib.parse
from pathlib import Path

import pytest

import readback
from loopback import free_port as _free_port
from loopback import import_busybox_image
from test_real_host import docker, dockerd, unavailable  # noqa: F401  (fixtures)

SOCKET = "/var/run/docker.sock"
STANDIN = "octollm-test/standin:1"
PREFIX = "rbtest-"
HOST_NANO_CPUS = (os.cpu_count() or 1) * 10**9


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 120):
        super().__init__("docker", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def engine(method: str, path: str, body: dict | None = None, ok=(200, 201, 204, 304)) -> dict | None:
    conn = _UnixConnection(SOCKET)
    try:
        payload = json.dumps(body) if body is not None else None
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status not in ok:
        raise AssertionError(f"{method} {path}: {resp.status} {data[:400]!r}")
    return json.loads(data) if data else None


@pytest.fixture(scope="session")
def standin(dockerd, tmp_path_factory):  # noqa: F811
    """busybox with an entrypoint that ignores its arguments, traps TERM/INT and exits 0 after
    STANDIN_FLUSH seconds: a stand-in for a service that flushes on shutdown."""
    script = ("#!/bin/busybox sh\n"
              'stop() { /bin/busybox sleep "${STANDIN_FLUSH:-0}"; exit 0; }\n'
              "trap stop TERM INT\n"
              "while :; do /bin/busybox sleep 1 & wait $!; done\n")
    try:
        import_busybox_image(STANDIN, tmp_path_factory.mktemp("standin"), {"stand-in": script},
                             ('ENTRYPOINT ["/stand-in"]',))
    except FileNotFoundError as exc:
        unavailable(str(exc))
    return STANDIN


def _cleanup():
    for c in engine("GET", "/containers/json?all=1") or []:
        if any(n.lstrip("/").startswith(PREFIX) for n in c["Names"]):
            engine("DELETE", f"/containers/{c['Id']}?force=1", ok=(204, 404))
    for v in (engine("GET", "/volumes") or {}).get("Volumes") or []:
        if v["Name"].startswith(PREFIX):
            engine("DELETE", f"/volumes/{v['Name']}", ok=(204, 404))


def sandboxed(request: dict, name: str, root: Path, ips: dict, ports: dict) -> dict:
    """The same request, placed where this machine allows: host paths under `root`, published
    addresses on 127.0.0.0/8, free host ports, volumes prefixed. No field the provider reads back
    changes shape; `unsandbox` maps the answers back."""
    req = json.loads(json.dumps(request))
    c, hc = req["Config"], req["HostConfig"]
    c["Image"] = STANDIN
    for m in hc.get("Mounts", []):
        if m["Type"] == "bind":
            src = root / m["Source"].lstrip("/")
            if m["Source"] == "/var/run/docker.sock":
                src = Path(SOCKET)
            elif not src.exists():
                src.mkdir(parents=True, exist_ok=True)
            m["Source"] = str(src)
        else:
            m["Source"] = PREFIX + m["Source"]
            engine("POST", "/volumes/create", {"Name": m["Source"]})
    for bindings in hc.get("PortBindings", {}).values():
        for b in bindings:
            b["HostIp"] = ips.setdefault(b["HostIp"], f"127.0.0.{len(ips) + 1}")
            b["HostPort"] = ports.setdefault(b["HostPort"], str(_free_port()))
    # No GPU here: a device request for the nvidia driver cannot start. The model covers them.
    hc.pop("DeviceRequests", None)
    # The engine refuses more CPUs than the machine has (this one has os.cpu_count()); such a limit
    # is compared by the model alone, and test_engine_keeps_nano_cpus_exactly covers the engine side.
    if hc.get("NanoCpus", 0) > HOST_NANO_CPUS:
        hc.pop("NanoCpus")
    hc["Devices"] = [d for d in hc.get("Devices", []) if os.path.exists(d["PathOnHost"])]
    return req


def unsandbox(state: dict, root: Path, ips: dict, ports: dict) -> dict:
    back_ip = {v: k for k, v in ips.items()}
    back_port = {int(v): int(k) for k, v in ports.items()}
    for p in state.get("ports", []):
        p["ip"], p["external"] = back_ip[p["ip"]], back_port[p["external"]]
    for m in state.get("mounts", []):
        if m["type"] == "bind":
            if m["source"] != SOCKET:
                rel = Path(m["source"]).relative_to(root)
                m["source"] = "/" + ("" if rel == Path(".") else str(rel))
        else:
            m["source"] = m["source"].removeprefix(PREFIX)
    state["name"] = state["name"].removeprefix(PREFIX)
    return state


@pytest.mark.parametrize("stack", ["dev", "unraid", "homelab"])
def test_real_engine_gives_back_every_registered_input(run, standin, tmp_path, stack):
    result = run(stack)
    assert result.error is None, result.error
    by_host: dict[str, list] = {}
    for r in result.of_type(readback.CONTAINER):
        by_host.setdefault(r.provider, []).append(r)
    mismatches, compared, over_cpu = {}, 0, 0
    # One host at a time: container names only need to be unique per host.
    for host, regs in sorted(by_host.items()):
        _cleanup()
        try:
            ips, ports, created = {}, {}, []
            for r in regs:
                planned = readback.RULES[readback.CONTAINER][0](r.inputs)
                if readback.docker_parse_cpus(planned.get("cpus", "0")) > HOST_NANO_CPUS:
                    planned.pop("cpus")
                    over_cpu += 1
                if "deviceRequests" in planned or any(not os.path.exists(d["hostPath"])
                                                      for d in planned.get("devices", [])):
                    planned.pop("deviceRequests", None)
                    planned["devices"] = [d for d in planned.get("devices", []) if os.path.exists(d["hostPath"])]
                    if not planned["devices"]:
                        planned.pop("devices")
                req = sandboxed(readback.container_engine_request(r.inputs), r.inputs["name"], tmp_path, ips, ports)
                name = PREFIX + r.inputs["name"]
                body = {**req["Config"], "HostConfig": req["HostConfig"]}
                cid = engine("POST", f"/containers/create?name={urllib.parse.quote(name)}", body)["Id"]
                engine("POST", f"/containers/{cid}/start")
                created.append((r, cid, planned))
            for r, cid, planned in created:
                inspect = engine("GET", f"/containers/{cid}/json")
                assert inspect["State"]["Running"], f"{r.name} did not stay up: {inspect['State']}"
                state = unsandbox(readback.container_state_from_inspect(inspect, planned), tmp_path, ips, ports)
                wrong = {k: (planned[k], state.get(k)) for k in planned if planned[k] != state.get(k)}
                if wrong:
                    mismatches[r.name] = wrong
                compared += 1
        finally:
            _cleanup()
    assert compared == len(result.of_type(readback.CONTAINER))
    assert mismatches == {}, json.dumps(mismatches, indent=1)[:3000]
    assert over_cpu < compared, "no container's cpus was checked on the engine"


@pytest.mark.parametrize("cpus", [0.25, 0.5, 1, 1.25, 1.5, 2])
def test_engine_keeps_nano_cpus_exactly(standin, cpus):
    """The engine stores NanoCPUs as sent, so the stored `cpus` is the provider's formatting alone."""
    from components.platforms.forms import docker_cpus

    emitted = docker_cpus(cpus)
    _cleanup()
    try:
        cid = engine("POST", f"/containers/create?name={PREFIX}cpus", {
            "Image": STANDIN, "HostConfig": {"NanoCpus": readback.docker_parse_cpus(emitted)}})["Id"]
        nano = engine("GET", f"/containers/{cid}/json")["HostConfig"]["NanoCpus"]
        assert readback.nano_int64_to_decimal_string(nano) == emitted
    finally:
        _cleanup()


def _stop_like_the_provider(cid: str, grace: int) -> tuple[int, float]:
    """resourceDockerContainerDelete: ContainerStop with destroy_grace_seconds (0 when unset)."""
    started = time.monotonic()
    engine("POST", f"/containers/{cid}/stop?t={grace}", ok=(204, 304))
    elapsed = time.monotonic() - started
    return engine("GET", f"/containers/{cid}/json")["State"]["ExitCode"], elapsed


@pytest.mark.parametrize("service", ["postgres", "redis", "qdrant", "ollama", "prometheus"])
def test_replacing_a_stateful_container_stops_it_cleanly(run, standin, service):
    """A process that traps its stop signal and needs a few seconds to flush exits 0 within the
    registered grace; with the provider's default (no destroy_grace_seconds) it is killed: 137."""
    unraid = run("unraid").containers()[f"octollm-{service}"].inputs
    grace = int(unraid["destroyGraceSeconds"])
    assert grace >= 30 and int(unraid["stopTimeout"]) == grace
    signal = unraid.get("stopSignal") or "SIGTERM"
    _cleanup()
    try:
        codes = {}
        for label, timeout in (("registered", grace), ("provider default", 0)):
            cid = engine("POST", f"/containers/create?name={PREFIX}{service}-{label.replace(' ', '-')}", {
                "Image": STANDIN, "Env": ["STANDIN_FLUSH=3"], "StopSignal": signal,
                "StopTimeout": int(unraid["stopTimeout"])})["Id"]
            engine("POST", f"/containers/{cid}/start")
            time.sleep(0.5)  # the trap is installed
            codes[label] = _stop_like_the_provider(cid, timeout)
        code, elapsed = codes["registered"]
        assert code == 0 and 3 <= elapsed < grace, codes
        assert codes["provider default"][0] == 137, codes
    finally:
        _cleanup()
