"""The Kubernetes preflight (tooling/preflight_kubernetes.py, also `doctor -s gke`), against a stand-in
API server on loopback.

The stand-in serves what the preflight's client reads: /version, one Namespace (GET
/api/v1/namespaces/<name>, 404 when there is none) and the node list with a label selector; it answers
401 to a request without the kubeconfig's bearer token and 404 to any other path, which it records. The
namespace of "ours" is the one the program registers for Pulumi.gke.yaml under the mock engine, with the
labels it is given there, so the preflight's idea of ownership is held to what the program sets.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from components.platforms import kubernetes as kp
from tooling import doctor, preflight_kubernetes as pk

ROOT = Path(__file__).resolve().parent.parent
GKE_FILE = ROOT / "Pulumi.gke.yaml"
NS = "octollm"
TOKEN = "standin-token-" + secrets.token_hex(8)


def status_obj(code: int, message: str, reason: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}


def namespace(labels: dict, *, manager: str = "kubectl-create", annotations: dict | None = None,
              phase: str = "Active") -> dict:
    meta = {"name": NS, "uid": "uid-ns", "resourceVersion": "7", "creationTimestamp": "2025-11-02T09:15:00Z",
            "labels": labels, "managedFields": [{"manager": manager, "operation": "Update", "apiVersion": "v1",
                                                 "time": "2025-11-02T09:15:00Z", "fieldsType": "FieldsV1",
                                                 "fieldsV1": {"f:metadata": {"f:labels": {}}}}]}
    if annotations:
        meta["annotations"] = annotations
    if phase == "Terminating":
        meta["deletionTimestamp"] = "2026-01-02T10:00:00Z"
    return {"kind": "Namespace", "apiVersion": "v1", "metadata": meta, "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": phase}}


def node(name: str, accelerator: str | None, gpus: str | None) -> dict:
    labels = {"kubernetes.io/hostname": name}
    if accelerator:
        labels[kp.GKE_ACCELERATOR] = accelerator
    allocatable = {"cpu": "7910m", "memory": "29Gi", "pods": "110"}
    if gpus is not None:
        allocatable[kp.GPU_RESOURCE] = gpus
    return {"metadata": {"name": name, "labels": labels}, "status": {"allocatable": allocatable}}


class State:
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.namespace: dict | None = None
        self.namespace_forbidden = False
        self.nodes: list[dict] = []
        self.seen: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str]] = []


class Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, *args):
        pass

    def send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def handle_any(self, method: str) -> None:
        s = self.state
        url = urllib.parse.urlsplit(self.path)
        s.seen.append((method, self.path))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.send(401, status_obj(401, "Unauthorized", "Unauthorized"))
        if method == "GET" and url.path == "/version/":
            return self.send(200, {"major": "1", "minor": "31", "gitVersion": "v1.31.0-gke.1200000",
                                   "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                                   "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64"})
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)", url.path)
        if method == "GET" and m:
            if s.namespace_forbidden:
                return self.send(403, status_obj(403, f'namespaces "{m[1]}" is forbidden: User "deployer" cannot '
                                                      'get resource "namespaces" at the cluster scope', "Forbidden"))
            if s.namespace is None or m[1] != s.namespace["metadata"]["name"]:
                return self.send(404, status_obj(404, f'namespaces "{m[1]}" not found', "NotFound"))
            return self.send(200, s.namespace)
        if method == "GET" and url.path == "/api/v1/nodes":
            selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
            key, _, value = selector.partition("=")
            items = [n for n in s.nodes if not selector or n["metadata"]["labels"].get(key) == value]
            return self.send(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"},
                                   "items": items})
        s.refused.append((method, self.path))
        return self.send(404, status_obj(404, "the server could not find the requested resource", "NotFound"))


@pytest.fixture(scope="module")
def apiserver():
    st = State()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("StandIn", (Handler,), {"state": st}))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield st, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "standin", "cluster": {"server": server}}],
        "users": [{"name": "deployer", "user": {"token": TOKEN}}],
        "contexts": [{"name": "standin", "context": {"cluster": "standin", "user": "deployer"}}],
        "current-context": "standin"}))
    return path


@pytest.fixture
def cluster(apiserver, tmp_path, monkeypatch):
    """A fresh stand-in state, KUBECONFIG pointing at it, one L4 node with its GPU."""
    st, server = apiserver
    st.reset()
    st.nodes = [node("gke-gpu-1", "nvidia-l4", "1"), node("gke-cpu-1", None, None)]
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kubeconfig", server)))
    yield st
    writes = [(m, p) for m, p in st.seen if m != "GET"]
    assert not writes, f"the preflight changed something: {writes}"
    assert not st.refused, f"the preflight asked for paths the stand-in does not serve: {st.refused}"


@pytest.fixture(scope="module")
def program_namespace(run):
    """The Namespace the program registers for the gke stack, as the API server would hold it."""
    r = run("gke", secrets={"openaiApiKey": "sk-openai-gke"})
    assert r.error is None, r.error
    [ns] = r.of_type("kubernetes:core/v1:Namespace")
    return ns.inputs["metadata"]


def stack_file(tmp_path: Path, **kube) -> Path:
    """Pulumi.gke.yaml with kubernetes.* keys changed, as a stack file of stack gke."""
    doc = yaml.safe_load(GKE_FILE.read_text())
    doc["config"]["octollm-infra:kubernetes"].update(kube)
    path = tmp_path / "stack" / "Pulumi.gke.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(doc))
    return path


def preflight(capsys, *args: str) -> tuple[int, str]:
    code = pk.main(["-s", "gke", "--timeout", "10", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def one_line(text: str) -> str:
    return " ".join(text.split())


# ---- the namespace -------------------------------------------------------------------------------------


def test_an_absent_namespace_passes(cluster, capsys):
    code, out = preflight(capsys)
    assert code == 0, out
    assert "namespace octollm does not exist: `pulumi up` creates it" in out
    assert ("GET", "/api/v1/namespaces/octollm") in cluster.seen


def test_the_namespace_the_program_creates_passes_as_ours(cluster, capsys, program_namespace):
    assert program_namespace["labels"][kp.STACK_LABEL] == "gke"
    cluster.namespace = namespace(program_namespace["labels"], manager="pulumi-kubernetes-1a2b3c4d")
    code, out = preflight(capsys)
    assert code == 0, out
    assert f"namespace octollm exists and is this stack's ({kp.STACK_LABEL}=gke)" in out


def test_a_foreign_namespace_is_refused_with_who_owns_it_and_the_way_out(cluster, capsys):
    cluster.namespace = namespace({"kubernetes.io/metadata.name": NS, "team": "search"})
    code, out = preflight(capsys)
    assert code == 1, out
    text = one_line(out)
    assert "FAILED (1)" in text
    assert "namespace octollm already exists and is not this stack's" in text
    assert "whoever wrote it with kubectl-create, created 2025-11-02T09:15:00" in text
    assert "`kubernetes.adoptNamespace: true` in Pulumi.gke.yaml" in text


def test_a_foreign_namespace_passes_when_it_is_to_be_adopted(cluster, capsys, tmp_path):
    cluster.namespace = namespace({"kubernetes.io/metadata.name": NS}, manager="helm",
                                  annotations={pk.HELM_RELEASE: "search", pk.HELM_NAMESPACE: "search"})
    code, out = preflight(capsys, "--file", str(stack_file(tmp_path, adoptNamespace=True)))
    assert code == 0, out
    assert ("namespace octollm exists, owned by Helm release search/search, created 2025-11-02T09:15:00+00:00; "
            "kubernetes.adoptNamespace is true") in one_line(out)


def test_another_stacks_namespace_is_not_ours(cluster, capsys):
    cluster.namespace = namespace(kp.owned_namespace_labels(NS, "prod"), manager="pulumi-kubernetes-9f9f")
    code, out = preflight(capsys)
    assert code == 1, out
    assert f"it seems to belong to stack 'prod' of this program ({kp.STACK_LABEL}=prod)" in one_line(out)


def test_a_namespace_of_an_earlier_version_is_refused_with_how_to_claim_it(cluster, capsys):
    # what the program labelled its namespace with before it carried the stack's mark
    cluster.namespace = namespace({"app.kubernetes.io/part-of": "octollm", "kubernetes.io/metadata.name": NS},
                                  manager="pulumi-kubernetes-0c0c")
    code, out = preflight(capsys)
    assert code == 1, out
    assert (f"`kubectl label namespace octollm {kp.STACK_LABEL}=gke app.kubernetes.io/managed-by=pulumi`"
            in one_line(out))


def test_a_terminating_namespace_is_refused_even_when_adopted(cluster, capsys, tmp_path):
    cluster.namespace = namespace(kp.owned_namespace_labels(NS, "gke"), phase="Terminating")
    code, out = preflight(capsys, "--file", str(stack_file(tmp_path, adoptNamespace=True)))
    assert code == 1, out
    assert "namespace octollm is being deleted (phase Terminating)" in one_line(out)


def test_a_namespace_that_may_not_be_read_fails_with_the_permission_it_needs(cluster, capsys):
    cluster.namespace_forbidden = True
    code, out = preflight(capsys)
    assert code == 1, out
    assert "reading namespace octollm is forbidden to context standin" in out
    assert "`get` on namespaces" in out


def test_the_configured_namespace_is_the_one_read(cluster, capsys, tmp_path):
    code, out = preflight(capsys, "--file", str(stack_file(tmp_path, namespace="octollm-staging")))
    assert code == 0, out
    assert ("GET", "/api/v1/namespaces/octollm-staging") in cluster.seen


def test_stack_marks_are_valid_label_values():
    assert kp.stack_label("gke") == "gke" and kp.stack_label("prod.eu-1") == "prod.eu-1"
    for odd in ("_dev", "x" * 64, "dev-"):
        value = kp.stack_label(odd)
        assert re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?", value), value
        assert value != kp.stack_label(odd + "2")


# ---- GPU nodes -------------------------------------------------------------------------------------------


def test_gpu_nodes_with_the_configured_accelerator_are_reported(cluster, capsys):
    code, out = preflight(capsys)
    assert code == 0, out
    assert f"1 node(s) with {kp.GKE_ACCELERATOR}=nvidia-l4 offer nvidia.com/gpu" in out
    assert any(p.startswith("/api/v1/nodes?") and "nvidia-l4" in urllib.parse.unquote(p) for _, p in cluster.seen)


def test_no_gpu_node_is_a_warning_not_a_failure(cluster, capsys):
    cluster.nodes = [node("gke-cpu-1", None, None), node("gke-t4-1", "nvidia-tesla-t4", "1")]
    code, out = preflight(capsys)
    assert code == 0, out
    assert f"! no node carries {kp.GKE_ACCELERATOR}=nvidia-l4" in out


def test_a_gpu_node_without_its_gpu_yet_is_a_warning(cluster, capsys):
    cluster.nodes = [node("gke-gpu-1", "nvidia-l4", "0")]
    code, out = preflight(capsys)
    assert code == 0, out
    assert "carry" in out and "none offers nvidia.com/gpu yet" in out


# ---- the API server and doctor ----------------------------------------------------------------------------


def test_an_unreachable_api_server_fails(tmp_path, monkeypatch, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "kc", f"http://127.0.0.1:{port}")))
    code, out = preflight(capsys)
    assert code == 1, out
    assert f"cannot reach the API server at http://127.0.0.1:{port}" in out


def test_doctor_runs_the_kubernetes_preflight(cluster, capsys):
    cluster.namespace = namespace({"kubernetes.io/metadata.name": NS})
    code = doctor.main(["-s", "gke", "--file", str(GKE_FILE)])
    out = capsys.readouterr()
    assert code == 1, out
    assert "KUBERNETES API" in out.out and "is not this stack's" in out.out
    cluster.namespace = None
    assert doctor.main(["-s", "gke", "--file", str(GKE_FILE)]) == 0


def test_a_stack_not_on_kubernetes_has_nothing_to_check(capsys):
    assert pk.main(["-s", "unraid"]) == 0
    assert "not on Kubernetes" in capsys.readouterr().err
