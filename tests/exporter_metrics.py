"""What each deployed exporter exports, per pinned version: the series names a dashboard may select.

One entry per exporter, keyed by the catalogue's image key; `image` is the pinned reference the list
was read for (tests/test_dashboards.py fails when the catalogue's pin moves, so the list is re-read).
Each list is taken from that release's source, not from a running exporter:

- node-exporter v1.8.2: collector/cpu_common.go, meminfo*.go, filesystem_common.go, netdev_common.go,
  loadavg.go (default-enabled collectors).
- cAdvisor v0.49.1: metrics/prometheus.go (cpu, memory, network, fs: enabled by default).
- dcgm-exporter 3.3.9-3.6.1: exports exactly the fields of the counters file it is started with (-f);
  the stack writes that file from monitoring_stack.GPU_FIELDS, so the entry is that list.
- nvidia_gpu_exporter 1.2.1: METRICS.md (every GPU labelled `uuid`).
- blackbox_exporter v0.25.0: prober/handler.go, prober/http.go.
- postgres_exporter v0.16.0: collector/pg_stat_database.go, pg_database.go, pg_locks.go (default-enabled),
  cmd/postgres_exporter (pg_up, builtin pg_stat_activity map, pg_settings_*).
- redis_exporter v1.66.0: exporter/exporter.go (metricMapGauges/metricMapCounters under namespace redis).
- vLLM v0.6.3: vllm/engine/metrics.py (class Metrics); the names are the same from v0.5 through v0.7.
- llama.cpp server b4719: examples/server/server.cpp handle_metrics (with --metrics, which the stack sets
  through LLAMA_ARG_ENDPOINT_METRICS); counters and gauges only, no histograms.
- Prometheus v2.55.1: the series it records for every scrape target, whatever the target exports.
"""

from __future__ import annotations

from components.services.monitoring_stack import GPU_FIELDS


def histogram(*names: str) -> set[str]:
    return {f"{n}{suffix}" for n in names for suffix in ("_bucket", "_sum", "_count")}


EXPORTERS: dict[str, dict] = {
    "node-exporter": {"image": "prom/node-exporter:v1.8.2", "metrics": {
        "node_cpu_seconds_total", "node_load1", "node_load5", "node_load15", "node_boot_time_seconds",
        "node_memory_MemTotal_bytes", "node_memory_MemAvailable_bytes", "node_memory_MemFree_bytes",
        "node_memory_Buffers_bytes", "node_memory_Cached_bytes", "node_memory_SwapTotal_bytes",
        "node_memory_SwapFree_bytes", "node_filesystem_avail_bytes", "node_filesystem_size_bytes",
        "node_filesystem_free_bytes", "node_network_receive_bytes_total", "node_network_transmit_bytes_total",
        "node_network_receive_errs_total", "node_network_transmit_errs_total",
        "node_disk_read_bytes_total", "node_disk_written_bytes_total"}},
    "cadvisor": {"image": "gcr.io/cadvisor/cadvisor:v0.49.1", "metrics": {
        "container_cpu_usage_seconds_total", "container_cpu_cfs_throttled_seconds_total",
        "container_memory_usage_bytes", "container_memory_working_set_bytes", "container_memory_rss",
        "container_network_receive_bytes_total", "container_network_transmit_bytes_total",
        "container_fs_usage_bytes", "container_last_seen"}},
    "dcgm-exporter": {"image": "nvcr.io/nvidia/k8s/dcgm-exporter:3.3.9-3.6.1-ubuntu22.04",
                      "metrics": {name for name, _, _ in GPU_FIELDS}},
    "nvidia-gpu-exporter": {"image": "utkuozdemir/nvidia_gpu_exporter:1.2.1", "metrics": {
        "nvidia_smi_gpu_info", "nvidia_smi_temperature_gpu", "nvidia_smi_utilization_gpu_ratio",
        "nvidia_smi_utilization_memory_ratio", "nvidia_smi_memory_used_bytes", "nvidia_smi_memory_free_bytes",
        "nvidia_smi_memory_total_bytes", "nvidia_smi_power_draw_watts", "nvidia_smi_power_limit_watts",
        "nvidia_smi_fan_speed_ratio", "nvidia_smi_clocks_current_sm_clock_hz",
        "nvidia_smi_clocks_current_memory_clock_hz", "nvidia_smi_pstate"}},
    "blackbox-exporter": {"image": "prom/blackbox-exporter:v0.25.0", "metrics": {
        "probe_success", "probe_duration_seconds", "probe_http_status_code", "probe_http_duration_seconds",
        "probe_http_content_length", "probe_http_version", "probe_http_ssl", "probe_http_redirects",
        "probe_dns_lookup_time_seconds", "probe_ip_protocol"}},
    "postgres-exporter": {"image": "quay.io/prometheuscommunity/postgres-exporter:v0.16.0", "metrics": {
        "pg_up", "pg_stat_database_numbackends", "pg_stat_database_xact_commit", "pg_stat_database_xact_rollback",
        "pg_stat_database_blks_read", "pg_stat_database_blks_hit", "pg_stat_database_tup_returned",
        "pg_stat_database_tup_fetched", "pg_stat_database_tup_inserted", "pg_stat_database_tup_updated",
        "pg_stat_database_tup_deleted", "pg_stat_database_conflicts", "pg_stat_database_temp_files",
        "pg_stat_database_temp_bytes", "pg_stat_database_deadlocks", "pg_stat_database_blk_read_time",
        "pg_stat_database_blk_write_time", "pg_database_size_bytes", "pg_database_connection_limit",
        "pg_locks_count", "pg_stat_activity_count", "pg_stat_activity_max_tx_duration",
        "pg_settings_max_connections"}},
    "redis-exporter": {"image": "oliver006/redis_exporter:v1.66.0-alpine", "metrics": {
        "redis_up", "redis_uptime_in_seconds", "redis_connected_clients", "redis_blocked_clients",
        "redis_memory_used_bytes", "redis_memory_max_bytes", "redis_mem_fragmentation_ratio",
        "redis_commands_processed_total", "redis_connections_received_total", "redis_rejected_connections_total",
        "redis_keyspace_hits_total", "redis_keyspace_misses_total", "redis_expired_keys_total",
        "redis_evicted_keys_total", "redis_db_keys", "redis_commands_total",
        "redis_commands_duration_seconds_total"}},
    # Traefik v3.2.1's Prometheus metrics (checked against the real binary by test_monitoring_servers).
    "traefik": {"image": "traefik:v3.2.1", "metrics": {
        *histogram("traefik_service_request_duration_seconds", "traefik_entrypoint_request_duration_seconds"),
        "traefik_service_requests_total", "traefik_entrypoint_requests_total", "traefik_config_reloads_total",
        "traefik_config_last_reload_success", "traefik_open_connections", "traefik_service_server_up"}},
    "vllm": {"image": "vllm/vllm-openai:v0.6.3", "metrics": {
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:num_requests_swapped",
        "vllm:gpu_cache_usage_perc", "vllm:cpu_cache_usage_perc", "vllm:num_preemptions_total",
        "vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total",
        "vllm:avg_prompt_throughput_toks_per_s", "vllm:avg_generation_throughput_toks_per_s",
        *histogram("vllm:time_to_first_token_seconds", "vllm:time_per_output_token_seconds",
                   "vllm:e2e_request_latency_seconds", "vllm:request_prompt_tokens",
                   "vllm:request_generation_tokens", "vllm:request_params_n")}},
    # Counters and gauges only, no request-latency histogram: llama.cpp's inference latency is the generation
    # probe's (POST /completion through the blackbox exporter, job inference-latency).
    "llamacpp": {"image": "ghcr.io/ggml-org/llama.cpp:server-b4719", "metrics": {
        "llamacpp:prompt_tokens_total", "llamacpp:prompt_seconds_total", "llamacpp:tokens_predicted_total",
        "llamacpp:tokens_predicted_seconds_total", "llamacpp:n_decode_total", "llamacpp:n_busy_slots_per_decode",
        "llamacpp:prompt_tokens_seconds", "llamacpp:predicted_tokens_seconds", "llamacpp:kv_cache_usage_ratio",
        "llamacpp:kv_cache_tokens", "llamacpp:requests_processing", "llamacpp:requests_deferred"}},
    "prometheus": {"image": "prom/prometheus:v2.55.1", "metrics": {
        "up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_samples_post_metric_relabeling",
        "scrape_series_added"}},
}

# The CUDA build of the llama.cpp server is the same server: the same metrics.
SAME_AS = {"llamacpp-cuda": ("llamacpp", "ghcr.io/ggml-org/llama.cpp:server-cuda-b4719")}

# Scrape job -> the exporter behind it. A job probed through the blackbox exporter (metrics_path /probe)
# is the blackbox exporter's, whatever its name; every job also has Prometheus' own per-target series.
JOB_EXPORTER = {
    "node-exporter": "node-exporter", "cadvisor": "cadvisor", "gpu-dcgm": "dcgm-exporter",
    "gpu-nvidia-smi": "nvidia-gpu-exporter", "postgres-exporter": "postgres-exporter",
    "redis-exporter": "redis-exporter", "vllm": "vllm", "llamacpp": "llamacpp",
    "blackbox-exporter": None, "prometheus": None, "grafana": None, "loki": None, "traefik": "traefik",
    "octollm": None,  # the services' own series are not specified: only Prometheus' per-target ones count
}


def metrics_of_job(job: str, probed: bool) -> set[str]:
    exporter = "blackbox-exporter" if probed else JOB_EXPORTER.get(job)
    own = EXPORTERS[exporter]["metrics"] if exporter else set()
    return set(own) | EXPORTERS["prometheus"]["metrics"]
