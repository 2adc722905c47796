"""Offline plan: what `pulumi up` would register, without reaching any host, cluster or backend.

    python -m tooling.plan -s homelab               # readable plan, grouped by host and component
    python -m tooling.plan -s homelab --json        # the same as JSON
    python -m tooling.plan -s homelab --diff origin/main        # Markdown: origin/main -> working tree
    python -m tooling.plan -s homelab --diff v1.2 v1.3          # Markdown: between two revisions

The program runs under Pulumi's mock engine with the stack's config. Values of encrypted config keys
(`secure:`) are not decrypted: they stand in as secrets. Secret values never appear in the output.
This is a plan of inputs, not a preview: it cannot see the state of the hosts.
"""

from __future__ import annotations

import argparse
import hmac
import json
import secrets
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


from .mock_engine import ROOT, SECRET_SIG, SECRET_VALUE, read_stack_file, run_stack

HIDDEN = "[secret]"
# Secrets are shown as an HMAC under a key that lives only as long as this plan (and the child plans
# of a diff, which inherit it): a changed secret shows as changed, and nothing about its value leaks.
_KEY_ENV = "OCTOLLM_PLAN_SECRET_KEY"
os.environ.setdefault(_KEY_ENV, secrets.token_hex(32))


def _secret_token(v) -> str:
    digest = hmac.new(bytes.fromhex(os.environ[_KEY_ENV]), json.dumps(v, sort_keys=True).encode(), "sha256")
    return f"{HIDDEN[:-1]}:{digest.hexdigest()[:12]}]"


def _is_hidden(v) -> bool:
    return isinstance(v, str) and v.startswith(HIDDEN[:-1])


def _redact(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        if v.get(SECRET_SIG) == SECRET_VALUE:
            return _secret_token(v.get("value"))
        return {k: _redact(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_redact(x) for x in v]
    if isinstance(v, str) and v[:1] in "[{":
        try:
            return _redact(json.loads(v))  # provider inputs travel JSON-encoded
        except ValueError:
            return v
    return v


def stack_inputs(root: Path, stack: str) -> tuple[dict, dict]:
    """Plain and secret config of a stack file; encrypted values become opaque placeholders."""
    plain, encrypted = read_stack_file(root / f"Pulumi.{stack}.yaml")
    return plain, {k: f"offline-placeholder-{k}" for k in encrypted}


def _placeholder_home(config: dict) -> str:
    """A throwaway HOME holding key-shaped, owner-only placeholders at the identityFile paths (~/.ssh/…):
    the program reads them as it reads real keys, and no key is used because nothing is contacted."""
    home = Path(tempfile.mkdtemp(prefix="octollm-plan-"))
    for host in (config.get("hosts") or {}).values():
        path = ((host or {}).get("ssh") or {}).get("identityFile")
        if isinstance(path, str) and path.startswith("~/"):
            f = home / path[2:]
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\noffline plan: not a key\n-----END OPENSSH PRIVATE KEY-----\n")
            f.chmod(0o600)
    return str(home)


def build_plan(stack: str, root: Path = ROOT) -> dict:
    config, secret_config = stack_inputs(root, stack)
    # Revisions of the program before the platform layer skipped key reading under this variable.
    old = os.environ.get("OCTOLLM_OFFLINE_PLAN")
    os.environ["OCTOLLM_OFFLINE_PLAN"] = "1"
    try:
        result = run_stack(stack, config=config, secrets=secret_config, home=_placeholder_home(config))
    finally:
        if old is None:
            os.environ.pop("OCTOLLM_OFFLINE_PLAN", None)
        else:
            os.environ["OCTOLLM_OFFLINE_PLAN"] = old
    if result.error is not None:
        raise SystemExit(str(result.error))
    return plan_from_result(stack, result)


def plan_from_result(stack: str, result) -> dict:
    by_urn = {r.urn: r for r in result.registrations}
    resources = []
    for r in sorted(result.registrations, key=lambda r: r.urn):
        if r.type.startswith("octollm:index:"):
            continue  # components are the groups, not entries
        provider = r.provider.rsplit("::", 1)[0] if r.provider else ""
        if r.type.startswith("pulumi:providers:"):
            host = r.name.rsplit("-", 1)[0]
        elif provider in by_urn:
            host = by_urn[provider].name.rsplit("-", 1)[0]
        else:
            host = "(no host: generated secrets)"
        parent = by_urn.get(r.parent)
        resources.append({
            "urn": r.urn, "type": r.type, "name": r.name, "host": host,
            "component": f"{parent.type.rsplit(':', 1)[-1]} {parent.name}" if parent else "-",
            "protect": r.protect, "deleteBeforeReplace": r.delete_before_replace,
            "inputs": _redact(r.raw),
            "secrets": sorted(k for k, v in r.raw.items() if r.is_secret(k)),
        })
    return {"stack": stack, "resources": resources}


def _summary(res: dict) -> list[str]:
    i, t = res["inputs"], res["type"]
    if t == "docker:index/container:Container":
        out = [f"image: {str(i.get('image', '')).split('@', 1)[0]}"]
        if i.get("ports"):
            out.append("ports: " + ", ".join(f"{p.get('ip', '0.0.0.0')}:{p.get('external')}->{p.get('internal')}"
                                             for p in i["ports"]))
        if i.get("mounts"):
            out.append("mounts: " + ", ".join(f"{m.get('source')}:{m.get('target')}{':ro' if m.get('readOnly') else ''}"
                                              for m in i["mounts"]))
        envs = i.get("envs") or []
        if envs:
            out.append("env: " + ", ".join(HIDDEN if _is_hidden(e) else e.split("=", 1)[0] for e in envs))
        if i.get("deviceRequests"):
            out.append(f"gpu: {i['deviceRequests']}")
        out.append(f"limits: {i.get('cpus')} cpus, {i.get('memory')} MiB")
        return out
    if t.startswith("command:"):
        body = [l for l in str(i.get("create", "")).splitlines() if l and not l.startswith(("#!", "set -"))]
        out = [f"script: {body[0] if body else ''} ({len(body)} lines)"]
        if "stdin" in i:
            out.append("stdin: " + (HIDDEN if _is_hidden(i["stdin"]) else f"{len(str(i['stdin']))} bytes"))
        if i.get("triggers"):
            out.append(f"triggers: {i['triggers']}")
        return out
    if t.startswith("kubernetes:") and "metadata" in i:
        return [f"{i.get('kind', t.rsplit(':', 1)[-1])} {i['metadata'].get('namespace', '')}/{i['metadata'].get('name')}"]
    keys = [k for k in sorted(i) if k not in ("__defaults",)][:6]
    return [f"{k}: {HIDDEN if _is_hidden(i[k]) else json.dumps(i[k], sort_keys=True)[:100]}" for k in keys]


def render(plan: dict) -> str:
    lines = [f"Plan for stack {plan['stack']} ({len(plan['resources'])} resources, offline)"]
    hosts: dict[str, dict[str, list[dict]]] = {}
    for r in plan["resources"]:
        hosts.setdefault(r["host"], {}).setdefault(r["component"], []).append(r)
    for host, comps in sorted(hosts.items()):
        lines.append("")
        lines.append(f"host {host}")
        for comp, rs in sorted(comps.items()):
            lines.append(f"  {comp}")
            for r in rs:
                flags = "".join([" [protected]" if r["protect"] else "",
                                 " [replace: delete first]" if r["deleteBeforeReplace"] else ""])
                lines.append(f"    + {r['name']}  ({r['type']}){flags}")
                for s in _summary(r):
                    lines.append(f"        {s}")
                if r["secrets"]:
                    lines.append(f"        secret: {', '.join(r['secrets'])}")
    return "\n".join(lines) + "\n"


def _flatten(v, prefix="") -> dict[str, object]:
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            out.update(_flatten(x, f"{prefix}.{k}" if prefix else k))
        return out or {prefix: {}}
    if isinstance(v, list):
        out = {}
        for n, x in enumerate(v):
            out.update(_flatten(x, f"{prefix}[{n}]"))
        return out or {prefix: []}
    return {prefix: v}


def diff_plans(a: dict, b: dict) -> dict:
    ra = {r["urn"]: r for r in a["resources"]}
    rb = {r["urn"]: r for r in b["resources"]}
    changed = {}
    for urn in sorted(set(ra) & set(rb)):
        fa, fb = _flatten(ra[urn]["inputs"]), _flatten(rb[urn]["inputs"])
        keys = sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k))
        if keys:
            changed[urn] = [{"property": k, "before": fa.get(k), "after": fb.get(k)} for k in keys]
    return {"added": sorted(set(rb) - set(ra)), "removed": sorted(set(ra) - set(rb)), "changed": changed}


def _short(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def _val(v) -> str:
    if _is_hidden(v):
        return "(secret)"
    text = json.dumps(v) if not isinstance(v, str) else v
    text = text.replace("\n", "⏎")
    return f"`{text[:80]}{'…' if len(text) > 80 else ''}`" if v is not None else "—"


def render_diff(stack: str, base: str, head: str, d: dict, types: dict[str, str]) -> str:
    out = [f"### Offline plan for `{stack}`: {base} → {head}", "",
           f"**{len(d['added'])} to add, {len(d['removed'])} to remove, {len(d['changed'])} to change** "
           "(inputs only: this plan cannot see the hosts)", ""]
    if not (d["added"] or d["removed"] or d["changed"]):
        out.append("No changes.")
        return "\n".join(out) + "\n"
    out += ["| | resource | type |", "|---|---|---|"]
    out += [f"| + | `{_short(u)}` | `{types[u]}` |" for u in d["added"]]
    out += [f"| - | `{_short(u)}` | `{types[u]}` |" for u in d["removed"]]
    out += [f"| ~ | `{_short(u)}` | `{types[u]}` |" for u in d["changed"]]
    if d["changed"]:
        out += ["", "<details><summary>changed properties</summary>", ""]
        for u, props in d["changed"].items():
            out.append(f"**`{_short(u)}`**")
            out.append("")
            for p in props:
                out.append(f"- `{p['property']}`: {_val(p['before'])} → {_val(p['after'])}")
            out.append("")
        out.append("</details>")
    return "\n".join(out) + "\n"


def plan_at(rev: str | None, stack: str) -> dict:
    """The plan of `stack` at git revision `rev` (None: the working tree), in a separate interpreter."""
    if rev is None:
        return build_plan(stack)
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), rev], check=True)
        try:
            # This plan's own code runs that revision's program and stack file, so revisions from
            # before the plan existed can be compared too.
            tool = tree / "_octollm_plan"
            tool.mkdir()
            (tool / "__init__.py").write_text("")
            for f in ("mock_engine.py", "plan.py"):
                shutil.copy(Path(__file__).with_name(f), tool / f)
            out = subprocess.run([sys.executable, "-m", "_octollm_plan.plan", "-s", stack, "--json"], cwd=tree,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"plan at {rev} failed:\n{out.stderr[-2000:]}")
            return json.loads(out.stdout)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tooling.plan", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", required=True)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--diff", nargs="+", metavar="REV", help="BASE [HEAD]: Markdown summary between revisions")
    a = ap.parse_args(argv)
    if a.diff:
        base, head = a.diff[0], (a.diff[1] if len(a.diff) > 1 else None)
        pa, pb = plan_at(base, a.stack), plan_at(head, a.stack)
        types = {r["urn"]: r["type"] for r in pa["resources"] + pb["resources"]}
        print(render_diff(a.stack, base, head or "working tree", diff_plans(pa, pb), types), end="")
        return 0
    plan = build_plan(a.stack)
    print(json.dumps(plan, indent=1, sort_keys=True) if a.json else render(plan), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
