"""The GitHub workflows pass actionlint (with shellcheck on their run: blocks) and do what the review flow needs."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def actionlint(*files) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}  # actionlint runs shellcheck from PATH
    return subprocess.run([str(BIN / "actionlint"), *map(str, files)], capture_output=True, text=True, env=env)


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint(workflow):
    out = actionlint(workflow)
    assert out.returncode == 0, out.stdout + out.stderr


def test_actionlint_can_fail(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text("on: push\njobs:\n  x:\n    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.event.pull_request.title }} $undefined_var\n")
    assert actionlint(bad).returncode != 0


def steps(workflow: str) -> str:
    return (ROOT / ".github" / "workflows" / workflow).read_text()


def test_pull_requests_preview_every_stack_with_the_policy_pack_or_post_the_offline_plan():
    doc = yaml.safe_load(steps("preview.yml"))
    job = doc["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == ["unraid", "homelab", "gke"]
    uses = {s.get("uses", ""): s for s in job["steps"]}
    pulumi = uses["pulumi/actions@v7"]["with"]
    assert pulumi["command"] == "preview" and pulumi["policyPacks"] == "policy" and pulumi["comment-on-pr"]
    assert "secrets.PULUMI_BACKEND_URL" in pulumi["cloud-url"]
    assert "tooling.plan -s \"$STACK\" --diff" in steps("preview.yml")


def test_merge_saves_a_plan_waits_for_approval_backs_up_then_applies_the_plan():
    text = steps("deploy.yml")
    doc = yaml.safe_load(text)
    assert doc["jobs"]["apply"]["environment"] == "production"
    assert doc["jobs"]["apply"]["needs"] == "plan"
    assert "--save-plan" in text
    assert text.index("pulumi stack export") < text.index("pulumi up --stack \"$STACK\" --plan")


def test_drift_check_expects_no_changes():
    text = steps("drift.yml")
    assert "pulumi preview --stack \"$STACK\" --refresh --expect-no-changes" in text
    assert "schedule" in yaml.safe_load(text)[True]  # `on:` parses as True in YAML 1.1


def test_previews_and_plans_use_the_read_only_key_and_only_the_approved_apply_holds_the_write_key():
    preview = steps("preview.yml")
    assert "secrets.SSH_PREVIEW_KEY" in preview and "SSH_PRIVATE_KEY" not in preview
    assert "tooling.doctor -s \"$STACK\" --api-only" in preview
    deploy = yaml.safe_load(steps("deploy.yml"))
    plan, apply = yaml.dump(deploy["jobs"]["plan"]), yaml.dump(deploy["jobs"]["apply"])
    assert "secrets.SSH_PREVIEW_KEY" in plan and "SSH_PRIVATE_KEY" not in plan
    assert "secrets.SSH_PRIVATE_KEY" in apply and deploy["jobs"]["apply"]["environment"] == "production"


# ---- SSH keys, agents and cluster credentials ------------------------------------------------------------

CREDENTIAL = ROOT / "tools" / "ci" / "ssh-credential.sh"


def jobs() -> dict[str, dict]:
    """Every job of every workflow, as "<workflow>/<job>"."""
    return {f"{w.stem}/{name}": job for w in WORKFLOWS
            for name, job in (yaml.safe_load(w.read_text())["jobs"] or {}).items()}


def key_steps(job: dict) -> list[dict]:
    return [s for s in job["steps"] if "ssh-credential.sh load" in s.get("run", "")]


def test_drift_reads_with_the_preview_key_and_holds_no_write_key():
    text = steps("drift.yml")
    assert "SSH_PRIVATE_KEY" not in text
    [step] = key_steps(yaml.safe_load(text)["jobs"]["drift"])
    assert step["env"]["OCTOLLM_SSH_KEY"] == "${{ secrets.SSH_PREVIEW_KEY }}"


def test_the_write_key_is_only_in_jobs_behind_the_production_environment():
    holders = {name for name, job in jobs().items() if "SSH_PRIVATE_KEY" in yaml.dump(job)}
    assert holders == {"deploy/apply"}
    assert all(jobs()[h].get("environment") == "production" for h in holders)
    [step] = key_steps(jobs()["deploy/apply"])
    assert step["env"]["OCTOLLM_SSH_KEY"] == "${{ secrets.SSH_PRIVATE_KEY }}"
    for name in ("preview/preview", "deploy/plan"):
        [step] = key_steps(jobs()[name])
        assert step["env"]["OCTOLLM_SSH_KEY"] == "${{ secrets.SSH_PREVIEW_KEY }}", name


def test_every_job_with_a_key_cleans_up_always_and_shares_one_concurrency_group_per_stack():
    with_keys = {name: job for name, job in jobs().items() if key_steps(job)}
    assert set(with_keys) == {"preview/preview", "deploy/plan", "deploy/apply", "drift/drift"}
    for name, job in with_keys.items():
        last = job["steps"][-1]
        assert last.get("if") == "always()" and last["run"].strip() == "bash tools/ci/ssh-credential.sh cleanup", name
        assert job["concurrency"] == {"group": "octollm-hosts-${{ matrix.stack }}", "cancel-in-progress": False}, name
        # pulumi runs after the key is loaded, never before
        runs = [s.get("run", "") + str(s.get("with", "")) for s in job["steps"]]
        load = next(i for i, r in enumerate(runs) if "ssh-credential.sh load" in r)
        assert all("pulumi" not in r or "pulumi/actions" in r or i > load
                   for i, r in enumerate(runs) if "pulumi preview" in r or "pulumi up" in r), name


def _run_step(step: dict, env: dict, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-e", "-c", step["run"]], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def runner(tmp_path):
    """A runner's environment: its own HOME, RUNNER_TEMP and GITHUB_ENV, no agent."""
    home = tmp_path / "home"
    home.mkdir()
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")}
    env.update(HOME=str(home), RUNNER_TEMP=str(temp), GITHUB_ENV=str(tmp_path / "github-env"), STACK="unraid",
               PY=f"{ROOT}/.venv/bin/python")
    (tmp_path / "github-env").write_text("")
    return env


def _github_env(env: dict) -> dict:
    return dict(line.split("=", 1) for line in open(env["GITHUB_ENV"]).read().splitlines() if "=" in line)


def test_the_credential_script_loads_the_key_into_an_agent_and_cleanup_removes_everything(runner, tmp_path, request):
    out = subprocess.run([str(BIN / "shellcheck"), str(CREDENTIAL)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    identity = tmp_path / "home" / ".ssh" / "octollm_unraid"
    control = tmp_path / "home" / ".ssh" / "octollm-0123456789abcdef"
    load = subprocess.run(["bash", str(CREDENTIAL), "load"], env={**runner, "OCTOLLM_SSH_KEY": key.read_text()},
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert load.returncode == 0, load.stderr
    exported = _github_env(runner)
    request.addfinalizer(lambda: subprocess.run(["kill", exported["SSH_AGENT_PID"]], capture_output=True))
    assert identity.read_text().strip() == key.read_text().strip() and (identity.stat().st_mode & 0o777) == 0o600
    listed = subprocess.run(["ssh-add", "-L"], env={**runner, "SSH_AUTH_SOCK": exported["SSH_AUTH_SOCK"]},
                            capture_output=True, text=True)
    assert listed.stdout.split()[:2] == key.with_suffix(".pub").read_text().split()[:2]
    control.write_text("")  # a shared connection's socket left behind
    clean = subprocess.run(["bash", str(CREDENTIAL), "cleanup"], env={**runner, **exported}, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    assert not identity.exists() and not control.exists() and not os.path.exists(exported["SSH_AUTH_SOCK"])
    pid = int(exported["SSH_AGENT_PID"])
    for _ in range(50):
        if not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        pytest.fail("the agent still runs after cleanup")


def test_an_empty_key_fails_and_never_leaves_a_leftover_key_in_use(runner, tmp_path):
    identity = tmp_path / "home" / ".ssh" / "octollm_unraid"
    identity.parent.mkdir(mode=0o700)
    identity.write_text("a write key a job before left\n")
    [step] = key_steps(yaml.safe_load(steps("preview.yml"))["jobs"]["preview"])
    with_backend = {**runner, "OCTOLLM_SSH_KEY": "", "SSH_KNOWN_HOSTS": "", "PULUMI_BACKEND_URL": "file:///x"}
    out = _run_step(step, with_backend, ROOT)
    assert out.returncode != 0 and "SSH key secret is empty" in out.stderr
    assert not identity.exists() and "SSH_AUTH_SOCK" not in _github_env(runner)
    # A fork's pull request: no key and no backend, so the offline plan runs (with no key at all).
    identity.write_text("a write key a job before left\n")
    out = _run_step(step, {**with_backend, "PULUMI_BACKEND_URL": ""}, ROOT)
    assert out.returncode == 0, out.stderr
    assert not identity.exists() and "SSH_AUTH_SOCK" not in _github_env(runner)


def test_the_gke_preview_gets_an_offline_kubeconfig_and_no_cluster_credentials(runner, tmp_path):
    job = yaml.safe_load(steps("preview.yml"))["jobs"]["preview"]
    [step] = [s for s in job["steps"] if s.get("if") == "matrix.stack == 'gke'"]
    assert not any("kube" in k.lower() or "gke" in k.lower() for k in step.get("env", {}))
    # No cluster credential reaches the job: no such secret, no cloud login action.
    assert not re.search(r"secrets\.\w*(KUBE|GKE|GCP|GOOGLE|CLUSTER)", yaml.dump(job), re.I)
    assert not any(s.get("uses", "").startswith(("google-github-actions/", "azure/", "aws-actions/"))
                   for s in job["steps"])
    # Run it in a checkout whose stack file holds a (stand-in) kubeconfig secret.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "tests").symlink_to(ROOT / "tests")
    (checkout / ".venv").symlink_to(ROOT / ".venv")
    doc = yaml.safe_load((ROOT / "Pulumi.gke.yaml").read_text())
    doc["config"]["octollm-infra:kubeconfig"] = {"secure": "v1:real-cluster-credentials"}
    (checkout / "Pulumi.gke.yaml").write_text(yaml.safe_dump(doc))
    out = _run_step(step, {**runner, "STACK": "gke"}, checkout)
    assert out.returncode == 0, out.stderr
    path = _github_env(runner)["KUBECONFIG"]
    assert path == f"{runner['RUNNER_TEMP']}/offline-kubeconfig" and (os.stat(path).st_mode & 0o777) == 0o600
    kube = yaml.safe_load(open(path).read())
    [cluster] = kube["clusters"]
    host, port = cluster["cluster"]["server"].removeprefix("https://").split(":")
    assert host == "127.0.0.1"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", int(port))) != 0, "the offline kubeconfig's port accepts connections"
    after = yaml.safe_load((checkout / "Pulumi.gke.yaml").read_text())
    assert "octollm-infra:kubeconfig" not in after["config"]
    assert {k: v for k, v in after["config"].items()} == {k: v for k, v in doc["config"].items()
                                                          if k != "octollm-infra:kubeconfig"}
