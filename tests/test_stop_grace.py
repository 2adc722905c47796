"""Every container of every real stack stops with the grace of what it runs, on a stop and on a delete.

The engine sends the stop signal and kills after the stop timeout; the docker provider's delete stops
with destroyGraceSeconds (0, an immediate SIGKILL, when unset), so the two must be the same number. On
Kubernetes the one number is the pod's terminationGracePeriodSeconds.

Which containers must get at least MIN_GRACE_S is read from what the program was asked to run, never
from a list of names: the ServiceSpec each container is built from (recorded as the program hands it
to the platform) is stateful or writes to a mount of its own (data: a database, a store, the TSDB),
or the config places it as an inference instance (an engine node or one of its replicas). A new data
service or engine therefore cannot fall back to the 10 s default unnoticed.
"""

from __future__ import annotations

import pytest

from components.config.rules import inference_instances
from components.config.schema import load_stack_config
from components.platforms.docker_host import DockerHost
from components.platforms.kubernetes import NAME_LABEL, KubernetesPlatform
from harness import stack_config
import k8s_manifests

MIN_GRACE_S = 30
STACKS = ("dev", "unraid", "homelab", "gke")
SECRETS = {"gke": {"openaiApiKey": "sk-openai-gke"}}
CONTAINER = "docker:index/container:Container"
LONG_RUNNING = ("Deployment", "StatefulSet", "DaemonSet")  # Jobs run to completion; nothing drains there


class Placed:
    """One stack's run, with the ServiceSpec behind each container (Docker: by resource name) or pod
    (Kubernetes: by the service name its pod template is labelled with)."""

    def __init__(self, stack: str, result, specs: dict):
        self.stack, self.result, self.specs = stack, result, specs
        self.cfg, _ = load_stack_config(stack_config(stack))
        self.inference = {svc for name, node in self.cfg.all_inference.items()
                          for svc, _, _ in inference_instances(name, node)}

    def containers(self):
        """(ServiceSpec, stop timeout, destroy grace, stop signal, long-running) of each container or pod."""
        out = []
        for reg in self.result.of_type(CONTAINER):
            i = reg.inputs
            out.append((self.specs[reg.name], i.get("stopTimeout"), i.get("destroyGraceSeconds"),
                        i.get("stopSignal"), True))
        for m in k8s_manifests.manifests(self.result):
            if m["kind"] not in (*LONG_RUNNING, "Job", "CronJob"):
                continue
            template = (m["spec"]["jobTemplate"]["spec"] if m["kind"] == "CronJob" else m["spec"])["template"]
            spec = self.specs[template["metadata"]["labels"][NAME_LABEL]]
            grace = template["spec"].get("terminationGracePeriodSeconds")
            # no stop-signal field in a pod before Kubernetes 1.33: the image's STOPSIGNAL applies
            out.append((spec, grace, grace, spec.stop_signal, m["kind"] in LONG_RUNNING))
        return out

    def needs_grace(self, spec) -> str | None:
        """Why this service must get MIN_GRACE_S, or None."""
        if spec.name in self.inference:
            return "inference"
        if spec.stateful or any(not m.read_only for m in spec.mounts):
            return "data"
        return None


@pytest.fixture(scope="module")
def placed(run):
    specs: dict = {}
    docker_run, pod_spec = DockerHost.run, KubernetesPlatform.pod_spec

    def record_run(self, name, spec, *args, **kw):
        specs[name] = spec
        return docker_run(self, name, spec, *args, **kw)

    def record_pod(self, spec, **kw):
        specs[spec.name] = spec
        return pod_spec(self, spec, **kw)

    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(DockerHost, "run", record_run)
        mp.setattr(KubernetesPlatform, "pod_spec", record_pod)
        for stack in STACKS:
            specs.clear()
            r = run(stack, secrets=SECRETS.get(stack))
            assert r.error is None, r.error
            out[stack] = Placed(stack, r, dict(specs))
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_every_container_stops_and_is_deleted_with_the_same_grace(placed, stack):
    p = placed[stack]
    found = p.containers()
    assert found
    for spec, stop, destroy, _, _ in found:
        assert stop == destroy == spec.stop_grace_s, (stack, spec.name, stop, destroy)
        assert stop >= 1 and stop == int(stop), (stack, spec.name, stop)  # 0 is SIGKILL; seconds are whole


@pytest.mark.parametrize("stack", STACKS)
def test_data_services_and_inference_get_time_to_flush_and_unload(placed, stack):
    p = placed[stack]
    short = [(spec.name, why, stop) for spec, stop, _, _, long_running in p.containers()
             if long_running and (why := p.needs_grace(spec)) and stop < MIN_GRACE_S]
    assert not short, f"{stack}: below {MIN_GRACE_S} s: {short}"


def test_the_classification_finds_every_data_service_and_engine(placed):
    """The floor under the rule above: what it must at least catch, across the stacks."""
    data, inference, engines = set(), set(), set()
    for p in placed.values():
        for spec, *_ , long_running in p.containers():
            why = p.needs_grace(spec) if long_running else None
            if why == "data":
                data.add(spec.name)
            elif why == "inference":
                inference.add(spec.name)
        engines |= {node.engine for node in p.cfg.all_inference.values()}
        # every inference instance the config places is a container or pod the check saw
        seen = {spec.name for spec, *_ in p.containers()}
        assert p.inference <= seen, (p.stack, p.inference - seen)
    assert {"postgres", "redis", "worker-redis", "qdrant", "prometheus", "loki"} <= data, data
    assert engines == {"ollama", "vllm", "llamacpp"}
    assert {"ollama", "vllm-qwen", "ollama-84-1", "ollama-84-2"} <= data | inference, inference


def test_postgres_stops_with_sigint(placed):
    """SIGINT is PostgreSQL's fast shutdown (sessions end, a checkpoint is written); SIGTERM is the smart
    one, which waits for every client to leave and so runs into the kill."""
    found = []
    for p in placed.values():
        image = p.cfg.image("postgres")
        for spec, _, _, signal, _ in p.containers():
            if spec.image == image:
                found.append((p.stack, spec.name))
                assert signal == "SIGINT", (p.stack, spec.name, signal)
    assert {s for s, _ in found} == {"unraid", "gke"}, found
