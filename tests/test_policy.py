"""Policy pack checks: each fails on a crafted violation; every real stack passes every mandatory one."""

import py_compile

import pytest

from harness import ROOT
from policy.checks import CHECKS, SECRET_SIG, SECRET_VALUE, Opts, run_check

BY_NAME = {c.name: c for c in CHECKS}
OK_CONTAINER = {
    "name": "octollm-x", "image": "repo/x:1.0@id", "memory": 512, "restart": "unless-stopped",
    "healthcheck": {"tests": ["CMD", "true"]}, "logOpts": {"max-size": "10m"},
    "ports": [{"internal": 11434, "external": 11434, "ip": "10.0.0.5"}], "envs": ["A=b"],
}
OK_POD = {"spec": {"template": {"spec": {"containers": [{
    "name": "x", "image": "repo/x:1.0", "env": [],
    "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    "securityContext": {"runAsNonRoot": True}, "readinessProbe": {}, "livenessProbe": {}}]}}}}
C, D = "docker:index/container:Container", "kubernetes:apps/v1:Deployment"


def pod(**container):
    import copy
    p = copy.deepcopy(OK_POD)
    p["spec"]["template"]["spec"]["containers"][0].update(container)
    return p


VIOLATIONS = {
    "gpu-device-requests": (C, {**OK_CONTAINER, "runtime": "nvidia"}, Opts(delete_before_replace=True), ""),
    "images-pinned": (C, {**OK_CONTAINER, "image": "ollama/ollama:latest"}, Opts(delete_before_replace=True), ""),
    "memory-limits": (D, pod(resources={"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}), Opts(), ""),
    "restart-policy": (C, {**OK_CONTAINER, "restart": "no"}, Opts(delete_before_replace=True), ""),
    "health-checks": (C, {k: v for k, v in OK_CONTAINER.items() if k != "healthcheck"},
                      Opts(delete_before_replace=True), ""),
    "no-privileged": (C, {**OK_CONTAINER, "privileged": True}, Opts(delete_before_replace=True), ""),
    "docker-socket-allowlist": (C, {**OK_CONTAINER, "mounts": [{"source": "/var/run/docker.sock",
                                                                "target": "/var/run/docker.sock"}]},
                                Opts(delete_before_replace=True), ""),
    "secret-env-values": (C, {**OK_CONTAINER, "envs": ["POSTGRES_PASSWORD=hunter2"]}, Opts(delete_before_replace=True), ""),
    "llm-ports-bound": (C, {**OK_CONTAINER, "ports": [{"internal": 11434, "external": 11434, "ip": "0.0.0.0"}]},
                        Opts(delete_before_replace=True), ""),
    "stateful-protected": ("command:remote:Command", {"create": "mkdir -p /data"}, Opts(), "data-data-dirs"),
    "k8s-no-host-namespaces": (D, {"spec": {"template": {"spec": {**OK_POD["spec"]["template"]["spec"],
                                                                 "hostNetwork": True}}}}, Opts(), ""),
    "k8s-resources": (D, pod(resources={"limits": {"cpu": "1", "memory": "1Gi"}}), Opts(), ""),
    "k8s-non-root": (D, pod(securityContext={}), Opts(), ""),
    "k8s-probes": (D, {"spec": {"template": {"spec": {"containers": [
        {k: v for k, v in OK_POD["spec"]["template"]["spec"]["containers"][0].items() if k != "livenessProbe"}]}}}},
        Opts(), ""),
    "log-rotation": (C, {**OK_CONTAINER, "logOpts": {}}, Opts(delete_before_replace=True), ""),
    "fixed-names-replace-first": (C, OK_CONTAINER, Opts(delete_before_replace=False), ""),
}


def test_at_least_twelve_policies_with_stable_unique_ids():
    assert len(CHECKS) >= 12
    assert len({c.id for c in CHECKS}) == len(CHECKS) == len({c.name for c in CHECKS})
    assert all(c.enforcement in ("mandatory", "advisory", "remediate") for c in CHECKS)
    assert set(VIOLATIONS) == set(BY_NAME)


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_each_policy_fails_on_a_crafted_violation(name):
    t, props, opts, rname = VIOLATIONS[name]
    assert run_check(BY_NAME[name], t, props, opts, rname), name
    # ...and the others stay quiet on it where they do not apply to the same fault
    ok = OK_CONTAINER if t == C else OK_POD
    fixed_opts = Opts(protect=True, delete_before_replace=True)
    assert run_check(BY_NAME[name], t, ok if t in (C, D) else props, fixed_opts, rname) == [], name


CJ = "kubernetes:batch/v1:CronJob"


def cronjob(**init):
    """A CronJob whose pod has OK_POD's container and one init container (OK_POD's, changed by `init`)."""
    import copy
    c = copy.deepcopy(OK_POD["spec"]["template"]["spec"]["containers"][0])
    ic = {**{k: v for k, v in c.items() if not k.endswith("Probe")}, "name": "step", **init}
    return {"spec": {"schedule": "30 3 * * *", "jobTemplate": {"spec": {"template": {"spec": {
        "initContainers": [ic], "containers": [c]}}}}}}


@pytest.mark.parametrize("name, init", [
    ("k8s-non-root", {"securityContext": {}}),
    ("k8s-resources", {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}),
    ("memory-limits", {"resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}}),
    ("images-pinned", {"image": "curlimages/curl:latest"}),
    ("no-privileged", {"securityContext": {"runAsNonRoot": True, "privileged": True}}),
    ("secret-env-values", {"env": [{"name": "PGPASSWORD", "value": "hunter2"}]}),
])
def test_a_cronjobs_init_containers_are_held_to_the_pod_checks(name, init):
    assert run_check(BY_NAME[name], CJ, cronjob(**init), Opts(protect=True)), name
    assert run_check(BY_NAME[name], CJ, cronjob(), Opts(protect=True)) == [], name
    # A run-to-completion pod has no probes to ask for.
    assert run_check(BY_NAME["k8s-probes"], CJ, cronjob(), Opts()) == []


def test_secret_env_passes_when_the_value_is_secret():
    props = {**OK_CONTAINER, "envs": ["A=b", {SECRET_SIG: SECRET_VALUE, "value": "POSTGRES_PASSWORD=x"}]}
    assert run_check(BY_NAME["secret-env-values"], C, props, Opts()) == []


def test_allowlists_come_from_policy_config():
    props = {**OK_CONTAINER, "name": "watchtower",
             "mounts": [{"source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}]}
    check = BY_NAME["docker-socket-allowlist"]
    assert run_check(check, C, props, Opts())
    assert run_check(check, C, props, Opts(), config={"dockerSocketAllowed": ["watchtower"]}) == []


@pytest.mark.parametrize("stack", ["unraid", "homelab", "gke", "dev"])
def test_every_real_stack_passes_every_mandatory_policy(run, stack):
    r = run(stack)
    assert r.error is None, r.error
    failures = []
    for reg in r.registrations:
        opts = Opts(protect=reg.protect, delete_before_replace=reg.delete_before_replace,
                    retain_on_delete=reg.retain_on_delete)
        for c in CHECKS:
            if c.enforcement == "advisory":
                continue
            for msg in run_check(c, reg.type, reg.raw, opts, reg.name):
                failures.append(f"{c.id} {reg.name}: {msg}")
    assert not failures, "\n".join(failures)


def test_the_pack_program_compiles_and_names_every_check():
    py_compile.compile(str(ROOT / "policy" / "__main__.py"), doraise=True)
    text = (ROOT / "policy" / "__main__.py").read_text()
    assert "for c in CHECKS" in text
    import pulumi_policy  # noqa: F401  (the pack's dependency is installed and importable)


def test_the_pack_module_builds_its_policies_with_the_pinned_pulumi_policy(monkeypatch):
    """policy/__main__.py as the analyzer runs it, against the installed pulumi-policy: every check
    becomes a policy (the remediating one also reports), none with an API the library lacks."""
    import runpy
    import sys

    import pulumi_policy

    from harness import ROOT

    built = {}
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kw: built.update(kw))
    monkeypatch.syspath_prepend(str(ROOT / "policy"))
    monkeypatch.delitem(sys.modules, "checks", raising=False)
    runpy.run_path(str(ROOT / "policy" / "__main__.py"), run_name="__main__")
    from checks import CHECKS

    names = [p.name for p in built["policies"]]
    assert len(names) == len(CHECKS) + sum(c.enforcement == "remediate" for c in CHECKS)
    remediating = [p for p in built["policies"] if p.enforcement_level == pulumi_policy.EnforcementLevel.REMEDIATE]
    assert remediating and all(p.has_remediation() for p in remediating)


def test_a_first_preview_with_unknown_values_still_runs_every_check(monkeypatch):
    """On a first preview a container's image (the pulled image's ID) is unknown; the pack must still
    check the rest rather than skip the resource, and still refuse an unpinned RemoteImage."""
    import runpy
    import sys

    import pulumi_policy
    from pulumi_policy import proxy

    from harness import ROOT

    built = {}
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kw: built.update(kw))
    monkeypatch.syspath_prepend(str(ROOT / "policy"))
    monkeypatch.delitem(sys.modules, "checks", raising=False)
    runpy.run_path(str(ROOT / "policy" / "__main__.py"), run_name="__main__")
    by_name = {p.name: p for p in built["policies"]}

    class Args:
        def __init__(self, t, props):
            self.resource_type, self.name = t, "x"
            self.props = proxy.unknown_checking_proxy(props)
            self.opts = type("O", (), {"protect": False, "delete_before_replace": True})()

        def get_config(self):
            return {}

    def violations(policy, t, props):
        found = []
        by_name[policy].validate(Args(t, props), lambda m, urn=None: found.append(m))
        return found

    container = {"image": proxy.UNKNOWN_STRING_VALUE, "name": "c", "restart": "no", "memory": 0}
    assert violations("oct002-images-pinned", "docker:index/container:Container", container) == []
    assert violations("oct004-restart-policy", "docker:index/container:Container", container)
    assert violations("oct002-images-pinned", "docker:index/remoteImage:RemoteImage", {"name": "ollama/ollama:latest"})


def test_the_advisory_secret_env_report_needs_no_secret_markers():
    """pulumi-policy strips secret markers before `validate`: a report asking whether a value is secret
    flagged every Secret under the real engine. The report checks structure only."""
    from policy.checks import secret_env_report

    assert secret_env_report("kubernetes:core/v1:Secret", {"data": {"PW": "cGFzcw=="}}, None, {}) == []
    assert secret_env_report(C, {**OK_CONTAINER, "envs": ["POSTGRES_PASSWORD=x"]}, None, {}) == []
    written = pod(env=[{"name": "POSTGRES_PASSWORD", "value": "x"}])
    assert secret_env_report(D, written, None, {}) == [
        "env POSTGRES_PASSWORD of x is written into the pod spec: use secretKeyRef"]
    referenced = pod(env=[{"name": "POSTGRES_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])
    assert secret_env_report(D, referenced, None, {}) == []
