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
    assert added == {"octollm-arm-critic", "unraid-image-ghcr-io-octollm-arm-critic-0-1-0"}
    assert removed == set()
    assert changed == {"monitoring-prometheus-file-prometheus-yml", "unraid-preflight"}
    assert "arm-critic:6007" in b.by_name("monitoring-prometheus-file-prometheus-yml").inputs["stdin"]


def test_changing_one_image_changes_only_that_container(run, unraid):
    b = variant(run, "unraid", lambda c: c.setdefault("images", {}).update({"grafana": "grafana/grafana:11.4.0"}))
    added, removed, changed = diff(unraid, b)
    assert added == {"unraid-image-grafana-grafana-11-4-0"}
    assert removed == {"unraid-image-grafana-grafana-11-3-1"}
    assert changed == {"monitoring-grafana"}


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
    assert all(n == "server85" or n.startswith(("server85-", "ollama-85", "monitoring-server85-")) for n in added), added
    assert {"server85-docker", "server85-preflight", "ollama-85-ollama-85", "monitoring-server85-node-exporter",
            "ollama-85"} <= added
    assert changed == {"monitoring-prometheus-file-prometheus-yml", "load-balancer-traefik-file-dynamic-ollama-yml"}


def test_rotating_a_generated_password_changes_only_its_users(run, unraid):
    b = variant(run, "unraid", lambda c: c.update({"rotate": {"postgres": "2026-11"}}))
    added, removed, changed = diff(unraid, b)
    assert (added, removed) == (set(), set())
    assert changed == {"data-postgres-password", "data-postgres-password-sync", "data-postgres",
                       "octollm-orchestrator", "monitoring-postgres-exporter"}


def test_rotating_the_grafana_password_reaches_grafana_only(run, unraid):
    b = variant(run, "unraid", lambda c: c.update({"rotate": {"grafana": "1"}}))
    _, _, changed = diff(unraid, b)
    assert changed == {"monitoring-grafana-admin-password", "monitoring-grafana-password-sync", "monitoring-grafana"}


def test_rotating_the_worker_redis_password_reaches_the_worker_redis_only(run, homelab):
    b = variant(run, "homelab", lambda c: c.update({"rotate": {"workerRedis": "2"}}))
    _, _, changed = diff(homelab, b)
    assert changed == {"workers-redis-password", "workers-redis"}


# ------------------------------------------------------------------ networks and volumes that can change

def _ops(steps, op):
    return [s.name for s in steps if s.op == op]


def test_changing_a_subnet_replaces_the_network_with_its_containers_in_an_order_the_engine_accepts(run, unraid):
    from replace_plan import plan

    def move(c):
        c["hosts"]["unraid"]["networks"]["octollm-net"] = {"subnet": "172.21.0.0/16", "gateway": "172.21.0.1"}
    b = variant(run, "unraid", move)
    steps = plan(unraid, b)
    on_net = {r.name for r in b.of_type("docker:index/container:Container")
              if any(n["name"] == "octollm-net" for n in r.inputs.get("networksAdvanced", []))}
    assert len(on_net) == 22 and {"data-postgres", "ollama-ollama", "monitoring-grafana"} <= on_net
    deletes, creates = _ops(steps, "delete-replaced"), _ops(steps, "create-replacement")
    # every container on the network goes first, then the network; it comes back first, then they do
    assert set(deletes[:-1]) == on_net and deletes[-1] == "unraid-net-octollm-net"
    assert creates[0] == "unraid-net-octollm-net" and set(creates[1:]) == on_net
    assert [s.op for s in steps if s.op != "update"] == ["delete-replaced"] * 23 + ["create-replacement"] * 23
    # anything goes after what it depends on, and is removed before it
    urns = {r.urn: r.name for r in b.registrations}
    for r in b.registrations:
        for dep in {urns.get(d) for d in r.dependencies} & set(creates) if r.name in creates else ():
            assert creates.index(dep) < creates.index(r.name) and deletes.index(dep) > deletes.index(r.name)
    # nothing that holds data is touched: directories, datasets and images stay
    assert _ops(steps, "update") == ["unraid-preflight"]
    assert all(r.protect for r in b.registrations if r.name.endswith("-data-dirs"))


def test_changing_a_gateway_is_the_same_replacement(run, unraid):
    from replace_plan import plan

    b = variant(run, "unraid", lambda c: c["hosts"]["unraid"]["networks"]["octollm-net"].update({"gateway": "172.20.255.254"}))
    steps = plan(unraid, b)
    assert _ops(steps, "delete-replaced")[-1] == "unraid-net-octollm-net"
    assert len(_ops(steps, "create-replacement")) == 23


def test_without_delete_before_replace_the_network_change_would_fail(run, unraid, monkeypatch):
    """The guard: drop delete_before_replace on networks and the plan creates a second network of the
    same name while the old one still has its containers, which the engine refuses."""
    from replace_plan import plan

    def move(c):
        c["hosts"]["unraid"]["networks"]["octollm-net"] = {"subnet": "172.21.0.0/16", "gateway": "172.21.0.1"}
    b = variant(run, "unraid", move)
    net = b.by_name("unraid-net-octollm-net")
    monkeypatch.setattr(net, "delete_before_replace", False)
    steps = plan(unraid, b)
    assert [(s.op, s.name) for s in steps if s.op != "update"] == [
        ("create-replacement", "unraid-net-octollm-net"), ("delete-replaced", "unraid-net-octollm-net")]


def test_changing_nfs_options_replaces_the_volume_and_only_its_readers(run, homelab):
    from replace_plan import plan

    b = variant(run, "homelab", lambda c: c["modelStores"]["ollama-models"].update({"mountOptions": "nfsvers=4.1,hard"}))
    steps = plan(homelab, b)
    deletes, creates = _ops(steps, "delete-replaced"), _ops(steps, "create-replacement")
    readers = ["ollama-84-ollama-84", "ollama-84-ollama-84-1", "ollama-84-ollama-84-2"]
    assert set(deletes[:-1]) == set(readers) and deletes[-1] == "server84-volume-ollama-models-nfs-ro"
    assert creates[0] == "server84-volume-ollama-models-nfs-ro" and set(creates[1:]) == set(readers)
    assert len(creates) == 4


def test_changing_the_internal_flag_replaces_the_network_with_its_containers(run, homelab):
    from replace_plan import plan

    b = variant(run, "homelab", lambda c: c["hosts"]["zfs-ai"]["networks"]["worker-data"].update({"internal": False}))
    assert b.by_name("zfs-ai-net-worker-data").inputs["internal"] is False
    steps = plan(homelab, b)
    assert [(s.op, s.name) for s in steps] == [
        ("update", "zfs-ai-preflight"),
        ("delete-replaced", "workers-redis"), ("delete-replaced", "zfs-ai-net-worker-data"),
        ("create-replacement", "zfs-ai-net-worker-data"), ("create-replacement", "workers-redis")]


def test_a_network_replacement_is_checked_for_foreign_endpoints_before_anything_is_removed(run, homelab):
    """ai-network keeps 172.20.0.12 for continue-dev, a client outside the stack: the engine would refuse to
    remove the network while it is attached. The host's preflight, re-run because the settings it compares
    changed, refuses the update first (test_preflight_checks), and every step of the replacement waits on it."""
    from replace_plan import plan

    b = variant(run, "homelab", lambda c: c["hosts"]["zfs-ai"]["networks"]["ai-network"].update({"gateway": "172.20.0.254"}))
    steps = plan(homelab, b)
    replaced = set(_ops(steps, "create-replacement"))
    assert replaced == {"zfs-ai-net-ai-network", "llm-server-llm-server", "portainer-portainer",
                        "open-webui-open-webui", "ollama-ai-ollama-ai"}
    assert _ops(steps, "update") == ["zfs-ai-preflight"] and steps[0].op == "update"
    gate = b.by_name("zfs-ai-preflight")
    check = "replaced_network ai-network 172.20.0.0/24 {} false continue-dev=172.20.0.12\n"
    assert check.format("172.20.0.254") in gate.inputs["create"]
    assert check.format("172.20.0.1") in homelab.by_name("zfs-ai-preflight").inputs["create"]
    # the engine registers, and so deletes, nothing of the replacement before the preflight has passed
    assert all(gate.urn in b.by_name(n).dependencies for n in replaced)
