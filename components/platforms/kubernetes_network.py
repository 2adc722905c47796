"""Ingress with TLS, and NetworkPolicies generated from the flows the services actually use."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.config.schema import IngressConfig
from components.platforms.kubernetes import NAME_LABEL, KubernetesPlatform
from components.platforms.workload import EVERY_POD, Flow

def _peer(src: str) -> dict:
    if src == EVERY_POD:
        return {"podSelector": {}}
    if src.startswith("ns:"):
        return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": src[3:]}}}
    return {"podSelector": {"matchLabels": {NAME_LABEL: src}}}


def _ports(ports: tuple[int, ...]) -> list[dict]:
    return [{"protocol": "TCP", "port": p} for p in sorted(set(ports))]


def policy_manifests(flows: list[Flow]) -> dict[str, dict]:
    """name -> NetworkPolicy spec: default deny, DNS, one ingress policy per destination, one egress per source."""
    out: dict[str, dict] = {
        "default-deny": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        "allow-dns": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]},
    }
    by_dst: dict[str, list[Flow]] = {}
    by_src: dict[str, list[Flow]] = {}
    for f in flows:
        if f.dst != "world":
            by_dst.setdefault(f.dst, []).append(f)
        if f.src != EVERY_POD and not f.src.startswith("ns:"):
            by_src.setdefault(f.src, []).append(f)
    for dst, fs in sorted(by_dst.items()):
        rules = [{"from": [_peer(f.src)], "ports": _ports(f.ports)} for f in sorted(fs, key=lambda f: f.src)]
        out[f"ingress-{dst}"] = {"podSelector": {"matchLabels": {NAME_LABEL: dst}},
                                 "policyTypes": ["Ingress"], "ingress": rules}
    for src, fs in sorted(by_src.items()):
        rules = []
        for f in sorted(fs, key=lambda f: (f.dst, f.ports)):
            if f.dst == "world":
                rules.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _ports(f.ports)})
            else:
                rules.append({"to": [{"podSelector": {"matchLabels": {NAME_LABEL: f.dst}}}], "ports": _ports(f.ports)})
        out[f"egress-{src}"] = {"podSelector": {"matchLabels": {NAME_LABEL: src}}, "policyTypes": ["Egress"],
                                "egress": rules}
    # Destinations open to every pod (the LLM endpoint) need a matching egress rule for every pod.
    shared = [f for f in flows if f.src == EVERY_POD and f.dst != "world"]
    if shared:
        out["egress-shared"] = {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
            {"to": [{"podSelector": {"matchLabels": {NAME_LABEL: f.dst}}}], "ports": _ports(f.ports)}
            for f in sorted(shared, key=lambda f: f.dst)]}
    return out


def merge_flows(flows: list[Flow]) -> list[Flow]:
    """One flow per (source, destination), ports merged; none for what is already open to every pod."""
    merged: dict[tuple[str, str], set[int]] = {}
    for f in flows:
        merged.setdefault((f.src, f.dst), set()).update(f.ports)
    for (s, d), p in merged.items():
        if s != EVERY_POD and (EVERY_POD, d) in merged:
            p -= merged[(EVERY_POD, d)]
    return [Flow(s, d, tuple(sorted(p))) for (s, d), p in sorted(merged.items()) if p]


@dataclass
class ClusterNetworkArgs:
    platform: KubernetesPlatform
    flows: list[Flow]
    ingress: IngressConfig
    routes: dict[str, tuple[str, int]]  # ingress host key -> (service, port)


class ClusterNetwork(pulumi.ComponentResource):
    hosts: dict[str, str]

    def __init__(self, name: str, args: ClusterNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("octollm:index:ClusterNetwork", name, None, opts)
        p, ing = args.platform, args.ingress
        for pname, spec in policy_manifests(args.flows).items():
            k8s.networking.v1.NetworkPolicy(f"{name}-{pname}", metadata=p.meta(pname, {"app.kubernetes.io/part-of": "octollm"}),
                                            spec=spec, opts=p.child_opts(self))
        rules, tls_hosts = [], []
        for key, (service, port) in sorted(args.routes.items()):
            host = ing.hosts[key]
            tls_hosts.append(host)
            rules.append({"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {
                "service": {"name": service, "port": {"number": port}}}}]}})
        k8s.networking.v1.Ingress(
            f"{name}-ingress",
            metadata=p.meta("octollm", {"app.kubernetes.io/part-of": "octollm"},
                            {"cert-manager.io/cluster-issuer": ing.issuer}),
            spec={"ingressClassName": ing.class_name, "rules": rules,
                  "tls": [{"hosts": tls_hosts, "secretName": "octollm-tls"}]},
            opts=p.child_opts(self))
        self.hosts = {key: f"https://{ing.hosts[key]}" for key in sorted(args.routes)}
        self.register_outputs({"hosts": self.hosts})
