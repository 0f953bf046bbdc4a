"""Builders of Ingress-related Kubernetes objects for the ingress tests."""
from __future__ import annotations

from trellis.ingress.model import CONTROLLER_NAME, DEFAULT_CLASS_ANNOTATION


def ingress_class(name: str = "trellis", default: bool = True, controller: str = CONTROLLER_NAME) -> dict:
    ann = {DEFAULT_CLASS_ANNOTATION: "true"} if default else {}
    return {"metadata": {"name": name, "annotations": ann, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"controller": controller}}


def backend(svc: str, port: int | str = 80) -> dict:
    return {"service": {"name": svc, "port": {"number": port} if isinstance(port, int) else {"name": port}}}


def path(p: str, svc: str, ptype: str = "Prefix", port: int | str = 80) -> dict:
    return {"path": p, "pathType": ptype, "backend": backend(svc, port)}


def ingress(name: str, rules: list[tuple[str, list[dict]]] = (), default: dict | None = None,
            created: str = "2024-01-01T00:00:00Z", ns: str = "default", cls: str | None = None,
            tls: list[dict] | None = None, annotations: dict | None = None) -> dict:
    spec: dict = {"rules": [({"host": h} if h else {}) | {"http": {"paths": ps}} for h, ps in rules]}
    if default:
        spec["defaultBackend"] = default
    if cls:
        spec["ingressClassName"] = cls
    if tls:
        spec["tls"] = tls
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created, "uid": f"uid-{name}",
                         "annotations": annotations or {}}, "spec": spec}


def service(name: str, ports: list[tuple[str, int, int]], ns: str = "default") -> dict:
    return {"metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": "10.96.0.50",
                     "ports": [{"name": n, "port": p, "targetPort": t, "protocol": "TCP"} for n, p, t in ports]}}


def slice_(svc: str, ports: list[tuple[str, int]], addrs: list[tuple[str, bool]], ns: str = "default") -> dict:
    return {"metadata": {"name": f"{svc}-x", "namespace": ns, "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": n, "port": p, "protocol": "TCP"} for n, p in ports],
            "endpoints": [{"addresses": [a], "conditions": {"ready": r}} for a, r in addrs]}
