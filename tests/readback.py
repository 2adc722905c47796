"""A model of what the providers store after create, written from their source, not from the program.

After `create`, a Terraform-bridged provider reads the resource back and keeps what the engine
reports; the next `pulumi up` diffs the new inputs (with the schema's defaults filled in) against
that state. `planned(type, inputs)` is the first, `stored(type, inputs)` the second; where they
differ for any field, a second `up` would show a change (and for a ForceNew field, a replacement).

The rules cite kreuzwerker/terraform-provider-docker v4.5.0 (bridged by pulumi-docker 5.x),
internal/provider/. They are implemented here independently of components/platforms/forms.py, so
reverting a canonical form in the program makes the comparison fail.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Callable

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
VOLUME = "docker:index/volume:Volume"
IMAGE = "docker:index/remoteImage:RemoteImage"

# ------------------------------------------------------------------ Go semantics


_UNITS = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def go_parse_duration(text: str) -> int:
    """time.ParseDuration: a sequence of decimal numbers with units ("1m0s", "1.5h", "300ms"), in ns."""
    if text in ("0", ""):
        return 0
    parts = re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"time: invalid duration {text!r}")
    return int(sum(Fraction(n) * _UNITS[u] for n, u in parts))


def _frac(v: int, prec: int) -> str:
    """Go's fmtFrac: v / 10**prec with trailing zeros (and a bare point) dropped."""
    digits = f"{v:0{prec}d}".rstrip("0")
    return f".{digits}" if digits else ""


def go_duration_string(ns: int) -> str:
    """time.Duration.String(): "0s", "1.5s", "1m0s", "1h0m0s", and ms/µs/ns below a second."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 10**9:
        for unit, size, prec in (("ms", 10**6, 6), ("µs", 10**3, 3), ("ns", 1, 0)):
            if ns >= size:
                return f"{sign}{ns // size}{_frac(ns % size, prec) if prec else ''}{unit}"
    secs, frac = divmod(ns, 10**9)
    out = f"{secs % 60}{_frac(frac, 9)}s"
    mins = secs // 60
    if mins:
        out = f"{mins % 60}m{out}"
        if mins // 60:
            out = f"{mins // 60}h{out}"
    return sign + out


def go_float_string(value: Fraction, prec: int) -> str:
    """big.Rat.FloatString: `prec` decimals, the last rounded to nearest, halves away from zero."""
    scaled = abs(value) * 10**prec
    whole, rest = divmod(scaled.numerator, scaled.denominator)
    if 2 * rest >= scaled.denominator:
        whole += 1
    int_part, frac_part = divmod(whole, 10**prec)
    text = f"{int_part}." + f"{frac_part:0{prec}d}" if prec else f"{int_part}"
    return ("-" if value < 0 else "") + text


def docker_parse_cpus(text: str) -> int:
    """docker/cli opts.ParseCPUs (container create): a decimal (big.Rat) times 1e9, which must be whole."""
    nano = Fraction(text) * 10**9
    if nano.denominator != 1:
        raise ValueError(f"cpus {text!r}: value is too precise")
    return nano.numerator


def nano_int64_to_decimal_string(nano: int) -> str:
    """helpers.go nanoInt64ToDecimalString: how `cpus` is stored from HostConfig.NanoCPUs."""
    if nano == 0:
        return "0"
    rat = Fraction(nano, 10**9)
    text = go_float_string(rat, 9)
    if text.count("0") == 9:
        return go_float_string(rat, 1)
    return text.rstrip("0")


# ------------------------------------------------------------------ docker_container


def _num(v: Any) -> Any:
    """Numbers cross the wire as floats; the provider's schema holds ints."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _container_planned(i: dict) -> dict:
    """Inputs as the provider's Check leaves them: schema defaults of resource_docker_container.go."""
    out: dict = {}
    if "cpus" in i:
        out["cpus"] = i["cpus"]
    if "memory" in i:
        out["memory"] = _num(i["memory"])
    # memory_swap (Optional, not Computed): when unset the engine still stores MemorySwap = 2 x Memory
    # (moby daemon: a memory limit without a swap limit allows as much swap again), and Read sets it.
    out["memorySwap"] = _num(i.get("memorySwap", 0))
    if "shmSize" in i:
        out["shmSize"] = _num(i["shmSize"])
    if "healthcheck" in i:
        h = i["healthcheck"]
        # "interval", "timeout", "start_period", "start_interval": Default "0s"; "retries": Default 0.
        out["healthcheck"] = {"tests": list(h.get("tests", [])), "interval": h.get("interval", "0s"),
                              "timeout": h.get("timeout", "0s"), "startPeriod": h.get("startPeriod", "0s"),
                              "startInterval": h.get("startInterval", "0s"), "retries": _num(h.get("retries", 0))}
    if "ports" in i:
        # "ip": Default "0.0.0.0" (empty becomes 0.0.0.0 by its StateFunc); "protocol": Default "tcp".
        out["ports"] = [{"internal": _num(p["internal"]), "external": _num(p["external"]),
                         "ip": p.get("ip") or "0.0.0.0", "protocol": p.get("protocol", "tcp")} for p in i["ports"]]
    if "mounts" in i:
        out["mounts"] = sorted(({"target": m["target"], "source": m.get("source", ""), "type": m["type"],
                                 "readOnly": bool(m.get("readOnly", False))} for m in i["mounts"]),
                               key=lambda m: m["target"])
    if "devices" in i:
        # "permissions": Default "rwm".
        out["devices"] = sorted(({"hostPath": d["hostPath"], "containerPath": d.get("containerPath", ""),
                                  "permissions": d.get("permissions", "rwm")} for d in i["devices"]),
                                key=lambda d: d["hostPath"])
    if "deviceRequests" in i:
        # "driver": Default "cdi"; "count": Default 0.
        out["deviceRequests"] = [{"driver": r.get("driver", "cdi"), "count": _num(r.get("count", 0)),
                                  "deviceIds": sorted(r.get("deviceIds") or []),
                                  "capabilities": sorted(r.get("capabilities") or [])} for r in i["deviceRequests"]]
    for key in ("user", "restart", "pidMode", "logDriver", "stopSignal", "name"):
        if key in i:
            out[key] = i[key]
    for key in ("stopTimeout",):
        if key in i:
            out[key] = _num(i[key])
    for key in ("privileged", "readOnly"):
        out[key] = bool(i.get(key, False))
    for key in ("command", "entrypoints"):
        if key in i:
            out[key] = list(i[key])
    for key in ("logOpts", "tmpfs"):
        if key in i:
            out[key] = dict(i[key])
    return out


def container_engine_request(i: dict) -> dict:
    """What resourceDockerContainerCreate sends to the Engine API for the fields read back."""
    p = _container_planned(i)
    req: dict = {"Config": {}, "HostConfig": {}}
    c, hc = req["Config"], req["HostConfig"]
    if "cpus" in p:
        hc["NanoCpus"] = docker_parse_cpus(p["cpus"])
    if "memory" in p:
        hc["Memory"] = p["memory"] * 1024 * 1024
    if p.get("memorySwap"):
        hc["MemorySwap"] = p["memorySwap"] * 1024 * 1024
    if "shmSize" in p:
        hc["ShmSize"] = p["shmSize"] * 1024 * 1024
    if "healthcheck" in p:
        h = p["healthcheck"]
        c["Healthcheck"] = {"Test": h["tests"], "Interval": go_parse_duration(h["interval"]),
                            "Timeout": go_parse_duration(h["timeout"]),
                            "StartPeriod": go_parse_duration(h["startPeriod"]),
                            "StartInterval": go_parse_duration(h["startInterval"]), "Retries": h["retries"]}
    if "ports" in p:
        hc["PortBindings"] = {}
        for port in p["ports"]:
            hc["PortBindings"].setdefault(f"{port['internal']}/{port['protocol']}", []).append(
                {"HostIp": port["ip"], "HostPort": str(port["external"])})
        c["ExposedPorts"] = {k: {} for k in hc["PortBindings"]}
    if "mounts" in p:
        hc["Mounts"] = [{"Type": m["type"], "Source": m["source"], "Target": m["target"], "ReadOnly": m["readOnly"]}
                        for m in p["mounts"]]
    if "devices" in p:
        hc["Devices"] = [{"PathOnHost": d["hostPath"], "PathInContainer": d["containerPath"] or d["hostPath"],
                          "CgroupPermissions": d["permissions"]} for d in p["devices"]]
    if "deviceRequests" in p:
        hc["DeviceRequests"] = [{"Driver": r["driver"], "Count": r["count"], "DeviceIDs": r["deviceIds"] or None,
                                 "Capabilities": [r["capabilities"]]} for r in p["deviceRequests"]]
    if "user" in p:
        c["User"] = p["user"]
    if "restart" in p:
        hc["RestartPolicy"] = {"Name": p["restart"]}
    if "pidMode" in p:
        hc["PidMode"] = p["pidMode"]
    if "logDriver" in p or "logOpts" in p:
        hc["LogConfig"] = {"Type": p.get("logDriver", "json-file"), "Config": p.get("logOpts", {})}
    if "stopSignal" in p:
        c["StopSignal"] = p["stopSignal"]
    if "stopTimeout" in p:
        c["StopTimeout"] = p["stopTimeout"]
    hc["Privileged"] = p["privileged"]
    hc["ReadonlyRootfs"] = p["readOnly"]
    if "command" in p:
        c["Cmd"] = p["command"]
    if "entrypoints" in p:
        c["Entrypoint"] = p["entrypoints"]
    if "tmpfs" in p:
        hc["Tmpfs"] = p["tmpfs"]
    return req


def container_state_from_inspect(inspect: dict, planned: dict) -> dict:
    """resourceDockerContainerRead (resource_docker_container_funcs.go) for the fields the program sets.

    `planned` decides, as the provider's `d.GetOk` does, which optional blocks are read back at all.
    env and labels are never read back ("taken over from the Docker image", per the source), nor are
    networks_advanced (only on import), wait, wait_timeout or destroy_grace_seconds (state only).
    """
    c, hc = inspect.get("Config") or {}, inspect.get("HostConfig") or {}
    out: dict = {}
    if hc.get("NanoCpus", 0) > 0:  # HostConfig.NanoCPUs, `json:"NanoCpus"`
        out["cpus"] = nano_int64_to_decimal_string(hc["NanoCpus"])
    out["memory"] = hc.get("Memory", 0) // 1024 // 1024
    swap = hc.get("MemorySwap", 0)
    out["memorySwap"] = swap // 1024 // 1024 if swap > 0 else swap
    out["shmSize"] = hc.get("ShmSize", 0) // 1024 // 1024
    h = c.get("Healthcheck")
    if h is not None:
        out["healthcheck"] = {"tests": list(h.get("Test") or []),
                              "interval": go_duration_string(h.get("Interval", 0)),
                              "timeout": go_duration_string(h.get("Timeout", 0)),
                              "startPeriod": go_duration_string(h.get("StartPeriod", 0)),
                              "startInterval": go_duration_string(h.get("StartInterval", 0)),
                              "retries": h.get("Retries", 0)}
    if "ports" in planned:
        # flattenContainerPorts: keys sorted by port number (byPortAndProtocol), one entry per binding.
        ports = (inspect.get("NetworkSettings") or {}).get("Ports") or {}
        rows = []
        for key in sorted(ports, key=lambda k: int(k.split("/")[0])):
            for b in ports[key] or []:
                num, proto = key.split("/")
                rows.append({"internal": int(num), "external": int(b["HostPort"]), "ip": b["HostIp"], "protocol": proto})
        out["ports"] = rows
    # getDockerContainerMounts: HostConfig.Mounts as the engine keeps them.
    out["mounts"] = sorted(({"target": m["Target"], "source": m.get("Source", ""), "type": m["Type"],
                             "readOnly": bool(m.get("ReadOnly", False))} for m in hc.get("Mounts") or []),
                           key=lambda m: m["target"])
    if "devices" in planned:
        # flattenDevices: container_path only where the configuration gave both paths.
        configured = {d["hostPath"] for d in planned["devices"] if d.get("containerPath")}
        out["devices"] = sorted(({"hostPath": d["PathOnHost"],
                                  "containerPath": d["PathInContainer"] if d["PathOnHost"] in configured else "",
                                  "permissions": d["CgroupPermissions"]} for d in hc.get("Devices") or []),
                                key=lambda d: d["hostPath"])
    if "deviceRequests" in planned:
        # flattenDeviceRequests: driver, count, device_ids, and the first capability set.
        out["deviceRequests"] = [{"driver": r.get("Driver", ""), "count": r.get("Count", 0),
                                  "deviceIds": sorted(r.get("DeviceIDs") or []),
                                  "capabilities": sorted((r.get("Capabilities") or [[]])[0] or [])}
                                 for r in hc.get("DeviceRequests") or []]
    out["user"] = c.get("User", "")
    out["restart"] = (hc.get("RestartPolicy") or {}).get("Name", "")
    if "pidMode" in planned:
        out["pidMode"] = hc.get("PidMode", "")
    out["logDriver"] = (hc.get("LogConfig") or {}).get("Type", "")
    if "logOpts" in planned:
        out["logOpts"] = dict((hc.get("LogConfig") or {}).get("Config") or {})
    out["stopSignal"] = c.get("StopSignal", "")
    out["stopTimeout"] = c.get("StopTimeout")
    out["privileged"] = bool(hc.get("Privileged"))
    out["readOnly"] = bool(hc.get("ReadonlyRootfs"))
    out["command"] = list(c.get("Cmd") or [])
    out["entrypoints"] = list(c.get("Entrypoint") or [])
    out["tmpfs"] = dict(hc.get("Tmpfs") or {})
    out["name"] = inspect.get("Name", "").lstrip("/")
    return out


def engine_inspect_model(request: dict, name: str, image_config: dict | None = None) -> dict:
    """What the engine answers to inspect for a created request: it keeps every field it was given.

    Optional+Computed fields left unset come from the image (Cmd, Entrypoint, StopSignal, User), so
    the stored value is whatever the image says and never differs from an input that is not set.
    The real-engine test checks this model against a real dockerd.
    """
    img = image_config or {}
    c = {**{k: img[k] for k in ("Cmd", "Entrypoint", "StopSignal", "User") if k in img}, **request["Config"]}
    hc = dict(request["HostConfig"])
    if hc.get("Memory") and not hc.get("MemorySwap"):
        hc["MemorySwap"] = 2 * hc["Memory"]  # the engine's default swap allowance
    return {"Name": "/" + name, "Config": c, "HostConfig": hc,
            "NetworkSettings": {"Ports": request["HostConfig"].get("PortBindings", {})}}


def _container_stored(i: dict) -> dict:
    planned = _container_planned(i)
    inspect = engine_inspect_model(container_engine_request(i), i.get("name", ""))
    return container_state_from_inspect(inspect, planned)


# ------------------------------------------------------------------ docker_network, docker_volume, docker_image


def _labels(v) -> list:
    return sorted(({"label": x["label"], "value": x["value"]} for x in v or []), key=lambda x: x["label"])


def _network_planned(i: dict) -> dict:
    # "ipam_driver": Default "default"; ipam_config a set of subnet/ip_range/gateway/aux_address.
    return {"name": i["name"], "driver": i.get("driver", "bridge"), "internal": bool(i.get("internal", False)),
            "ipamDriver": i.get("ipamDriver", "default"), "labels": _labels(i.get("labels")),
            "ipamConfigs": sorted(({k: (dict(v) if isinstance(v, dict) else v) for k, v in c.items() if v}
                                   for c in i.get("ipamConfigs") or []), key=lambda c: c.get("subnet", ""))}


def _network_stored(i: dict) -> dict:
    """resourceDockerNetworkReadRefreshFunc + flattenIpamConfigSpec (resource_docker_network_*.go):
    the engine keeps the IPAM subnet, gateway and aux addresses as created; empty ones are dropped."""
    p = _network_planned(i)
    ipam = [{"Subnet": c.get("subnet", ""), "Gateway": c.get("gateway", ""), "IPRange": c.get("ipRange", ""),
             "AuxAddress": c.get("auxAddress") or {}} for c in p["ipamConfigs"]]
    flat = [{k: v for k, v in (("subnet", c["Subnet"]), ("ipRange", c["IPRange"]), ("gateway", c["Gateway"]),
                               ("auxAddress", dict(c["AuxAddress"]))) if v} for c in ipam]
    return {**p, "ipamConfigs": sorted(flat, key=lambda c: c.get("subnet", ""))}


def _volume_planned(i: dict) -> dict:
    return {"name": i["name"], "driver": i.get("driver", "local"), "driverOpts": dict(i.get("driverOpts") or {}),
            "labels": _labels(i.get("labels"))}


def _volume_stored(i: dict) -> dict:
    """resource_docker_volume.go read: name, labels, driver, and driver_opts from volume.Options, as created."""
    return _volume_planned(i)


def _image_planned(i: dict) -> dict:
    return {"name": i["name"], "keepLocally": bool(i.get("keepLocally", False))}


def _image_stored(i: dict) -> dict:
    """resourceDockerImageRead sets only image_id and repo_digest (outputs); `name` stays as given."""
    return _image_planned(i)


# ------------------------------------------------------------------ the registry

# type token -> (planned, stored). Resources of other types are not read back by their providers:
# pulumi-command's Command and pulumi-random's RandomPassword keep their inputs as state, and a
# provider resource's inputs are its configuration.
RULES: dict[str, tuple[Callable[[dict], dict], Callable[[dict], dict]]] = {
    CONTAINER: (_container_planned, _container_stored),
    NETWORK: (_network_planned, _network_stored),
    VOLUME: (_volume_planned, _volume_stored),
    IMAGE: (_image_planned, _image_stored),
}
NOT_READ_BACK = ("command:remote:Command", "command:local:Command", "random:index/randomPassword:RandomPassword",
                 "pulumi:providers:", "octollm:index:")


def diff(type_: str, inputs: dict) -> dict[str, tuple[Any, Any]]:
    """Fields whose stored value differs from the planned input: what a second `up` would change."""
    planned_fn, stored_fn = RULES[type_]
    planned, stored = planned_fn(inputs), stored_fn(inputs)
    return {k: (planned[k], stored.get(k)) for k in planned if planned[k] != stored.get(k)}
