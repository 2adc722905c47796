"""Every check of the preflight, one by one: present when the config asks for it, and failing (or
warning) the preflight when what it checks is wrong.

The preflight is rendered from a PreflightSpec (components.config.inventory.preflight_spec derives it
from a stack config) and run by bash against stub `docker`, `nvidia-smi`, `ss`, `sshd` and `id`, with a
PATH that holds those stubs and a few real tools only, so nothing of the machine running the tests
(its Docker engine, GPUs, listening ports or sshd) reaches a result.
The one exception, at the end, holds the network check's `docker network inspect` template to a real
engine (the loopback dockerd of the real-host tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from components import host_scripts as scripts
from components.config import catalog
from components.config.inventory import preflight_spec
from components.config.schema import (DataServicesConfig, GpuConfig, GpuRequest, HostConfig, InferenceConfig, Limits,
                                      ModelStoreConfig, MonitoringConfig, SshConfig, StackConfig)
from components.platforms.docker_host import PARALLEL
from test_real_host import busybox_image, dockerd  # noqa: F401 - fixtures
from test_real_host import docker as real_docker

TOOLS = ("bash", "sh", "sort", "head", "dirname", "stat", "id", "df", "du", "awk", "grep", "xargs", "cat", "tr",
         "cut", "sed", "wc", "ls", "env")

DOCKER = r'''#!/usr/bin/env bash
# A Docker CLI whose answers come from files under $STUB: version, down, swap, networks, ps, gpu-fails;
# net-<name> (`network inspect -- <name>`: absent, no such network) and label-<container>.
echo "$*" >> "$STUB/docker.log"
case "$1" in
  version)
    if [ -e "$STUB/down" ]; then echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock" >&2; exit 1; fi
    cat "$STUB/version" 2>/dev/null || echo 27.5.1 ;;
  info) cat "$STUB/swap" 2>/dev/null || echo true ;;
  network)
    case "$2" in
      ls) [ -s "$STUB/networks" ] && awk '{print "net" NR}' "$STUB/networks" ;;
      inspect)
        if [ "$5" = -- ]; then
          [ -e "$STUB/net-$6" ] || { echo "Error response from daemon: network $6 not found" >&2; exit 1; }
          cat "$STUB/net-$6"
        else
          cat "$STUB/networks"
        fi ;;
    esac ;;
  container)
    [ "$2" = inspect ] && [ -e "$STUB/label-$6" ] || { echo "Error: No such container: $6" >&2; exit 1; }
    cat "$STUB/label-$6" ;;
  ps) cat "$STUB/ps" 2>/dev/null ;;
  run)
    if [ -e "$STUB/gpu-fails" ]; then
      echo 'docker: Error response from daemon: could not select device driver "" with capabilities: [[gpu]].' >&2
      exit 125
    fi
    echo "GPU 0: stub (UUID: GPU-0)" ;;
esac
exit 0
'''
NVIDIA_SMI = '#!/usr/bin/env bash\ncat "$STUB/gpus"\n'
SS = '#!/usr/bin/env bash\ncat "$STUB/listening" 2>/dev/null\n'
SSHD = '#!/usr/bin/env bash\n[ -e "$STUB/sshd-T" ] && cat "$STUB/sshd-T" && exit 0\nexit 1\n'  # -T needs root
DF = ('#!/usr/bin/env bash\n'  # a fixed amount free where $STUB/df-free says so, else the real df
      'if [ -e "$STUB/df-free" ]; then echo "Filesystem 1024-blocks Used Available Capacity Mounted on"; '
      'echo "stub 999999999 0 $(cat "$STUB/df-free") 1% /"; else exec "$REAL_DF" "$@"; fi\n')
ID = ('#!/usr/bin/env bash\ncase "$1" in -u) echo 4242 ;; -un) echo tester ;; '
      '*) exec "$REAL_ID" "$@" ;; esac\n')


class Host:
    """A scratch host: a stub directory, a PATH of stubs and a few real tools, and the run of a script."""

    def __init__(self, tmp_path: Path, *, nvidia_smi: bool = True, docker: bool = True):
        self.root = tmp_path
        self.stub = tmp_path / "stub"
        self.bin = tmp_path / "bin"
        self.stub.mkdir()
        self.bin.mkdir()
        for tool in TOOLS:
            real = shutil.which(tool)
            if real:
                (self.bin / tool).symlink_to(real)
        stubs = {"ss": SS, "sshd": SSHD, "df": DF}
        if docker:
            stubs["docker"] = DOCKER
        if nvidia_smi:
            stubs["nvidia-smi"] = NVIDIA_SMI
        for name, body in stubs.items():
            self.install(name, body)
        self.set("gpus", "")
        self.sshd_config = tmp_path / "sshd_config"
        self.sshd_config.write_text("MaxStartups 100:30:200\nMaxSessions 64\n")

    def install(self, name: str, body: str) -> None:
        f = self.bin / name
        if f.exists() or f.is_symlink():
            f.unlink()
        f.write_text(body)
        f.chmod(0o755)

    def set(self, name: str, content: str = "") -> None:
        (self.stub / name).write_text(content)

    def run(self, spec: scripts.PreflightSpec) -> subprocess.CompletedProcess:
        env = {"PATH": str(self.bin), "STUB": str(self.stub), "HOME": str(self.root), "LC_ALL": "C",
               "OCTOLLM_SSHD_CONFIG": str(self.sshd_config), "REAL_ID": shutil.which("id") or "/usr/bin/id",
               "REAL_DF": shutil.which("df") or "/bin/df"}
        return subprocess.run(["bash", "-c", scripts.preflight(spec)], capture_output=True, text=True, env=env,
                              timeout=60)

    def docker_calls(self) -> list[str]:
        log = self.stub / "docker.log"
        return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def me() -> str:
    return f"{os.getuid()}:{os.getgid()}"


def spec(**kw) -> scripts.PreflightSpec:
    base = dict(host="box", stack_label="pulumi/test", min_docker="20.10")
    base.update(kw)
    return scripts.PreflightSpec(**base)


def ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "preflight ok on host box", r.stdout


def failed(r: subprocess.CompletedProcess, fragment: str) -> None:
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stderr.startswith("preflight failed on host box"), r.stderr
    assert fragment in r.stderr, r.stderr


def warned(r: subprocess.CompletedProcess, fragment: str) -> None:
    ok(r)
    assert any(line.startswith("warning: box: ") and fragment in line for line in r.stdout.splitlines()), r.stdout


# ====================================================================== from the config to the spec

GPU = GpuConfig(model="RTX 4090", vram_gb=24, driver_version="575.64")
SSH = SshConfig(user="ops", host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOctollmtestkey")


def stack(tmp: Path, *, gpus=(GPU,), kind="local", node_gpu=True, store_path=None, read_only=False,
          monitoring=False, **host_kw) -> StackConfig:
    appdata = str(tmp / "pool" / "appdata")
    hosts = {"box": HostConfig(kind=kind, ssh=SSH if kind == "ssh" else None, cpu_threads=32, memory_gb=128,
                               gpus=list(gpus), appdata_root=appdata, data_owner=me(), **host_kw)}
    store = ModelStoreConfig(host="box", path=store_path or f"{appdata}/models")
    node = InferenceConfig(host="box", port=11434, models=["llama3.1:8b"], limits=Limits(cpus=4, memory_gb=8),
                           gpu=GpuRequest(count=1) if node_gpu else None, model_store="models", read_only=read_only)
    return StackConfig(platform="docker", hosts=hosts, model_stores={"models": store}, inference={"ollama": node},
                       monitoring=MonitoringConfig(host="box") if monitoring else None)


def test_a_gpu_engine_makes_the_preflight_prove_docker_can_hand_the_gpu_over(tmp_path, host):
    cfg = stack(tmp_path)
    s = preflight_spec(cfg, "box", "test")
    assert s.gpu_image == cfg.image("ollama")  # the image the engine runs
    assert s.gpus == (("RTX 4090", 24 * 1024),)
    host.set("gpus", "NVIDIA GeForce RTX 4090, 24564, 575.64.03\n")
    (tmp_path / "pool").mkdir()
    ok(host.run(s))
    runs = [c for c in host.docker_calls() if c.startswith("run ")]
    assert runs == [f"run --rm --gpus all --entrypoint nvidia-smi {cfg.image('ollama')} -L"]
    host.set("gpu-fails")
    failed(host.run(s), "Docker cannot hand the GPU to a container")


def test_a_cpu_only_host_checks_no_gpu(tmp_path, host):
    s = preflight_spec(stack(tmp_path, gpus=(), node_gpu=False), "box", "test")
    assert s.gpu_image is None and s.gpus == ()
    host.set("gpu-fails")
    host.install("nvidia-smi", "#!/usr/bin/env bash\nexit 1\n")
    (tmp_path / "pool").mkdir()
    ok(host.run(s))
    assert not [c for c in host.docker_calls() if c.startswith("run ")]


def test_a_gpu_host_whose_only_gpu_user_is_the_gpu_exporter_proves_the_hand_off(tmp_path):
    cfg = stack(tmp_path, node_gpu=False, monitoring=True)
    assert cfg.hosts["box"].exporters.gpu_exporter != "none"  # the exporter runs there, with the GPUs
    assert preflight_spec(cfg, "box", "test").gpu_image is not None


def test_the_driver_the_engine_image_needs_is_checked(tmp_path, host):
    cfg = stack(tmp_path)
    s = preflight_spec(cfg, "box", "test")
    need = catalog.CUDA_MIN_DRIVER[catalog.IMAGES["ollama"].cuda]
    assert s.min_driver == f"{need[0]}.{need[1]:02d}"
    (tmp_path / "pool").mkdir()
    host.set("gpus", f"NVIDIA GeForce RTX 4090, 24564, {need[0] - 10}.10.01\n")
    failed(host.run(s), f"is older than {s.min_driver}")


def test_gpu_problems_only_warn_where_the_host_may_fall_back_to_the_cpu(tmp_path, host):
    s = preflight_spec(stack(tmp_path, allow_cpu_fallback=True), "box", "test")
    assert s.gpu_fallback is True
    (tmp_path / "pool").mkdir()
    host.set("gpus", "NVIDIA GeForce RTX 4090, 24564, 575.64.03\n")
    host.set("gpu-fails")
    warned(host.run(s), "Docker cannot hand the GPU to a container")


def test_an_ssh_host_gets_the_sshd_limits_checked_and_a_local_one_does_not(tmp_path, host):
    ssh = preflight_spec(stack(tmp_path, kind="ssh", address="10.0.0.8"), "box", "test")
    local = preflight_spec(stack(tmp_path), "box", "test")
    assert ssh.ssh_parallel == PARALLEL > 0 and local.ssh_parallel == 0
    (tmp_path / "pool").mkdir()
    host.set("gpus", "NVIDIA GeForce RTX 4090, 24564, 575.64.03\n")
    host.sshd_config.write_text(f"MaxStartups {PARALLEL - 1}:30:100\nMaxSessions {PARALLEL - 1}\n")
    r = host.run(ssh)
    warned(r, f"sshd MaxStartups {PARALLEL - 1}:30:100 starts dropping new connections")
    warned(r, f"sshd MaxSessions {PARALLEL - 1} is below the {PARALLEL}")
    quiet = host.run(local)
    ok(quiet)
    assert "sshd" not in quiet.stdout


def test_the_appdata_root_s_parent_is_an_anchor_and_the_root_a_directory_to_make(tmp_path, host):
    cfg = stack(tmp_path)
    s = preflight_spec(cfg, "box", "test")
    appdata = cfg.hosts["box"].appdata_root
    assert s.anchors == (str(tmp_path / "pool"),)  # a store inside appdata is made with it
    assert (appdata, me()) in s.dirs and (f"{appdata}/models", me()) in s.dirs
    host.set("gpus", "NVIDIA GeForce RTX 4090, 24564, 575.64.03\n")
    failed(host.run(s), f"{tmp_path / 'pool'} does not exist (is the pool or array that holds it mounted?)")
    (tmp_path / "pool").mkdir()
    ok(host.run(s))


def test_a_store_outside_appdata_anchors_on_its_parent(tmp_path, host):
    store = str(tmp_path / "tank" / "models")
    cfg = stack(tmp_path, store_path=store)
    s = preflight_spec(cfg, "box", "test")
    assert str(tmp_path / "tank") in s.anchors and (store, me()) in s.dirs
    (tmp_path / "pool").mkdir()
    host.set("gpus", "NVIDIA GeForce RTX 4090, 24564, 575.64.03\n")
    failed(host.run(s), f"{tmp_path / 'tank'} does not exist")
    (tmp_path / "tank").mkdir()
    ok(host.run(s))


def test_the_writer_s_models_must_fit_on_the_store_and_a_reader_s_need_nothing(tmp_path):
    writer = preflight_spec(stack(tmp_path), "box", "test")
    store = f"{tmp_path / 'pool' / 'appdata'}/models"
    kib = int(catalog.MODELS["llama3.1:8b"].size_gb * 1024 * 1024)
    assert writer.disk == ((store, kib),)
    assert preflight_spec(stack(tmp_path, read_only=True), "box", "test").disk == ()


def test_every_published_port_of_the_host_is_checked(tmp_path):
    cfg = stack(tmp_path)
    cfg = cfg.model_copy(update={"data_services": DataServicesConfig(host="box")})
    s = preflight_spec(cfg, "box", "test")
    ds = cfg.data_services
    assert set(s.ports) == {11434, ds.postgres.port, ds.redis.port, ds.qdrant.http_port, ds.qdrant.grpc_port}


def test_configured_networks_are_checked(tmp_path):
    cfg = stack(tmp_path, networks={"ai": {"subnet": "172.28.0.0/24", "gateway": "172.28.0.1"},
                                    "data": {"subnet": "172.29.0.0/24", "gateway": "172.29.0.1", "internal": True,
                                             "reserved": {"zz": "172.29.0.9", "client": "172.29.0.12"}}})
    s = preflight_spec(cfg, "box", "test")
    assert s.networks == (("ai", "172.28.0.0/24"), ("data", "172.29.0.0/24"))
    assert s.network_settings == (("ai", "172.28.0.0/24", "172.28.0.1", False, ()),
                                  ("data", "172.29.0.0/24", "172.29.0.1", True,
                                   (("client", "172.29.0.12"), ("zz", "172.29.0.9"))))


# ====================================================================== each check of the script


def test_no_docker_cli_fails(tmp_path):
    h = Host(tmp_path, docker=False)
    failed(h.run(spec()), "the docker CLI is not installed")


def test_an_engine_that_does_not_answer_fails(host):
    host.set("down")
    failed(host.run(spec()), "the Docker engine does not answer: Cannot connect to the Docker daemon")


def test_an_old_engine_fails(host):
    host.set("version", "19.03.15\n")
    failed(host.run(spec(min_docker="20.10")), "Docker engine 19.03.15 is older than 20.10")
    host.set("version", "20.10.0\n")
    ok(host.run(spec(min_docker="20.10")))


def test_an_engine_without_swap_accounting_fails_unless_the_config_says_so(tmp_path, host):
    """Such an engine keeps memorySwap -1 whatever it is sent: memorySwap = memory would drift on every
    `up`, so the preflight names the key that makes the program send -1 instead."""
    host.set("swap", "false\n")
    failed(host.run(spec()), "no swap limit support")
    failed(host.run(spec()), "set hosts.box.swapLimit: false")
    declared = preflight_spec(stack(tmp_path, swap_limit=False), "box", "test")
    assert declared.swap_limit is False and preflight_spec(stack(tmp_path), "box", "test").swap_limit is True
    ok(host.run(spec(swap_limit=False)))
    host.set("swap", "true\n")
    ok(host.run(spec()))
    warned(host.run(spec(swap_limit=False)), "hosts.box.swapLimit is false but the Docker engine has swap limit")


@pytest.mark.parametrize("existing,fragment", [
    ("octollm||10.9.0.0/16 ", "a Docker network named octollm already exists and is not managed by this stack"),
    ("legacy|other|172.28.0.0/16 ", "Docker network legacy already uses 172.28.0.0/16, which overlaps 172.28.0.0/24"),
])
def test_a_foreign_network_in_the_way_fails(host, existing, fragment):
    host.set("networks", existing + "\n")
    failed(host.run(spec(networks=(("octollm", "172.28.0.0/24"),))), fragment)


def test_this_stack_s_own_network_is_no_conflict(host):
    host.set("networks", "octollm|pulumi/test|172.28.0.0/24 \nbridge||172.17.0.0/16 \n")
    ok(host.run(spec(networks=(("octollm", "172.28.0.0/24"),))))


def test_without_wanted_networks_none_are_listed(host):
    host.set("networks", "octollm||172.28.0.0/24 \n")
    ok(host.run(spec()))
    assert not [c for c in host.docker_calls() if c.startswith("network")]


# A network of this stack the update replaces (every setting is ForceNew): `docker network inspect`
# prints label|subnets|gateways|internal|reserved|attached containers, as the preflight's template asks.
AI = ("ai-network", "172.20.0.0/24", "172.20.0.1", False, (("continue-dev", "172.20.0.12"),))
AI_NOW = "pulumi/test|172.20.0.0/24 |172.20.0.1 |false|continue-dev=172.20.0.12 |{attached}\n"


def attached(host, *containers: tuple[str, str]) -> None:
    """The live ai-network as the config has it, with these (name, managed-by label) containers on it."""
    host.set("net-ai-network", AI_NOW.format(attached="".join(f"{c} " for c, _ in containers)))
    for c, label in containers:
        host.set(f"label-{c}", label + "\n")


@pytest.mark.parametrize("change,what", [
    (dict(subnet="172.21.0.0/24", gateway="172.21.0.1"),
     "subnet 172.20.0.0/24 -> 172.21.0.0/24, gateway 172.20.0.1 -> 172.21.0.1"),
    (dict(gateway="172.20.0.254"), "gateway 172.20.0.1 -> 172.20.0.254"),
    (dict(internal=True), "internal false -> true"),
    (dict(reserved=()), "reserved addresses continue-dev=172.20.0.12 -> none"),
])
def test_replacing_a_network_a_foreign_container_is_attached_to_is_refused(host, change, what):
    attached(host, ("octollm-ollama", "pulumi/test"), ("continue-dev", ""), ("vllm-qwen", "llm-manager"))
    net = dict(zip(("name", "subnet", "gateway", "internal", "reserved"), AI)) | change
    r = host.run(spec(network_settings=(tuple(net.values()),)))
    failed(r, f"Docker network ai-network is replaced by this update ({what}), but container(s) continue-dev "
              "vllm-qwen outside this stack are attached to it, and the engine refuses to remove a network "
              "with active endpoints. Disconnect them first (a container llm-manager started can be stopped "
              "instead), and connect them again after the update:\n"
              "      docker network disconnect ai-network continue-dev\n"
              "      docker network disconnect ai-network vllm-qwen\n")
    assert "octollm-ollama" not in r.stderr  # this stack's own containers are replaced with the network


def test_replacing_a_network_only_this_stack_s_containers_are_attached_to_passes(host):
    attached(host, ("octollm-ollama", "pulumi/test"), ("octollm-grafana", "pulumi/test"))
    ok(host.run(spec(network_settings=(AI[:1] + ("172.21.0.0/24", "172.21.0.1") + AI[3:],))))
    assert "container inspect --format {{index .Config.Labels \"org.octollm.managed-by\"}} -- octollm-ollama" \
        in host.docker_calls()  # it did look


def test_an_unchanged_network_may_have_foreign_containers_attached(host):
    attached(host, ("continue-dev", ""), ("vllm-qwen", "llm-manager"))
    ok(host.run(spec(network_settings=(AI,))))
    assert not [c for c in host.docker_calls() if c.startswith("container ")]  # nothing to replace, nothing to ask


def test_a_network_not_there_yet_or_of_another_stack_is_not_replaced(host):
    ok(host.run(spec(network_settings=(AI[:1] + ("172.21.0.0/24",) + AI[2:],))))  # absent: only created
    attached(host, ("continue-dev", ""))
    host.set("net-ai-network", host.stub.joinpath("net-ai-network").read_text().replace("pulumi/test", "pulumi/prod"))
    ok(host.run(spec(network_settings=(AI[:1] + ("172.21.0.0/24",) + AI[2:],))))


def test_a_missing_anchor_fails(host, tmp_path):
    failed(host.run(spec(anchors=(str(tmp_path / "array"),))), f"{tmp_path / 'array'} does not exist")
    (tmp_path / "array").mkdir()
    ok(host.run(spec(anchors=(str(tmp_path / "array"),))))


def test_a_data_path_that_is_a_file_fails(host, tmp_path):
    (tmp_path / "appdata").write_text("not a directory")
    failed(host.run(spec(dirs=((str(tmp_path / "appdata"), me()),))), "exists but is not a directory")


def test_a_data_directory_owned_by_someone_else_fails_for_a_user_who_cannot_change_it(host, tmp_path):
    (tmp_path / "appdata").mkdir()
    host.install("id", ID)  # not root
    failed(host.run(spec(dirs=((str(tmp_path / "appdata"), "7:7"),))),
           f"is owned by {me()}, not 7:7, and this user cannot change that")
    ok(host.run(spec(dirs=((str(tmp_path / "appdata"), me()),))))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write any directory")
def test_a_data_directory_that_cannot_be_created_fails(host, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        failed(host.run(spec(dirs=((str(locked / "appdata"), me()),))), "does not exist and cannot be created")
    finally:
        locked.chmod(0o700)


def test_a_store_without_room_for_its_models_fails(host, tmp_path):
    huge = 1 << 50  # KiB: no disk has that
    failed(host.run(spec(disk=((str(tmp_path / "models"), huge),))), "GiB free for models that need")
    ok(host.run(spec(disk=((str(tmp_path / "models"), 1),))))


def test_models_already_in_the_store_count_as_room(host, tmp_path):
    store = tmp_path / "models"
    store.mkdir()
    (store / "blob").write_bytes(b"\1" * (4 << 20))
    host.set("df-free", "10240\n")  # 10 MiB free
    ok(host.run(spec(disk=((str(store), 12288),))))  # 12 MiB: the 4 MiB already there count
    failed(host.run(spec(disk=((str(store), 20480),))), "0 GiB free for models that need 1 GiB")


GPU_SPEC = dict(gpus=(("RTX 4090", 24576),), min_driver="570.26", driver_reason="CUDA 12.8 needs",
                gpu_image="ollama/ollama:0.12.6")
HEALTHY = "NVIDIA GeForce RTX 4090, 24564, 575.64.03\n"


def test_a_healthy_gpu_host_passes_every_gpu_check(host):
    host.set("gpus", HEALTHY)
    ok(host.run(spec(**GPU_SPEC)))


def test_no_nvidia_driver_fails(tmp_path):
    h = Host(tmp_path, nvidia_smi=False)
    failed(h.run(spec(**GPU_SPEC)), "nvidia-smi not found: the config declares 1 GPU(s)")


@pytest.mark.parametrize("rows,fragment", [
    ("", "nvidia-smi reports 0 GPU(s), the config declares 1"),
    (HEALTHY * 2, "nvidia-smi reports 2 GPU(s), the config declares 1"),
    ("NVIDIA GeForce RTX 4060, 8188, 575.64.03\n", "GPU 0 (NVIDIA GeForce RTX 4060) has 8188 MiB of VRAM"),
    ("NVIDIA GeForce RTX 4090, 24564, 565.57.01\n", "driver 565.57.01 is older than 570.26, which CUDA 12.8 needs"),
    ("Failed to initialize NVML: Driver/library version mismatch\n", "GPU 0: nvidia-smi failed: Failed to initialize"),
])
def test_each_gpu_check_fails_on_its_own_fault(host, rows, fragment):
    host.set("gpus", rows)
    failed(host.run(spec(**GPU_SPEC)), fragment)


def test_the_gpu_hand_off_fails_the_preflight_when_docker_run_gpus_fails(host):
    host.set("gpus", HEALTHY)
    host.set("gpu-fails")
    r = host.run(spec(**GPU_SPEC))
    failed(r, "Docker cannot hand the GPU to a container (is nvidia-container-toolkit installed")
    assert "could not select device driver" in r.stderr  # the engine's own reason
    assert "run --rm --gpus all --entrypoint nvidia-smi ollama/ollama:0.12.6 -L" in host.docker_calls()


def test_the_gpu_hand_off_only_warns_with_cpu_fallback(host):
    host.set("gpus", HEALTHY)
    host.set("gpu-fails")
    warned(host.run(spec(**GPU_SPEC, gpu_fallback=True)), "Docker cannot hand the GPU to a container")


def test_without_a_gpu_image_docker_is_not_asked_for_the_gpu(host):
    host.set("gpus", HEALTHY)
    host.set("gpu-fails")
    ok(host.run(spec(**{**GPU_SPEC, "gpu_image": None})))
    assert not [c for c in host.docker_calls() if c.startswith("run ")]


def test_a_port_published_by_a_foreign_container_fails(host):
    host.set("ps", "someone-else||0.0.0.0:3000->3000/tcp, :::3000->3000/tcp\n")
    failed(host.run(spec(ports=(3000,))), "port 3000 is already published by container someone-else")


def test_a_port_published_by_this_stack_s_own_container_is_fine(host):
    host.set("ps", "octollm-grafana|pulumi/test|0.0.0.0:3000->3000/tcp\n")
    ok(host.run(spec(ports=(3000,))))


def test_a_port_a_host_process_listens_on_fails(host):
    host.set("listening", "LISTEN 0 4096 0.0.0.0:11434 0.0.0.0:*\nLISTEN 0 128 [::]:22 [::]:*\n")
    failed(host.run(spec(ports=(11434,))), "port 11434 is already in use by a process on the host")
    ok(host.run(spec(ports=(11435,))))


def test_sshd_limits_below_the_parallelism_warn_and_enough_are_quiet(host):
    host.sshd_config.write_text("MaxStartups 4:30:60\nMaxSessions 3\n")
    r = host.run(spec(ssh_parallel=PARALLEL))
    warned(r, f"sshd MaxStartups 4:30:60 starts dropping new connections at 4, below the {PARALLEL}")
    warned(r, f"sshd MaxSessions 3 is below the {PARALLEL} Docker API calls")
    host.sshd_config.write_text(f"MaxStartups {PARALLEL + 2}:30:100\nMaxSessions {PARALLEL}\n")
    quiet = host.run(spec(ssh_parallel=PARALLEL))
    ok(quiet)
    assert not [l for l in quiet.stdout.splitlines() if l.startswith("warning:")]
    assert f"sshd: MaxStartups {PARALLEL + 2}:30:100, MaxSessions {PARALLEL}" in quiet.stdout


def test_sshd_t_is_preferred_when_it_answers(host):
    host.set("sshd-T", "port 22\nmaxstartups 2:30:100\nmaxsessions 50\n")
    r = host.run(spec(ssh_parallel=PARALLEL))
    assert "sshd: MaxStartups 2:30:100, MaxSessions 50 (from sshd -T)" in r.stdout
    warned(r, "sshd MaxStartups 2:30:100 starts dropping new connections at 2")


def test_openssh_defaults_apply_when_sshd_config_sets_no_limit(host):
    host.sshd_config.write_text("Port 22\n")
    r = host.run(spec(ssh_parallel=PARALLEL))
    assert (f"sshd: MaxStartups {scripts.SSHD_DEFAULTS['maxstartups']}, MaxSessions "
            f"{scripts.SSHD_DEFAULTS['maxsessions']}") in r.stdout
    ok(r)  # the defaults (10 and 10) leave room for PARALLEL


def test_the_preflight_reads_but_never_changes_the_host(host, tmp_path):
    (tmp_path / "pool").mkdir()
    host.set("gpus", HEALTHY)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "stub" not in p.parts)
    r = host.run(spec(anchors=(str(tmp_path / "pool"),), dirs=((str(tmp_path / "pool" / "appdata"), me()),),
                      disk=((str(tmp_path / "pool" / "appdata" / "models"), 1),), ports=(3000,),
                      networks=(("ai", "172.28.0.0/24"),), ssh_parallel=PARALLEL, **GPU_SPEC))
    ok(r)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "stub" not in p.parts) == before


# ====================================================================== the network check on a real engine
# The stub above answers in the format the preflight's Go template asks for; this holds that template
# to what a real engine prints (field names, the map of reserved addresses, the attached containers).


def test_the_replaced_network_check_reads_a_real_engine(dockerd, busybox_image, tmp_path):  # noqa: F811
    net, label = "octollm-pf-replace", "org.octollm.managed-by=pulumi/test"
    real = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LC_ALL": "C"}

    def run(**change):
        settings = dict(name=net, subnet="172.31.243.0/24", gateway="172.31.243.1", internal=False,
                        reserved=(("continue-dev", "172.31.243.12"),)) | change
        return subprocess.run(["bash", "-c", scripts.preflight(spec(network_settings=(tuple(settings.values()),)))],
                              capture_output=True, text=True, env=real, timeout=120)

    try:
        real_docker("network", "create", "--subnet", "172.31.243.0/24", "--gateway", "172.31.243.1",
                    "--aux-address", "continue-dev=172.31.243.12", "--label", label, net)
        for name, labels in (("octollm-pf-ours", ["--label", label]), ("octollm-pf-foreign", [])):
            real_docker("run", "-d", "--name", name, *labels, "--network", net, busybox_image,
                        "/bin/busybox", "sleep", "600")
        ok(run())  # unchanged: a foreign container on it is no concern
        r = run(internal=True, reserved=())
        failed(r, f"Docker network {net} is replaced by this update (internal false -> true, reserved addresses "
                  "continue-dev=172.31.243.12 -> none), but container(s) octollm-pf-foreign outside this stack")
        assert f"docker network disconnect {net} octollm-pf-foreign" in r.stderr and "octollm-pf-ours" not in r.stderr
        real_docker("network", "disconnect", net, "octollm-pf-foreign")  # what the message says to do
        ok(run(internal=True, reserved=()))
    finally:
        real_docker("rm", "-f", "octollm-pf-ours", "octollm-pf-foreign", check=False)
        real_docker("network", "rm", net, check=False)
