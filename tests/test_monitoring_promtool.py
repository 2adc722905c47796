"""promtool on what every real stack generates: the Prometheus config with its rule files in place, the rule
files, and unit tests of every alert generated from the configured thresholds (tests/monitoring_tools.py).

The files are taken from the registered resources of a mock-engine run of each stack file: on Docker the
content a `*-file-*` step writes and the container mount it lands in, on Kubernetes the ConfigMap items a pod
mounts. promtool reads them at the paths the container reads them, moved under a temporary directory.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

import monitoring_tools as mt

STACKS = mt.MONITORED_STACKS


@pytest.fixture(scope="module")
def deployments(run):
    return mt.deployments(run, mt.STACKS)


def promtool(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([mt.need_tool("promtool"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def place_prometheus(dep: mt.Deployment, root):
    """The Prometheus workload's files under root, its config's /etc/octollm paths pointing there."""
    w = dep.prometheus()
    etc = mt.place_files(w, root, rewrite=lambda path, text: text.replace(mt.CONFIG_MOUNT, str(root / "etc/octollm")))
    return w, root / mt.config_flag(w, "--config.file").lstrip("/"), etc


def test_dev_deploys_no_monitoring(deployments):
    """`dev` is one Ollama container: no generated monitoring file to check (the other stacks are)."""
    dev = deployments["dev"]
    assert not dev.named("prometheus") and not any(w.files for w in dev.workloads)
    assert dev.monitoring is None


@pytest.mark.parametrize("stack", STACKS)
def test_promtool_check_config(deployments, stack, tmp_path):
    dep = deployments[stack]
    _, config, _ = place_prometheus(dep, tmp_path)
    rule_files = dep.prometheus_config()["rule_files"]
    assert rule_files, "no rule files: the alerts would not be loaded"
    out = promtool("check", "config", str(config))
    assert out.returncode == 0, out.stdout + out.stderr
    # every rule file it names was found and checked (promtool reports each)
    for path in rule_files:
        assert f"Checking {tmp_path}{path}" in out.stdout and "SUCCESS" in out.stdout, out.stdout


@pytest.mark.parametrize("stack", STACKS)
def test_promtool_check_rules(deployments, stack, tmp_path):
    dep = deployments[stack]
    _, _, etc = place_prometheus(dep, tmp_path)
    for path in dep.prometheus_config()["rule_files"]:
        out = promtool("check", "rules", str(tmp_path / path.lstrip("/")))
        assert out.returncode == 0, out.stdout + out.stderr
        n = len(mt.alert_rule_list(dep))
        assert f"SUCCESS: {n} rules found" in out.stdout, out.stdout


def run_cases(dep: mt.Deployment, cases: list[mt.AlertCase], root) -> dict[str, str]:
    """promtool test rules, one test file per case; returns case name -> promtool's output for failures."""
    w, _, _ = place_prometheus(dep, root)
    prom = dep.prometheus_config()
    (rule_path,) = prom["rule_files"]
    rules = root / rule_path.lstrip("/")
    failures = {}
    for i, case in enumerate(cases):
        test = root / f"case-{i}.yml"
        test.write_text(yaml.safe_dump(mt.promtool_test_doc(case, str(rules), prom["global"]["evaluation_interval"]),
                                       sort_keys=False))
        out = promtool("test", "rules", str(test))
        if out.returncode != 0:
            failures[case.name] = (out.stdout + out.stderr)[-3000:]
    return failures


# The Traefik in front of Ollama keeps its default buckets (0.1, 0.3, 1.2, 5 s), so the P95 it reports tops out
# at 5 s and an alert at the configured threshold cannot fire from it. load_balancer.py must give Traefik
# `--metrics.prometheus.buckets` with the threshold among them (e.g. 0.5,1,2.5,5,10,15,20,30,60).
TRAEFIK_BUCKETS = "Traefik's default histogram buckets end at 5 s: the load balancer's P95 cannot reach the threshold"


def _split(cases):
    known = [c for c in cases if c.source == "traefik"]
    return [c for c in cases if c.source != "traefik"], known


@pytest.mark.parametrize("stack", STACKS)
def test_every_alert_fires_at_its_threshold_and_stays_silent_below(deployments, stack, tmp_path):
    dep = deployments[stack]
    cases, _ = _split(mt.alert_cases(dep))
    rules = mt.alert_rule_list(dep)
    # every rule of the generated file is exercised by a case that makes it fire
    fired = {(c.alert, c.source) for c in cases if c.fires}
    for r in rules:
        key = (r["alert"], r.get("labels", {}).get("source"))
        if key[1] == "traefik":
            continue  # test_traefik_latency_alert_can_fire
        assert key in fired, f"{stack}: no unit test makes {key} fire ({r['expr']})"
    # every alert carries the labels notifications route on, and a summary naming the instance
    for r in rules:
        assert mt.ALERT_LABELS[r["alert"]].items() <= r.get("labels", {}).items(), r
        assert "{{ $labels.instance }}" in r.get("annotations", {}).get("summary", ""), r
    failures = run_cases(dep, cases, tmp_path)
    assert not failures, "\n\n".join(f"--- {k}\n{v}" for k, v in failures.items())


@pytest.mark.parametrize("stack", STACKS)
def test_latency_alert_is_the_p95_over_a_window(deployments, stack):
    """The issue's case is among the generated ones: one probe in three at 25 s for 15 minutes fires, a steady
    fast series and a single slow probe do not; the threshold and the wording come from config."""
    dep = deployments[stack]
    names = {c.name.split(" (")[0]: c for c in mt.alert_cases(dep) if c.alert == "InferenceLatencyHigh"}
    assert names["one probe in three slow for 15 minutes"].fires
    assert not names["steady fast probes for two hours"].fires
    assert not names["one slow probe among fast ones"].fires
    limit = f"{dep.monitoring.inference_latency_alert_s:g}"
    for r in mt.alert_rule_list(dep):
        if r["alert"] == "InferenceLatencyHigh":
            assert r["expr"].endswith(f">= {limit}") and "0.95" in r["expr"], r["expr"]
            assert f"{limit}s" in r["annotations"]["summary"]


def generation_probe_cases(dep: mt.Deployment, target: str) -> dict[str, mt.AlertCase]:
    """The generated InferenceLatencyHigh cases of one generation-probe target, by name without the target."""
    return {c.name.removesuffix(f" ({target})"): c for c in mt.alert_cases(dep)
            if c.alert == "InferenceLatencyHigh" and c.source == "probe" and c.name.endswith(f" ({target})")}


@pytest.mark.parametrize("stack", STACKS)
def test_every_generation_probe_target_has_the_issue_cases(deployments, stack):
    """Each probed node's own series (Ollama's and llama.cpp's alike) gets the issue's cases, and the alert's
    text names the node and the instance it fires for."""
    dep = deployments[stack]
    box = dep.one(mt.BLACKBOX)
    gen = mt.generation_modules(yaml.safe_load(box.file(mt.config_flag(box, "--config.file"))))
    targets = [(t, lab) for _, t, lab, module in mt.probe_targets(dep.prometheus_config()) if module in gen]
    assert targets, f"{stack}: no generation probe"
    for target, lab in targets:
        cases = generation_probe_cases(dep, target)
        slow, steady = cases["one probe in three slow for 15 minutes"], cases["steady fast probes for two hours"]
        assert slow.fires and not steady.fires
        (alert,) = slow.checks[-1][1]
        assert alert["exp_labels"]["node"] == lab["node"] and alert["exp_labels"]["instance"] == target
        assert f"{lab['node']} ({target})" in alert["exp_annotations"]["summary"], alert


def test_llamacpp_probe_feeds_the_latency_alert(deployments, tmp_path):
    """homelab's llama.cpp server exports no latency histogram: its /completion probe's P95 is alerted on, by
    the same rule as the Ollama probes' (one slow probe in three fires, steady fast ones stay silent)."""
    dep = deployments["homelab"]
    llama = [(t, lab) for _, t, lab, _ in mt.probe_targets(dep.prometheus_config())
             if any(w.image_repo == "ggml-org/llama.cpp" for w in dep.resolve(t))]
    assert [lab["node"] for _, lab in llama] == ["llm-server"], llama
    ((target, _),) = llama
    assert target.endswith("/completion")
    cases = generation_probe_cases(dep, target)
    assert {"one probe in three slow for 15 minutes", "steady fast probes for two hours"} <= set(cases), sorted(cases)
    failures = run_cases(dep, list(cases.values()), tmp_path)
    assert not failures, "\n\n".join(f"--- {k}\n{v}" for k, v in failures.items())


@pytest.mark.parametrize("stack", STACKS)
def test_thresholds_follow_config(run, stack, tmp_path):
    """Other thresholds in config give other alerts, and the generated unit tests follow them."""
    from harness import stack_config

    cfg = stack_config(stack)
    if "monitoring" not in cfg:
        pytest.skip(f"{stack} deploys no monitoring")
    cfg["monitoring"] = {**cfg["monitoring"], "inferenceLatencyAlertS": 7.5, "gpuTemperatureAlertC": 72}
    r = run(stack, config=cfg)
    assert r.error is None, r.error
    dep = mt.deployment(r, stack, cfg)
    assert dep.monitoring.inference_latency_alert_s == 7.5 and dep.monitoring.gpu_temperature_alert_c == 72
    exprs = [x["expr"] for x in mt.alert_rule_list(dep)]
    assert any(e.endswith(">= 7.5") for e in exprs)
    if any("TEMP" in e or "temperature" in e for e in exprs):
        assert any(e.endswith(">= 72") for e in exprs)
    cases, _ = _split(mt.alert_cases(dep))
    failures = run_cases(dep, cases, tmp_path)
    assert not failures, "\n\n".join(f"--- {k}\n{v}" for k, v in failures.items())


def test_traefik_latency_alert_can_fire(deployments, tmp_path):
    dep = deployments["homelab"]
    _, known = _split(mt.alert_cases(dep))
    assert known, "homelab has a load balancer in front of Ollama: its latency alert must be tested"
    failures = run_cases(dep, known, tmp_path)
    assert not failures, "\n\n".join(f"--- {k}\n{v}" for k, v in failures.items())


def test_the_old_alert_missed_the_issue_case(tmp_path):
    """The expression this replaced (`probe_duration_seconds > 10 for 5m`) stays silent on the issue's case."""
    old = {"groups": [{"name": "old", "rules": [{
        "alert": "InferenceLatencyHigh", "expr": 'probe_duration_seconds{job="inference-latency"} > 10',
        "for": "5m", "labels": {"severity": "warning"}}]}]}
    (tmp_path / "old.yml").write_text(yaml.safe_dump(old))
    pattern = [2.0] * 60 + [25.0 if i % 3 == 2 else 2.0 for i in range(15)] + [2.0]
    case = mt.AlertCase("old", "InferenceLatencyHigh", None, 60,
                        {'probe_duration_seconds{job="inference-latency", instance="x"}': pattern},
                        [(t, []) for t in range(3600, 4560, 60)], False)
    (tmp_path / "t.yml").write_text(yaml.safe_dump(mt.promtool_test_doc(case, str(tmp_path / "old.yml"), "15s")))
    out = promtool("test", "rules", str(tmp_path / "t.yml"))
    assert out.returncode == 0, out.stdout + out.stderr
