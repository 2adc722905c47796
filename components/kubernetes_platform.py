"""Kubernetes platform: the same ServiceSpecs become Deployments/StatefulSets, Services, Secrets,
ConfigMaps, PVCs, HPAs and PDBs in one namespace, behind a default-deny NetworkPolicy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import pulumi
import pulumi_kubernetes as k8s

from . import catalog
from .config import HostConfig, KubernetesConfig
from .workload import CONFIG_MOUNT, HealthSpec, ServiceSpec

NAME_LABEL = "app.kubernetes.io/name"
GPU_RESOURCE = "nvidia.com/gpu"
GKE_ACCELERATOR = "cloud.google.com/gke-accelerator"
DATA_PREFIX = "pvc://"
K8S_UID = 10001


def labels_for(service: str) -> dict[str, str]:
    return {NAME_LABEL: service, "app.kubernetes.io/part-of": "octollm", "app.kubernetes.io/managed-by": "pulumi"}


def _key(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _mem(gb: float) -> str:
    return f"{int(round(gb * 1024))}Mi"


def _cpu(cpus: float) -> str:
    return f"{int(round(cpus * 1000))}m"


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


class KubernetesPlatform(pulumi.ComponentResource):
    """One namespace: the place every component's workloads land on the kubernetes platform."""

    kind = "kubernetes"
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
        self.namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={"name": self.namespace_name, "labels": {"app.kubernetes.io/part-of": "octollm",
                                                             "kubernetes.io/metadata.name": self.namespace_name}},
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider))
        self.gate = [self.namespace]
        self.register_outputs({"namespace": self.namespace_name})

    # ------------------------------------------------------------------ shared interface with DockerHost

    def child_opts(self, parent: pulumi.Resource, *, depends_on: Sequence[pulumi.Resource] = (),
                   **kw) -> pulumi.ResourceOptions:
        deps = list(self.gate) + [d for d in depends_on if d is not None]
        return pulumi.ResourceOptions(parent=parent, provider=self.args.provider, depends_on=deps, **kw)

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

    # ------------------------------------------------------------------ storage

    def shared_claim(self, name: str, parent: pulumi.Resource, storage_class: str, size_gb: int) -> k8s.core.v1.PersistentVolumeClaim:
        return k8s.core.v1.PersistentVolumeClaim(
            f"{self.name}-{name}",
            metadata=self.meta(name),
            spec={"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
                  "resources": {"requests": {"storage": f"{size_gb}Gi"}}},
            # Model weights outlive the stack: never deleted by pulumi destroy or a replacement.
            opts=self.child_opts(parent, protect=True, retain_on_delete=True))

    def service_account(self, name: str, parent: pulumi.Resource, rules: list[dict]) -> pulumi.Resource:
        """A ServiceAccount with a namespace-scoped Role: the least a pod needs to read the API."""
        sa = k8s.core.v1.ServiceAccount(f"{self.name}-{name}-sa", metadata=self.meta(name),
                                        automount_service_account_token=False, opts=self.child_opts(parent))
        role = k8s.rbac.v1.Role(f"{self.name}-{name}-role", metadata=self.meta(name), rules=rules,
                                opts=self.child_opts(parent))
        return k8s.rbac.v1.RoleBinding(
            f"{self.name}-{name}-binding", metadata=self.meta(name),
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            subjects=[{"kind": "ServiceAccount", "name": name, "namespace": self.namespace_name}],
            opts=self.child_opts(parent, depends_on=[sa, role]))

    # ------------------------------------------------------------------ workloads

    def pod_spec(self, spec: ServiceSpec, *, restart_never: bool = False) -> tuple[dict, list[dict]]:
        """The pod template spec of a service, and the volume claim templates it needs."""
        svc = spec.name
        env = [{"name": k, "value": v} for k, v in sorted(spec.env.items())]
        # Secret values live in a Secret and are referenced, never written into the pod spec.
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": f"{svc}-env", "key": k}}}
                for k in sorted(spec.secret_env)]
        resources = {"requests": {"cpu": _cpu(spec.cpus), "memory": _mem(spec.memory_gb)},
                     "limits": {"cpu": _cpu(spec.cpus), "memory": _mem(spec.memory_gb)}}
        volumes, mounts, claims = [], [], []
        for m in spec.mounts:
            if m.kind == "bind" and m.source.startswith(DATA_PREFIX):
                claims.append({"metadata": {"name": "data"}, "spec": {
                    "accessModes": ["ReadWriteOnce"], "storageClassName": self.kube.storage_class,
                    "resources": {"requests": {"storage": f"{self.kube.data_size_gb}Gi"}}}})
                mounts.append({"name": "data", "mountPath": m.target})
            elif m.kind == "claim":
                volumes.append({"name": m.source, "persistentVolumeClaim": {"claimName": m.source,
                                                                            "readOnly": m.read_only}})
                mounts.append({"name": m.source, "mountPath": m.target, "readOnly": m.read_only})
            else:
                raise pulumi.RunError(f"{svc}: {m.kind} mount of {m.source} has no Kubernetes equivalent")
        if spec.files:
            volumes.append({"name": "config", "configMap": {
                "name": f"{svc}-files", "items": [{"key": _key(f.name), "path": f.name}
                                                  for f in sorted(spec.files, key=lambda f: f.name)]}})
            mounts.append({"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True})
        if spec.shm_size_gb:
            volumes.append({"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": f"{spec.shm_size_gb}Gi"}})
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
        container: dict = {
            "name": svc, "image": spec.image, "imagePullPolicy": "Always",
            "ports": [{"name": p.name[:15], "containerPort": p.container, "protocol": p.protocol.upper()}
                      for p in spec.ports],
            "env": env, "resources": resources, "securityContext": security, "volumeMounts": mounts,
        }
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
        pod: dict = {"containers": [container], "securityContext": pod_security,
                     "automountServiceAccountToken": spec.service_account is not None, "volumes": volumes}
        if spec.service_account:
            pod["serviceAccountName"] = spec.service_account
        if restart_never:
            pod["restartPolicy"] = "Never"
        if spec.gpu:
            count = spec.gpu.count if spec.gpu.count and spec.gpu.count > 0 else 1
            resources["limits"][GPU_RESOURCE] = str(count)
            resources["requests"][GPU_RESOURCE] = str(count)
            pod["nodeSelector"] = {GKE_ACCELERATOR: self.kube.accelerator}
            pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        return pod, claims

    def run(self, spec: ServiceSpec, parent: pulumi.Resource, depends_on: Sequence[pulumi.Resource] = ()):
        svc = spec.name
        deps = list(depends_on)
        if spec.secret_env:
            deps.append(k8s.core.v1.Secret(
                f"{self.name}-{svc}-env", metadata=self.meta(f"{svc}-env", labels_for(svc)), type="Opaque",
                string_data={k: pulumi.Output.secret(v) for k, v in sorted(spec.secret_env.items())},
                opts=self.child_opts(parent)))
        if spec.files:
            deps.append(k8s.core.v1.ConfigMap(
                f"{self.name}-{svc}-files", metadata=self.meta(f"{svc}-files", labels_for(svc)),
                data={_key(f.name): f.content for f in sorted(spec.files, key=lambda f: f.name)},
                opts=self.child_opts(parent)))
        pod, claims = self.pod_spec(spec)
        labels = labels_for(svc)
        template = {"metadata": {"labels": labels}, "spec": pod}
        replicas = spec.autoscale[0] if spec.autoscale else 1
        if spec.stateful or claims:
            workload = k8s.apps.v1.StatefulSet(
                f"{self.name}-{svc}", metadata=self.meta(svc),
                spec={"serviceName": svc, "replicas": 1, "selector": {"matchLabels": {NAME_LABEL: svc}},
                      "template": template, "volumeClaimTemplates": claims},
                opts=self.child_opts(parent, depends_on=deps))
        else:
            strategy = {"type": "Recreate"} if spec.gpu else {
                "type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
            workload = k8s.apps.v1.Deployment(
                f"{self.name}-{svc}", metadata=self.meta(svc),
                # A GPU Deployment is Recreate: a rolling update would wait forever for the GPU
                # the old pod still holds.
                spec={"replicas": replicas, "selector": {"matchLabels": {NAME_LABEL: svc}},
                      "strategy": strategy, "template": template},
                opts=self.child_opts(parent, depends_on=deps))
        if spec.ports:
            k8s.core.v1.Service(
                f"{self.name}-{svc}-service", metadata=self.meta(svc),
                spec={"selector": {NAME_LABEL: svc}, "ports": [
                    {"name": p.name[:15], "port": p.container, "targetPort": p.container,
                     "protocol": p.protocol.upper()} for p in spec.ports]},
                opts=self.child_opts(parent))
        if spec.autoscale:
            lo, hi, cpu = spec.autoscale
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{self.name}-{svc}-hpa", metadata=self.meta(svc),
                spec={"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": svc},
                      "minReplicas": lo, "maxReplicas": hi,
                      "metrics": [{"type": "Resource", "resource": {
                          "name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}}]},
                opts=self.child_opts(parent))
            k8s.policy.v1.PodDisruptionBudget(
                f"{self.name}-{svc}-pdb", metadata=self.meta(svc),
                spec={"minAvailable": max(1, lo - 1), "selector": {"matchLabels": {NAME_LABEL: svc}}},
                opts=self.child_opts(parent))
        return workload

    def daemon(self, spec: ServiceSpec, parent: pulumi.Resource, gpu_nodes: bool = False) -> k8s.apps.v1.DaemonSet:
        """One pod per node; with gpu_nodes, per GPU node, watching the GPUs without claiming one."""
        svc = spec.name
        pod, _ = self.pod_spec(spec)
        if gpu_nodes:
            pod["nodeSelector"] = {GKE_ACCELERATOR: self.kube.accelerator}
            pod["tolerations"] = [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
        ds = k8s.apps.v1.DaemonSet(
            f"{self.name}-{svc}", metadata=self.meta(svc),
            spec={"selector": {"matchLabels": {NAME_LABEL: svc}},
                  "template": {"metadata": {"labels": labels_for(svc)}, "spec": pod}},
            opts=self.child_opts(parent))
        k8s.core.v1.Service(
            f"{self.name}-{svc}-service", metadata=self.meta(svc),
            spec={"selector": {NAME_LABEL: svc}, "ports": [
                {"name": p.name[:15], "port": p.container, "targetPort": p.container} for p in spec.ports]},
            opts=self.child_opts(parent))
        return ds

    def job(self, name: str, spec: ServiceSpec, parent: pulumi.Resource,
            depends_on: Sequence[pulumi.Resource] = ()) -> k8s.batch.v1.Job:
        pod, _ = self.pod_spec(spec, restart_never=True)
        pod["containers"][0].pop("readinessProbe", None)
        pod["containers"][0].pop("livenessProbe", None)
        pod["containers"][0].pop("startupProbe", None)
        return k8s.batch.v1.Job(
            f"{self.name}-{name}", metadata=self.meta(name, labels_for(spec.name)),
            spec={"backoffLimit": 3,
                  "template": {"metadata": {"labels": labels_for(spec.name)}, "spec": pod}},
            # pulumi-kubernetes waits for the Job to complete before dependants are created.
            opts=self.child_opts(parent, depends_on=depends_on, delete_before_replace=True))
