"""A second `up` changes nothing: every registered input equals what its provider reads back.

The model (tests/readback.py) applies the providers' read-back rules to the inputs each real stack
registers. A resource type without a rule fails the sweep, so nothing new slips past unmodelled.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest

import readback
import readback_kubernetes
from components.platforms import forms as provider_forms
from harness import stack_config

STACKS = ("dev", "unraid", "homelab", "gke")


def unmodelled(result) -> list[str]:
    """Types with no rule, and inputs of modelled types that no rule accounts for."""
    types = {r.type for r in result.registrations
             if r.type not in readback.RULES and r.type not in readback_kubernetes.RULES
             and not r.type.startswith(readback.NOT_READ_BACK)}
    keys = {f"{r.type} {r.name}: {k}" for r in result.registrations if r.type in readback.RULES
            for k in readback.unmodelled_keys(r.type, r.inputs)}
    return sorted(types | keys)


def engines(result, config: dict | None = None) -> dict[str, readback.Engine]:
    """Each docker provider's engine as its host's config declares it (the preflight refuses a host
    whose engine differs: test_preflight_checks)."""
    cfg = config or stack_config(result.stack)
    return {f"{h}-docker": readback.Engine(swap_limit=hc.get("swapLimit", True))
            for h, hc in (cfg.get("hosts") or {}).items()}


def _provider_name(reg) -> str:
    return reg.provider.split("::")[-2] if reg.provider else ""


def as_created(result) -> list:
    """The registrations with each container's image as the engine would see it: the program passes
    RemoteImage.image_id, which resourceDockerImageRead sets to the engine's image ID ("sha256:" and
    64 hex digits); the mock engine answers a placeholder, replaced here by an ID of that form."""
    ids = {(_provider_name(r), f"{r.inputs['name']}@id"): readback.image_id_of(r.inputs["name"])
           for r in result.of_type(readback.IMAGE)}
    out = []
    for r in result.registrations:
        if r.type == readback.CONTAINER:
            key = (_provider_name(r), r.inputs["image"])
            assert key in ids, f"{r.name}: image {r.inputs['image']!r} is not the image_id of a RemoteImage on its host"
            r = dataclasses.replace(r, inputs={**r.inputs, "image": ids[key]})
        out.append(r)
    return out


def drift(result, config: dict | None = None, engine_for=None) -> dict[str, dict]:
    known = engines(result, config)
    out = {}
    for r in as_created(result):
        if r.type in readback.RULES:
            eng = engine_for(r) if engine_for else known.get(_provider_name(r), readback.DEFAULT_ENGINE)
            d = readback.diff(r.type, r.inputs, eng)
        elif r.type in readback_kubernetes.RULES:
            back = readback_kubernetes.RULES[r.type](r.inputs)
            d = {k: (r.inputs.get(k), back.get(k)) for k in set(r.inputs) | set(back) if r.inputs.get(k) != back.get(k)}
        else:
            continue
        if d:
            out[r.name] = d
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_every_input_is_in_the_form_its_provider_reads_back(run, stack):
    result = run(stack)
    assert result.error is None, result.error
    assert unmodelled(result) == []
    assert drift(result) == {}
    # the sweep covered what matters
    kinds = {r.type for r in result.registrations}
    assert (readback.CONTAINER in kinds) or stack == "gke"


@pytest.mark.parametrize("key,value", [
    ("hostname", "box"), ("capabilities", {"adds": ["NET_ADMIN"]}), ("dns", ["1.1.1.1"]),
])
def test_an_input_no_rule_accounts_for_fails_the_sweep(run, key, value):
    """A new container input is compared by a rule or listed in NOT_COMPARED, or the sweep fails."""
    result = run("unraid")
    reg = result.of_type(readback.CONTAINER)[0]
    changed = {**reg.inputs, key: value}
    assert readback.unmodelled_keys(readback.CONTAINER, changed) == [key]
    with pytest.raises(readback.Unmodelled, match=key):
        readback.diff(readback.CONTAINER, changed)
    nested = {**reg.inputs, "mounts": [{**reg.inputs["mounts"][0], "bindOptions": {"propagation": "rshared"}}]}
    assert readback.unmodelled_keys(readback.CONTAINER, nested) == ["mounts.bindOptions"]
    for type_, extra in ((readback.NETWORK, "checkDuplicate"), (readback.VOLUME, "cluster"),
                         (readback.IMAGE, "platform")):
        r = result.of_type(type_)[0] if result.of_type(type_) else None
        inputs = dict(r.inputs) if r else {"name": "x"}
        assert readback.unmodelled_keys(type_, {**inputs, extra: "x"}) == [extra]


def test_every_skipped_input_names_its_reason_and_source():
    for type_, skipped in readback.NOT_COMPARED.items():
        assert not set(skipped) & set(readback.MODELLED[type_]), type_
        for key, why in skipped.items():
            assert ".go" in why and len(why) > 40, (type_, key)


# The old forms, one at a time: each must make the sweep fail, or the sweep proves nothing.
REVERTS = {
    "cpus as %g": ("docker_cpus", lambda cpus: f"{cpus:g}"),
    "durations in plain seconds": ("go_duration", lambda s: f"{s}s"),
}


@pytest.mark.parametrize("label", sorted(REVERTS))
def test_reverting_a_canonical_form_shows_as_drift(run, monkeypatch, label):
    attr, old = REVERTS[label]
    monkeypatch.setattr(provider_forms, attr, old)
    import components.platforms.docker_host as dh
    monkeypatch.setattr(dh, attr, old)
    found = drift(run("unraid"))
    assert found, f"reverting {label} went unnoticed"
    field = {"docker_cpus": "cpus", "go_duration": "healthcheck"}[attr]
    assert all(field in d for d in found.values())


@pytest.mark.parametrize("stack", ["unraid", "homelab"])
def test_unsorted_ports_would_drift(run, stack):
    """Ports are read back sorted by container port; a multi-port container shows it."""
    result = run(stack)
    multi = [r for r in result.of_type(readback.CONTAINER) if len(r.inputs.get("ports", [])) > 1]
    assert multi, "no container with several ports to check the order on"
    for r in multi:
        shuffled = dict(r.inputs, ports=list(reversed(r.inputs["ports"])))
        assert "ports" in readback.diff(readback.CONTAINER, shuffled)


# ------------------------------------------------------------------ the model's own semantics, from Go
# Expected values were printed by Go 1.26 (big.Rat, time.Duration) for the same inputs.

@pytest.mark.parametrize("given,stored", [
    ("2", "2.0"), ("8", "8.0"), ("16", "16.0"), ("64", "64.0"), ("1.5", "1.5"), ("0.25", "0.25"),
    ("0.5", "0.5"), ("10", "10."), ("20", "20."), ("100", "100."), ("10.05", "10.1"), ("1.005", "1.005"),
    ("2.05", "2.05"), ("10.5", "10.5"),
])
def test_cpus_read_back_as_the_provider_prints_them(given, stored):
    assert readback.nano_int64_to_decimal_string(readback.docker_parse_cpus(given)) == stored


@pytest.mark.parametrize("seconds,text", [
    (0, "0s"), (5, "5s"), (30, "30s"), (60, "1m0s"), (90, "1m30s"), (120, "2m0s"), (300, "5m0s"),
    (600, "10m0s"), (3600, "1h0m0s"), (3661, "1h1m1s"),
])
def test_durations_read_back_as_go_prints_them(seconds, text):
    assert readback.go_duration_string(seconds * 10**9) == text
    assert readback.go_duration_string(readback.go_parse_duration(f"{seconds}s")) == text


def test_sub_second_durations():
    assert readback.go_duration_string(readback.go_parse_duration("1.5s")) == "1.5s"
    assert readback.go_duration_string(readback.go_parse_duration("500ms")) == "500ms"


@pytest.mark.parametrize("cpus", [0.25, 0.5, 1, 1.5, 2, 4, 8, 10, 12, 16, 20, 30, 64, 100, 2.05, 10.5])
def test_program_form_of_cpus_is_what_the_provider_stores(cpus):
    emitted = provider_forms.docker_cpus(cpus)
    assert readback.nano_int64_to_decimal_string(readback.docker_parse_cpus(emitted)) == emitted


def test_cpus_that_cannot_round_trip_are_refused_by_config():
    from components.config.schema import ConfigError, load_stack_config
    from harness import stack_config

    cfg = stack_config("dev")
    cfg["inference"]["ollama"]["limits"]["cpus"] = 10.05
    with pytest.raises(ConfigError) as exc:
        load_stack_config(cfg)
    text = exc.value.render()
    assert "inference.ollama.limits.cpus" in text and "10.1" in text


# ------------------------------------------------------------------ image, swap, networks, volumes

def _a_container(run, stack="unraid") -> dict:
    r = as_created(run(stack))
    return next(x for x in r if x.type == readback.CONTAINER).inputs


@pytest.mark.parametrize("image,drifts", [
    (readback.image_id_of("redis:7.4"), False),  # RemoteImage.image_id, what the program passes: .Image
    ("sha256:" + readback.image_id_of("redis:7.4")[7:19], True),  # a short ID: .Image is the full one
    ("redis:7.4", False),  # a reference: Config.Image, kept as sent
    ("redis@sha256:" + "0" * 64, False),
])
def test_image_reads_back_by_the_form_given(run, image, drifts):
    found = readback.diff(readback.CONTAINER, {**_a_container(run), "image": image})
    assert ("image" in found) is drifts, found


@pytest.mark.parametrize("cpus,drifts", [("8.0", False), ("8", True), ("16.0", False), ("2.0", False),
                                          ("2", True), ("1.5", False), ("10.", False), ("10.0", True)])
def test_whole_cpus_above_the_test_host_s_cores_read_back_as_the_model_says(run, cpus, drifts):
    """The real engine refuses more CPUs than it has, so values like "8.0" are proven here only."""
    found = readback.diff(readback.CONTAINER, {**_a_container(run), "cpus": cpus})
    assert ("cpus" in found) is drifts, found


def _no_swap_accounting(stack: str) -> dict:
    cfg = copy.deepcopy(stack_config(stack))
    for h in cfg["hosts"].values():
        h["swapLimit"] = False
    return cfg


@pytest.mark.parametrize("stack", ["dev", "unraid", "homelab"])
def test_memory_swap_round_trips_with_and_without_swap_accounting(run, stack):
    """With accounting, memory_swap = memory is kept. Without, moby keeps -1 whatever it is sent; the
    program sends -1 where the host says `swapLimit: false`, and memory_swap = memory would drift."""
    without = _no_swap_accounting(stack)
    declared = run(stack, config=without)
    assert declared.error is None, declared.error
    assert {r.inputs["memorySwap"] for r in declared.of_type(readback.CONTAINER)} == {-1}
    assert drift(declared, without) == {}
    # unset drifts there too: the engine stores -1, the plan has 0
    unset = {k: v for k, v in _a_container(run, stack).items() if k != "memorySwap"}
    assert readback.diff(readback.CONTAINER, unset, readback.Engine(swap_limit=False))["memorySwap"] == (0, -1)
    # the default program on such an engine: every container drifts (the preflight refuses this host)
    found = drift(run(stack), engine_for=lambda r: readback.Engine(swap_limit=False))
    containers = {r.name for r in run(stack).of_type(readback.CONTAINER)}
    assert containers and {n for n, d in found.items() if "memorySwap" in d} == containers


def test_a_network_reads_back_only_what_the_engine_keeps(run):
    net = next(r for r in run("unraid").of_type(readback.NETWORK)).inputs
    assert readback.diff(readback.NETWORK, net) == {}
    # the engine keeps what it is sent: each field round-trips, and an empty one is dropped
    assert readback.diff(readback.NETWORK, {**net, "ipamConfigs": [{**net["ipamConfigs"][0], "ipRange": ""}]}) == {}
    # the engine reports options and IPAM options it was not sent as empty: a planned one drifts
    stored = readback.RULES[readback.NETWORK][1](net)
    assert stored["options"] == {} and stored["ipamDriver"] == "default"
    # a subnet written with host bits set is refused at create, not stored otherwise
    with pytest.raises(ValueError, match="should be"):
        readback.diff(readback.NETWORK, {**net, "ipamConfigs": [{**net["ipamConfigs"][0], "subnet": "172.28.0.1/24"}]})


def test_a_volume_reads_back_its_options_as_given(run):
    result = run("homelab")
    vols = result.of_type(readback.VOLUME)
    assert vols, "homelab has the NFS volume"
    for v in vols:
        assert readback.diff(readback.VOLUME, v.inputs) == {}
        assert v.inputs["driverOpts"]["type"] == "nfs"
    with pytest.raises(ValueError, match="invalid option"):
        readback.diff(readback.VOLUME, {**vols[0].inputs, "driverOpts": {"type": "nfs", "addr": "10.0.0.80"}})
