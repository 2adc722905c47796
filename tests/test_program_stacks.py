"""The dev stack: what a newcomer deploys first."""

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
