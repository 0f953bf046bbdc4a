"""What the kubelet derives from a pod spec: environment, /etc/hosts, resolv.conf."""
from __future__ import annotations

import base64
import re
from typing import Callable

CLUSTER_DNS = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known names replaced, $$ escapes, unknown kept."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR_REF.sub(sub, text)


def service_env(services: list[dict]) -> dict[str, str]:
    """Docker-links style variables for the services of the pod's namespace."""
    env: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec", {})
        ip = spec.get("clusterIP")
        if not ip or ip == "None" or not spec.get("ports"):
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        first = spec["ports"][0]
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(first["port"])
        for p in spec["ports"]:
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = str(p["port"])
            proto = p.get("protocol", "TCP")
            base = f"{name}_PORT_{p['port']}_{proto}"
            env[base] = f"{proto.lower()}://{ip}:{p['port']}"
            env[f"{base}_PROTO"], env[f"{base}_PORT"], env[f"{base}_ADDR"] = proto.lower(), str(p["port"]), ip
        env[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
    return env


def _field_ref(pod: dict, path: str) -> str:
    m = re.match(r"metadata\.(labels|annotations)\['(.+)'\]$", path)
    if m:
        return (pod["metadata"].get(m.group(1)) or {}).get(m.group(2), "")
    table = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": pod["metadata"].get("namespace", ""),
             "metadata.uid": pod["metadata"].get("uid", ""), "spec.nodeName": pod["spec"].get("nodeName", ""),
             "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
             "status.podIP": pod.get("status", {}).get("podIP", ""),
             "status.hostIP": pod.get("status", {}).get("hostIP", "")}
    return table.get(path, "")


Getter = Callable[[str, str], dict | None]  # (plural, name) -> object in the pod's namespace


def container_env(pod: dict, container: dict, services: list[dict], get: Getter,
                  master: dict | None = None) -> dict[str, str]:
    """``services``: those of the pod's namespace; ``master``: default/kubernetes, whose
    KUBERNETES_SERVICE_* variables every pod gets, as the kubelet does."""
    env: dict[str, str] = {}
    if master is not None:
        env.update({k: v for k, v in service_env([master]).items() if k.startswith("KUBERNETES_")})
    if pod["spec"].get("enableServiceLinks", True):
        env.update(service_env(services))
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if src.get("configMapRef"):
            cm = get("configmaps", src["configMapRef"]["name"]) or {}
            env.update({prefix + k: v for k, v in (cm.get("data") or {}).items()})
        if src.get("secretRef"):
            sec = get("secrets", src["secretRef"]["name"]) or {}
            env.update({prefix + k: base64.b64decode(v).decode(errors="replace")
                        for k, v in (sec.get("data") or {}).items()})
    for e in container.get("env") or []:
        name = e["name"]
        if "value" in e:
            env[name] = expand(str(e["value"]), env)
            continue
        vf = e.get("valueFrom") or {}
        if vf.get("fieldRef"):
            env[name] = _field_ref(pod, vf["fieldRef"]["fieldPath"])
        elif vf.get("configMapKeyRef"):
            ref = vf["configMapKeyRef"]
            env[name] = ((get("configmaps", ref["name"]) or {}).get("data") or {}).get(ref["key"], "")
        elif vf.get("secretKeyRef"):
            ref = vf["secretKeyRef"]
            raw = ((get("secrets", ref["name"]) or {}).get("data") or {}).get(ref["key"], "")
            env[name] = base64.b64decode(raw).decode(errors="replace") if raw else ""
        else:
            env[name] = ""
    ports = ",".join(f"{p['containerPort']}/{p.get('protocol', 'TCP')}" for p in container.get("ports") or [])
    env.setdefault("TRELLIS_CONTAINER_PORTS", ports)
    return env


def hosts_file(pod: dict, pod_ip: str) -> str:
    name = pod["spec"].get("hostname") or pod["metadata"]["name"]
    names = [name]
    if pod["spec"].get("subdomain"):
        ns = pod["metadata"]["namespace"]
        names.insert(0, f"{name}.{pod['spec']['subdomain']}.{ns}.svc.{CLUSTER_DOMAIN}")
    lines = ["# Kubernetes-managed hosts file (trellis lab).", "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet", "fe00::1\tip6-allnodes",
             "fe00::2\tip6-allrouters", f"{pod_ip}\t{' '.join(names)}"]
    for ha in pod["spec"].get("hostAliases") or []:
        lines.append(f"{ha['ip']}\t{' '.join(ha.get('hostnames') or [])}")
    return "\n".join(lines) + "\n"


def resolv_conf(pod: dict, node_resolv: str = "") -> str:
    policy = pod["spec"].get("dnsPolicy", "ClusterFirst")
    host_net = pod["spec"].get("hostNetwork", False)
    dns_cfg = pod["spec"].get("dnsConfig") or {}
    if policy == "Default" or (host_net and policy == "ClusterFirst"):
        base = node_resolv
    elif policy == "None":
        base = ""
    else:
        ns = pod["metadata"]["namespace"]
        base = (f"search {ns}.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
                f"nameserver {CLUSTER_DNS}\noptions ndots:5\n")
    extra = "".join(f"nameserver {s}\n" for s in dns_cfg.get("nameservers") or [])
    if dns_cfg.get("searches"):
        extra += "search " + " ".join(dns_cfg["searches"]) + "\n"
    for o in dns_cfg.get("options") or []:
        extra += f"options {o['name']}" + (f":{o['value']}" if o.get("value") else "") + "\n"
    return base + extra
