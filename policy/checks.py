"""The policies of the pack, as plain functions (so they are unit-tested without the engine).

Each check takes a resource's type, its inputs in wire form (secret values wrapped as
{SECRET_SIG: SECRET_VALUE, "value": …}, as the engine serialises them) and its options, and returns
the violations it finds. `CHECKS` lists them with stable IDs and enforcement levels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

SECRET_SIG = "4dabf18193072939515e22adb298388d"
SECRET_VALUE = "1b47061264138c4ac30d75fd1eb44270"
# Names that carry credentials. (WEBUI_AUTH=True is a switch, not a credential: hence CLI_AUTH, not AUTH.)
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|API_KEY|SECRET|TOKEN|DATABASE_URL|REDIS_URL|DATA_SOURCE_NAME|CLI_AUTH$")
CONTAINER = "docker:index/container:Container"
WORKLOADS = {"kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet",
             "kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob"}
RUN_TO_COMPLETION = {"kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob"}  # no probes: they finish
DEFAULTS = {
    "dockerSocketAllowed": ["cadvisor", "alloy", "llm-manager", "portainer"],
    "healthcheckExempt": ["portainer"],
    "rootAllowed": ["ollama", "ollama-pull-models", "qdrant", "gpu-exporter"],
    "llmPorts": [11434, 8000],
}


@dataclass
class Opts:
    protect: bool = False
    delete_before_replace: bool = False
    retain_on_delete: bool = False


def is_secret(v: Any) -> bool:
    return isinstance(v, dict) and v.get(SECRET_SIG) == SECRET_VALUE


def plain(v: Any) -> Any:
    if is_secret(v):
        return plain(v.get("value"))
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [plain(x) for x in v]
    return v


def _pod(props: dict) -> dict:
    p = plain(props)
    spec = p.get("spec") or {}
    if "jobTemplate" in spec:  # a CronJob: the pod of the Job it makes
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def _containers(props: dict) -> list[dict]:
    """Every container of the pod, init containers included (they run with the same privileges)."""
    pod = _pod(props)
    return (pod.get("initContainers") or []) + (pod.get("containers") or [])


def _matches(name: str, allowed: list[str]) -> bool:
    return any(name == a or name.endswith("-" + a) for a in allowed)


def _pinned(image: str) -> bool:
    if "@sha256:" in image or image.startswith("sha256:"):
        return True
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    tag = tag.split("@", 1)[0]
    return bool(tag) and tag != "latest"


# ------------------------------------------------------------------ checks


def gpu_device_requests(t, props, opts, cfg):
    if t != CONTAINER:
        return []
    p = plain(props)
    out = []
    if p.get("runtime"):
        out.append(f"runtime={p['runtime']!r}: give GPUs through device requests (driver nvidia, "
                   "capabilities [gpu]), not the legacy nvidia runtime")
    if p.get("gpus"):
        out.append("`gpus` is set: use device_requests so the request is explicit and reviewable")
    return out


# What the pack puts where a value is not known until apply (a first preview: the pulled image's ID,
# a generated password). A check skips it: the value it stands for is checked where it is known.
UNKNOWN = "<unknown until apply>"


def images_pinned(t, props, opts, cfg):
    p = plain(props)
    images = []
    if t == "docker:index/remoteImage:RemoteImage":
        images.append(p.get("name", ""))
    elif t == CONTAINER and p.get("image") == UNKNOWN:
        pass  # the pulled image's ID, unknown before the pull; its RemoteImage's name is checked
    elif t == CONTAINER:
        # The program hands containers the pulled image's ID ("<ref>@<id>" or "sha256:…"): check the ref.
        ref, _, digest = p.get("image", "").partition("@")
        images.append(p.get("image", "") if digest.startswith("sha256:") else ref)
    elif t in WORKLOADS:
        images += [c.get("image", "") for c in _containers(props)]
    return [f"image {i!r} is not pinned: use a version tag or a digest, never latest" for i in images
            if not _pinned(i)]


def memory_limits(t, props, opts, cfg):
    if t == CONTAINER:
        return [] if (plain(props).get("memory") or 0) > 0 else ["no memory limit"]
    if t in WORKLOADS:
        return [f"container {c.get('name')} has no memory limit" for c in _containers(props)
                if not ((c.get("resources") or {}).get("limits") or {}).get("memory")]
    return []


def restart_policy(t, props, opts, cfg):
    if t != CONTAINER:
        return []
    r = plain(props).get("restart")
    return [] if r in ("unless-stopped", "always") else [f"restart={r!r}: use unless-stopped so it survives reboots"]


def health_checks(t, props, opts, cfg):
    if t != CONTAINER:
        return []
    p = plain(props)
    if _matches(p.get("name", ""), cfg["healthcheckExempt"]):
        return []
    return [] if (p.get("healthcheck") or {}).get("tests") else ["no health check"]


def no_privileged(t, props, opts, cfg):
    if t == CONTAINER:
        return ["privileged container"] if plain(props).get("privileged") else []
    if t in WORKLOADS:
        return [f"container {c.get('name')} is privileged" for c in _containers(props)
                if (c.get("securityContext") or {}).get("privileged")]
    return []


def docker_socket_allowlist(t, props, opts, cfg):
    if t != CONTAINER:
        return []
    p = plain(props)
    mounts = [m for m in p.get("mounts") or [] if m.get("source") in ("/var/run/docker.sock", "/var/run",
                                                                       "/run/docker.sock")]
    if mounts and not _matches(p.get("name", ""), cfg["dockerSocketAllowed"]):
        return [f"mounts the Docker socket ({mounts[0]['source']}); only {', '.join(cfg['dockerSocketAllowed'])} may"]
    return []


def secret_env(t, props, opts, cfg):
    out = []
    if t == CONTAINER:
        for e in props.get("envs") or []:
            if isinstance(e, str) and SECRET_NAME.search(e.split("=", 1)[0]):
                out.append(f"env {e.split('=', 1)[0]} is a plain value: pass it as a secret")
        if is_secret(props.get("envs")):
            return []  # the whole list is secret
    if t in WORKLOADS:
        for c in _containers(props):
            for e in c.get("env") or []:
                if SECRET_NAME.search(e.get("name", "")) and "value" in e:
                    out.append(f"env {e['name']} of {c.get('name')} is written into the pod spec: use secretKeyRef")
    if t == "kubernetes:core/v1:Secret":
        for key in ("stringData", "data"):
            if key in props and not is_secret(props[key]):
                out.append(f"Secret {key} is not marked secret")
    return out


def secret_env_report(t, props, opts, cfg):
    """The part of secret_env a validation can decide: pulumi-policy hands `validate` the properties with
    secret markers removed (only a remediation sees them), so whether a value is secret is unknowable
    there, and asking would flag every Secret and every secret env value. What stays is structure: a
    password-named env var written into a pod spec instead of referenced from a Secret."""
    out = []
    if t in WORKLOADS:
        for c in _containers(props):
            for e in c.get("env") or []:
                if SECRET_NAME.search(e.get("name", "")) and "value" in e:
                    out.append(f"env {e['name']} of {c.get('name')} is written into the pod spec: use secretKeyRef")
    return out


def llm_ports_all_interfaces(t, props, opts, cfg):
    if t != CONTAINER:
        return []
    return [f"LLM API port {p.get('external')} is published on every interface; bind it to one "
            "(llmPublishAddress) or put an authenticating proxy in front"
            for p in plain(props).get("ports") or []
            if p.get("internal") in cfg["llmPorts"] and p.get("ip") in (None, "0.0.0.0", "::")]


STATEFUL_STEP = re.compile(r"-(data-dirs?|dir|dataset|export)$")


def stateful_protected(t, props, opts, cfg, name=""):
    stateful = (t.startswith("command:") and STATEFUL_STEP.search(name)) or \
        t == "kubernetes:core/v1:PersistentVolumeClaim"
    if stateful and not opts.protect:
        return ["creates stored data but is not protected: set protect (and retainOnDelete)"]
    return []


def k8s_no_host_namespaces(t, props, opts, cfg):
    if t not in WORKLOADS:
        return []
    pod = _pod(props)
    return [f"{k} is set" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]


def k8s_resources(t, props, opts, cfg):
    if t not in WORKLOADS:
        return []
    out = []
    for c in _containers(props):
        r = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for res in ("cpu", "memory"):
                if not (r.get(kind) or {}).get(res):
                    out.append(f"container {c.get('name')} has no {res} {kind[:-1]}")
    return out


def k8s_non_root(t, props, opts, cfg):
    if t not in WORKLOADS:
        return []
    return [f"container {c.get('name')} may run as root: set runAsNonRoot"
            for c in _containers(props)
            if not (c.get("securityContext") or {}).get("runAsNonRoot") and c.get("name") not in cfg["rootAllowed"]]


def k8s_probes(t, props, opts, cfg):
    if t not in WORKLOADS or t in RUN_TO_COMPLETION:
        return []
    return [f"container {c.get('name')} lacks a {p}" for c in _pod(props).get("containers") or []
            for p in ("readinessProbe", "livenessProbe") if p not in c]


def log_rotation(t, props, opts, cfg):
    if t != CONTAINER:
        return []
    return [] if (plain(props).get("logOpts") or {}).get("max-size") else ["logs are not rotated (log max-size)"]


def fixed_names_replace_first(t, props, opts, cfg):
    if t != CONTAINER or not plain(props).get("name"):
        return []
    return [] if opts.delete_before_replace else [
        "a fixed container name (and fixed ports) cannot exist twice: set deleteBeforeReplace"]


@dataclass(frozen=True)
class Check:
    id: str
    name: str
    enforcement: str  # mandatory | advisory | remediate
    description: str
    fn: Callable = field(compare=False)


CHECKS = [
    Check("OCT001", "gpu-device-requests", "mandatory", "GPUs through device requests, never runtime=nvidia", gpu_device_requests),
    Check("OCT002", "images-pinned", "mandatory", "Images pinned by tag or digest, never latest", images_pinned),
    Check("OCT003", "memory-limits", "mandatory", "Every container and pod has a memory limit", memory_limits),
    Check("OCT004", "restart-policy", "mandatory", "Containers restart unless stopped", restart_policy),
    Check("OCT005", "health-checks", "mandatory", "Containers have health checks (allowlist: images without tools)", health_checks),
    Check("OCT006", "no-privileged", "mandatory", "No privileged containers", no_privileged),
    Check("OCT007", "docker-socket-allowlist", "mandatory", "Docker socket only for allowlisted services", docker_socket_allowlist),
    Check("OCT008", "secret-env-values", "remediate", "Env vars named like passwords, keys or tokens are secret", secret_env),
    Check("OCT009", "llm-ports-bound", "advisory", "LLM API ports not on every interface without an auth proxy", llm_ports_all_interfaces),
    Check("OCT010", "stateful-protected", "mandatory", "Steps that create stored data are protected", stateful_protected),
    Check("OCT011", "k8s-no-host-namespaces", "mandatory", "No hostNetwork/hostPID/hostIPC", k8s_no_host_namespaces),
    Check("OCT012", "k8s-resources", "mandatory", "Pods set CPU and memory requests and limits", k8s_resources),
    Check("OCT013", "k8s-non-root", "mandatory", "Pods run as non-root where the image allows", k8s_non_root),
    Check("OCT014", "k8s-probes", "mandatory", "Pods have readiness and liveness probes", k8s_probes),
    Check("OCT015", "log-rotation", "advisory", "Container logs are rotated", log_rotation),
    Check("OCT016", "fixed-names-replace-first", "mandatory", "Fixed-name containers delete before replace", fixed_names_replace_first),
]


def run_check(check: Check, resource_type: str, props: dict, opts: Opts, name: str = "",
              config: dict | None = None) -> list[str]:
    cfg = {**DEFAULTS, **(config or {})}
    if check.fn is stateful_protected:
        return stateful_protected(resource_type, props, opts, cfg, name=name)
    return check.fn(resource_type, props, opts, cfg)
