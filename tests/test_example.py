"""examples/gpu_box: a user's own program built from the components, with typed args and no stack schema."""

from harness import ROOT, run_stack

EXAMPLE = ROOT / "examples" / "gpu_box" / "__main__.py"
CONTAINER = "docker:index/container:Container"


def example():
    r = run_stack("dev", program=EXAMPLE, project="gpu-box")
    assert r.error is None, r.error
    return r


def test_the_example_builds_one_gpu_box_with_its_monitoring():
    r = example()
    types = {x.type for x in r.registrations}
    assert {"octollm:index:DockerHost", "octollm:index:GpuInferenceNode", "octollm:index:MonitoringStack",
            "octollm:index:SharedModelStore"} <= types
    containers = {c.inputs["name"]: c for c in r.of_type(CONTAINER)}
    assert {"gpu-box-ollama", "gpu-box-prometheus", "gpu-box-grafana", "gpu-box-loki", "gpu-box-gpu-exporter",
            "gpu-box-node-exporter"} <= set(containers)
    ollama = containers["gpu-box-ollama"].inputs
    assert ollama["deviceRequests"][0]["count"] == 1
    assert any(m["target"] == "/models" and m["source"] == "/opt/gpu-box/models" for m in ollama["mounts"])
    # every child is named from its component and parented to it
    by_urn = {x.urn: x for x in r.registrations}
    for c in r.of_type(CONTAINER):
        parent = by_urn[c.parent]
        assert c.name.startswith(parent.name + "-"), (c.name, parent.name)
    assert r.outputs["grafana"] == "http://127.0.0.1:3000"
    assert r.outputs["ollama"] == {"ollama": "http://127.0.0.1:11434"}


def test_the_example_scrapes_and_probes_its_ollama():
    r = example()
    prom = r.by_name("monitoring-prometheus-file-prometheus-yml").inputs["stdin"]
    assert "job_name: ollama" in prom and "job_name: inference-latency" in prom
    assert "ollama:11434/api/generate" in prom
    blackbox = r.by_name("monitoring-blackbox-exporter-file-blackbox-yml").inputs["stdin"]
    assert "llama3.1:8b" in blackbox
