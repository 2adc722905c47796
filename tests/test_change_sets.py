"""One config change, two program runs: exactly the resources that change are the ones that must.

Every change below also re-runs the host's read-only preflight where what it verifies changed (a new
port to check free, more disk for a new model): that is a check, not a change to anything deployed.
"""

import copy

import pytest

from harness import stack_config


def diff(a, b):
    ra = {r.name: r for r in a.registrations}
    rb = {r.name: r for r in b.registrations}
    changed = {n for n in set(ra) & set(rb) if ra[n].raw != rb[n].raw
               or set(ra[n].dependencies) != set(rb[n].dependencies)}
    return set(rb) - set(ra), set(ra) - set(rb), changed


@pytest.fixture(scope="module")
def unraid(run):
    r = run("unraid")
    assert r.error is None
    return r


@pytest.fixture(scope="module")
def homelab(run):
    r = run("homelab")
    assert r.error is None
    return r


def variant(run, stack, fn):
    cfg = copy.deepcopy(stack_config(stack))
    fn(cfg)
    r = run(stack, config=cfg)
    assert r.error is None, r.error
    return r


def test_adding_a_model_changes_only_that_nodes_pull_step(run, unraid):
    b = variant(run, "unraid", lambda c: c["inference"]["ollama"]["models"].append("mistral:7b"))
    added, removed, changed = diff(unraid, b)
    assert (added, removed) == (set(), set())
    assert changed == {"ollama-pull-models", "unraid-preflight"}


def test_adding_an_arm_adds_its_resources_and_changes_only_the_scrape_config(run, unraid):
    def add(c):
        c["octollm"]["arms"]["critic"] = {"port": 6007, "limits": {"cpus": 1, "memoryGb": 1}}
    b = variant(run, "unraid", add)
    added, removed, changed = diff(unraid, b)
    assert added == {"unraid-arm-critic", "unraid-image-ghcr-io-octollm-arm-critic-0-1-0"}
    assert removed == set()
    assert changed == {"unraid-prometheus-file-prometheus-yml", "unraid-preflight"}
    assert "arm-critic:6007" in b.by_name("unraid-prometheus-file-prometheus-yml").inputs["stdin"]


def test_changing_one_image_changes_only_that_container(run, unraid):
    b = variant(run, "unraid", lambda c: c.setdefault("images", {}).update({"grafana": "grafana/grafana:11.4.0"}))
    added, removed, changed = diff(unraid, b)
    assert added == {"unraid-image-grafana-grafana-11-4-0"}
    assert removed == {"unraid-image-grafana-grafana-11-3-1"}
    assert changed == {"unraid-grafana"}


def test_adding_a_host_adds_its_resources_and_the_lists_of_hosts(run, homelab):
    def add(c):
        h = copy.deepcopy(c["hosts"]["server84"])
        h["address"] = "10.0.0.85"
        h["llmPublishAddress"] = "10.0.0.85"
        c["hosts"]["server85"] = h
        c["modelStores"]["ollama-models"]["clients"].append("server85")
        n = copy.deepcopy(c["inference"]["ollama-84"])
        n["host"] = "server85"
        c["inference"]["ollama-85"] = n
    b = variant(run, "homelab", add)
    added, removed, changed = diff(homelab, b)
    assert removed == set()
    assert all(n == "server85" or n.startswith(("server85-", "ollama-85")) for n in added), added
    assert {"server85-docker", "server85-preflight", "server85-ollama-85", "server85-node-exporter",
            "ollama-85"} <= added
    assert changed == {"server80-prometheus-file-prometheus-yml", "server80-traefik-file-dynamic-ollama-yml"}


def test_rotating_a_generated_password_changes_only_its_users(run, unraid):
    b = variant(run, "unraid", lambda c: c.update({"rotate": {"postgres": "2026-11"}}))
    added, removed, changed = diff(unraid, b)
    assert (added, removed) == (set(), set())
    assert changed == {"data-postgres-password", "data-postgres-password-sync", "unraid-postgres",
                       "unraid-orchestrator", "unraid-postgres-exporter"}


def test_rotating_the_grafana_password_reaches_grafana_only(run, unraid):
    b = variant(run, "unraid", lambda c: c.update({"rotate": {"grafana": "1"}}))
    _, _, changed = diff(unraid, b)
    assert changed == {"monitoring-grafana-admin-password", "monitoring-grafana-password-sync", "unraid-grafana"}


def test_rotating_the_worker_redis_password_reaches_the_worker_redis_only(run, homelab):
    b = variant(run, "homelab", lambda c: c.update({"rotate": {"workerRedis": "2"}}))
    _, _, changed = diff(homelab, b)
    assert changed == {"workers-redis-password", "zfs-ai-worker-redis"}
