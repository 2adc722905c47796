"""Grafana dashboards for what the stack deploys, built with grafana-foundation-sdk.

The SDK release is the one generated from the schema of the pinned Grafana's line (11.3: dashboard
schemaVersion 39). Which dashboards, rows and panels exist follows the scrape jobs Prometheus is
given, so a dashboard appears only where the stack deploys what it shows:

    host.json           node-exporter and cAdvisor (Docker hosts)
    gpu-<exporter>.json DCGM or nvidia-smi exporter, per exporter in use
    inference.json      generation probes of Ollama and llama.cpp nodes, Ollama's API (blackbox probes),
                        vLLM and llama.cpp (their /metrics)
    octollm.json        the orchestrator, reflex layer and arms (job `octollm`)
    data-services.json  postgres_exporter, redis_exporter and the Qdrant health probe
    logs.json           Loki, over the labels Alloy attaches (always: every monitored host ships logs)

Datasources are referenced by the UIDs grafana_datasources() provisions ("prometheus", "loki").
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import logs as logs_b
from grafana_foundation_sdk.builders import loki as loki_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import statetimeline as timeline_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as dash

PROMETHEUS = dash.DataSourceRef(type_val="prometheus", uid="prometheus")
LOKI = dash.DataSourceRef(type_val="loki", uid="loki")
COLUMNS = 24  # Grafana's grid width
TAGS = ["octollm"]

# Scrape jobs (see ScrapeJob) whose presence turns a dashboard or a row on.
ENGINE_JOBS = ("ollama", "inference-latency", "vllm", "llamacpp")
DATA_JOBS = ("postgres-exporter", "redis-exporter", "qdrant")


@dataclass(frozen=True)
class Q:
    """One query of a panel: the expression and its legend."""

    expr: str
    legend: str = ""


class _Board:
    """One dashboard: panels flow left to right and wrap at 24 columns; a row starts a new line.

    Positions and ids are set here rather than by the SDK's own flow, which does not wrap a panel
    that is wider than the columns left on the current line."""

    def __init__(self, uid: str, title: str, description: str):
        self._builder = (dash_b.Dashboard(title).uid(uid).description(description).tags(TAGS)
                         .time("now-6h", "now").refresh("30s").timezone("browser").readonly().version(1)
                         .tooltip(dash.DashboardCursorSync.CROSSHAIR))
        self._variables: list = []
        self._x = self._y = self._line_h = 0
        self._id = 0

    def _next_id(self) -> int:
        self._id += 1
        return self._id

    def _place(self, w: int, h: int) -> dash.GridPos:
        if self._x + w > COLUMNS:
            self._x, self._y, self._line_h = 0, self._y + self._line_h, 0
        pos = dash.GridPos(h=h, w=w, x=self._x, y=self._y)
        self._x += w
        self._line_h = max(self._line_h, h)
        return pos

    def _newline(self) -> None:
        if self._x:
            self._x, self._y, self._line_h = 0, self._y + self._line_h, 0

    def row(self, title: str) -> None:
        self._newline()
        pos = dash.GridPos(h=1, w=COLUMNS, x=0, y=self._y)
        self._y += 1
        self._builder.with_row(dash_b.Row(title).id(self._next_id()).collapsed(False).grid_pos(pos))

    def variable(self, builder) -> None:
        self._variables.append(builder)

    def _add(self, panel, w: int, h: int, title: str, description: str | None, datasource) -> None:
        panel.id(self._next_id()).title(title).datasource(datasource).grid_pos(self._place(w, h))
        if description:
            panel.description(description)
        self._builder.with_panel(panel)

    def timeseries(self, title: str, queries: list[Q], unit: str, *, w: int = 12, h: int = 8,
                   description: str | None = None, min_: float | None = None, max_: float | None = None) -> None:
        panel = ts_b.Panel().unit(unit).fill_opacity(10).show_points(common.VisibilityMode.NEVER)
        if min_ is not None:
            panel.min(min_)
        if max_ is not None:
            panel.max(max_)
        for k, q in enumerate(queries):
            panel.with_target(prom_b.Dataquery().ref_id(chr(65 + k)).expr(q.expr).legend_format(q.legend or "__auto"))
        self._add(panel, w, h, title, description, PROMETHEUS)

    def stat(self, title: str, query: Q, unit: str, *, w: int = 6, h: int = 4, description: str | None = None,
             thresholds: list[tuple[float | None, str]] | None = None) -> None:
        panel = (stat_b.Panel().unit(unit).graph_mode(common.BigValueGraphMode.AREA)
                 .color_mode(common.BigValueColorMode.VALUE)
                 .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
                 .with_target(prom_b.Dataquery().ref_id("A").expr(query.expr).legend_format(query.legend or "__auto")
                              .instant()))
        if thresholds:
            panel.thresholds(dash_b.ThresholdsConfig().mode(dash.ThresholdsMode.ABSOLUTE).steps(
                [dash.Threshold(value=v, color=c) for v, c in thresholds]))
        self._add(panel, w, h, title, description, PROMETHEUS)

    def up_timeline(self, title: str, query: Q, *, w: int = 24, h: int = 8, description: str | None = None) -> None:
        """A state timeline of a 0/1 series: up (green) or down (red)."""
        mapping = dash.ValueMap(options={"0": dash.ValueMappingResult(text="down", color="red", index=0),
                                         "1": dash.ValueMappingResult(text="up", color="green", index=1)})
        panel = (timeline_b.Panel().mappings([mapping]).show_value(common.VisibilityMode.NEVER)
                 .merge_values(True).fill_opacity(80)
                 .with_target(prom_b.Dataquery().ref_id("A").expr(query.expr).legend_format(query.legend)))
        self._add(panel, w, h, title, description, PROMETHEUS)

    def log_volume(self, title: str, queries: list[Q], *, w: int = 12, h: int = 8,
                   description: str | None = None) -> None:
        panel = (ts_b.Panel().unit("short").draw_style(common.GraphDrawStyle.BARS).fill_opacity(60)
                 .stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL)))
        for k, q in enumerate(queries):
            panel.with_target(loki_b.Dataquery().ref_id(chr(65 + k)).expr(q.expr).legend_format(q.legend)
                              .query_type("range"))
        self._add(panel, w, h, title, description, LOKI)

    def logs(self, title: str, expr: str, *, w: int = 24, h: int = 16, description: str | None = None) -> None:
        panel = (logs_b.Panel().show_time(True).wrap_log_message(True).enable_log_details(True)
                 .show_labels(False).show_common_labels(False).prettify_log_message(False)
                 .sort_order(common.LogsSortOrder.DESCENDING).dedup_strategy(common.LogsDedupStrategy.NONE)
                 .with_target(loki_b.Dataquery().ref_id("A").expr(expr).query_type("range").max_lines(1000)))
        self._add(panel, w, h, title, description, LOKI)

    def render(self) -> str:
        self._builder.variables(self._variables)
        self._builder.annotations([])
        return json.dumps(self._builder.build(), cls=JSONEncoder, indent=2, sort_keys=True)


# ------------------------------------------------------------------------------------------- host


def host_dashboard() -> str:
    b = _Board("octollm-host", "OctoLLM host", "Nodes (node-exporter) and their containers (cAdvisor).")
    b.timeseries("CPU busy", [Q('100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))',
                                "{{instance}}")], "percent")
    b.timeseries("Memory used", [Q("node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes", "{{instance}}")],
                 "bytes")
    b.timeseries("Disk free", [Q('node_filesystem_avail_bytes{fstype!~"tmpfs|overlay"}',
                                 "{{instance}} {{mountpoint}}")], "bytes")
    b.timeseries("Network", [Q('rate(node_network_receive_bytes_total{device!~"lo|veth.*"}[5m])', "rx {{device}}"),
                             Q('rate(node_network_transmit_bytes_total{device!~"lo|veth.*"}[5m])', "tx {{device}}")],
                 "Bps")
    b.timeseries("Container CPU", [Q('sum by (name) (rate(container_cpu_usage_seconds_total{name!=""}[5m]))',
                                     "{{name}}")], "short")
    b.timeseries("Container memory", [Q('sum by (name) (container_memory_working_set_bytes{name!=""})', "{{name}}")],
                 "bytes")
    return b.render()


# -------------------------------------------------------------------------------------------- GPU

PROBE_LATENCY = 'probe_duration_seconds{job="inference-latency"}'


def gpu_dashboard(exporter: str, probe: bool = True) -> str:
    """One GPU exporter's fields. DCGM exports only the fields of the counters file the stack writes
    (Pascal cards have no DCGM_FI_PROF_*); nvidia_gpu_exporter labels each GPU by `uuid`."""
    if exporter == "nvidia-smi":
        legend = "{{instance}} {{uuid}}"
        series = [("Temperature", "nvidia_smi_temperature_gpu", "celsius"),
                  ("Utilisation", "nvidia_smi_utilization_gpu_ratio * 100", "percent"),
                  ("Memory used", "nvidia_smi_memory_used_bytes", "bytes"),
                  ("Power", "nvidia_smi_power_draw_watts", "watt")]
    else:
        legend = "{{instance}} gpu {{gpu}}"
        series = [("Temperature", "DCGM_FI_DEV_GPU_TEMP", "celsius"),
                  ("Utilisation", "DCGM_FI_DEV_GPU_UTIL", "percent"),
                  ("Framebuffer used", "DCGM_FI_DEV_FB_USED", "decmbytes"),
                  ("Power", "DCGM_FI_DEV_POWER_USAGE", "watt"),
                  ("SM clock", "DCGM_FI_DEV_SM_CLOCK", "rotmhz"),
                  ("Memory copy utilisation", "DCGM_FI_DEV_MEM_COPY_UTIL", "percent")]
    b = _Board(f"octollm-gpu-{exporter}", f"OctoLLM GPU ({exporter})", f"GPUs as the {exporter} exporter sees them.")
    for title, expr, unit in series:
        b.timeseries(title, [Q(expr, legend)], unit)
    if probe:
        b.timeseries("Inference probe latency", [Q(PROBE_LATENCY, "{{node}} {{instance}}")], "s")
    return b.render()


# -------------------------------------------------------------------------------------- inference


def _quantiles(metric: str, job: str, by: str = "instance") -> list[Q]:
    return [Q(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{job=\"{job}\"}}[5m])))",
              f"P{int(q * 100)} {{{{{by}}}}}") for q in (0.95, 0.5)]


def inference_dashboard(jobs: set[str], p95: Sequence[tuple[str, str]] = ()) -> str:
    b = _Board("octollm-inference", "OctoLLM inference",
               "Latency, throughput, queue and KV cache of the inference engines, as far as each exports them.")
    if p95:
        b.row("Latency P95, as alerted")
        b.timeseries("Inference latency P95 (the InferenceLatencyHigh expressions)",
                     [Q(expr, f"{legend} {{{{instance}}}}") for legend, expr in p95], "s", w=24,
                     description="The alert fires when one of these stays at or above the configured target "
                                 "(monitoring.inferenceLatencyAlertS) for 5 minutes.")
    if "inference-latency" in jobs:
        b.row("Generation probes")
        b.timeseries("Generation latency P95 / P50 (10m)",
                     [Q(f"quantile_over_time(0.95, {PROBE_LATENCY}[10m])", "P95 {{node}} {{instance}}"),
                      Q(f"quantile_over_time(0.5, {PROBE_LATENCY}[10m])", "P50 {{node}} {{instance}}")], "s",
                     description="Ollama exports no metrics and llama.cpp no latency distribution: a blackbox probe "
                                 "asks every Ollama node (for a model it serves) and every llama.cpp server for one "
                                 "token every minute, and this is how long it takes, model load included.")
        b.timeseries("Generation probe", [Q(PROBE_LATENCY, "{{node}} {{model}} {{instance}}")], "s")
    if "ollama" in jobs:
        b.row("Ollama")
        b.up_timeline("API up", Q('probe_success{job="ollama"}', "{{instance}}"), w=12,
                      description="GET /api/version through the blackbox exporter.")
        b.timeseries("API response time", [Q('probe_duration_seconds{job="ollama"}', "{{instance}}")], "s")
    if "vllm" in jobs:
        by = "instance, model_name"
        b.row("vLLM")
        b.timeseries("Request latency P95 / P50", _quantiles("vllm:e2e_request_latency_seconds", "vllm", by), "s")
        b.timeseries("Time to first token P95 / P50", _quantiles("vllm:time_to_first_token_seconds", "vllm", by), "s")
        b.timeseries("Time per output token P95 / P50",
                     _quantiles("vllm:time_per_output_token_seconds", "vllm", by), "s")
        b.timeseries("Tokens per second", [
            Q(f'sum by ({by}) (rate(vllm:generation_tokens_total{{job="vllm"}}[5m]))', "generated {{model_name}}"),
            Q(f'sum by ({by}) (rate(vllm:prompt_tokens_total{{job="vllm"}}[5m]))', "prompt {{model_name}}")],
            "short")
        b.timeseries("Queue", [Q('vllm:num_requests_waiting{job="vllm"}', "waiting {{instance}}"),
                               Q('vllm:num_requests_running{job="vllm"}', "running {{instance}}"),
                               Q('vllm:num_requests_swapped{job="vllm"}', "swapped {{instance}}")], "short")
        b.timeseries("KV-cache use", [Q('vllm:gpu_cache_usage_perc{job="vllm"}', "GPU {{instance}}"),
                                      Q('vllm:cpu_cache_usage_perc{job="vllm"}', "CPU {{instance}}")],
                     "percentunit", min_=0, max_=1)
        b.timeseries("Finished requests", [
            Q('sum by (instance, finished_reason) (rate(vllm:request_success_total{job="vllm"}[5m]))',
              "{{finished_reason}} {{instance}}")], "reqps")
        b.timeseries("Preemptions", [Q('rate(vllm:num_preemptions_total{job="vllm"}[5m])', "{{instance}}")], "short",
                     description="Requests evicted from the KV cache to make room: a sign the cache is too small.")
    if "llamacpp" in jobs:
        b.row("llama.cpp")
        note = ("llama.cpp's server exports counters and gauges only: no latency histograms, no time to first token "
                "(its latency is the generation probe's, above).")
        b.timeseries("Tokens per second", [
            Q('rate(llamacpp:tokens_predicted_total{job="llamacpp"}[5m])', "generated {{instance}}"),
            Q('rate(llamacpp:prompt_tokens_total{job="llamacpp"}[5m])', "prompt {{instance}}")], "short",
            description=note)
        b.timeseries("Generation speed while decoding", [
            Q('rate(llamacpp:tokens_predicted_total{job="llamacpp"}[5m])'
              ' / rate(llamacpp:tokens_predicted_seconds_total{job="llamacpp"}[5m])', "{{instance}}")], "short",
            description="Tokens per second of decoding time, waiting excluded.")
        b.timeseries("Prompt time per token", [
            Q('rate(llamacpp:prompt_seconds_total{job="llamacpp"}[5m])'
              ' / rate(llamacpp:prompt_tokens_total{job="llamacpp"}[5m])', "{{instance}}")], "s")
        b.timeseries("Queue", [Q('llamacpp:requests_processing{job="llamacpp"}', "processing {{instance}}"),
                               Q('llamacpp:requests_deferred{job="llamacpp"}', "deferred {{instance}}")], "short")
        b.timeseries("KV-cache use", [Q('llamacpp:kv_cache_usage_ratio{job="llamacpp"}', "{{instance}}")],
                     "percentunit", min_=0, max_=1)
        b.timeseries("KV-cache tokens", [Q('llamacpp:kv_cache_tokens{job="llamacpp"}', "{{instance}}")], "short")
    return b.render()


# --------------------------------------------------------------------------------------- services


def services_dashboard() -> str:
    """The orchestrator, reflex layer and arms, from what Prometheus itself records of the `octollm` job.

    The services' own request metrics are not known here (their /metrics is scraped, but which
    series they export is not specified), so this shows availability and responsiveness per service:
    `up` and the scrape's own duration and sample count, per target (one target per service)."""
    b = _Board("octollm-services", "OctoLLM services",
               "Orchestrator, reflex layer and arms: availability and /metrics responsiveness per service.")
    b.stat("Services up", Q('sum(up{job="octollm"})', "up"), "short",
           thresholds=[(None, "red"), (1, "green")])
    b.stat("Services down", Q('count(up{job="octollm"} == 0) or vector(0)', "down"), "short",
           thresholds=[(None, "green"), (1, "red")])
    b.stat("Availability (24h)", Q('avg(avg_over_time(up{job="octollm"}[24h]))', "availability"), "percentunit",
           thresholds=[(None, "red"), (0.99, "green")])
    b.stat("Slowest /metrics answer", Q('max(scrape_duration_seconds{job="octollm"})', "slowest"), "s")
    b.up_timeline("Up by service", Q('up{job="octollm"}', "{{instance}}"))
    b.timeseries("Availability by service (1h)", [Q('avg_over_time(up{job="octollm"}[1h])', "{{instance}}")],
                 "percentunit", min_=0, max_=1)
    b.timeseries("/metrics response time", [Q('scrape_duration_seconds{job="octollm"}', "{{instance}}")], "s",
                 description="How long each service takes to answer Prometheus' scrape.")
    b.timeseries("Samples exported", [Q('scrape_samples_scraped{job="octollm"}', "{{instance}}")], "short",
                 description="Series each service exports on /metrics.")
    return b.render()


# ---------------------------------------------------------------------------------- data services


def data_services_dashboard(jobs: set[str]) -> str:
    b = _Board("octollm-data-services", "OctoLLM data services",
               "PostgreSQL (postgres_exporter), Redis (redis_exporter) and Qdrant (health probe).")
    if "postgres-exporter" in jobs:
        db = '{datname!~"template.*"}'
        b.row("PostgreSQL")
        b.stat("Up", Q("min(pg_up)", "up"), "short", thresholds=[(None, "red"), (1, "green")])
        b.stat("Connections", Q(f"sum(pg_stat_database_numbackends{db})", "connections"), "short")
        b.stat("Max connections", Q("max(pg_settings_max_connections)", "max"), "short")
        b.stat("Database size", Q(f"sum(pg_database_size_bytes{db})", "size"), "bytes")
        b.timeseries("Connections by state", [Q("sum by (state) (pg_stat_activity_count)", "{{state}}"),
                                              Q("max(pg_settings_max_connections)", "max")], "short")
        b.timeseries("Transactions", [
            Q(f"sum by (datname) (rate(pg_stat_database_xact_commit{db}[5m]))", "commit {{datname}}"),
            Q(f"sum by (datname) (rate(pg_stat_database_xact_rollback{db}[5m]))", "rollback {{datname}}")], "ops")
        b.timeseries("Buffer cache hit ratio", [Q(
            f"sum by (datname) (rate(pg_stat_database_blks_hit{db}[5m])) / (sum by (datname) "
            f"(rate(pg_stat_database_blks_hit{db}[5m])) + sum by (datname) (rate(pg_stat_database_blks_read{db}[5m])))",
            "{{datname}}")], "percentunit", min_=0, max_=1)
        b.timeseries("Rows", [
            Q(f"sum by (datname) (rate(pg_stat_database_tup_fetched{db}[5m]))", "fetched {{datname}}"),
            Q(f"sum by (datname) (rate(pg_stat_database_tup_inserted{db}[5m]))", "inserted {{datname}}"),
            Q(f"sum by (datname) (rate(pg_stat_database_tup_updated{db}[5m]))", "updated {{datname}}"),
            Q(f"sum by (datname) (rate(pg_stat_database_tup_deleted{db}[5m]))", "deleted {{datname}}")], "rowsps")
        b.timeseries("Deadlocks and temp files", [
            Q(f"sum by (datname) (rate(pg_stat_database_deadlocks{db}[5m]))", "deadlocks {{datname}}"),
            Q(f"sum by (datname) (rate(pg_stat_database_temp_files{db}[5m]))", "temp files {{datname}}")], "short")
        b.timeseries("Database size", [Q(f"pg_database_size_bytes{db}", "{{datname}}")], "bytes")
    if "redis-exporter" in jobs:
        b.row("Redis")
        b.stat("Up", Q("min(redis_up)", "up"), "short", thresholds=[(None, "red"), (1, "green")])
        b.stat("Clients", Q("sum(redis_connected_clients)", "clients"), "short")
        b.stat("Memory used", Q("sum(redis_memory_used_bytes)", "used"), "bytes")
        hits, misses = "sum(rate(redis_keyspace_hits_total[5m]))", "sum(rate(redis_keyspace_misses_total[5m]))"
        b.stat("Hit ratio (5m)", Q(f"{hits} / ({hits} + {misses})", "hit ratio"), "percentunit")
        b.timeseries("Clients", [Q("redis_connected_clients", "connected {{instance}}"),
                                 Q("redis_blocked_clients", "blocked {{instance}}")], "short")
        b.timeseries("Memory", [Q("redis_memory_used_bytes", "used {{instance}}"),
                                Q("redis_memory_max_bytes > 0", "max {{instance}}")], "bytes")
        b.timeseries("Commands per second", [Q("rate(redis_commands_processed_total[5m])", "{{instance}}")], "ops")
        b.timeseries("Keyspace hits and misses", [Q("rate(redis_keyspace_hits_total[5m])", "hits {{instance}}"),
                                                  Q("rate(redis_keyspace_misses_total[5m])", "misses {{instance}}")],
                     "ops")
        b.timeseries("Keys", [Q("sum by (db) (redis_db_keys)", "{{db}}")], "short")
        b.timeseries("Expired and evicted keys", [Q("rate(redis_expired_keys_total[5m])", "expired {{instance}}"),
                                                  Q("rate(redis_evicted_keys_total[5m])", "evicted {{instance}}")],
                     "ops")
    if "qdrant" in jobs:
        b.row("Qdrant")
        b.up_timeline("Healthy", Q('probe_success{job="qdrant"}', "{{instance}}"), w=12,
                      description="GET /healthz through the blackbox exporter.")
        b.timeseries("Health check response time", [Q('probe_duration_seconds{job="qdrant"}', "{{instance}}")], "s")
    return b.render()


# ------------------------------------------------------------------------------------------- logs

# Labels Alloy attaches to every stream, on Docker hosts and in Kubernetes alike (see alloy_config and
# alloy_kubernetes_config): `service` (the org.octollm.service / app.kubernetes.io/name label) and
# `container`; Docker hosts add `host`, Kubernetes `pod`.
LOG_SERVICE = 'service=~"$service"'
ERROR_LINES = '|~ "(?i)(error|exception|fatal|panic|traceback)"'


def logs_dashboard() -> str:
    b = _Board("octollm-logs", "OctoLLM logs", "Container logs collected by Alloy into Loki.")
    b.variable(dash_b.QueryVariable("service").label("Service").datasource(LOKI).query("label_values(service)")
               .refresh(dash.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dash.VariableSort.ALPHABETICAL_ASC)
               .multi(True).include_all(True).all_value(".+")
               .current(dash.VariableOption(selected=True, text="All", value="$__all")))
    b.variable(dash_b.TextBoxVariable("search").label("Line filter (regex)").default_value("")
               .current(dash.VariableOption(selected=True, text="", value="")))
    b.log_volume("Log lines by service", [Q(f'sum by (service) (count_over_time({{{LOG_SERVICE}}} [1m]))',
                                            "{{service}}")])
    b.log_volume("Error lines by service",
                 [Q(f'sum by (service) (count_over_time({{{LOG_SERVICE}}} {ERROR_LINES} [5m]))', "{{service}}")],
                 description="Lines that mention error, exception, fatal, panic or traceback.")
    b.logs("Logs", f'{{{LOG_SERVICE}}} |~ "(?i)$search"')
    b.logs("Errors", f"{{{LOG_SERVICE}}} {ERROR_LINES}", h=12)
    return b.render()


# ------------------------------------------------------------------------------------ provisioning


def grafana_dashboards(jobs: Iterable[str], p95: Sequence[tuple[str, str]] = ()) -> dict[str, str]:
    """The dashboard files to provision (name under dashboards/ -> JSON), from the scrape jobs deployed.

    p95: (legend, expression) of each inference-latency P95 the alert rules use."""
    have = set(jobs)
    out: dict[str, str] = {}
    if "node-exporter" in have:
        out["host.json"] = host_dashboard()
    for exporter in ("dcgm", "nvidia-smi"):
        if f"gpu-{exporter}" in have:
            out[f"gpu-{exporter}.json"] = gpu_dashboard(exporter, probe="inference-latency" in have)
    if have.intersection(ENGINE_JOBS):
        out["inference.json"] = inference_dashboard(have, p95)
    if "octollm" in have:
        out["octollm.json"] = services_dashboard()
    if have.intersection(DATA_JOBS):
        out["data-services.json"] = data_services_dashboard(have)
    out["logs.json"] = logs_dashboard()
    return out
