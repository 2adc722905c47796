"""Every canonical form the program writes is load-bearing: put back the naive form and the sweep sees it.

tests/test_readback.py shows that each real stack's inputs equal what the providers read back. That
proves little unless the comparison fails without each form the program applies to get there. Here
each form is reverted alone (the function in components/platforms/forms.py or kubernetes.py, or a
small wrapper around the adapter's call) and every real stack is run afresh:

- where the revert changes a registered input, exactly the changed resources drift, only on the
  form's own fields;
- the stacks where it changes something are declared, so a form that reaches a new stack (or stops
  reaching one) fails here until the table says so, and a form no stack reaches says so with ();
- without the revert the same stack shows no drift at all (the other side of the same test).

HARMLESS holds what the program writes out although the provider would read back the same without
it (a schema default filled in on plan, a field pruned from the live object): the revert changes
inputs, and the model must still see no drift. If the model starts seeing one, the entry belongs in
REVERTS.
"""

from __future__ import annotations

import base64
import builtins
from dataclasses import dataclass
from typing import Any, Callable

import pulumi
import pulumi_docker
import pulumi_kubernetes
import pytest

import readback
import readback_kubernetes
from test_readback import STACKS, drift, unmodelled
from components.platforms import docker_host as dh
from components.platforms import kubernetes as kp
from components.platforms import kubernetes_network as kn
from components.platforms.workload import PortSpec


@dataclass(frozen=True)
class Form:
    revert: Callable[[pytest.MonkeyPatch], None]
    fields: frozenset[str]  # where a drift may show: the innermost field names
    stacks: tuple[str, ...]  # the real stacks whose registered inputs the revert changes
    provider: str  # the type prefix of the only resources the revert can change


def docker_form(revert, fields, stacks) -> Form:
    return Form(revert, frozenset(fields), stacks, "docker:")


def kube_form(revert, fields, stacks=("gke",)) -> Form:
    return Form(revert, frozenset(fields), stacks, "kubernetes:")


# ------------------------------------------------------------------ reverts: small wrappers


def _wrap_init(monkeypatch, module, name: str, edit: Callable[[dict], None]) -> None:
    """Replace module.<name> by a subclass whose constructor edits its keyword arguments first.

    A subclass keeps the type token and isinstance checks; monkeypatch puts the class back after."""
    original = getattr(module, name)

    class Reverted(original):  # type: ignore[misc, valid-type]
        def __init__(self, resource_name, *args, **kwargs):
            edit(kwargs)
            super().__init__(resource_name, *args, **kwargs)

    monkeypatch.setattr(module, name, Reverted)


def _wrap_pods(monkeypatch, edit: Callable[[dict], None]) -> None:
    """Apply `edit` to every pod spec the Kubernetes platform builds (workloads, jobs, CronJobs)."""
    original = kp.KubernetesPlatform.pod_spec

    def pod_spec(self, spec, **kw):
        pod, claims = original(self, spec, **kw)
        edit(pod)
        return pod, claims

    monkeypatch.setattr(kp.KubernetesPlatform, "pod_spec", pod_spec)


def _containers(pod: dict) -> list[dict]:
    return [*pod["containers"], *pod.get("initContainers", [])]


def _every_container(key: str, value_factory: Callable[[], Any]) -> Callable[[pytest.MonkeyPatch], None]:
    def revert(monkeypatch):
        def edit(pod):
            for c in pod["containers"]:
                c.setdefault(key, value_factory())
        _wrap_pods(monkeypatch, edit)
    return revert


# ---- Docker


def _cpus_g(monkeypatch):
    monkeypatch.setattr(dh, "docker_cpus", lambda cpus: f"{cpus:g}")


def _plain_seconds(monkeypatch):
    monkeypatch.setattr(dh, "go_duration", lambda s: f"{s}s")


def _swap_unset(monkeypatch):
    _wrap_init(monkeypatch, pulumi_docker, "Container", lambda kw: kw.pop("memory_swap", None))


def _swap_as_memory(monkeypatch):
    # -1 is what the adapter sends to a host without swap accounting; the naive form sends memory there too.
    def edit(kw):
        if kw.get("memory_swap") == -1:
            kw["memory_swap"] = kw["memory"]
    _wrap_init(monkeypatch, pulumi_docker, "Container", edit)


def _ports_in_spec_order(monkeypatch):
    # The adapter sorts the spec's ports with the builtin; without that they come in the order the
    # component listed them.
    def unsorted(items, *args, **kwargs):
        items = list(items)
        if items and all(isinstance(p, PortSpec) for p in items):
            return items
        return builtins.sorted(items, *args, **kwargs)

    monkeypatch.setattr(dh, "sorted", unsorted, raising=False)


def _drop_port_arg(key: str) -> Callable[[pytest.MonkeyPatch], None]:
    def revert(monkeypatch):
        original = pulumi_docker.ContainerPortArgs

        def port_args(**kw):
            kw.pop(key, None)
            return original(**kw)

        monkeypatch.setattr(pulumi_docker, "ContainerPortArgs", port_args)
    return revert


def _drop_device_arg(key: str) -> Callable[[pytest.MonkeyPatch], None]:
    def revert(monkeypatch):
        original = pulumi_docker.ContainerDeviceArgs

        def device_args(**kw):
            kw.pop(key, None)
            return original(**kw)

        monkeypatch.setattr(pulumi_docker, "ContainerDeviceArgs", device_args)
    return revert


# ---- Kubernetes


def _millicores(monkeypatch):
    monkeypatch.setattr(kp, "cpu_quantity", lambda cpus: f"{int(round(cpus * 1000))}m")


def _mebibytes(monkeypatch):
    monkeypatch.setattr(kp, "memory_quantity", lambda gb: f"{int(round(gb * 1024))}Mi")


def _storage_in_mi(monkeypatch):
    monkeypatch.setattr(kp, "storage_quantity", lambda gb: f"{int(gb) * 1024}Mi")


def _bare_counts(monkeypatch):
    # A whole count (the GPU request) as a JSON number; scaled quantities (millicores) unchanged.
    original = kp.decimal_quantity
    monkeypatch.setattr(kp, "decimal_quantity", lambda m, e=0: m if e == 0 else original(m, e))


def _string_data(monkeypatch):
    def edit(kw):
        data = kw.pop("data", None)
        if data is not None:
            kw["string_data"] = {k: pulumi.Output.from_input(v).apply(lambda s: base64.b64decode(s).decode())
                                 for k, v in data.items()}
    _wrap_init(monkeypatch, pulumi_kubernetes.core.v1, "Secret", edit)


def _empty_pod_list(key: str) -> Callable[[pytest.MonkeyPatch], None]:
    def revert(monkeypatch):
        _wrap_pods(monkeypatch, lambda pod: pod.setdefault(key, []))
    return revert


def _empty_claim_templates(monkeypatch):
    def edit(kw):
        kw["spec"] = {**kw["spec"], "volumeClaimTemplates": kw["spec"].get("volumeClaimTemplates", [])}
    _wrap_init(monkeypatch, pulumi_kubernetes.apps.v1, "StatefulSet", edit)


def _claim_read_only_false(monkeypatch):
    def edit(pod):
        claims = set()
        for v in pod.get("volumes", []):
            if "persistentVolumeClaim" in v:
                v["persistentVolumeClaim"].setdefault("readOnly", False)
                claims.add(v["name"])
        for c in _containers(pod):
            for m in c.get("volumeMounts", []):
                if m["name"] in claims:
                    m.setdefault("readOnly", False)
    _wrap_pods(monkeypatch, edit)


def _initial_delay_zero(monkeypatch):
    original = kp.probe
    monkeypatch.setattr(kp, "probe", lambda h, **kw: {"initialDelaySeconds": 0, **original(h, **kw)})


def _empty_annotations(monkeypatch):
    original = kp.KubernetesPlatform.meta

    def meta(self, name, labels=None, annotations=None):
        return {**original(self, name, labels, annotations), "annotations": annotations or {}}

    monkeypatch.setattr(kp.KubernetesPlatform, "meta", meta)


def _empty_template_annotations(monkeypatch):
    original = kp.KubernetesPlatform._template

    def template(svc, pod, annotations):
        out = original(svc, pod, annotations)
        out["metadata"].setdefault("annotations", {})
        return out

    monkeypatch.setattr(kp.KubernetesPlatform, "_template", staticmethod(template))


def _empty_policy_rules(monkeypatch):
    original = kn.policy_manifests

    def manifests(flows):
        out = original(flows)
        for spec in out.values():
            spec.setdefault("ingress", [])
            spec.setdefault("egress", [])
        return out

    monkeypatch.setattr(kn, "policy_manifests", manifests)


def _no_metadata_name_label(monkeypatch):
    def edit(kw):
        kw["metadata"] = {**kw["metadata"], "labels": {k: v for k, v in kw["metadata"]["labels"].items()
                                                       if k != "kubernetes.io/metadata.name"}}
    _wrap_init(monkeypatch, pulumi_kubernetes.core.v1, "Namespace", edit)


# ------------------------------------------------------------------ the tables

DOCKER_STACKS = ("dev", "unraid", "homelab")
WITH_WHOLE_CPUS = ("unraid", "homelab")  # dev's one container has 1.5 CPUs, which %g prints the same
WITH_DEVICES = ("unraid", "homelab")

REVERTS: dict[str, Form] = {
    # docker: kreuzwerker/terraform-provider-docker, as modelled in tests/readback.py
    "cpus as %g": docker_form(_cpus_g, {"cpus"}, WITH_WHOLE_CPUS),
    "durations in plain seconds": docker_form(_plain_seconds, {"interval", "timeout", "startPeriod"}, DOCKER_STACKS),
    "memory_swap left to the engine": docker_form(_swap_unset, {"memorySwap"}, DOCKER_STACKS),
    "memory_swap = memory without swap accounting": docker_form(_swap_as_memory, {"memorySwap"}, ()),
    "ports in the spec's order": docker_form(_ports_in_spec_order, {"ports", "internal", "external"}, ()),
    # kubernetes: the API server's forms and the provider's pruning, as modelled in tests/readback_kubernetes.py
    "cpu in millicores": kube_form(_millicores, {"cpu"}),
    "memory in MiB": kube_form(_mebibytes, {"memory"}),
    "storage in MiB": kube_form(_storage_in_mi, {"storage", "sizeLimit"}),
    "whole counts as numbers": kube_form(_bare_counts, {kp.GPU_RESOURCE}),
    "Secret values as stringData": kube_form(_string_data, {"data", "stringData"}),
    "empty env lists": kube_form(_every_container("env", list), {"env"}),
    "empty container port lists": kube_form(_every_container("ports", list), {"ports"}),
    "empty volumeMounts lists": kube_form(_every_container("volumeMounts", list), {"volumeMounts"}),
    "empty command lists": kube_form(_every_container("command", list), {"command"}),
    "empty args lists": kube_form(_every_container("args", list), {"args"}),
    "empty volume lists": kube_form(_empty_pod_list("volumes"), {"volumes"}),
    "empty initContainers lists": kube_form(_empty_pod_list("initContainers"), {"initContainers"}),
    "empty volumeClaimTemplates lists": kube_form(_empty_claim_templates, {"volumeClaimTemplates"}, ()),
    "readOnly false on claim mounts": kube_form(_claim_read_only_false, {"readOnly"}),
    "initialDelaySeconds 0 on probes": kube_form(_initial_delay_zero, {"initialDelaySeconds"}),
    "empty object annotations": kube_form(_empty_annotations, {"annotations"}),
    "empty pod template annotations": kube_form(_empty_template_annotations, {"annotations"}),
    "empty NetworkPolicy rule lists": kube_form(_empty_policy_rules, {"ingress", "egress"}),
}

HARMLESS: dict[str, tuple[Form, str]] = {
    "port ip left to the default": (docker_form(_drop_port_arg("ip"), (), DOCKER_STACKS),
                                    'schema Default "0.0.0.0": the provider sends and stores it either way'),
    "port protocol left to the default": (docker_form(_drop_port_arg("protocol"), (), DOCKER_STACKS),
                                          'schema Default "tcp"'),
    "device permissions left to the default": (docker_form(_drop_device_arg("permissions"), (), WITH_DEVICES),
                                               'schema Default "rwm"'),
    "device container path left out": (docker_form(_drop_device_arg("container_path"), (), WITH_DEVICES),
                                       "flattenDevices reads container_path back only where it was given"),
    "namespace without its metadata.name label": (kube_form(_no_metadata_name_label, ()),
                                                  "the live object is pruned to the inputs' shape"),
}


# ------------------------------------------------------------------ running and comparing

_canonical: dict[str, Any] = {}


def canonical(run, stack: str):
    if stack not in _canonical:
        result = run(stack)
        assert result.error is None, result.error
        _canonical[stack] = result
    return _canonical[stack]


def changed(before, after) -> set[str]:
    old = {r.name: r.inputs for r in before.registrations}
    new = {r.name: r.inputs for r in after.registrations}
    assert set(old) == set(new), "a revert of a form must not add or remove resources"
    return {n for n in new if new[n] != old[n]}


def leaf_names(a: Any, b: Any) -> set[str]:
    """The names of the innermost fields where a and b differ (list positions are not names)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            if k not in a or k not in b:
                out.add(k)
            elif a[k] != b[k]:
                inner = leaf_names(a[k], b[k])
                out |= inner or {k}
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        out = set()
        for x, y in zip(a, b):
            if x != y:
                out |= leaf_names(x, y)
        return out
    return set()


def drifting_fields(found: dict[str, dict]) -> dict[str, set[str]]:
    """resource -> the fields a second `up` would change; for a Kubernetes object the innermost ones."""
    out = {}
    for name, fields in found.items():
        names: set[str] = set()
        for field, (given, back) in fields.items():
            names |= leaf_names(given, back) or {field}
        out[name] = names
    return out


def assert_reverted(run, monkeypatch, label: str, form: Form, stack: str, *, harmless: bool) -> None:
    base = canonical(run, stack)
    assert drift(base) == {}, f"{stack} drifts with every form in place"
    if not any(r.type.startswith(form.provider) for r in base.registrations):
        # Nothing the revert could change: a stack on another platform needs no run of its own.
        assert stack not in form.stacks
        return
    form.revert(monkeypatch)
    reverted = run(stack)
    assert reverted.error is None, reverted.error
    assert unmodelled(reverted) == []
    touched = changed(base, reverted)
    found = drifting_fields(drift(reverted))
    monkeypatch.undo()
    if stack not in form.stacks:
        assert touched == set(), f"{label!r} reaches {stack} now: declare it, with what it shows"
        assert found == {}
        return
    assert touched, f"{label!r} no longer changes anything on {stack}: take {stack} out of its stacks"
    if harmless:
        assert found == {}, f"{label!r} drifts on {stack} after all: move it to REVERTS"
        return
    assert set(found) == touched, f"{label!r} on {stack}: changed {sorted(touched)}, drifting {sorted(found)}"
    stray = {n: f - form.fields for n, f in found.items() if f - form.fields}
    assert not stray, f"{label!r} on {stack} drifts beyond {sorted(form.fields)}: {stray}"


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("label", sorted(REVERTS))
def test_a_reverted_form_drifts_on_every_stack_it_reaches(run, monkeypatch, label, stack):
    assert_reverted(run, monkeypatch, label, REVERTS[label], stack, harmless=False)


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("label", sorted(HARMLESS))
def test_a_defaulted_field_reads_back_the_same_without_it(run, monkeypatch, label, stack):
    assert_reverted(run, monkeypatch, label, HARMLESS[label][0], stack, harmless=True)


# Forms the program applies that no real stack reaches today, why, and what the revert would do to a
# registered resource of the kind it would reach: each REVERTS entry with no stacks is listed here.


def _k8s_drift(type_: str, inputs: dict) -> set[str]:
    return leaf_names(inputs, readback_kubernetes.RULES[type_](inputs))


def _reverse_ports(result) -> list[set[str]]:
    multi = [r for r in result.of_type(readback.CONTAINER) if len(r.inputs.get("ports", [])) > 1]
    assert multi, "no container with several ports"
    return [set(readback.diff(r.type, {**r.inputs, "ports": list(reversed(r.inputs["ports"]))})) for r in multi]


def _swap_as_memory_without_accounting(result) -> list[set[str]]:
    no_accounting = readback.Engine(swap_limit=False)
    return [set(readback.diff(r.type, {**r.inputs, "memorySwap": r.inputs["memory"]}, no_accounting))
            for r in result.of_type(readback.CONTAINER)]


def _statefulset_without_claims(result) -> list[set[str]]:
    sets = result.of_type("kubernetes:apps/v1:StatefulSet")
    assert sets
    return [_k8s_drift(r.type, {**r.inputs, "spec": {**r.inputs["spec"], "volumeClaimTemplates": []}})
            for r in sets]


UNREACHED: dict[str, tuple[str, str, Callable]] = {
    "ports in the spec's order": ("homelab", "every component lists its published ports by container port",
                                  _reverse_ports),
    "memory_swap = memory without swap accounting": (
        "unraid", "every host of the real stacks has swap accounting (no `swapLimit: false`)",
        _swap_as_memory_without_accounting),
    "empty volumeClaimTemplates lists": ("gke", "every StatefulSet keeps its data on a claim of its own",
                                         _statefulset_without_claims),
}


def test_every_form_is_reached_by_a_stack_or_says_why_not():
    assert {label for label, form in REVERTS.items() if not form.stacks} == set(UNREACHED)
    assert all(form.stacks for form, _ in HARMLESS.values())


@pytest.mark.parametrize("label", sorted(UNREACHED))
def test_an_unreached_form_would_drift_where_it_applied(run, label):
    """What the revert would do to the resources of the kind it would reach, applied to them directly."""
    stack, _why, naive = UNREACHED[label]
    for found in naive(canonical(run, stack)):
        assert found and found <= REVERTS[label].fields, (label, found)
