"""Turn the Kubernetes objects a program run registered back into manifests."""

from __future__ import annotations

from pathlib import Path

import yaml

FIELDS = ("apiVersion", "kind", "metadata", "spec", "data", "stringData", "type", "rules", "roleRef",
          "subjects", "automountServiceAccountToken")


def _ints(v):
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, dict):
        return {k: _ints(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_ints(x) for x in v]
    return v


def manifests(result) -> list[dict]:
    out = []
    for r in result.registrations:
        if r.type.startswith("kubernetes:") and not r.type.startswith("pulumi:providers"):
            out.append(_ints({k: r.inputs[k] for k in FIELDS if k in r.inputs}))
    return out


def write(result, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for i, m in enumerate(manifests(result)):
        f = directory / f"{i:03d}-{m['kind'].lower()}-{m['metadata']['name']}.yaml"
        f.write_text(yaml.safe_dump(m, sort_keys=False))
        files.append(f)
    return files
