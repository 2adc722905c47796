"""dev, and the stacks later work fills in: they parse, and stop with one clear message."""

from pulumi import RunError


def test_dev_stack_uses_the_local_socket_and_no_gpu(run):
    r = run("dev")
    assert r.error is None, r.error
    prov = r.by_name("local-docker")
    assert prov.inputs["host"] == "unix:///var/run/docker.sock"
    cs = r.containers()
    assert set(cs) == {"octollm-dev-ollama"}
    o = cs["octollm-dev-ollama"].inputs
    assert "deviceRequests" not in o
    assert o["ports"] == [{"internal": 11434, "external": 11434, "ip": "127.0.0.1", "protocol": "tcp"}]
    assert {r.type for r in r.registrations if r.type.startswith("command:")} == {"command:local:Command"}
    assert r.by_name("ollama-pull-models").inputs["triggers"] == ["qwen2.5:0.5b"]
    assert r.outputs["urls"] == {"ollama": "http://127.0.0.1:11434"}


def test_gke_parses_and_stops_with_one_clear_message(run):
    r = run("gke")
    assert isinstance(r.error, RunError)
    assert "kubernetes platform is not supported yet" in str(r.error)
    assert "Traceback" not in str(r.error)
    assert [x for x in r.registrations if not x.type.startswith("pulumi:providers")] == []
