"""MonitoringStack: Prometheus, Grafana, Loki, Alloy log shipping, exporters and alert rules.

The scrape configuration is generated from `ScrapeJob`s that the stack layer derives from
what it actually deploys; nothing here lists services by hand.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pulumi
import yaml

from components.config.schema import MonitoringConfig
from components.platforms.base import Platform
from components.platforms.workload import (GRACE_DATA, GRACE_SERVICE, ConfigFileSpec, MountSpec, PasswordApply,
                                           PortSpec, ServiceSpec, http_health)
from components.services.data_services import secret_or_generated


@dataclass(frozen=True)
class ScrapeJob:
    job: str
    targets: tuple[str, ...]
    metrics_path: str = "/metrics"
    probe_module: str | None = None  # set: targets are URLs probed through the blackbox exporter
    interval_s: int = 15
    labels: tuple[tuple[str, str], ...] = ()
    # Per target, in the order of `targets` (empty: none): labels of its own on top of `labels`. A probed
    # target's `__param_module` label is the blackbox module it is probed with, instead of probe_module.
    target_labels: tuple[tuple[tuple[str, str], ...], ...] = ()

    def __post_init__(self):
        if self.target_labels and len(self.target_labels) != len(self.targets):
            raise ValueError(f"job {self.job}: {len(self.target_labels)} target label sets "
                             f"for {len(self.targets)} targets")

    def modules(self) -> list[str]:
        """The blackbox module each target is probed with (none when the job is not probed)."""
        if not self.probe_module:
            return []
        own = self.target_labels or ((),) * len(self.targets)
        return [dict(lab).get(PARAM_MODULE, self.probe_module) for lab in own]


@dataclass
class MonitoringStackArgs:
    config: MonitoringConfig
    central: Platform  # runs Prometheus, Grafana, Loki and the blackbox exporter
    hosts: dict[str, Platform]  # every platform whose nodes' metrics and logs are collected
    jobs: list[ScrapeJob]
    grafana_admin_password: pulumi.Input[str] | None = None  # generated when not configured
    probe_model: str | None = None  # a generation module named `ollama_generate` for this model
    probe_modules: dict[str, dict] = field(default_factory=dict)  # further blackbox modules, by name
    redis_password: pulumi.Input[str] | None = None
    postgres_dsn: pulumi.Input[str] | None = None
    data_host: Platform | None = None
    data_network: str | None = None
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    rotate: str | None = None  # a new value regenerates the Grafana admin password


GPU_FIELDS = [
    # P40 (Pascal) has no DCGM profiling metrics (DCGM_FI_PROF_*): only the basic device fields.
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (C)"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (W)"),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilisation (%)"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory copy utilisation (%)"),
    ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer used (MiB)"),
    ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer free (MiB)"),
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock (MHz)"),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock (MHz)"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Last XID error"),
]


def dcgm_counters_csv() -> str:
    lines = ["# field, type, help"]
    lines += [f"{name}, {kind}, {help_}." for name, kind, help_ in GPU_FIELDS]
    return "\n".join(lines) + "\n"


def gpu_temperature_metric(exporter: str) -> str:
    return "DCGM_FI_DEV_GPU_TEMP" if exporter == "dcgm" else "nvidia_smi_temperature_gpu"


def prometheus_config(jobs: list[ScrapeJob], blackbox: str) -> str:
    scrape = []
    for j in sorted(jobs, key=lambda j: j.job):
        entry: dict = {"job_name": j.job, "scrape_interval": f"{j.interval_s}s"}
        # Targets probed with different modules each carry theirs as a label, and such a job has no `params`:
        # a job's `params` overrides its targets' __param_module (as Prometheus 2.42 does).
        modules = j.modules()
        uniform = len(set(modules)) <= 1
        # One static group per distinct set of labels, in the order their first target comes.
        groups: dict[tuple[tuple[str, str], ...], list[str]] = {}
        for k, target in enumerate(j.targets):
            labels = {**dict(j.labels), **dict(j.target_labels[k] if j.target_labels else ())}
            labels.pop(PARAM_MODULE, None)
            if not uniform:
                labels[PARAM_MODULE] = modules[k]
            groups.setdefault(tuple(sorted(labels.items())), []).append(target)
        entry["static_configs"] = [{"targets": ts, **({"labels": dict(lab)} if lab else {})}
                                   for lab, ts in groups.items()]
        if j.probe_module:
            entry["metrics_path"] = "/probe"
            if uniform:
                entry["params"] = {"module": [modules[0] if modules else j.probe_module]}
            entry["scrape_timeout"] = "30s" if j.interval_s >= 30 else f"{j.interval_s}s"
            entry["relabel_configs"] = [
                {"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": blackbox},
            ]
        elif j.metrics_path != "/metrics":
            entry["metrics_path"] = j.metrics_path
        scrape.append(entry)
    doc = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s"},
        "rule_files": ["/etc/octollm/alerts.yml"],
        "scrape_configs": scrape,
    }
    return yaml.safe_dump(doc, sort_keys=False)


# ADR-007: "Local Inference Latency (P95) < 10s", measured with Prometheus. The alert and any panel that
# shows the latency use these expressions, so both show the same number.
LATENCY_QUANTILE = 0.95
LATENCY_WINDOW = "15m"  # 15 samples of a 60 s probe; enough requests for a histogram's rate()
LATENCY_FOR = "5m"
TRAEFIK_OLLAMA_SERVICE = "ollama@file"  # the load balancer's service (file provider) in front of Ollama

# The generation probes: one job whose every target is an inference node's generate endpoint, each probed
# with the blackbox module that asks it for one token (Ollama: of a model the node serves; llama.cpp: of the
# model it was started with). Its `node` label names the inference node, `model` the model asked for.
PROBE_LATENCY_JOB = "inference-latency"
PARAM_MODULE = "__param_module"  # a target label Prometheus sends as the `module` parameter of /probe
PROBE_LATENCY_MODULE = "ollama_generate"  # the module MonitoringStackArgs.probe_model makes
LLAMACPP_COMPLETION_MODULE = "llamacpp_completion"
PROBE_TIMEOUT = "30s"  # a one-token generation, loading the model into memory included
PROBE_PROMPT = "ping"


def ollama_generate_module(model: str) -> dict:
    """A blackbox module timing Ollama's POST /api/generate of one token of `model`, unstreamed."""
    return {"prober": "http", "timeout": PROBE_TIMEOUT,
            "http": {"method": "POST", "valid_status_codes": [200],
                     "headers": {"Content-Type": "application/json"},
                     "body": json.dumps({"model": model, "prompt": PROBE_PROMPT, "stream": False,
                                         "options": {"num_predict": 1}}, sort_keys=True)}}


def llamacpp_completion_module() -> dict:
    """A blackbox module timing llama.cpp server's POST /completion of one token (n_predict), unstreamed.
    The server serves the one model it was started with, so the body names none."""
    return {"prober": "http", "timeout": PROBE_TIMEOUT,
            "http": {"method": "POST", "valid_status_codes": [200],
                     "headers": {"Content-Type": "application/json"},
                     "body": json.dumps({"prompt": PROBE_PROMPT, "n_predict": 1, "stream": False}, sort_keys=True)}}


def ollama_generate_module_names(models: Iterable[str]) -> dict[str, str]:
    """The blackbox module of each model's generation probe: `ollama_generate_<model, lowercase, every run of
    other characters than a-z and 0-9 as one underscore>`; models whose names would clash (llama3.1:8b and
    llama3-1:8b) each get the first 8 hex digits of their name's SHA-256 appended."""
    slugs = {m: re.sub(r"[^a-z0-9]+", "_", m.lower()).strip("_") for m in sorted(set(models))}
    clash = {s for s in slugs.values() if list(slugs.values()).count(s) > 1}
    out = {}
    for m, slug in slugs.items():
        suffix = f"_{hashlib.sha256(m.encode()).hexdigest()[:8]}" if slug in clash else ""
        out[m] = f"{PROBE_LATENCY_MODULE}_{slug}{suffix}"
    return out


@dataclass(frozen=True)
class LatencySource:
    """Where the inference latency of a stack is measured, and its P95 over LATENCY_WINDOW in seconds
    (one series per job and instance, and per service behind a proxy)."""

    source: str  # "probe", "vllm" or "traefik": the alert's `source` label
    job: str
    expr: str
    what: str  # for the alert's text
    where: str = "{{ $labels.instance }}"  # the alert's text: what it fires for


def _histogram_p95(metric: str, selector: str, by: str) -> str:
    return (f"histogram_quantile({LATENCY_QUANTILE:g}, sum by ({by}, le) "
            f"(rate({metric}_bucket{{{selector}}}[{LATENCY_WINDOW}])))")


def inference_latency_p95(jobs: list[ScrapeJob]) -> list[LatencySource]:
    """The P95 of every latency measurement the stack scrapes.

    Request-latency histograms where the engine or the proxy exports one: vLLM's end-to-end request latency,
    Traefik's per-service request duration in front of Ollama. Ollama exports no metrics, and llama.cpp's
    /metrics has only running totals (no per-request distribution), so their latency is the generation
    probes': the 95th percentile of each node's probe samples in the window (one slow probe in a full window
    of fast ones stays below it; one in three slow ones does not).
    """
    out: list[LatencySource] = []
    for j in sorted(jobs, key=lambda j: j.job):
        if j.job == PROBE_LATENCY_JOB and j.probe_module:
            out.append(LatencySource("probe", j.job, f"quantile_over_time({LATENCY_QUANTILE:g}, "
                                     f'probe_duration_seconds{{job="{j.job}"}}[{LATENCY_WINDOW}])',
                                     "one-token generation probe",
                                     "{{ $labels.node }} ({{ $labels.instance }})"))
        elif j.job == "vllm" and not j.probe_module:
            out.append(LatencySource("vllm", j.job, _histogram_p95(
                "vllm:e2e_request_latency_seconds", f'job="{j.job}"', "job, instance"), "vLLM requests"))
        elif j.job == "traefik" and not j.probe_module:
            out.append(LatencySource("traefik", j.job, _histogram_p95(
                "traefik_service_request_duration_seconds", f'job="{j.job}", service="{TRAEFIK_OLLAMA_SERVICE}"',
                "job, instance, service"), "requests through the load balancer"))
    return out


def alert_rules(cfg: MonitoringConfig, gpu_metrics: list[str], latency: list[LatencySource] = ()) -> str:
    limit = f"{cfg.inference_latency_alert_s:g}"
    rules = [
        {"alert": "TargetDown", "expr": "up == 0", "for": "2m", "labels": {"severity": "critical"},
         "annotations": {"summary": "{{ $labels.job }} target {{ $labels.instance }} is down"}},
        {"alert": "ProbeFailed", "expr": "probe_success == 0", "for": "2m", "labels": {"severity": "critical"},
         "annotations": {"summary": "{{ $labels.job }} probe of {{ $labels.instance }} fails"}},
    ]
    for src in latency:
        rules.append({
            "alert": "InferenceLatencyHigh", "expr": f"{src.expr} >= {limit}", "for": LATENCY_FOR,
            "labels": {"severity": "warning", "source": src.source},
            "annotations": {"summary": f"P{LATENCY_QUANTILE * 100:g} latency of {src.what} on {src.where} "
                                       "is {{ $value | humanizeDuration }} "
                                       f"over {LATENCY_WINDOW} (target: below {limit}s)"}})
    for metric in sorted(set(gpu_metrics)):
        rules.append({
            "alert": "GpuTemperatureHigh", "expr": f"{metric} >= {cfg.gpu_temperature_alert_c}", "for": "1m",
            "labels": {"severity": "critical"},
            "annotations": {"summary": f"GPU on {{{{ $labels.instance }}}} at or above "
                                       f"{cfg.gpu_temperature_alert_c} C"}})
    return yaml.safe_dump({"groups": [{"name": "octollm", "rules": rules}]}, sort_keys=False, width=1000)


def blackbox_config(probe_model: str | None, extra: dict[str, dict] | None = None) -> str:
    """http_2xx; `ollama_generate` for probe_model when given; and the `extra` modules (by name)."""
    modules: dict = {"http_2xx": {"prober": "http", "timeout": "5s",
                                  "http": {"valid_status_codes": [200], "method": "GET"}}}
    if probe_model:
        modules[PROBE_LATENCY_MODULE] = ollama_generate_module(probe_model)
    modules.update(extra or {})
    return yaml.safe_dump({"modules": modules}, sort_keys=True)


def loki_config(retention: str) -> str:
    hours = _hours(retention)
    return yaml.safe_dump({
        "auth_enabled": False,
        "server": {"http_listen_port": 3100},
        "common": {"path_prefix": "/loki", "replication_factor": 1,
                   "storage": {"filesystem": {"chunks_directory": "/loki/chunks", "rules_directory": "/loki/rules"}},
                   "ring": {"kvstore": {"store": "inmemory"}}},
        "schema_config": {"configs": [{"from": "2024-01-01", "store": "tsdb", "object_store": "filesystem",
                                       "schema": "v13", "index": {"prefix": "index_", "period": "24h"}}]},
        "limits_config": {"retention_period": f"{hours}h"},
        "compactor": {"working_directory": "/loki/compactor", "shared_store": "filesystem",
                      "retention_enabled": True},
    }, sort_keys=False)


def _hours(retention: str) -> int:
    n, unit = int(retention[:-1]), retention[-1]
    return n * {"h": 1, "d": 24, "w": 168, "y": 8760}[unit]


def alloy_string(value: str) -> str:
    """An Alloy string literal: Alloy strings take JSON's double-quoted escapes, so no value ends one."""
    return json.dumps(value)


def _loki_write(url: str) -> list[str]:
    return ['loki.write "default" {', "  endpoint {", f"    url = {alloy_string(url)}", "  }", "}", ""]


def alloy_config(host_name: str, loki_push_url: str) -> str:
    return "\n".join([
        'discovery.docker "containers" {',
        '  host = "unix:///var/run/docker.sock"',
        "}",
        "",
        'discovery.relabel "containers" {',
        "  targets = []",
        "  rule {",
        '    source_labels = ["__meta_docker_container_name"]',
        '    regex         = "/(.*)"',
        '    target_label  = "container"',
        "  }",
        "  rule {",
        '    source_labels = ["__meta_docker_container_label_org_octollm_service"]',
        '    target_label  = "service"',
        "  }",
        "}",
        "",
        'loki.source.docker "containers" {',
        '  host          = "unix:///var/run/docker.sock"',
        "  targets       = discovery.docker.containers.targets",
        "  relabel_rules = discovery.relabel.containers.rules",
        f"  labels        = {{ host = {alloy_string(host_name)} }}",
        "  forward_to    = [loki.write.default.receiver]",
        "}",
        "",
        *_loki_write(loki_push_url),
    ])


def alloy_kubernetes_config(namespace: str, loki_push_url: str) -> str:
    return "\n".join([
        'discovery.kubernetes "pods" {',
        '  role = "pod"',
        "  namespaces {",
        f"    names = [{alloy_string(namespace)}]",
        "  }",
        "}",
        "",
        'discovery.relabel "pods" {',
        "  targets = discovery.kubernetes.pods.targets",
        "  rule {",
        '    source_labels = ["__meta_kubernetes_pod_name"]',
        '    target_label  = "pod"',
        "  }",
        "  rule {",
        '    source_labels = ["__meta_kubernetes_pod_container_name"]',
        '    target_label  = "container"',
        "  }",
        "  rule {",
        '    source_labels = ["__meta_kubernetes_pod_label_app_kubernetes_io_name"]',
        '    target_label  = "service"',
        "  }",
        "}",
        "",
        'loki.source.kubernetes "pods" {',
        "  targets    = discovery.relabel.pods.output",
        "  forward_to = [loki.write.default.receiver]",
        "}",
        "",
        *_loki_write(loki_push_url),
    ])


def grafana_datasources() -> str:
    return yaml.safe_dump({"apiVersion": 1, "datasources": [
        {"name": "Prometheus", "type": "prometheus", "uid": "prometheus", "access": "proxy",
         "url": "http://prometheus:9090", "isDefault": True, "editable": False},
        {"name": "Loki", "type": "loki", "uid": "loki", "access": "proxy",
         "url": "http://loki:3100", "editable": False},
    ]}, sort_keys=False)


def grafana_dashboard_provider() -> str:
    return yaml.safe_dump({"apiVersion": 1, "providers": [
        {"name": "octollm", "folder": "OctoLLM", "type": "file", "disableDeletion": True,
         "updateIntervalSeconds": 30, "options": {"path": "/etc/octollm/dashboards"}}]}, sort_keys=False)


# The dashboards are built with grafana-foundation-sdk in their own module.
from components.services.dashboards import grafana_dashboards  # noqa: E402


class MonitoringStack(pulumi.ComponentResource):
    grafana_url: str
    prometheus_url: str
    scrape_jobs: list[str]
    jobs: list[ScrapeJob]

    def __init__(self, name: str, args: MonitoringStackArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:MonitoringStack", name, None, opts)
        cfg, central = args.config, args.central
        self.containers = {}
        bind = central.cfg.publish_address
        labels = args.labels
        gpu_exporters = sorted({e for h in args.hosts.values() if (e := h.telemetry().gpu_exporter)})
        jobs = list(args.jobs) + self._exporter_jobs(args)
        self.jobs = jobs  # everything Prometheus scrapes: the NetworkPolicies are derived from it
        self.scrape_jobs = sorted(j.job for j in jobs)
        self.grafana_admin_password = secret_or_generated(self, f"{name}-grafana-admin-password",
                                                          args.grafana_admin_password, rotation=args.rotate)

        dirs = central.ensure_dirs(f"{name}-data-dirs", self,
                                   [central.appdata(s) for s in ("prometheus", "grafana", "loki")])
        self.containers["prometheus"] = central.run(f"{name}-prometheus", ServiceSpec(
            name="prometheus", image=central.image_ref("prometheus"),
            cpus=cfg.limits.prometheus.cpus, memory_gb=cfg.limits.prometheus.memory_gb,
            command=("--config.file=/etc/octollm/prometheus.yml", "--storage.tsdb.path=/prometheus",
                     f"--storage.tsdb.retention.time={cfg.retention}", "--web.enable-lifecycle"),
            ports=(PortSpec(9090, cfg.prometheus_port, bind, metrics_path="/metrics"),),
            mounts=(MountSpec("/prometheus", central.appdata("prometheus")),),
            files=(ConfigFileSpec("prometheus.yml",
                                  prometheus_config(jobs, "blackbox-exporter:9115"), reload_signal="HUP"),
                   ConfigFileSpec("alerts.yml",
                                  alert_rules(cfg, [gpu_temperature_metric(e) for e in gpu_exporters],
                                              inference_latency_p95(jobs)),
                                  reload_signal="HUP")),
            health=http_health(9090, "/-/healthy"), user=central.cfg.data_owner, network=cfg.network,
            stateful=True, labels=labels.get("prometheus", {}), read_only_rootfs=True,
            stop_grace_s=GRACE_DATA,  # SIGTERM: closes the head block and the WAL
        ), self, depends_on=[dirs])
        # The dashboards plot the alert's own P95 expressions, so what they show is what fires.
        p95 = [(f"P95 {s.what}", s.expr) for s in inference_latency_p95(jobs)]
        dashboards = [ConfigFileSpec(f"dashboards/{file}", text)
                      for file, text in grafana_dashboards(self.scrape_jobs, p95).items()]
        self.containers["grafana"] = central.run(f"{name}-grafana", ServiceSpec(
            name="grafana", image=central.image_ref("grafana"),
            cpus=cfg.limits.grafana.cpus, memory_gb=cfg.limits.grafana.memory_gb,
            env={"GF_SECURITY_ADMIN_USER": "admin", "GF_PATHS_PROVISIONING": "/etc/octollm/provisioning",
                 "GF_USERS_ALLOW_SIGN_UP": "false", "GF_ANALYTICS_REPORTING_ENABLED": "false"},
            secret_env={"GF_SECURITY_ADMIN_PASSWORD": self.grafana_admin_password},
            ports=(PortSpec(3000, cfg.grafana_port, bind, metrics_path="/metrics"),),
            mounts=(MountSpec("/var/lib/grafana", central.appdata("grafana")),),
            files=(ConfigFileSpec("provisioning/datasources/datasources.yml", grafana_datasources()),
                   ConfigFileSpec("provisioning/dashboards/octollm.yml", grafana_dashboard_provider()),
                   *dashboards),
            health=http_health(3000, "/api/health"), user=central.cfg.data_owner, network=cfg.network,
            stateful=True, labels=labels.get("grafana", {}), stop_grace_s=GRACE_SERVICE,
            # GF_SECURITY_ADMIN_PASSWORD only sets the password of a new database.
            password_apply=PasswordApply("grafana", "GF_SECURITY_ADMIN_PASSWORD"),
        ), self, depends_on=[dirs])
        self.containers["loki"] = central.run(f"{name}-loki", ServiceSpec(
            name="loki", image=central.image_ref("loki"),
            cpus=cfg.limits.loki.cpus, memory_gb=cfg.limits.loki.memory_gb,
            command=("-config.file=/etc/octollm/loki.yml",),
            ports=(PortSpec(3100, cfg.loki_port, bind, metrics_path="/metrics"),),
            mounts=(MountSpec("/loki", central.appdata("loki")),),
            files=(ConfigFileSpec("loki.yml", loki_config(cfg.retention)),),
            health=http_health(3100, "/ready"), user=central.cfg.data_owner, network=cfg.network,
            stateful=True, labels=labels.get("loki", {}), read_only_rootfs=True,
            stop_grace_s=GRACE_DATA,  # SIGTERM: flushes in-memory chunks to the store
        ), self, depends_on=[dirs])
        self.containers["blackbox-exporter"] = central.run(f"{name}-blackbox-exporter", ServiceSpec(
            name="blackbox-exporter", image=central.image_ref("blackbox-exporter"),
            cpus=cfg.limits.blackbox.cpus, memory_gb=cfg.limits.blackbox.memory_gb,
            command=("--config.file=/etc/octollm/blackbox.yml",),
            ports=(PortSpec(9115, cfg.blackbox_port, bind, metrics_path="/metrics"),),
            files=(ConfigFileSpec("blackbox.yml", blackbox_config(args.probe_model, args.probe_modules),
                                 reload_signal="HUP"),),
            health=http_health(9115, "/-/healthy"), network=cfg.network, read_only_rootfs=True,
        ), self)

        loki_central = "http://loki:3100/loki/api/v1/push"
        for hname, host in sorted(args.hosts.items()):
            self._agents(name, hname, host, cfg, central, loki_central)
        if args.data_host is not None and args.redis_password is not None:
            dh = args.data_host
            self.containers["redis-exporter"] = dh.run(f"{name}-redis-exporter", ServiceSpec(
                name="redis-exporter", image=dh.image_ref("redis-exporter"),
                cpus=cfg.limits.redis_exporter.cpus, memory_gb=cfg.limits.redis_exporter.memory_gb,
                env={"REDIS_ADDR": "redis://redis:6379"}, secret_env={"REDIS_PASSWORD": args.redis_password},
                ports=(PortSpec(9121, 9121, dh.cfg.publish_address, metrics_path="/metrics"),),
                health=http_health(9121, "/health"), network=args.data_network, read_only_rootfs=True,
            ), self)
        if args.data_host is not None and args.postgres_dsn is not None:
            dh = args.data_host
            self.containers["postgres-exporter"] = dh.run(f"{name}-postgres-exporter", ServiceSpec(
                name="postgres-exporter", image=dh.image_ref("postgres-exporter"),
                cpus=cfg.limits.postgres_exporter.cpus, memory_gb=cfg.limits.postgres_exporter.memory_gb,
                secret_env={"DATA_SOURCE_NAME": args.postgres_dsn},
                ports=(PortSpec(9187, 9187, dh.cfg.publish_address, metrics_path="/metrics"),),
                health=http_health(9187, "/"), network=args.data_network, read_only_rootfs=True,
            ), self)

        self.grafana_url = central.url("grafana", cfg.grafana_port, 3000)
        self.prometheus_url = central.url("prometheus", cfg.prometheus_port, 9090)
        self.register_outputs({"grafanaUrl": self.grafana_url, "prometheusUrl": self.prometheus_url,
                               "scrapeJobs": self.scrape_jobs})

    @staticmethod
    def _exporter_jobs(args: MonitoringStackArgs) -> list[ScrapeJob]:
        """Per-host exporters: by container name on the central host, by address:port elsewhere."""
        central = args.central.name
        by_job: dict[str, list[str]] = {}
        for hname, host in sorted(args.hosts.items()):
            ex, tel = host.cfg.exporters, host.telemetry()
            local = hname == central

            def target(service: str, internal: int, published: int) -> str:
                return f"{service}:{internal}" if local else f"{host.cfg.address}:{published}"

            if tel.node_metrics:
                by_job.setdefault("node-exporter", []).append(target("node-exporter", 9100, ex.node_exporter))
                by_job.setdefault("cadvisor", []).append(target("cadvisor", 8080, ex.cadvisor))
            if tel.gpu_exporter:
                internal = 9400 if tel.gpu_exporter == "dcgm" else 9835
                by_job.setdefault(f"gpu-{tel.gpu_exporter}", []).append(
                    target("gpu-exporter", internal, ex.gpu_exporter_port))
        jobs = [ScrapeJob(job, tuple(t)) for job, t in sorted(by_job.items())]
        if args.data_host is not None and args.redis_password is not None:
            jobs.append(ScrapeJob("redis-exporter", ("redis-exporter:9121",)))
        if args.data_host is not None and args.postgres_dsn is not None:
            jobs.append(ScrapeJob("postgres-exporter", ("postgres-exporter:9187",)))
        jobs += [ScrapeJob("prometheus", ("prometheus:9090",)), ScrapeJob("grafana", ("grafana:3000",)),
                 ScrapeJob("loki", ("loki:3100",)), ScrapeJob("blackbox-exporter", ("blackbox-exporter:9115",))]
        return jobs

    def _agents(self, name: str, hname: str, host: Platform, cfg: MonitoringConfig,
                central: Platform, loki_central: str) -> None:
        """The collectors of one platform's nodes: node and container metrics, logs, GPU metrics."""
        lim, ex, b, tel = cfg.limits, host.cfg.exporters, host.cfg.publish_address, host.telemetry()
        on_central = hname == central.name
        # Off the central host the exporters are reached by address:port, not container DNS.
        net = cfg.network if on_central else None
        prefix = f"{name}-{hname}"
        if tel.node_metrics:
            self.containers[f"{hname}-node-exporter"] = host.agent(f"{prefix}-node-exporter", ServiceSpec(
                name="node-exporter", image=host.image_ref("node-exporter"),
                cpus=lim.node_exporter.cpus, memory_gb=lim.node_exporter.memory_gb,
                command=("--path.rootfs=/host",),
                ports=(PortSpec(9100, ex.node_exporter, b, metrics_path="/metrics"),),
                mounts=(MountSpec("/host", "/", read_only=True),),
                pid_host=True, health=http_health(9100, "/metrics"), network=net,
            ), self)
            self.containers[f"{hname}-cadvisor"] = host.agent(f"{prefix}-cadvisor", ServiceSpec(
                name="cadvisor", image=host.image_ref("cadvisor"),
                cpus=lim.cadvisor.cpus, memory_gb=lim.cadvisor.memory_gb,
                command=("--docker_only=true", "--housekeeping_interval=15s"),
                ports=(PortSpec(8080, ex.cadvisor, b, metrics_path="/metrics"),),
                mounts=(MountSpec("/rootfs", "/", read_only=True), MountSpec("/sys", "/sys", read_only=True),
                        MountSpec("/var/lib/docker", "/var/lib/docker", read_only=True),
                        MountSpec("/dev/disk", "/dev/disk", read_only=True)),
                devices=("/dev/kmsg",), docker_socket=True,
                health=http_health(8080, "/healthz"), network=net,
            ), self)
        push = loki_central if on_central else f"http://{central.cfg.address}:{cfg.loki_port}/loki/api/v1/push"
        alloy_run = ("run", "--server.http.listen-addr=0.0.0.0:12345", "--storage.path=/tmp/alloy",
                     "/etc/octollm/config.alloy")
        if tel.log_discovery == "kubernetes":
            # Pods and their logs are read from the API, with a service account that may do only that.
            self.containers[f"{hname}-alloy"] = host.agent(f"{prefix}-alloy", ServiceSpec(
                name="alloy", image=host.image_ref("alloy"), cpus=lim.alloy.cpus, memory_gb=lim.alloy.memory_gb,
                command=alloy_run, ports=(PortSpec(12345, None, name="http", metrics_path="/metrics"),),
                files=(ConfigFileSpec("config.alloy", alloy_kubernetes_config(tel.namespace, push)),),
                health=http_health(12345, "/-/ready"), service_account="alloy", read_only_rootfs=True,
            ), self, api_read=[{"apiGroups": [""], "resources": ["pods", "pods/log"],
                                "verbs": ["get", "list", "watch"]}])
        else:
            # Containers and their logs are read from the engine's socket.
            self.containers[f"{hname}-alloy"] = host.agent(f"{prefix}-alloy", ServiceSpec(
                name="alloy", image=host.image_ref("alloy"), cpus=lim.alloy.cpus, memory_gb=lim.alloy.memory_gb,
                command=alloy_run, files=(ConfigFileSpec("config.alloy", alloy_config(hname, push)),),
                docker_socket=True, health=http_health(12345, "/-/ready", tool="bash"), network=net,
            ), self)
        if tel.gpu_exporter == "dcgm":
            spec = ServiceSpec(
                name="gpu-exporter", image=host.image_ref("dcgm-exporter"),
                cpus=lim.gpu_exporter.cpus, memory_gb=lim.gpu_exporter.memory_gb,
                command=("-f", "/etc/octollm/counters.csv"),
                ports=(PortSpec(9400, ex.gpu_exporter_port, b, name="metrics", metrics_path="/metrics"),),
                files=(ConfigFileSpec("counters.csv", dcgm_counters_csv()),),
                health=http_health(9400, "/health", tool="bash"), network=net, needs_root=True)
        elif tel.gpu_exporter == "nvidia-smi":
            spec = ServiceSpec(
                name="gpu-exporter", image=host.image_ref("nvidia-gpu-exporter"),
                cpus=lim.gpu_exporter.cpus, memory_gb=lim.gpu_exporter.memory_gb,
                ports=(PortSpec(9835, ex.gpu_exporter_port, b, metrics_path="/metrics"),),
                health=http_health(9835, "/", tool="bash"), network=net)
        else:
            return
        self.containers[f"{hname}-gpu-exporter"] = host.agent(f"{prefix}-gpu-exporter", spec, self, gpu_nodes=True)
