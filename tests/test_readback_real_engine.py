"""The read-back rules held against a real Docker engine, and clean stops.

Every container the docker stacks register is created through the Engine API the way the provider's
create does (NanoCPUs from `cpus`, Go durations in nanoseconds, memory in MiB), started, inspected,
and formatted as the provider's Read formats it; the result must equal the registered input. The
same for every network and volume: created as resourceDockerNetworkCreate / resourceDockerVolumeCreate
send them, inspected, read as the provider's Read does. The image is a local stand-in (busybox, no
registry) named by its image ID, as the program names RemoteImage.image_id: what is compared is what
the engine keeps, not what the real image runs. Every address bound or named is on 127.0.0.0/8.
"""

from __future__ import annotations

import copy
import http.client
import ipaddress
import json
import os
import socket
import time
import urllib.parse
from pathlib import Path

import pytest

import readback
from harness import stack_config
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
    for n in engine("GET", "/networks") or []:
        if n["Name"].startswith(PREFIX):
            engine("DELETE", f"/networks/{n['Id']}", ok=(204, 404))


def image_id(ref: str) -> str:
    """The ID resourceDockerImageRead stores as image_id: searchLocalImages over the ImageList."""
    for img in engine("GET", "/images/json") or []:
        if ref in (img.get("RepoTags") or []):
            return img["Id"]
    raise AssertionError(f"{ref} is not in the image list")


def sandboxed(request: dict, name: str, root: Path, ips: dict, ports: dict) -> dict:
    """The same request, placed where this machine allows: host paths under `root`, published
    addresses on 127.0.0.0/8, free host ports, volumes prefixed. No field the provider reads back
    changes shape; `unsandbox` maps the answers back."""
    req = json.loads(json.dumps(request))
    c, hc = req["Config"], req["HostConfig"]
    c["Image"] = image_id(STANDIN)
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


def swap_accounting() -> bool:
    return bool(engine("GET", "/info")["SwapLimit"])


def as_this_engine(stack: str) -> dict:
    """The stack's config with every host declaring this engine's swap accounting, as the preflight
    demands of a real host (hosts.<h>.swapLimit)."""
    cfg = copy.deepcopy(stack_config(stack))
    for h in cfg["hosts"].values():
        h["swapLimit"] = swap_accounting()
    return cfg


@pytest.mark.parametrize("stack", ["dev", "unraid", "homelab"])
def test_real_engine_gives_back_every_registered_input(run, standin, tmp_path, stack):
    result = run(stack, config=as_this_engine(stack))
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
                planned["image"] = image_id(STANDIN)  # the program passes RemoteImage.image_id
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
    """The engine stores NanoCPUs as sent, so the stored `cpus` is the provider's formatting alone.

    Only up to 2: the engine refuses NanoCPUs above the machine's cores ("Range of CPUs is from 0.01
    to N"), and this one may have 2. Whole values above it ("8.0", "16.0") are proven by the model
    alone (test_readback.py::test_whole_cpus_above_the_test_host_s_cores_read_back_as_the_model_says)."""
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


# sent MiB -> what the provider stores with swap accounting, and without it
SWAP_CASES = {64: (64, -1), -1: (-1, -1), 0: (128, -1)}


@pytest.mark.parametrize("sent_mib", sorted(SWAP_CASES))
def test_engine_stores_memory_swap_as_the_model_says(standin, sent_mib):
    """memory_swap = memory is kept where the engine has swap accounting, -1 everywhere, and unset
    becomes 2 x memory; without accounting everything but -1 becomes -1. This engine proves its own
    kind of host; the other kind is proven by the model alone (test_readback.py)."""
    swap_limit = swap_accounting()
    read_back = SWAP_CASES[sent_mib][0 if swap_limit else 1]
    inputs = {"name": "swap", "image": image_id(STANDIN), "memory": 64, **({"memorySwap": sent_mib} if sent_mib else {})}
    request = readback.container_engine_request(inputs)
    _cleanup()
    try:
        cid = engine("POST", f"/containers/create?name={PREFIX}swap",
                     {**request["Config"], "HostConfig": request["HostConfig"]})["Id"]
        real = engine("GET", f"/containers/{cid}/json")["HostConfig"]["MemorySwap"]
        modelled = readback.engine_inspect_model(request, "swap", engine=readback.Engine(swap_limit))
        assert real == modelled["HostConfig"]["MemorySwap"]
        stored = readback.container_state_from_inspect({"HostConfig": {"MemorySwap": real}, "Image": "",
                                                        "Config": {}}, readback._container_planned(inputs))
        assert stored["memorySwap"] == read_back
    finally:
        _cleanup()


def _subnets(n: int):
    """Stand-in subnets for the n-th network: the stack's own may be in use on this machine."""
    return lambda net: ipaddress.ip_network(f"10.{100 + n}.0.0/{net.prefixlen}")


def _move(addr: str, old, new) -> str:
    return str(new.network_address + (int(ipaddress.ip_address(addr)) - int(old.network_address)))


def _mismatches(planned: dict, state: dict, modelled: dict) -> dict:
    """Where the provider's stored state differs from the registered inputs, and (as model:<key>) where
    the model's answer differs from the real engine's."""
    wrong = {k: (planned[k], state.get(k)) for k in planned if planned[k] != state.get(k)}
    wrong.update({f"model:{k}": (modelled[k], state[k]) for k in modelled if modelled[k] != state[k]})
    return wrong


@pytest.mark.parametrize("stack", ["dev", "unraid", "homelab"])
def test_real_engine_keeps_networks_as_created(run, dockerd, stack):  # noqa: F811
    """Each network as resourceDockerNetworkCreate sends it, inspected and read as
    resourceDockerNetworkReadRefreshFunc reads it, equals the registered inputs; and the engine's
    answer is the model's. Names get a prefix and subnets move to 10.100+n.0.0 with every address
    at the same offset; both are mapped back before comparing."""
    nets = run(stack).of_type(readback.NETWORK)
    assert nets
    _cleanup()
    try:
        mismatches = {}
        for n, r in enumerate(nets):
            body = readback.network_engine_request(r.inputs)
            moved = json.loads(json.dumps(body))
            moved["Name"] = PREFIX + body["Name"]
            maps = []
            for c in moved["IPAM"].get("Config", []):
                old = ipaddress.ip_network(c["Subnet"])
                new = _subnets(n)(old)
                maps.append((old, new))
                c["Subnet"] = str(new)
                if "Gateway" in c:
                    c["Gateway"] = _move(c["Gateway"], old, new)
                if "AuxiliaryAddresses" in c:
                    c["AuxiliaryAddresses"] = {k: _move(v, old, new) for k, v in c["AuxiliaryAddresses"].items()}
            nid = engine("POST", "/networks/create", moved)["Id"]
            real = engine("GET", f"/networks/{nid}")
            real["Name"] = real["Name"].removeprefix(PREFIX)
            for c, (old, new) in zip(real["IPAM"]["Config"], maps):
                c["Subnet"] = str(old)
                if c.get("Gateway"):
                    c["Gateway"] = _move(c["Gateway"], new, old)
                if c.get("AuxiliaryAddresses"):
                    c["AuxiliaryAddresses"] = {k: _move(v, new, old) for k, v in c["AuxiliaryAddresses"].items()}
            planned = readback.RULES[readback.NETWORK][0](r.inputs)
            state = readback.network_state_from_inspect(real)
            modelled = readback.network_state_from_inspect(readback.network_engine_inspect_model(body))
            wrong = _mismatches(planned, state, modelled)
            if wrong:
                mismatches[r.name] = wrong
        assert mismatches == {}, json.dumps(mismatches, indent=1)[:3000]
    finally:
        _cleanup()


def test_real_engine_keeps_volumes_as_created(run, dockerd):  # noqa: F811
    """The NFS volumes as resourceDockerVolumeCreate sends them, inspected and read as
    resourceDockerVolumeRead reads them, equal the registered inputs, and the engine's answer is the
    model's. The local driver only records the options: the NFS mount happens when a container first
    uses the volume, so the create succeeds although nothing serves NFS at the address (moved to
    loopback, so no traffic leaves the machine)."""
    vols = run("homelab").of_type(readback.VOLUME)
    assert vols and all(v.inputs["driverOpts"]["type"] == "nfs" for v in vols)
    _cleanup()
    try:
        mismatches = {}
        for r in vols:
            body = readback.volume_engine_request(r.inputs)
            moved = json.loads(json.dumps(body))
            moved["Name"] = PREFIX + body["Name"]
            addr = [o for o in body["DriverOpts"]["o"].split(",") if o.startswith("addr=")]
            assert addr, body
            moved["DriverOpts"]["o"] = body["DriverOpts"]["o"].replace(addr[0], "addr=127.0.0.1")
            engine("POST", "/volumes/create", moved)
            real = engine("GET", f"/volumes/{moved['Name']}")
            assert not os.listdir(real["Mountpoint"]), "the volume was mounted at create"
            real["Name"] = real["Name"].removeprefix(PREFIX)
            real["Options"]["o"] = real["Options"]["o"].replace("addr=127.0.0.1", addr[0])
            planned = readback.RULES[readback.VOLUME][0](r.inputs)
            state = readback.volume_state_from_inspect(real)
            modelled = readback.volume_state_from_inspect(readback.volume_engine_inspect_model(body))
            wrong = _mismatches(planned, state, modelled)
            if wrong:
                mismatches[r.name] = wrong
        assert mismatches == {}, json.dumps(mismatches, indent=1)[:3000]
    finally:
        _cleanup()


def test_real_engine_answers_a_network_without_a_gateway_as_the_model_says(dockerd):  # noqa: F811
    """The program always sends the gateway; this shows what an unset one would store."""
    _cleanup()
    try:
        body = {"Name": PREFIX + "nogw", "Driver": "bridge", "IPAM": {"Driver": "default",
                                                                        "Config": [{"Subnet": "10.99.0.0/24"}]}}
        nid = engine("POST", "/networks/create", body)["Id"]
        real = engine("GET", f"/networks/{nid}")
        assert readback.network_engine_inspect_model(body)["IPAM"]["Config"] == real["IPAM"]["Config"]
    finally:
        _cleanup()
