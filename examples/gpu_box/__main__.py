"""One GPU box from octollm-infra's components, composed by hand: Ollama on the GPU, its models in a
host directory, and the monitoring stack (Prometheus, Grafana, Loki, exporters) watching it.

No stack schema and no StackConfig: the components take typed arguments, and this program builds them
directly. Run it from this directory (`pulumi up`), with the repository's virtualenv; set
`gpu-box:address` to the box's address when it is not this machine's Docker engine.
"""

import sys
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_docker as docker

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root holds `components`

from components.config.schema import (GpuConfig, GpuRequest, HostConfig, InferenceConfig, Limits,  # noqa: E402
                                      ModelStoreConfig, MonitoringConfig, NetworkConfig)
from components.platforms.docker_host import DockerHost, DockerHostArgs, docker_host_url  # noqa: E402
from components.services.gpu_inference_node import GpuInferenceNode, GpuInferenceNodeArgs  # noqa: E402
from components.services.monitoring_stack import MonitoringStack, MonitoringStackArgs, ScrapeJob  # noqa: E402
from components.services.shared_model_store import SharedModelStore, SharedModelStoreArgs  # noqa: E402

config = pulumi.Config()
box = HostConfig(
    kind="local", address=config.get("address") or "127.0.0.1", cpu_threads=16, memory_gb=64,
    gpus=[GpuConfig(model="RTX 3090", vram_gb=24, driver_version="550.54.14")],
    appdata_root="/opt/gpu-box", data_owner="1000:1000", container_prefix="gpu-box-",
    networks={"llm": NetworkConfig(subnet="172.29.0.0/24", gateway="172.29.0.1")},
)

engine = docker.Provider("box-docker", host=docker_host_url(box))
host = DockerHost("box", DockerHostArgs(
    host_name="box", config=box, stack=pulumi.get_stack(), docker_provider=engine,
    command_provider=command.Provider("box-command")))

models = SharedModelStore("models", SharedModelStoreArgs(
    config=ModelStoreConfig(host="box", kind="hostPath", path="/opt/gpu-box/models"), server=host))

ollama = GpuInferenceNode("ollama", GpuInferenceNodeArgs(
    config=InferenceConfig(host="box", engine="ollama", network="llm", port=11434, gpu=GpuRequest(count=1),
                           models=["llama3.1:8b"], limits=Limits(cpus=8, memory_gb=16), model_store="models"),
    platform=host, image=host.image_ref("ollama"), store=models))

monitoring = MonitoringStack("monitoring", MonitoringStackArgs(
    config=MonitoringConfig(host="box", network="llm", grafana_port=3000), central=host, hosts={"box": host},
    jobs=[ScrapeJob("ollama", ("http://ollama:11434/api/version",), probe_module="http_2xx"),
          ScrapeJob("inference-latency", ("http://ollama:11434/api/generate",), probe_module="ollama_generate",
                    interval_s=60)],
    probe_model="llama3.1:8b"))

pulumi.export("ollama", ollama.endpoints)
pulumi.export("grafana", monitoring.grafana_url)
pulumi.export("prometheus", monitoring.prometheus_url)
