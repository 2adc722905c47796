"""A model of what the providers store after create, written from their source, not from the program.

After `create`, a Terraform-bridged provider reads the resource back and keeps what the engine
reports; the next `pulumi up` diffs the new inputs (with the schema's defaults filled in) against
that state. `planned(type, inputs)` is the first, `stored(type, inputs)` the second; where they
differ for any field, a second `up` would show a change (and for a ForceNew field, a replacement:
in this provider version `healthcheck`, `cpus`, `image` and most container fields are ForceNew,
resource_docker_container.go).

The rules cite kreuzwerker/terraform-provider-docker v4.6.0+ as built here (commit 96d331c98ff4,
bridged by pulumi-docker 5.x), internal/provider/, and moby (docker/docker v28.5.2) daemon/ for what
the engine keeps. They are implemented independently of components/platforms/forms.py, so reverting
a canonical form in the program makes the comparison fail.

The model is strict: every input key of a modelled type is either compared by a rule or listed in
NOT_COMPARED with the upstream reason; any other key raises Unmodelled, naming the type and the key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
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


# ------------------------------------------------------------------ strictness


class Unmodelled(AssertionError):
    """An input with no read-back rule: the sweep cannot say whether a second `up` keeps it."""


@dataclass(frozen=True)
class Engine:
    """What differs between Docker hosts and changes what the engine stores.

    swap_limit: moby's sysinfo.SwapLimit (`docker info` .SwapLimit), cgroup swap accounting.
    """

    swap_limit: bool = True


DEFAULT_ENGINE = Engine()

# Inputs the provider's Read never writes back, so the state keeps the planned value and no form of
# them can drift. Each entry: why, with the upstream place that says so.
NOT_COMPARED: dict[str, dict[str, str]] = {
    "docker:index/container:Container": {
        "envs": "resourceDockerContainerRead (resource_docker_container_funcs.go) sets neither env nor "
                "labels: 'they are taken over from the Docker image and aren't scalar'",
        "labels": "resourceDockerContainerRead (resource_docker_container_funcs.go) does not read labels "
                  "back either, for the same reason as env",
        "networksAdvanced": "resourceDockerContainerRead (resource_docker_container_funcs.go) sets it from "
                            "NetworkSettings.Networks only when the state's set is empty (terraform import)",
        "destroyGraceSeconds": "used by resourceDockerContainerDelete only (resource_docker_container_funcs.go); "
                               "Read never sets it "
                               "('destroy_grace_seconds can't be imported')",
        "wait": "used by resourceDockerContainerCreate only (resource_docker_container_funcs.go, waits for "
                "healthy); Read never sets it",
        "waitTimeout": "used by resourceDockerContainerCreate only (resource_docker_container_funcs.go); "
                       "Read never sets it",
    },
    "docker:index/network:Network": {},
    "docker:index/volume:Volume": {},
    "docker:index/remoteImage:RemoteImage": {
        "keepLocally": "used by resourceDockerImageDelete only; resourceDockerImageRead "
                       "(resource_docker_image_funcs.go) sets image_id and repo_digest alone",
    },
}

# Keys the rules compare; a set names the keys allowed inside a nested block (a dict or a list of them).
_ALL = None
MODELLED: dict[str, dict[str, set[str] | None]] = {
    "docker:index/container:Container": {
        "name": _ALL, "image": _ALL, "cpus": _ALL, "memory": _ALL, "memorySwap": _ALL, "shmSize": _ALL,
        "healthcheck": {"tests", "interval", "timeout", "startPeriod", "startInterval", "retries"},
        "ports": {"internal", "external", "ip", "protocol"},
        "mounts": {"target", "source", "type", "readOnly"},
        "devices": {"hostPath", "containerPath", "permissions"},
        "deviceRequests": {"driver", "count", "deviceIds", "capabilities"},
        "user": _ALL, "restart": _ALL, "pidMode": _ALL, "logDriver": _ALL, "logOpts": _ALL,
        "stopSignal": _ALL, "stopTimeout": _ALL, "privileged": _ALL, "readOnly": _ALL, "command": _ALL,
        "entrypoints": _ALL, "tmpfs": _ALL,
    },
    "docker:index/network:Network": {
        "name": _ALL, "driver": _ALL, "internal": _ALL, "attachable": _ALL, "ingress": _ALL, "ipv6": _ALL,
        "ipamDriver": _ALL, "ipamOptions": _ALL, "options": _ALL, "labels": {"label", "value"},
        "ipamConfigs": {"subnet", "ipRange", "gateway", "auxAddress"},
    },
    "docker:index/volume:Volume": {"name": _ALL, "driver": _ALL, "driverOpts": _ALL, "labels": {"label", "value"}},
    "docker:index/remoteImage:RemoteImage": {"name": _ALL},
}


def unmodelled_keys(type_: str, inputs: dict) -> list[str]:
    """Input keys (nested as `block.key`) that neither a rule nor NOT_COMPARED accounts for."""
    known, skipped = MODELLED[type_], NOT_COMPARED[type_]
    out = []
    for key, value in inputs.items():
        if key in skipped:
            continue
        if key not in known:
            out.append(key)
            continue
        inner = known[key]
        if inner is None or value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            out += [f"{key}.{k}" for k in (item if isinstance(item, dict) else {}) if k not in inner]
    return sorted(set(out))


def require_modelled(type_: str, inputs: dict) -> None:
    missing = unmodelled_keys(type_, inputs)
    if missing:
        raise Unmodelled(f"{type_} {inputs.get('name', '?')!r}: no read-back rule for input(s) {missing}; "
                         "model them from the provider's Read or list them in readback.NOT_COMPARED with the reason")


# ------------------------------------------------------------------ docker_container


def _num(v: Any) -> Any:
    """Numbers cross the wire as floats; the provider's schema holds ints."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _container_planned(i: dict) -> dict:
    """Inputs as the provider's Check leaves them: schema defaults of resource_docker_container.go.

    Optional+Computed fields left unset take whatever Read stores, so they are compared only when set.
    """
    out: dict = {"image": i["image"]}
    if "cpus" in i:
        out["cpus"] = i["cpus"]
    # memory, memory_swap: Optional, neither Computed nor defaulted; unset they plan as 0.
    out["memory"] = _num(i.get("memory", 0))
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
    out["restart"] = i.get("restart", "no")  # Default "no"
    for key in ("user", "pidMode", "logDriver", "stopSignal", "name"):
        if key in i:
            out[key] = i[key]
    if "stopTimeout" in i:
        out["stopTimeout"] = _num(i["stopTimeout"])
    for key in ("privileged", "readOnly"):
        out[key] = bool(i.get(key, False))
    for key in ("command", "entrypoints"):
        if key in i:
            out[key] = list(i[key])
    # log_opts, tmpfs: Optional maps, not Computed: unset plans as empty.
    for key in ("logOpts", "tmpfs"):
        out[key] = dict(i.get(key) or {})
    return out


def container_engine_request(i: dict) -> dict:
    """What resourceDockerContainerCreate sends to the Engine API for the fields read back."""
    p = _container_planned(i)
    req: dict = {"Config": {"Image": p["image"]}, "HostConfig": {}}
    c, hc = req["Config"], req["HostConfig"]
    if "cpus" in p:
        hc["NanoCpus"] = docker_parse_cpus(p["cpus"])
    if p["memory"]:
        hc["Memory"] = p["memory"] * 1024 * 1024
    if p["memorySwap"]:
        # d.GetOk("memory_swap"): only a positive value is scaled to bytes; -1 goes as is.
        hc["MemorySwap"] = p["memorySwap"] * 1024 * 1024 if p["memorySwap"] > 0 else p["memorySwap"]
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
    hc["RestartPolicy"] = {"Name": p["restart"]}
    if "pidMode" in p:
        hc["PidMode"] = p["pidMode"]
    if "logDriver" in p or p["logOpts"]:
        hc["LogConfig"] = {"Type": p.get("logDriver", "json-file"), "Config": p["logOpts"]}
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
    if p["tmpfs"]:
        hc["Tmpfs"] = p["tmpfs"]
    return req


def container_state_from_inspect(inspect: dict, planned: dict) -> dict:
    """resourceDockerContainerRead (resource_docker_container_funcs.go) for the fields the program sets.

    `planned` decides, as the provider's `d.GetOk` does, which optional blocks are read back at all
    (ports, devices, device_requests, pid_mode, log_opts), and which form of `image` is kept.
    """
    c, hc = inspect.get("Config") or {}, inspect.get("HostConfig") or {}
    out: dict = {}
    # "If it begins with sha256: then we need to use {{ .Image }} value. If not, we can use Config.Image"
    out["image"] = inspect.get("Image", "") if planned["image"].startswith("sha256:") else c.get("Image", "")
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
    # containerLogOptsForState: the engine's map only where the configuration has log_opts.
    out["logOpts"] = dict((hc.get("LogConfig") or {}).get("Config") or {}) if planned["logOpts"] else {}
    out["stopSignal"] = c.get("StopSignal", "")
    out["stopTimeout"] = c.get("StopTimeout")
    out["privileged"] = bool(hc.get("Privileged"))
    out["readOnly"] = bool(hc.get("ReadonlyRootfs"))
    out["command"] = list(c.get("Cmd") or [])
    out["entrypoints"] = list(c.get("Entrypoint") or [])
    out["tmpfs"] = dict(hc.get("Tmpfs") or {})
    out["name"] = inspect.get("Name", "").lstrip("/")
    return out


def image_id_of(ref: str) -> str:
    """A stand-in for an image's ID as the engine reports it: "sha256:" and 64 hex digits. Only its
    form matters to the model; the real-engine test uses a real one."""
    import hashlib

    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()


def engine_inspect_model(request: dict, name: str, image_config: dict | None = None,
                         engine: Engine = DEFAULT_ENGINE) -> dict:
    """What the engine answers to inspect for a created request (moby daemon/create.go containerCreate).

    Config.Image keeps the reference as sent; .Image is the ID it resolved to (a full
    "sha256:<64 hex>"; a short ID prefix resolves to the full one). Optional+Computed fields left
    unset come from the image (Cmd, Entrypoint, StopSignal, User). HostConfig is kept as sent except
    where the daemon adjusts it, in this order: verifyPlatformContainerResources (daemon_unix.go)
    sets MemorySwap to -1 when the host has no swap accounting and the request asks for anything but
    -1; adaptContainerSettings then sets an unset (0) MemorySwap to 2 x Memory and an unset ShmSize
    to 64 MiB; an empty restart policy becomes "no". The real-engine test checks this against dockerd.
    """
    img = image_config or {}
    c = {**{k: img[k] for k in ("Cmd", "Entrypoint", "StopSignal", "User") if k in img}, **request["Config"]}
    ref = c.get("Image", "")
    if re.fullmatch(r"sha256:[0-9a-f]{64}", ref):
        resolved = ref
    elif ref.startswith("sha256:"):
        resolved = image_id_of("prefix " + ref)  # the full ID of the image the prefix names
    else:
        resolved = image_id_of(ref)
    hc = dict(request["HostConfig"])
    if hc.get("Memory", 0) > 0 and hc.get("MemorySwap", 0) != -1 and not engine.swap_limit:
        hc["MemorySwap"] = -1  # "Memory limited without swap."
    if hc.get("Memory", 0) > 0 and hc.get("MemorySwap", 0) == 0:
        hc["MemorySwap"] = 2 * hc["Memory"]  # "By default, MemorySwap is set to twice the size of Memory."
    if not hc.get("ShmSize"):
        hc["ShmSize"] = 64 * 1024 * 1024  # config.DefaultShmSize
    hc["RestartPolicy"] = {"Name": (hc.get("RestartPolicy") or {}).get("Name") or "no"}
    return {"Name": "/" + name, "Image": resolved, "Config": c, "HostConfig": hc,
            "NetworkSettings": {"Ports": request["HostConfig"].get("PortBindings", {})}}


def _container_stored(i: dict, engine: Engine = DEFAULT_ENGINE) -> dict:
    planned = _container_planned(i)
    inspect = engine_inspect_model(container_engine_request(i), i.get("name", ""), engine=engine)
    return container_state_from_inspect(inspect, planned)


# ------------------------------------------------------------------ docker_network


def _labels(v) -> list:
    return sorted(({"label": x["label"], "value": x["value"]} for x in v or []), key=lambda x: x["label"])


def _ipam_rows(configs) -> list:
    # ipam_config is a set of subnet/ip_range/gateway/aux_address; an empty string is no value.
    return sorted(({k: (dict(v) if isinstance(v, dict) else v) for k, v in c.items() if v} for c in configs or []),
                  key=lambda c: (c.get("subnet", ""), c.get("gateway", "")))


def _network_planned(i: dict) -> dict:
    """resource_docker_network.go: attachable, ingress, ipv6 Optional (false unset); ipam_driver
    Default "default"; ipam_options Optional (empty unset); driver, internal, options, ipam_config
    Optional+Computed (compared only when set)."""
    out = {"name": i["name"], "labels": _labels(i.get("labels")), "attachable": bool(i.get("attachable", False)),
           "ingress": bool(i.get("ingress", False)), "ipv6": bool(i.get("ipv6", False)),
           "ipamDriver": i.get("ipamDriver", "default"), "ipamOptions": dict(i.get("ipamOptions") or {})}
    for key in ("driver", "internal"):
        if key in i:
            out[key] = i[key]
    if "options" in i:
        out["options"] = dict(i["options"] or {})
    if "ipamConfigs" in i:
        out["ipamConfigs"] = _ipam_rows(i["ipamConfigs"])
    return out


def network_engine_request(i: dict) -> dict:
    """resourceDockerNetworkCreate: network.CreateOptions from the fields d.GetOk finds set, and the
    IPAM block only when ipam_driver, ipam_config or ipam_options is (ipam_driver always is: a Default).
    ipamConfigSetToIpamConfigs sends every field, empty strings included."""
    p = _network_planned(i)
    body: dict = {"Name": p["name"]}
    if p["labels"]:
        body["Labels"] = {x["label"]: x["value"] for x in p["labels"]}
    if p.get("driver"):
        body["Driver"] = p["driver"]
    if p.get("options"):
        body["Options"] = p["options"]
    for key, api in (("internal", "Internal"), ("attachable", "Attachable"), ("ingress", "Ingress")):
        if p.get(key):
            body[api] = True
    if p["ipv6"]:
        body["EnableIPv6"] = True
    ipam: dict = {"Driver": p["ipamDriver"]}
    if p.get("ipamConfigs"):
        # network.IPAMConfig's JSON: Subnet, IPRange, Gateway (omitempty), AuxiliaryAddresses.
        ipam["Config"] = [{k: v for k, v in (("Subnet", c.get("subnet", "")), ("IPRange", c.get("ipRange", "")),
                                               ("Gateway", c.get("gateway", ""))) if v}
                          | ({"AuxiliaryAddresses": c["auxAddress"]} if c.get("auxAddress") else {})
                          for c in p["ipamConfigs"]]
    if p["ipamOptions"]:
        ipam["Options"] = p["ipamOptions"]
    body["IPAM"] = ipam
    return body


def network_engine_inspect_model(body: dict) -> dict:
    """What NetworkInspect returns for a local bridge network created from `body` (moby libnetwork):
    name, driver ("bridge" when none is sent), labels, internal/attachable/ingress and options as sent;
    IPAM driver as sent ("default" when none), each IPAM config's subnet, range, gateway and auxiliary
    addresses as the strings sent. A subnet with host bits set is refused at create, so no stored
    subnet differs from the sent one; the real-engine test holds this against dockerd."""
    ipam = body.get("IPAM") or {}
    for c in ipam.get("Config") or []:
        net = ipaddress.ip_network(c["Subnet"], strict=False)
        if str(net) != c["Subnet"]:
            raise ValueError(f"invalid subnet {c['Subnet']}: it should be {net}")
    return {"Name": body["Name"], "Driver": body.get("Driver") or "bridge", "Scope": "local",
            "EnableIPv6": bool(body.get("EnableIPv6")), "Internal": bool(body.get("Internal")),
            "Attachable": bool(body.get("Attachable")), "Ingress": bool(body.get("Ingress")),
            "IPAM": {"Driver": ipam.get("Driver") or "default", "Options": ipam.get("Options"),
                     "Config": [dict(c) for c in ipam.get("Config") or []]},
            "Options": dict(body.get("Options") or {}), "Labels": dict(body.get("Labels") or {})}


def network_state_from_inspect(n: dict) -> dict:
    """resourceDockerNetworkReadRefreshFunc (resource_docker_network_funcs.go) with flattenIpamConfigSpec
    (resource_docker_network_structures.go): empty subnet/ip_range/gateway/aux_address are dropped."""
    rows = [{k: v for k, v in (("subnet", c.get("Subnet", "")), ("ipRange", c.get("IPRange", "")),
                               ("gateway", c.get("Gateway", "")),
                               ("auxAddress", dict(c.get("AuxiliaryAddresses") or {}))) if v}
            for c in (n.get("IPAM") or {}).get("Config") or []]
    return {"name": n["Name"], "labels": _labels({"label": k, "value": v} for k, v in (n.get("Labels") or {}).items()),
            "driver": n["Driver"], "internal": n["Internal"], "attachable": n["Attachable"], "ingress": n["Ingress"],
            "ipv6": n["EnableIPv6"], "ipamDriver": n["IPAM"]["Driver"], "ipamOptions": dict(n["IPAM"].get("Options") or {}),
            "options": dict(n.get("Options") or {}), "ipamConfigs": _ipam_rows(rows)}


def _network_stored(i: dict, engine: Engine = DEFAULT_ENGINE) -> dict:
    return network_state_from_inspect(network_engine_inspect_model(network_engine_request(i)))


# ------------------------------------------------------------------ docker_volume


def _volume_planned(i: dict) -> dict:
    """resource_docker_volume.go: name and driver Optional+Computed; driver_opts, labels Optional."""
    out = {"driverOpts": dict(i.get("driverOpts") or {}), "labels": _labels(i.get("labels"))}
    for key in ("name", "driver"):
        if key in i:
            out[key] = i[key]
    return out


def volume_engine_request(i: dict) -> dict:
    """resourceDockerVolumeCreate: volume.CreateOptions from the fields d.GetOk finds set."""
    p = _volume_planned(i)
    body: dict = {}
    if p.get("name"):
        body["Name"] = p["name"]
    if p["labels"]:
        body["Labels"] = {x["label"]: x["value"] for x in p["labels"]}
    if p.get("driver"):
        body["Driver"] = p["driver"]
    if p["driverOpts"]:
        body["DriverOpts"] = p["driverOpts"]
    return body


_LOCAL_OPTS = {"type", "o", "device", "size"}  # volume/local/local_unix.go validOpts


def volume_engine_inspect_model(body: dict) -> dict:
    """What VolumeInspect returns (moby volume/service): Options is the map given at create, kept by
    the store (volumeWrapper.Options), not what the local driver parsed from it; nothing is mounted
    until a container uses the volume, so an NFS volume is created without reaching its server."""
    driver = body.get("Driver") or "local"
    opts = dict(body.get("DriverOpts") or {})
    if driver == "local":
        bad = set(opts) - _LOCAL_OPTS
        if bad:
            raise ValueError(f"invalid option: {sorted(bad)[0]!r}")
    name = body["Name"]
    return {"Name": name, "Driver": driver, "Labels": dict(body.get("Labels") or {}) or None, "Options": opts or None,
            "Mountpoint": f"/var/lib/docker/volumes/{name}/_data", "Scope": "local"}


def volume_state_from_inspect(v: dict) -> dict:
    """resourceDockerVolumeRead (resource_docker_volume.go): name, labels, driver, driver_opts = Options."""
    return {"name": v["Name"], "driver": v["Driver"], "driverOpts": dict(v.get("Options") or {}),
            "labels": _labels({"label": k, "value": x} for k, x in (v.get("Labels") or {}).items())}


def _volume_stored(i: dict, engine: Engine = DEFAULT_ENGINE) -> dict:
    return volume_state_from_inspect(volume_engine_inspect_model(volume_engine_request(i)))


# ------------------------------------------------------------------ docker_image


def _image_planned(i: dict) -> dict:
    return {"name": i["name"]}


def _image_stored(i: dict, engine: Engine = DEFAULT_ENGINE) -> dict:
    """resourceDockerImageRead (resource_docker_image_funcs.go) sets only image_id (the engine's
    ImageList ID, "sha256:<64 hex>") and repo_digest, both outputs; `name` stays as given."""
    return _image_planned(i)


# ------------------------------------------------------------------ the registry

# type token -> (planned, stored). Resources of other types are not read back by their providers:
# pulumi-command's Command and pulumi-random's RandomPassword keep their inputs as state, and a
# provider resource's inputs are its configuration.
RULES: dict[str, tuple[Callable[[dict], dict], Callable[..., dict]]] = {
    CONTAINER: (_container_planned, _container_stored),
    NETWORK: (_network_planned, _network_stored),
    VOLUME: (_volume_planned, _volume_stored),
    IMAGE: (_image_planned, _image_stored),
}
NOT_READ_BACK = ("command:remote:Command", "command:local:Command", "random:index/randomPassword:RandomPassword",
                 "pulumi:providers:", "octollm:index:")


def diff(type_: str, inputs: dict, engine: Engine = DEFAULT_ENGINE) -> dict[str, tuple[Any, Any]]:
    """Fields whose stored value differs from the planned input: what a second `up` would change.
    Raises Unmodelled for an input no rule accounts for."""
    require_modelled(type_, inputs)
    planned_fn, stored_fn = RULES[type_]
    planned, stored = planned_fn(inputs), stored_fn(inputs, engine)
    return {k: (planned[k], stored.get(k)) for k in planned if planned[k] != stored.get(k)}
