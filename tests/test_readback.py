"""A second `up` changes nothing: every registered input equals what its provider reads back.

The model (tests/readback.py) applies the providers' read-back rules to the inputs each real stack
registers. A resource type without a rule fails the sweep, so nothing new slips past unmodelled.
"""

from __future__ import annotations

import pytest

import readback
import readback_kubernetes
from components.platforms import forms as provider_forms

STACKS = ("dev", "unraid", "homelab", "gke")


def unmodelled(result) -> list[str]:
    return sorted({r.type for r in result.registrations
                   if r.type not in readback.RULES and r.type not in readback_kubernetes.RULES
                   and not r.type.startswith(readback.NOT_READ_BACK)})


def drift(result) -> dict[str, dict]:
    out = {}
    for r in result.registrations:
        if r.type in readback.RULES:
            d = readback.diff(r.type, r.inputs)
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
