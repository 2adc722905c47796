"""preflight on Kubernetes: what must hold in the cluster before `pulumi up` of a Kubernetes stack.

    python -m tooling.preflight_kubernetes -s gke
    python -m tooling.doctor -s gke                      # the same checks, through doctor
    python -m tooling.preflight_kubernetes -s gke --kubeconfig ~/.kube/gke.yaml --context prod

It reads, and changes nothing:

- the API server answers with the kubeconfig and context the stack's kubernetes provider uses (found as
  tooling/verify_kubernetes.py finds them: the stack's `kubeconfig` secret config, else KUBECONFIG, else
  ~/.kube/config; `kubernetes.context`, else the current context);
- the namespace `kubernetes.namespace`. Absent, or carrying this stack's labels (components/platforms/
  kubernetes.py owned_namespace_labels: app.kubernetes.io/managed-by=pulumi, octollm.io/stack=<stack>),
  it passes. Present without them it is someone else's, and it fails unless `kubernetes.adoptNamespace`
  is true: the kubernetes provider this project builds creates objects with a server-side apply patch,
  which takes an existing namespace over without a word. Being deleted (Terminating), it fails either way;
- when an inference node asks for a GPU: a node with the configured accelerator label. None is a warning,
  not a failure, as a GPU node pool may be scaled to zero until a GPU pod asks for it.

Exit status 0 when nothing fails (warnings allowed), 1 when something does, 2 when the stack's config is
invalid. A stack not on Kubernetes has nothing to check here: status 0.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path

import urllib3
from kubernetes.client.rest import ApiException

from components.config.schema import StackConfig
from components.platforms.kubernetes import GKE_ACCELERATOR, GPU_RESOURCE, MANAGED_BY, STACK_LABEL, stack_label

from .stackfile import load_or_report
from .verify_kubernetes import Cluster, Unreachable, connect

ROOT = Path(__file__).resolve().parent.parent
PART_OF = "app.kubernetes.io/part-of"
HELM_RELEASE, HELM_NAMESPACE = "meta.helm.sh/release-name", "meta.helm.sh/release-namespace"


@dataclass
class Report:
    host: str
    api: str = "-"
    api_ok: bool = False
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: bool = False  # --api-only

    @property
    def ok(self) -> bool:
        return self.api_ok and not self.problems


# --------------------------------------------------------------------------- the namespace


def is_ours(labels: dict[str, str], stack: str) -> bool:
    return (labels.get(STACK_LABEL) == stack_label(stack) and labels.get(MANAGED_BY) == "pulumi"
            and labels.get(PART_OF) == "octollm")


def owner(meta) -> str:
    """Who a namespace seems to belong to, from its labels, annotations and field managers."""
    labels, annotations = meta.labels or {}, meta.annotations or {}
    if labels.get(STACK_LABEL):
        who = f"stack {labels[STACK_LABEL]!r} of this program ({STACK_LABEL}={labels[STACK_LABEL]})"
    elif annotations.get(HELM_RELEASE):
        who = f"Helm release {annotations.get(HELM_NAMESPACE, '?')}/{annotations[HELM_RELEASE]}"
    elif labels.get(MANAGED_BY):
        who = f"{labels[MANAGED_BY]} ({MANAGED_BY}={labels[MANAGED_BY]})"
    elif labels.get(PART_OF) == "octollm":
        who = f"an earlier version or another copy of this program ({PART_OF}=octollm, no {STACK_LABEL})"
    else:
        managers = sorted({m.manager for m in (meta.managed_fields or []) if m.manager})
        who = f"whoever wrote it with {', '.join(managers)}" if managers else "unknown (no owner label or field manager)"
    created = meta.creation_timestamp
    return who + (f", created {created.isoformat() if hasattr(created, 'isoformat') else created}" if created else "")


def check_namespace(report: Report, obj, namespace: str, stack: str, adopt: bool, stack_file: str) -> None:
    """The verdict on namespace `namespace` as read (`obj`, None when it does not exist)."""
    mark = f"{STACK_LABEL}={stack_label(stack)}"
    if obj is None:
        report.notes.append(f"namespace {namespace} does not exist: `pulumi up` creates it" + (
            " and `destroy` leaves it (kubernetes.adoptNamespace: true)" if adopt else f", labelled {mark}"))
        return
    meta = obj.metadata
    phase = obj.status.phase if obj.status else None
    if phase == "Terminating" or meta.deletion_timestamp:
        report.problems.append(
            f"namespace {namespace} is being deleted (phase {phase or 'Terminating'}): nothing can be created "
            f"in it. Wait until `kubectl get namespace {namespace}` finds none, then run `pulumi up`")
        return
    labels = meta.labels or {}
    if is_ours(labels, stack):
        report.notes.append(f"namespace {namespace} exists and is this stack's ({mark})")
        return
    who = owner(meta)
    if adopt:
        report.notes.append(f"namespace {namespace} exists, owned by {who}; kubernetes.adoptNamespace is true: "
                            "`pulumi up` only adds its labels to it and never deletes it")
        return
    problem = (f"namespace {namespace} already exists and is not this stack's: it seems to belong to {who}. "
               "`pulumi up` would take it over (the provider creates by server-side apply, an upsert). "
               f"To use it anyway, set `kubernetes.adoptNamespace: true` in {stack_file} (the program then "
               "adds its labels and never deletes it); else choose another `kubernetes.namespace`")
    if labels.get(PART_OF) == "octollm" and not labels.get(STACK_LABEL):
        problem += (f". If stack {stack} created it before namespaces carried {STACK_LABEL}, mark it as its own: "
                    f"`kubectl label namespace {namespace} {mark} {MANAGED_BY}=pulumi`")
    report.problems.append(problem)


def read_namespace(cluster: Cluster, namespace: str):
    """The Namespace object, or None when there is none."""
    try:
        return cluster.core.read_namespace(namespace, _request_timeout=cluster.timeout)
    except ApiException as exc:
        if exc.status == 404:
            return None
        if exc.status == 403:
            raise Unreachable(f"reading namespace {namespace} is forbidden to context {cluster.context}",
                              "the preflight needs `get` on namespaces (cluster scope)", final=True) from None
        raise cluster._explain(exc, f"reading namespace {namespace}") from None
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise cluster._explain(exc, f"reading namespace {namespace}") from None


# --------------------------------------------------------------------------- GPU nodes


def needs_gpu(cfg: StackConfig) -> bool:
    return any(nc.gpu is not None for nc in cfg.all_inference.values())


def check_gpu_nodes(report: Report, cluster: Cluster, accelerator: str) -> None:
    selector = f"{GKE_ACCELERATOR}={accelerator}"
    try:
        nodes = cluster.core.list_node(label_selector=selector, _request_timeout=cluster.timeout).items
    except ApiException as exc:
        why = "forbidden: the context may not list nodes" if exc.status == 403 else f"the API server answers {exc.status}"
        report.warnings.append(f"GPU nodes not checked ({why})")
        return
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        report.warnings.append(f"GPU nodes not checked ({cluster._explain(exc, 'listing nodes')})")
        return
    if not nodes:
        report.warnings.append(
            f"no node carries {selector}: the GPU pods stay Pending unless a node pool with accelerator "
            f"{accelerator} scales up for them (kubernetes.accelerator)")
        return
    with_gpu = [n for n in nodes if n.status and n.status.allocatable and
                str(n.status.allocatable.get(GPU_RESOURCE, "0")) not in ("", "0")]
    if not with_gpu:
        report.warnings.append(f"{len(nodes)} node(s) carry {selector} but none offers {GPU_RESOURCE} yet "
                               "(its driver may still be installing)")
    else:
        report.notes.append(f"{len(with_gpu)} node(s) with {selector} offer {GPU_RESOURCE}")


# --------------------------------------------------------------------------- one run


def diagnose(cfg: StackConfig, stack: str, cluster: Cluster, host: str, stack_file: str,
             api_only: bool = False) -> Report:
    r = Report(host)
    try:
        r.api = f"Kubernetes {cluster.version()}"
        r.api_ok = True
    except Unreachable as exc:
        r.api = "no answer"
        r.problems.append(f"{exc}" + (f" ({exc.hint})" if exc.hint else ""))
        return r
    if api_only:
        r.skipped = True
        return r
    kc = cfg.kubernetes
    try:
        check_namespace(r, read_namespace(cluster, kc.namespace), kc.namespace, stack, kc.adopt_namespace, stack_file)
    except Unreachable as exc:
        r.problems.append(f"{exc}" + (f" ({exc.hint})" if exc.hint else ""))
    if needs_gpu(cfg):
        check_gpu_nodes(r, cluster, kc.accelerator)
    return r


def render(reports: list[Report]) -> str:
    width = max([len(r.host) for r in reports] + [4])
    lines = [f"{'HOST':<{width}}  {'KUBERNETES API':<32}  PREFLIGHT"]
    for r in reports:
        pre = "not run (--api-only)" if r.skipped and r.ok else "ok" if r.ok else f"FAILED ({len(r.problems)})"
        lines.append(f"{r.host:<{width}}  {r.api[:32]:<32}  {pre}")
        lines += [f"{'':<{width}}    - {p}" for p in r.problems]
        lines += [f"{'':<{width}}    ! {w}" for w in r.warnings]
        lines += [f"{'':<{width}}    · {n}" for n in r.notes]
    return "\n".join(lines)


def run(path: Path, stack: str, *, kubeconfig: Path | None = None, context: str | None = None,
        timeout: float = 30, api_only: bool = False) -> int:
    """The preflight of the stack in `path` (a Pulumi.<stack>.yaml): print the table, return the exit status."""
    loaded = load_or_report(path)
    if loaded is None:
        return 2
    cfg, encrypted = loaded
    if cfg.platform != "kubernetes" or cfg.kubernetes is None:
        print(f"stack {stack!r} is not on Kubernetes: nothing to check here", file=sys.stderr)
        return 0
    [host] = [h for h, hc in sorted(cfg.hosts.items()) if hc.kind == "kubernetes"]
    project = path.resolve().parent if (path.resolve().parent / "Pulumi.yaml").exists() else ROOT
    cluster, how = connect(cfg, stack, project, encrypted, kubeconfig, context, timeout)
    if cluster is None:
        r = Report(host, api="cannot connect", problems=[how.detail + (f" ({how.hint})" if how.hint else "")])
        print(render([r]))
        return 1
    try:
        r = diagnose(cfg, stack, cluster, host, path.name, api_only=api_only)
    finally:
        cluster.api.close()
    r.notes.insert(0, f"kubeconfig: {how.detail}")
    print(render([r]))
    return 0 if r.ok else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tooling.preflight_kubernetes", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", default=None)
    ap.add_argument("--file", type=Path, default=None, help="a Pulumi.<stack>.yaml (default: from -s)")
    ap.add_argument("--kubeconfig", type=Path, default=None,
                    help="this kubeconfig file instead of the one the stack's provider uses")
    ap.add_argument("--context", default=None, help="this kubeconfig context instead of kubernetes.context")
    ap.add_argument("--timeout", type=float, default=30, help="seconds each request may take (default 30)")
    ap.add_argument("--api-only", action="store_true", help="check only that the API server answers")
    a = ap.parse_args(argv)
    if a.file is None and a.stack is None:
        ap.error("give -s STACK or --file")
    path = a.file or ROOT / f"Pulumi.{a.stack}.yaml"
    stack = a.stack or path.stem.split(".", 1)[-1]
    return run(path, stack, kubeconfig=a.kubeconfig, context=a.context, timeout=a.timeout, api_only=a.api_only)


if __name__ == "__main__":
    sys.exit(main())
