"""The gke stack and the policy pack under the real engine, against no reachable cluster.

From a scratch copy of the project (tests/engine_lane/lane.py), with the real Pulumi.gke.yaml and its
secrets set with `pulumi config set --secret` (the `kubeconfig` secret is a kubeconfig whose server is
a port on 127.0.0.1 that nothing listens on; `openaiApiKey` a test value, as in test_program_gke.py):

- `pulumi preview --json --policy-pack policy` succeeds with the real kubernetes provider, which finds
  the cluster unreachable and previews every object offline (tests/engine_lane/gke.py says how);
- it steps through exactly the resources the mock engine's run of gke registers (URNs, so type, name
  and parent chain), each a create;
- the pack ran on every one of them: each resource's analyze and remediate summaries together name
  every policy of the pack, none skipped for an unknown value, no mandatory violation; and no
  violation at all (see test_no_policy_reports_anything for the one known exception);
- a crafted Deployment with hostNetwork, in a one-resource program previewed with the same pack, is
  refused: the preview exits non-zero naming oct011-k8s-no-host-namespaces and the resource, while the
  same program without hostNetwork passes.

Without a complete engine in build/engine/bin (or OCTOLLM_ENGINE_BIN) these tests skip with the reason;
with OCTOLLM_REQUIRE_REAL_HOST=1 they fail. The wall time of each preview is printed at the end.
"""

from __future__ import annotations

import re

import pytest

from engine_lane import gke as G
from engine_lane import lane as L
from engine_lane import standin
from test_real_host import unavailable

STACK = "gke"
SECRETS = {"openaiApiKey": "sk-openai-gke"}  # the secret test_program_gke.py gives the mock run
CRAFTED_POLICY = "oct011-k8s-no-host-namespaces"  # mandatory: no hostNetwork/hostPID/hostIPC

TIMINGS: list[tuple[str, float]] = []


class _Report:
    def pytest_terminal_summary(self, terminalreporter):
        if TIMINGS:
            terminalreporter.write_sep("-", "gke lane: wall times (s)")
            for step, seconds in TIMINGS:
                terminalreporter.write_line(f"  {step:64} {seconds:6.1f}")


@pytest.fixture(scope="module")
def gke_report(request):
    plugin = _Report()
    if not request.config.pluginmanager.is_registered(plugin):
        request.config.pluginmanager.register(plugin, "gke-lane-report")
    yield


@pytest.fixture(scope="module")
def engine(gke_report):
    problems = G.engine_problems()
    if problems:
        unavailable("the Pulumi engine cannot preview the gke stack: " + "; ".join(problems))
    return L.ENGINE_BIN


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """A port nothing listens on (below the ephemeral range, so no client connection takes it), and a
    kubeconfig that points there; also exported as KUBECONFIG, so no ambient context is ever read."""
    port = standin.stable_ports(1)[0]
    kubeconfig = G.offline_kubeconfig(port)
    path = tmp_path_factory.mktemp("offline-kubeconfig") / "config"
    path.write_text(kubeconfig)
    path.chmod(0o600)
    return {"port": port, "kubeconfig": kubeconfig, "env": {"KUBECONFIG": str(path)}}


def fail_with(step: L.Step, what: str) -> None:
    events = G.Preview.parse(step.stdout)
    if events.steps or events.diagnostics or events.violations:  # an event stream: say what it reported
        key = [d["message"].strip() for d in events.diagnostics if d.get("severity") == "error"]
        key += [f"[{v.get('enforcementLevel')}] {v.get('policyName')} {L.urn_name(v.get('resourceUrn', ''))}: "
                f"{v.get('message', '').strip()}" for v in events.violations]
        tail = step.stderr[-2500:]
    else:
        key = [ln.strip() for ln in step.output.splitlines() if re.search(r"error|mandatory|Error", ln) and len(ln) < 400]
        tail = step.output[-3000:]
    pytest.fail(f"{what} (exit {step.returncode}, {step.seconds:.1f}s):\n--- key lines ---\n"
                + "\n".join(dict.fromkeys(key))[:4000] + f"\n--- stderr/output (tail) ---\n{tail}")


def set_secrets(project: L.Project, stack: str, secrets: dict[str, str], cwd=None) -> None:
    for key, value in secrets.items():
        # The value on stdin: a kubeconfig has several lines, and a value never goes on a command line.
        r = G.pulumi(project, "config", "set", "--secret", key, "--stack", stack, input=value, cwd=cwd)
        assert r.returncode == 0, r.output


@pytest.fixture(scope="module")
def gke_project(engine, offline, tmp_path_factory):
    project = L.Project.copy(tmp_path_factory.mktemp("lane-gke"))
    r = G.pulumi(project, "stack", "init", STACK)
    assert r.returncode == 0, r.output
    set_secrets(project, STACK, {**SECRETS, "kubeconfig": offline["kubeconfig"]})
    return project


@pytest.fixture(scope="module")
def gke_preview(gke_project, offline):
    port = offline["port"]
    assert G.refused(port), f"127.0.0.1:{port} accepts connections: the preview would not be offline"
    r = G.pulumi(gke_project, "preview", "--json", "--policy-pack", "policy", "--parallel", L.PARALLEL,
                 "--stack", STACK, env=offline["env"], streaming=True)
    TIMINGS.append(("gke: preview --json --policy-pack policy (no cluster)"
                    + ("" if r.returncode == 0 else f" FAILED rc={r.returncode}"), r.seconds))
    assert G.refused(port), f"something started listening on 127.0.0.1:{port} during the preview"
    return r, G.Preview.parse(r.stdout)


@pytest.fixture(scope="module")
def mock_gke(run, offline):
    """The mock engine's run of the same stack file with the same secrets."""
    r = run(STACK, secrets={**SECRETS, "kubeconfig": offline["kubeconfig"]})
    assert r.error is None, r.error
    return r


# ------------------------------------------------------------------ the gke stack


def test_the_offline_preview_of_gke_succeeds(gke_preview):
    step, preview = gke_preview
    if step.returncode != 0:
        fail_with(step, "`pulumi preview --policy-pack policy` of gke, with no cluster, failed")
    assert preview.summary is not None, "no summary event: the preview did not finish\n" + step.output[-3000:]
    errors = [d["message"] for d in preview.diagnostics if d.get("severity") == "error"]
    assert not errors, errors
    ops = {op for op in preview.steps.values()}
    assert ops == {"create"}, f"a first preview should only create: {sorted(ops)}"
    # The provider is the one built from pulumi-kubernetes' source, found on PATH (never downloaded).
    used = f"using pulumi-resource-kubernetes from $PATH at {L.ENGINE_BIN / 'pulumi-resource-kubernetes'}"
    assert any(used in d["message"] for d in preview.diagnostics), [d["message"] for d in preview.diagnostics]


def test_it_previews_every_object_the_mock_engine_registers(gke_preview, mock_gke):
    step, preview = gke_preview
    if step.returncode != 0:
        fail_with(step, "the gke preview failed")
    real = preview.resources()
    mock = {G.engine_urn(r.urn) for r in mock_gke.registrations}
    assert len(mock) == len(mock_gke.registrations), "the mock run registered a URN twice"
    assert real == mock, (f"real preview and mock engine disagree\n  only in the real preview: "
                          f"{sorted(real - mock)}\n  only in the mock run: {sorted(mock - real)}")
    by_type_name = {(G.urn_type(u), L.urn_name(u)) for u in real}
    assert by_type_name == {(r.type, r.name) for r in mock_gke.registrations}
    k8s = [u for u in real if G.urn_type(u).startswith("kubernetes:")]
    assert len(k8s) > 100, len(k8s)


def test_every_policy_ran_on_every_object_and_none_mandatory_is_violated(gke_preview):
    step, preview = gke_preview
    if step.returncode != 0:
        fail_with(step, "the gke preview failed")
    name, policies = G.pack_policies()
    assert preview.packs == {name}, f"policy summaries came from {preview.packs}, not the pack {name!r}"
    problems: dict[str, list[str]] = {}  # what is wrong -> the resources it is wrong on
    for urn in sorted(preview.resources()):
        analyzed, remediated = preview.analyzed.get(urn), preview.remediated.get(urn)
        if analyzed is None or remediated is None:
            problems.setdefault(f"no {'analyze' if analyzed is None else 'remediate'} summary", []).append(urn)
            continue
        reported = set(analyzed["passed"] + analyzed["failed"] + remediated["passed"] + remediated["failed"])
        if reported != set(policies):
            problems.setdefault(f"policies not reported {sorted(set(policies) - reported)}, unknown to the pack "
                                f"{sorted(reported - set(policies))}", []).append(L.urn_name(urn))
        if remediated["failed"]:
            problems.setdefault(f"remediated by {remediated['failed']}", []).append(L.urn_name(urn))
    # pulumi-policy reports a policy that read a value unknown during the preview as an advisory
    # "can't run policy" event: a check that did not run is not a pass.
    skipped = sorted({(v["policyName"], L.urn_name(v.get("resourceUrn", ""))) for v in preview.violations
                      if "can't run policy" in v.get("message", "")})
    mandatory = sorted({(v["policyName"], L.urn_name(v.get("resourceUrn", ""))) for v in preview.violations
                        if v.get("enforcementLevel") == "mandatory"})
    assert not problems and not skipped and not mandatory, (
        "\n".join(f"{what}: on {len(names)} resources: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
                  for what, names in problems.items())
        + f"\nskipped: {skipped}\nmandatory violations: {mandatory}")


def test_no_policy_reports_anything(gke_preview):
    """No violation of any level. pulumi-policy 1.21 hands `validate` the properties with every secret
    unwrapped (only a remediation sees the markers), so a report that asked "is this secret?" flagged
    every Kubernetes Secret here; the pack's OCT008 report now checks structure only. The Secrets'
    `data` is still secret in the engine's own steps."""
    step, preview = gke_preview
    if step.returncode != 0:
        fail_with(step, "the gke preview failed")
    reported = [f"{v.get('policyName')} [{v.get('enforcementLevel')}] {L.urn_name(v.get('resourceUrn', ''))}: "
                f"{v.get('message', '').strip()}" for v in preview.violations]
    assert not reported, "\n".join(reported)
    secrets = [urn for urn in preview.inputs if G.urn_type(urn) == "kubernetes:core/v1:Secret"]
    assert secrets and all(G.is_secret(preview.inputs[u].get("data")) for u in secrets)


def test_the_provider_previewed_without_a_cluster(gke_project, offline):
    """The provider's log (-v=3) shows it marked the cluster unreachable, and the preview still succeeds."""
    r = G.pulumi(gke_project, "preview", "--policy-pack", "policy", "--parallel", L.PARALLEL, "--stack", STACK,
                 "--logtostderr", "--logflow", "-v=3", env=offline["env"])
    TIMINGS.append(("gke: preview --policy-pack policy -v=3 --logflow (provider log)", r.seconds))
    if r.returncode != 0:
        fail_with(r, "the gke preview with provider logging failed")
    assert G.UNREACHABLE_LOG in r.stderr, ("pulumi-kubernetes did not log that the cluster is unreachable: "
                                           "did it reach a cluster?\n" + r.stderr[-3000:])
    assert G.refused(offline["port"])


# ------------------------------------------------------------------ a crafted violation


@pytest.fixture(scope="module")
def crafted(gke_project, offline):
    """A one-Deployment program next to the scratch copy (same PULUMI_HOME, backend and pack)."""
    d = G.write_crafted_program(gke_project.dir.parent / "crafted")
    r = G.pulumi(gke_project, "stack", "init", "crafted", cwd=d)
    assert r.returncode == 0, r.output
    set_secrets(gke_project, "crafted", {"kubeconfig": offline["kubeconfig"]}, cwd=d)
    return d


def crafted_preview(project: L.Project, d, offline, host_network: bool, *extra: str, streaming=False) -> L.Step:
    r = G.pulumi(project, "config", "set", "hostNetwork", str(host_network).lower(), "--stack", "crafted", cwd=d)
    assert r.returncode == 0, r.output
    return G.pulumi(project, "preview", "--policy-pack", str(project.dir / "policy"), "--stack", "crafted",
                    *extra, env=offline["env"], cwd=d, streaming=streaming)


def test_the_crafted_program_passes_without_the_violation(gke_project, crafted, offline):
    r = crafted_preview(gke_project, crafted, offline, False, "--json", streaming=True)
    if r.returncode != 0:
        fail_with(r, "the crafted program without hostNetwork should pass every policy")
    p = G.Preview.parse(r.stdout)
    urn = next(u for u in p.resources() if L.urn_name(u) == G.CRAFTED_NAME)
    _, policies = G.pack_policies()
    assert not p.violations, p.violations
    assert set(p.analyzed[urn]["passed"]) | set(p.remediated[urn]["passed"]) == set(policies)


def test_a_crafted_violation_is_refused_by_the_engine(gke_project, crafted, offline):
    r = crafted_preview(gke_project, crafted, offline, True)
    TIMINGS.append(("crafted: preview --policy-pack policy (hostNetwork: true)", r.seconds))
    assert r.returncode != 0, "the engine accepted a Deployment with hostNetwork\n" + r.output[-3000:]
    # The CLI's policy section names the policy, its level, and the resource by type and name.
    named = re.findall(r"\[(\w+)\]\s+(\S+)\s+\(([^:()]+:[^:()]+:[^:()]+): ([^()]+)\)", r.output)
    assert named == [("mandatory", CRAFTED_POLICY, "kubernetes:apps/v1:Deployment", G.CRAFTED_NAME)], (
        f"{named}\n{r.output[-3000:]}")
    assert "error: preview failed" in r.output
    # The same refusal in the event stream: one mandatory violation, of that policy, on that resource.
    j = crafted_preview(gke_project, crafted, offline, True, "--json", streaming=True)
    assert j.returncode != 0
    p = G.Preview.parse(j.stdout)
    got = [(v["policyName"], v["enforcementLevel"], L.urn_name(v.get("resourceUrn", ""))) for v in p.violations]
    assert got == [(CRAFTED_POLICY, "mandatory", G.CRAFTED_NAME)], got
    urn = next(u for u in p.analyzed if L.urn_name(u) == G.CRAFTED_NAME)
    assert p.analyzed[urn]["failed"] == [CRAFTED_POLICY]
    assert "hostNetwork is set" in p.violations[0]["message"]
