"""Kubernetes platform: the same ServiceSpecs become Deployments/StatefulSets, Services, Secrets,
ConfigMaps, PVCs, HPAs and PDBs in one namespace, behind a default-deny NetworkPolicy.

A second `pulumi up` must change nothing. pulumi-kubernetes (4.x) diffs the new inputs against the
live object pruned to the shape of the inputs (provider/pkg/provider/provider.go Diff), and a refresh
stores the live object, pruned the same way, as the new inputs (Read). So every field this module sets
is written the way the API server gives it back: quantities in canonical form, no empty lists or
zero values of `omitempty` fields, Secret values as `data` (the provider turns `stringData` into
`data`: provider/pkg/clients/unstructured.go normalizeSecret). tests/readback_kubernetes.py models
that read-back and tests/test_kubernetes_drift.py holds every object of the gke stack to it.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.config import catalog
from components.config.schema import HostConfig, KubernetesConfig, ModelStoreConfig
from components.platforms.base import NodeTelemetry, ScheduledJob
from components.platforms.workload import CONFIG_MOUNT, HealthSpec, MountSpec, ServiceSpec

NAME_LABEL = "app.kubernetes.io/name"
GPU_RESOURCE = "nvidia.com/gpu"
GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
DATA_PREFIX = "pvc://"
K8S_UID = 10001
# pulumi-kubernetes reads this annotation as the await timeout of create, update and delete when the
# resource has no customTimeouts (provider/pkg/metadata/overrides.go TimeoutDuration, used by
# provider/pkg/await/await.go Creation/Update/Deletion for every kind, Job, Deployment and
# StatefulSet included, DaemonSet in provider/pkg/await/daemonset.go); without either, every awaiter gives
# up after 10 minutes (DefaultJobTimeoutMins, DefaultDeploymentTimeoutMins, DefaultStatefulSetTimeoutMins,
# _defaultDaemonSetTimeout).
TIMEOUT_ANNOTATION = "pulumi.com/timeoutSeconds"
# The marks of a namespace this program created for a stack (KubernetesPlatform; read by
# the Kubernetes preflight, `doctor -s <stack>`, which refuses a namespace without them unless it is to be adopted).
MANAGED_BY = "app.kubernetes.io/managed-by"
STACK_LABEL = "octollm.io/stack"
# Hashes of what a pod reads from its Secret and its ConfigMap: a change rolls the pods.
ENV_CHECKSUM = "octollm.io/env-checksum"
FILES_CHECKSUM = "octollm.io/files-checksum"


def labels_for(service: str) -> dict[str, str]:
    return {NAME_LABEL: service, "app.kubernetes.io/part-of": "octollm", MANAGED_BY: "pulumi"}


_LABEL_VALUE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)")


def stack_label(stack: str) -> str:
    """The STACK_LABEL value of a stack. A Pulumi stack name may be up to 100 characters and start or end
    with `_`, `-` or `.`, which a label value may not: such a name is stood for by a digest of it."""
    if _LABEL_VALUE.fullmatch(stack):
        return stack
    return "stack-" + hashlib.sha256(stack.encode()).hexdigest()[:24]


def owned_namespace_labels(namespace: str, stack: str) -> dict[str, str]:
    """The labels of a namespace the program creates for `stack`: what makes it recognisably ours."""
    return {"app.kubernetes.io/part-of": "octollm", MANAGED_BY: "pulumi", STACK_LABEL: stack_label(stack),
            "kubernetes.io/metadata.name": namespace}


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


# ------------------------------------------------------------------ quantities, in the API server's form
# The API server stores every resource.Quantity in canonical form (k8s.io/apimachinery
# pkg/api/resource quantity.go, CanonicalizeBytes): no fractional digits, the largest suffix that
# keeps the value exact, binary suffixes (Ki..Ei) only for whole multiples of 1024, decimal ones
# (m, "", k, M, G..) in steps of 10^3. "8000m" comes back as "8", "16384Mi" as "16Gi".

_DECIMAL_SUFFIX = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_BINARY_SUFFIX = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]


def decimal_quantity(mantissa: int, exponent: int = 0) -> str:
    """mantissa x 10^exponent in canonical decimal form."""
    if mantissa == 0:
        return "0"
    while mantissa % 10 == 0:
        mantissa //= 10
        exponent += 1
    while exponent % 3:
        mantissa *= 10
        exponent -= 1
    return f"{mantissa}{_DECIMAL_SUFFIX[exponent]}"


def binary_quantity(n_bytes: int) -> str:
    """A whole number of bytes in canonical form: a binary suffix when it is a multiple of 1024."""
    if n_bytes < 1024:
        return decimal_quantity(n_bytes)
    power = 0
    while n_bytes % 1024 == 0:
        n_bytes //= 1024
        power += 1
    return f"{n_bytes}{_BINARY_SUFFIX[power]}"


def cpu_quantity(cpus: float) -> str:
    return decimal_quantity(int(round(cpus * 1000)), -3)


def memory_quantity(gb: float) -> str:
    return binary_quantity(int(round(gb * 1024)) * 2**20)


def storage_quantity(gb: int) -> str:
    return binary_quantity(int(gb) * 2**30)


# ------------------------------------------------------------------ model pulls

PULL_RATE_MB_S = 10  # sustained download + write to the shared claim, assumed well below what GCE gets
PULL_OVERHEAD_MIN = 15  # a GPU node scaled up from zero, its driver installed, the engine image pulled
PULL_FLOOR_MIN = 30


def default_model_pull_timeout_minutes(models_per_workload: Sequence[Sequence[str]],
                                       extra: Mapping[str, catalog.ModelInfo] | None = None) -> int:
    """How long a model pull (or a GPU workload that downloads its model) may take, in minutes.

    The slowest workload sets it: its models' size on disk (catalog.MODELS; an unknown model counts as
    the largest catalogued one) at PULL_RATE_MB_S, plus PULL_OVERHEAD_MIN, rounded up to 5 minutes and
    never below PULL_FLOOR_MIN. The gke stack's 12.6 GB (llama3.1:8b, codellama:13b, nomic-embed-text)
    comes to 40 minutes, four times the provider's default.
    """
    known = {**catalog.MODELS, **(extra or {})}  # the stack's modelCatalog sizes what the catalogue lacks
    largest = max(m.size_gb for m in known.values())
    worst = max((sum(known[m].size_gb if m in known else largest for m in models)
                 for models in models_per_workload), default=0.0)
    minutes = PULL_OVERHEAD_MIN + worst * 1000 / PULL_RATE_MB_S / 60
    return max(PULL_FLOOR_MIN, int(math.ceil(minutes / 5) * 5))


# ------------------------------------------------------------------ start hooks

def postgres_password_on_start(wait_seconds: int = 600) -> str:
    """postStart hook of the PostgreSQL container: make the running database use the current password.

    POSTGRES_PASSWORD only acts when initdb creates the cluster; after that a rotated Secret reaches the
    environment but not the database. The hook runs in every new container, hence after every rotation
    (the Secret's checksum on the pod template restarts the pod). It connects over the local socket,
    which the image's initdb leaves on `trust`, as POSTGRES_USER; psql reads the password from the
    environment (psql 15's getenv meta-command), so it is on no command line. Every setting that could log
    the statement text (statement, duration and sampled logging, the statement of an error) is off for the
    session, so the server log never holds it either. Retries until the server answers, across the
    image's temporary init-time server; the container is not Running until the hook returns.
    """
    return "\n".join([
        "set -eu",
        f"deadline=$(( $(date +%s) + {int(wait_seconds)} ))",
        "until psql -X -v ON_ERROR_STOP=1 -q -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\" >/dev/null 2>&1 <<'SQL'",
        "SET log_statement = 'none';",
        "SET log_min_duration_statement = -1;",
        "SET log_min_duration_sample = -1;",
        "SET log_transaction_sample_rate = 0;",
        "SET log_min_error_statement = 'panic';",
        "\\getenv pw POSTGRES_PASSWORD",
        "ALTER ROLE CURRENT_USER PASSWORD :'pw';",
        "SQL",
        "do",
        '  if [ "$(date +%s)" -ge "$deadline" ]; then echo "postgres: the current password could not be applied" >&2; exit 1; fi',
        "  sleep 2",
        "done",
    ]) + "\n"


def grafana_admin_password_on_start(wait_seconds: int = 180) -> str:
    """postStart hook of the Grafana container: GF_SECURITY_ADMIN_PASSWORD only sets the admin password
    when Grafana creates its database; this applies the current one to an existing database, in every
    new container (a rotated Secret rolls the pod through its checksum). The password travels on
    stdin from the container's own environment, never on a command line."""
    return "\n".join([
        "set -eu",
        f"deadline=$(( $(date +%s) + {int(wait_seconds)} ))",
        "until printf '%s\\n' \"$GF_SECURITY_ADMIN_PASSWORD\" | grafana cli --homepath /usr/share/grafana "
        "admin reset-admin-password --password-from-stdin >/dev/null 2>&1; do",
        '  if [ "$(date +%s)" -ge "$deadline" ]; then echo "grafana: the current admin password could not be applied" >&2; exit 1; fi',
        "  sleep 3",
        "done",
    ]) + "\n"


def start_hook(spec: ServiceSpec) -> list[str] | None:
    """The postStart command that applies the spec's password inside each new container."""
    pa = spec.password_apply
    if pa is None:
        return None
    script = postgres_password_on_start() if pa.service == "postgres" else grafana_admin_password_on_start()
    return ["sh", "-c", script]


def probe(h: HealthSpec, *, initial: int = 0, failures: int | None = None) -> dict:
    if h.http_path and h.port:
        action: dict = {"httpGet": {"path": h.http_path, "port": h.port}}
    elif h.test and h.test[0] == "CMD-SHELL":
        action = {"exec": {"command": ["sh", "-c", h.test[1]]}}
    else:
        action = {"exec": {"command": list(h.test[1:])}}
    out = {**action, "periodSeconds": h.interval_s, "timeoutSeconds": h.timeout_s,
           "failureThreshold": failures or h.retries}
    if initial:
        out["initialDelaySeconds"] = initial
    return out


@dataclass
class KubernetesPlatformArgs:
    host_name: str
    config: HostConfig
    kube: KubernetesConfig
    stack: str
    provider: k8s.Provider
    images: dict[str, str] | None = None
    # How long `up` waits for a model pull and for GPU workloads (TIMEOUT_ANNOTATION).
    model_pull_timeout_minutes: int = PULL_FLOOR_MIN


class KubernetesPlatform(pulumi.ComponentResource):
    """One namespace: the place every component's workloads land on the kubernetes platform."""

    namespace_name: str

    def __init__(self, name: str, args: KubernetesPlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:KubernetesNamespace", name, None, opts)
        self.name = name
        self.args = args
        self.cfg = args.config
        self.kube = args.kube
        self.networks: dict = {}
        self.gate: list[pulumi.Resource] = []
        self.namespace_name = args.kube.namespace
        if args.kube.adopt_namespace:
            # A namespace someone else made (or will keep). A Patch resource is applied with server-side
            # apply, which creates the namespace when it is missing and otherwise only adds these labels;
            # deleting a Patch resource relinquishes its fields and never deletes the object
            # (provider/pkg/await/await.go Deletion: ssa.Relinquish), and retain_on_delete keeps even the
            # labels on destroy. Fields another manager set to other values are a conflict, reported
            # with that manager's name, not overwritten (no pulumi.com/patchForce). No STACK_LABEL: it would
            # outlive the stack and claim that the stack created a namespace it only uses.
            metadata = {"name": self.namespace_name, "labels": {"app.kubernetes.io/part-of": "octollm",
                                                                 "kubernetes.io/metadata.name": self.namespace_name}}
            self.namespace = k8s.core.v1.NamespacePatch(
                f"{name}-namespace", metadata=metadata,
                opts=pulumi.ResourceOptions(parent=self, provider=args.provider, retain_on_delete=True))
        else:
            # The provider this project builds (tools/engine/build.sh) creates with a server-side apply
            # patch, an upsert: a namespace that already exists would be taken over without a word
            # (provider/pkg/await/await.go Creation) and become the stack's own. So the preflight
            # (the Kubernetes preflight, run by `doctor -s <stack>`) refuses an existing namespace
            # that lacks this stack's labels unless kubernetes.adoptNamespace is true.
            # retain_on_delete: deleting a namespace deletes everything in it, the StatefulSets' volume
            # claims and the retained model claim included. `destroy` removes every object the program
            # made and leaves the namespace with the data claims; `kubectl delete namespace` removes those.
            metadata = {"name": self.namespace_name, "labels": owned_namespace_labels(self.namespace_name, args.stack)}
            self.namespace = k8s.core.v1.Namespace(
                f"{name}-namespace", metadata=metadata,
                opts=pulumi.ResourceOptions(parent=self, provider=args.provider, retain_on_delete=True))
        self.gate = [self.namespace]
        # Keys the checksums on pod templates (HMAC-SHA256): without it a checksum of a Secret is a
        # fast offline guessing oracle for its password, readable by anyone who may read Deployments.
        # Kept in state, so the same content gives the same checksum on every run.
        self.checksum_key = pulumi.Output.secret(random.RandomPassword(
            f"{name}-checksum-key", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)).result)
        self.register_outputs({"namespace": self.namespace_name})

    # ------------------------------------------------------------------ shared interface with DockerHost

    def child_opts(self, parent: pulumi.Resource, *, depends_on: Sequence[pulumi.Resource] = (),
                   renamed_from: tuple[str, str] | None = None, **kw) -> pulumi.ResourceOptions:
        """renamed_from=(old, new): the resource was named `old` before; the alias keeps its identity."""
        deps = list(self.gate) + [d for d in depends_on if d is not None]
        if renamed_from and renamed_from[0] != renamed_from[1]:
            kw["aliases"] = [pulumi.Alias(name=renamed_from[0])]
        return pulumi.ResourceOptions(parent=parent, provider=self.args.provider, depends_on=deps, **kw)

    def connect(self, name: str, flows: Sequence, routes: Mapping[str, tuple[str, int]]) -> dict[str, str]:
        """Default-deny NetworkPolicies that open exactly `flows` (plus the ingress controller to each
        route's service), and the TLS Ingress for the routes that have a host name in config."""
        from components.platforms.kubernetes_network import ClusterNetwork, ClusterNetworkArgs, Flow, merge_flows

        ing = self.kube.ingress
        flows = [*flows, *(Flow(f"ns:{ing.controller_namespace}", svc, (port,)) for svc, port in routes.values())]
        network = ClusterNetwork(name, ClusterNetworkArgs(
            platform=self, flows=merge_flows(flows), ingress=ing,
            routes={k: v for k, v in routes.items() if k in ing.hosts}))
        return network.hosts

    def network_name(self, network: str) -> str:
        return self.namespace_name  # every pod of the namespace shares the cluster network

    def provision_store(self, name: str, parent: pulumi.Resource, store: ModelStoreConfig,
                        owner: str) -> pulumi.Resource | None:
        if store.kind == "pvc":
            return self.shared_claim(name, parent, store.storage_class, store.size_gb)
        if store.kind == "hostPath":
            return None  # the node's directory; the kubelet creates it (hostPath type DirectoryOrCreate)
        raise ValueError(f"modelStores.{name}: a {store.kind} store cannot be held by the namespace {self.name}")

    def prepare_models(self, name: str, parent: pulumi.Resource, *, image: str, models: Sequence[str],
                       mount: MountSpec | None, env: dict[str, str],
                       depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource | None:
        """The shared claim is filled once by a Job; the servers start after it and mount it read-only."""
        if mount is None or not models:
            return None
        from components import host_scripts as scripts

        return self.job(name, ServiceSpec(
            name=name, image=image, cpus=1, memory_gb=2, entrypoint=("/bin/bash", "-c"),
            command=(scripts.ollama_pull_job(list(models)),), env=env, mounts=(mount,), needs_root=True,
        ), parent, depends_on=depends_on)

    def load_models(self, name: str, parent: pulumi.Resource, **_) -> None:
        return None  # servers here never write the store: prepare_models filled it

    # A scheduled run that has not started this long after its time is skipped (and counted as missed), so
    # a controller that was down for hours does not start a backlog; one missed run is still made up.
    SCHEDULE_START_DEADLINE_S = 3600
    JOB_RUN_DIR = "/run/octollm-job"  # an emptyDir every container of a scheduled job's pod shares

    def schedule(self, name: str, parent: pulumi.Resource, job: ScheduledJob,
                 depends_on: Sequence[pulumi.Resource] = ()) -> k8s.batch.v1.CronJob:
        """A CronJob running the script with bash in `job.image`, on `job.cron` (the controller's time zone),
        one run at a time (concurrencyPolicy: Forbid); `job.steps` run before it, in order, as init
        containers, all of them mounting `job.claim` at `job.mount` and sharing an emptyDir at JOB_RUN_DIR.
        Deleting it removes the CronJob and its Jobs, nothing they wrote."""
        if not job.image:
            raise pulumi.RunError(f"{job.name}: a scheduled job on Kubernetes needs the image it runs in")
        mounts = (MountSpec(job.mount, job.claim, kind="claim"),) if job.claim else ()
        pod, _ = self.pod_spec(ServiceSpec(name=job.name, image=job.image, cpus=0.5, memory_gb=0.5,
                                           entrypoint=("/bin/bash", "-c"), command=(job.script,), mounts=mounts,
                                           read_only_rootfs=bool(job.steps)), restart_never=True)
        main = pod["containers"][0]
        if job.steps:
            pod["volumes"].append({"name": "run", "emptyDir": {}})
            main["volumeMounts"].append({"name": "run", "mountPath": self.JOB_RUN_DIR})
            if job.env:
                main["env"] = [{"name": k, "value": v} for k, v in job.env] + main.get("env", [])
            main["name"] = "finish"
            init = []
            for step in job.steps:
                c = {"name": step.name, "image": step.image, "imagePullPolicy": "Always"}
                env = [{"name": k, "value": v} for k, v in (*job.env, *step.env)]
                env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
                        for k, secret, key in step.secret_env]
                if env:
                    c["env"] = env
                c.update({"resources": main["resources"], "securityContext": main["securityContext"],
                          "volumeMounts": main["volumeMounts"], "command": [step.shell, "-c"], "args": [step.script]})
                init.append(c)
            pod = {**pod, "initContainers": init}
        spec: dict = {"schedule": job.cron, "concurrencyPolicy": "Forbid",
                      "startingDeadlineSeconds": self.SCHEDULE_START_DEADLINE_S,
                      "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
                      "jobTemplate": {"spec": {"backoffLimit": 0, "template": self._template(job.name, pod, {})}}}
        return k8s.batch.v1.CronJob(
            name, metadata=self.meta(job.name, annotations={"octollm.io/description": job.description}
                                     if job.description else None),
            spec=spec, opts=self.child_opts(parent, depends_on=depends_on))

    def telemetry(self) -> NodeTelemetry:
        gpu = "dcgm" if self.cfg.gpus and not self.kube.managed_dcgm else None
        return NodeTelemetry(node_metrics=False, gpu_exporter=gpu, log_discovery="kubernetes",
                             namespace=self.namespace_name)

    def agent(self, name: str, spec: ServiceSpec, parent: pulumi.Resource, *, gpu_nodes: bool = False,
              api_read: Sequence[dict] = ()) -> pulumi.Resource:
        if api_read:
            self.service_account(name, spec.service_account or spec.name, parent, list(api_read))
        if gpu_nodes:
            # Without a GPU request the NVIDIA runtime shows a pod the node's GPUs only when asked to:
            # the exporter watches them and leaves every GPU to the workloads.
            spec = dataclasses.replace(spec, gpu=None, env={**spec.env, "NVIDIA_VISIBLE_DEVICES": "all"})
            return self.daemon(name, spec, parent, gpu_nodes=True)
        return self.run(name, spec, parent)

    def image_ref(self, key: str) -> str:
        return (self.args.images or {}).get(key, catalog.IMAGES[key].ref)

    def appdata(self, service: str) -> str:
        """A service's persistent data: a PersistentVolumeClaim of its StatefulSet."""
        return f"{DATA_PREFIX}{service}"

    def ensure_dirs(self, name: str, parent: pulumi.Resource, paths: list[str], owner: str | None = None):
        return None  # volume claims are created with their StatefulSet

    def container_name(self, service: str) -> str:
        return service

    def url(self, service: str, port: int, container_port: int | None = None) -> str:
        """In-cluster address: the Service listens on the container port."""
        return f"http://{service}.{self.namespace_name}.svc.cluster.local:{container_port or port}"

    def meta(self, name: str, labels: dict | None = None, annotations: dict | None = None) -> dict:
        m: dict = {"name": name, "namespace": self.namespace_name, "labels": labels or labels_for(name)}
        if annotations:
            m["annotations"] = annotations
        return m

    def pull_timeout(self) -> dict[str, str]:
        """The await timeout of work that waits on a model download (TIMEOUT_ANNOTATION).

        The annotation rather than customTimeouts: it is part of the object (a preview shows it, and it
        applies to create, update and delete alike). A customTimeouts option would take precedence.
        pulumi.com/skipAwait is no answer: dependants (the inference pods) would start before the pull.
        """
        return {TIMEOUT_ANNOTATION: str(self.args.model_pull_timeout_minutes * 60)}

    def checksum(self, values: Mapping[str, pulumi.Input[str]]) -> pulumi.Output[str]:
        """HMAC-SHA256 of `values` under the stack's checksum key: stable for the same content, and
        revealing nothing about it, so it is a plain (unsecret) value a preview can show changing."""
        def digest(args) -> str:
            key, vals = args
            body = json.dumps(vals, sort_keys=True, separators=(",", ":"))
            return hmac.new(key.encode(), body.encode(), hashlib.sha256).hexdigest()

        return pulumi.Output.unsecret(pulumi.Output.all(self.checksum_key, pulumi.Output.all(**dict(values)))
                                      .apply(digest))

    # ------------------------------------------------------------------ storage

    def shared_claim(self, name: str, parent: pulumi.Resource, storage_class: str, size_gb: int) -> k8s.core.v1.PersistentVolumeClaim:
        return k8s.core.v1.PersistentVolumeClaim(
            f"{name}-claim",
            metadata=self.meta(name),
            spec={"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
                  "resources": {"requests": {"storage": storage_quantity(size_gb)}}},
            # Model weights outlive the stack: never deleted by pulumi destroy or a replacement.
            opts=self.child_opts(parent, protect=True, retain_on_delete=True,
                                 renamed_from=(f"{self.name}-{name}", f"{name}-claim")))

    def service_account(self, res: str, name: str, parent: pulumi.Resource, rules: list[dict]) -> pulumi.Resource:
        """A ServiceAccount with a namespace-scoped Role: the least a pod needs to read the API."""
        def opts(suffix: str, **kw):
            return self.child_opts(parent, renamed_from=(f"{self.name}-{name}-{suffix}", f"{res}-{suffix}"), **kw)

        sa = k8s.core.v1.ServiceAccount(f"{res}-sa", metadata=self.meta(name),
                                        automount_service_account_token=False, opts=opts("sa"))
        role = k8s.rbac.v1.Role(f"{res}-role", metadata=self.meta(name), rules=rules, opts=opts("role"))
        return k8s.rbac.v1.RoleBinding(
            f"{res}-binding", metadata=self.meta(name),
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            subjects=[{"kind": "ServiceAccount", "name": name, "namespace": self.namespace_name}],
            opts=opts("binding", depends_on=[sa, role]))

    # ------------------------------------------------------------------ workloads

    def pod_spec(self, spec: ServiceSpec, *, restart_never: bool = False) -> tuple[dict, list[dict]]:
        """The pod template spec of a service, and the volume claim templates it needs.

        Empty lists and false `omitempty` flags are left out: the API server drops them, so an input
        holding one would differ from what a refresh reads back.
        """
        svc = spec.name
        env = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
        # Secret values live in a Secret and are referenced, never written into the pod spec.
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": f"{svc}-env", "key": k}}}
                for k in sorted(spec.secret_env)]
        resources = {"requests": {"cpu": cpu_quantity(spec.cpus), "memory": memory_quantity(spec.memory_gb)},
                     "limits": {"cpu": cpu_quantity(spec.cpus), "memory": memory_quantity(spec.memory_gb)}}
        volumes, mounts, claims = [], [], []
        for m in spec.mounts:
            if m.kind == "bind" and m.source.startswith(DATA_PREFIX):
                claims.append({"metadata": {"name": "data"}, "spec": {
                    "accessModes": ["ReadWriteOnce"], "storageClassName": self.kube.storage_class,
                    "resources": {"requests": {"storage": storage_quantity(self.kube.data_size_gb)}}}})
                mounts.append({"name": "data", "mountPath": m.target})
            elif m.kind == "claim":
                source: dict = {"claimName": m.source}
                mount: dict = {"name": m.source, "mountPath": m.target}
                if m.read_only:
                    source["readOnly"] = mount["readOnly"] = True
                volumes.append({"name": m.source, "persistentVolumeClaim": source})
                mounts.append(mount)
            else:
                raise pulumi.RunError(f"{svc}: {m.kind} mount of {m.source} has no Kubernetes equivalent")
        if spec.files:
            volumes.append({"name": "config", "configMap": {
                "name": f"{svc}-files", "items": [{"key": _key(f.name), "path": f.name}
                                                  for f in sorted(spec.files, key=lambda f: f.name)]}})
            mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True})
        if spec.shm_size_gb:
            volumes.append({"name": "shm", "emptyDir": {"medium": "Memory",
                                                        "sizeLimit": storage_quantity(spec.shm_size_gb)}})
            mounts.append({"name": "shm", "mountPath": "/dev/shm"})
        security: dict = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                          "readOnlyRootFilesystem": spec.read_only_rootfs}
        pod_security: dict = {"seccompProfile": {"type": "RuntimeDefault"}}
        if not spec.needs_root:
            # Unraid's 99:100 is a host-path convention; on Kubernetes fsGroup owns the volumes, so
            # every pod runs as an unprivileged high UID that cannot collide with a node user.
            security.update({"runAsNonRoot": True, "runAsUser": K8S_UID, "runAsGroup": K8S_UID})
            pod_security["fsGroup"] = K8S_UID
        if spec.read_only_rootfs:
            volumes.append({"name": "tmp", "emptyDir": {}})
            mounts.append({"name": "tmp", "mountPath": "/tmp"})
        container: dict = {"name": svc, "image": spec.image, "imagePullPolicy": "Always"}
        if spec.ports:
            container["ports"] = [{"name": p.name[:15], "containerPort": p.container, "protocol": p.protocol.upper()}
                                  for p in spec.ports]
        if env:
            container["env"] = env
        container.update({"resources": resources, "securityContext": security})
        if mounts:
            container["volumeMounts"] = mounts
        if spec.entrypoint:
            container["command"] = list(spec.entrypoint)
        if spec.command:
            container["args"] = list(spec.command)
        if spec.health is not None:
            h = spec.health
            container["readinessProbe"] = probe(h)
            container["livenessProbe"] = probe(h, failures=max(h.retries, 3))
            if h.start_period_s >= 60:
                # Slow starts (model loads) get a startup probe, so liveness does not kill them meanwhile.
                container["startupProbe"] = probe(h, failures=max(1, h.start_period_s // h.interval_s))
        hook = start_hook(spec)
        if hook is not None:
            container["lifecycle"] = {"postStart": {"exec": {"command": hook}}}
        # stop_signal has no Kubernetes field before 1.33 (alpha): the runtime sends the image's
        # STOPSIGNAL, which is the signal the spec asks for where it names one (postgres: SIGINT).
        pod: dict = {"containers": [container], "securityContext": pod_security,
                     "automountServiceAccountToken": spec.service_account is not None,
                     "terminationGracePeriodSeconds": spec.stop_grace_s}
        if volumes:
            pod["volumes"] = volumes
        if spec.service_account:
            pod["serviceAccountName"] = spec.service_account
        if restart_never:
            pod["restartPolicy"] = "Never"
        if spec.gpu:
            count = spec.gpu.count if spec.gpu.count and spec.gpu.count > 0 else 1
            resources["limits"][GPU_RESOURCE] = decimal_quantity(count)
            resources["requests"][GPU_RESOURCE] = decimal_quantity(count)
            pod["nodeSelector"] = {GKE_ACCELERATOR: self.kube.accelerator}
            pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        return pod, claims

    def _config_objects(self, name: str, spec: ServiceSpec, parent: pulumi.Resource) -> tuple[list[pulumi.Resource], dict]:
        """The Secret and ConfigMap a service reads, and the pod-template annotations that roll its pods
        when either changes (a Secret or ConfigMap update alone restarts nothing)."""
        svc = spec.name
        made: list[pulumi.Resource] = []
        annotations: dict = {}
        if spec.secret_env:
            values = dict(sorted(spec.secret_env.items()))
            made.append(k8s.core.v1.Secret(
                f"{name}-env", metadata=self.meta(f"{svc}-env", labels_for(svc)), type="Opaque",
                # `data`, base64, as the provider stores it (it rewrites stringData into data).
                data={k: pulumi.Output.secret(v).apply(lambda s: base64.b64encode(s.encode()).decode())
                      for k, v in values.items()},
                opts=self.child_opts(parent, renamed_from=(f"{self.name}-{svc}-env", f"{name}-env"))))
            annotations[ENV_CHECKSUM] = self.checksum(values)
        if spec.files:
            contents = {_key(f.name): f.content for f in sorted(spec.files, key=lambda f: f.name)}
            made.append(k8s.core.v1.ConfigMap(
                f"{name}-files", metadata=self.meta(f"{svc}-files", labels_for(svc)), data=contents,
                opts=self.child_opts(parent, renamed_from=(f"{self.name}-{svc}-files", f"{name}-files"))))
            annotations[FILES_CHECKSUM] = self.checksum(contents)
        return made, annotations

    @staticmethod
    def _template(svc: str, pod: dict, annotations: dict) -> dict:
        metadata: dict = {"labels": labels_for(svc)}
        if annotations:
            metadata["annotations"] = annotations
        return {"metadata": metadata, "spec": pod}

    def run(self, name: str, spec: ServiceSpec, parent: pulumi.Resource,
            depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource:
        svc = spec.name
        old = f"{self.name}-{svc}"
        made, checksums = self._config_objects(name, spec, parent)
        deps = list(depends_on) + made
        pod, claims = self.pod_spec(spec)
        template = self._template(svc, pod, checksums)
        # A GPU workload waits for a GPU node (scaled up from zero, driver installed), a large image
        # and, for engines that download their own weights, the model: longer than the 10 minutes
        # the provider waits by default.
        meta = self.meta(svc, annotations=self.pull_timeout() if spec.gpu else None)
        if spec.stateful or claims:
            body: dict = {"serviceName": svc, "replicas": 1, "selector": {"matchLabels": {NAME_LABEL: svc}},
                          "template": template}
            if claims:
                body["volumeClaimTemplates"] = claims
            workload = k8s.apps.v1.StatefulSet(name, metadata=meta, spec=body,
                                               opts=self.child_opts(parent, depends_on=deps, renamed_from=(old, name)))
        else:
            strategy = {"type": "Recreate"} if spec.gpu else {
                "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
            # A GPU Deployment is Recreate: a rolling update would wait forever for the GPU
            # the old pod still holds.
            body = {"selector": {"matchLabels": {NAME_LABEL: svc}}, "strategy": strategy, "template": template}
            if not spec.autoscale:
                body = {"replicas": 1, **body}
            # An HPA owns the replica count of the Deployments it targets, so they carry no
            # spec.replicas. Server-side apply (how pulumi-kubernetes updates) leaves a field it is not
            # given to whoever manages it: once the HPA has scaled, its controller owns spec.replicas
            # and an `up` neither resets it nor conflicts with it (setting it did both: drift on every
            # refresh, and an apply conflict with kube-controller-manager's "scale" subresource). A new
            # Deployment starts at the API server's default of 1 and the HPA raises it to minReplicas
            # within one sync (15 s). Upgrading a Deployment whose spec.replicas the program still owns
            # (the HPA never changed it) drops it back to that default once, until the HPA acts.
            workload = k8s.apps.v1.Deployment(name, metadata=meta, spec=body,
                                              opts=self.child_opts(parent, depends_on=deps, renamed_from=(old, name)))
        if spec.ports:
            self._service(name, svc, spec, parent)
        if spec.autoscale:
            lo, hi, cpu = spec.autoscale
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-hpa", metadata=self.meta(svc),
                spec={"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc},
                      "minReplicas": lo, "maxReplicas": hi,
                      "metrics": [{"type": "Resource", "resource": {
                          "name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]},
                opts=self.child_opts(parent, renamed_from=(f"{old}-hpa", f"{name}-hpa")))
            k8s.policy.v1.PodDisruptionBudget(
                f"{name}-pdb", metadata=self.meta(svc),
                spec={"minAvailable": max(1, lo - 1), "selector": {"matchLabels": {NAME_LABEL: svc}}},
                opts=self.child_opts(parent, renamed_from=(f"{old}-pdb", f"{name}-pdb")))
        return workload

    def _service(self, name: str, svc: str, spec: ServiceSpec, parent: pulumi.Resource) -> k8s.core.v1.Service:
        return k8s.core.v1.Service(
            f"{name}-service", metadata=self.meta(svc),
            spec={"selector": {NAME_LABEL: svc}, "ports": [
                {"name": p.name[:15], "port": p.container, "targetPort": p.container,
                 "protocol": p.protocol.upper()} for p in spec.ports]},
            opts=self.child_opts(parent, renamed_from=(f"{self.name}-{svc}-service", f"{name}-service")))

    def daemon(self, name: str, spec: ServiceSpec, parent: pulumi.Resource,
               gpu_nodes: bool = False) -> k8s.apps.v1.DaemonSet:
        """One pod per node; with gpu_nodes, per GPU node, watching the GPUs without claiming one."""
        svc = spec.name
        made, checksums = self._config_objects(name, spec, parent)
        pod, _ = self.pod_spec(spec)
        if gpu_nodes:
            pod["nodeSelector"] = {GKE_ACCELERATOR: self.kube.accelerator}
            pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        # On the GPU nodes a pod waits for a node scaled up from zero and its driver install, as the GPU
        # workloads do: the same await timeout.
        ds = k8s.apps.v1.DaemonSet(
            name, metadata=self.meta(svc, annotations=self.pull_timeout() if gpu_nodes else None),
            spec={"selector": {"matchLabels": {NAME_LABEL: svc}}, "template": self._template(svc, pod, checksums)},
            opts=self.child_opts(parent, depends_on=made, renamed_from=(f"{self.name}-{svc}", name)))
        if spec.ports:
            self._service(name, svc, spec, parent)
        return ds

    def job(self, name: str, spec: ServiceSpec, parent: pulumi.Resource,
            depends_on: Sequence[pulumi.Resource] = ()) -> k8s.batch.v1.Job:
        """A run-to-completion pod. Jobs on this platform fill model stores, so they get the pull timeout."""
        made, checksums = self._config_objects(name, spec, parent)
        pod, _ = self.pod_spec(spec, restart_never=True)
        pod["containers"][0].pop("readinessProbe", None)
        pod["containers"][0].pop("livenessProbe", None)
        pod["containers"][0].pop("startupProbe", None)
        return k8s.batch.v1.Job(
            name, metadata=self.meta(name, labels_for(spec.name), self.pull_timeout()),
            spec={"backoffLimit": 3, "template": self._template(spec.name, pod, checksums)},
            # pulumi-kubernetes waits for the Job to complete before dependants are created, for up to
            # the pull timeout (the Job awaiter: provider/pkg/await/job.go).
            opts=self.child_opts(parent, depends_on=[*depends_on, *made], delete_before_replace=True,
                                 renamed_from=(f"{self.name}-{name}", name)))
