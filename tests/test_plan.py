"""The offline plan: deterministic, exact diffs, no secrets."""

import copy
import json
import subprocess
import sys

import pytest

from tooling import plan
from harness import ROOT, stack_config


@pytest.mark.parametrize("stack", ["unraid", "homelab", "gke", "dev"])
def test_plan_is_deterministic(stack):
    a, b = plan.build_plan(stack), plan.build_plan(stack)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
    assert plan.render(a) == plan.render(b)
    assert len(a["resources"]) > 5


def test_plan_groups_by_host_and_component():
    text = plan.render(plan.build_plan("homelab"))
    server84 = \
        text.split("\nhost server84\n", 1)[1].split("\nhost ", 1)[0]
    assert "\n  GpuInferenceNode ollama-84\n    + ollama-84-ollama-84  (docker:index/container:Container)" in server84
    assert "ollama-ai" not in server84  # another host's node is not listed here
    assert "        ports: 10.0.0.84:11435->11434" in text
    assert "[replace: delete first]" in text and "[protected]" in text


def test_diff_reports_exactly_the_changed_resources_and_properties(run):
    base = plan.plan_from_result("unraid", run("unraid"))
    cfg = copy.deepcopy(stack_config("unraid"))
    cfg["inference"]["ollama"]["models"].append("mistral:7b")
    cfg["octollm"]["arms"]["judge"]["limits"]["memoryGb"] = 3
    head = plan.plan_from_result("unraid", run("unraid", config=cfg))
    d = plan.diff_plans(base, head)
    assert d["added"] == [] and d["removed"] == []
    names = {u.rsplit("::", 1)[-1]: props for u, props in d["changed"].items()}
    assert set(names) == {"ollama-pull-models", "unraid-preflight", "octollm-arm-judge"}
    judge = {p["property"]: (p["before"], p["after"]) for p in names["octollm-arm-judge"]}
    assert judge == {"memory": (2048, 3072), "memorySwap": (2048, 3072)}  # swap follows the limit
    pull = {p["property"]: (p["before"], p["after"]) for p in names["ollama-pull-models"]}
    assert pull["triggers[4]"] == (None, "mistral:7b")
    md = plan.render_diff("unraid", "a", "b", d, {r["urn"]: r["type"] for r in head["resources"]})
    assert "**0 to add, 0 to remove, 3 to change**" in md
    assert "- `memory`: `2048` → `3072`" in md


SECRETS = {"postgresPassword": "pg-S3cret-value", "openaiApiKey": "sk-live-abcdef"}


def test_secrets_never_appear_in_plan_output(run):
    r = run("unraid", secrets=SECRETS)
    p = plan.plan_from_result("unraid", r)
    for text in (plan.render(p), json.dumps(p)):
        for value in [*SECRETS.values(), "generated-data-redis-password", "BEGIN OPENSSH PRIVATE KEY"]:
            assert value not in text
    rotated = copy.deepcopy(SECRETS)
    rotated["postgresPassword"] = "pg-other-value"
    d = plan.diff_plans(p, plan.plan_from_result("unraid", run("unraid", secrets=rotated)))
    md = plan.render_diff("unraid", "a", "b", d, {x["urn"]: x["type"] for x in p["resources"]})
    assert "pg-other-value" not in md and "pg-S3cret-value" not in md
    assert "(secret)" in md


def test_diff_between_two_git_revisions(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    f = repo / "Pulumi.unraid.yaml"
    f.write_text(f.read_text().replace("        - nomic-embed-text\n", "        - nomic-embed-text\n        - mistral:7b\n"))
    git = ["git", "-C", str(repo), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "commit", "-qam", "add a model"], check=True)
    out = subprocess.run([sys.executable, "-m", "tooling.plan", "-s", "unraid", "--diff", "HEAD~1", "HEAD"],
                         cwd=repo, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "**0 to add, 0 to remove, 2 to change**" in out.stdout
    assert "| ~ | `ollama-pull-models` |" in out.stdout
    assert '- `triggers[4]`: — → `mistral:7b`' in out.stdout
