"""The GitHub workflows pass actionlint (with shellcheck on their run: blocks) and do what the review flow needs."""

import os
import subprocess
import sys
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
