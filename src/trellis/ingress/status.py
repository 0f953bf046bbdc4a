"""What the ingress controller writes back: Ingress status addresses and Warning Events."""
from __future__ import annotations

import datetime
import hashlib
import logging

from trellis.ingress.model import Problem
from trellis.kube.client import ApiError, KubeClient

log = logging.getLogger("trellis.ingress")
COMPONENT = "trellis-ingress"
API_VERSIONS = {"Ingress": "networking.k8s.io/v1", "Secret": "v1"}


def lb_ips(svc: dict | None) -> list[str]:
    """The addresses a LoadBalancer Service was given (status.loadBalancer.ingress[].ip)."""
    ing = (((svc or {}).get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ing if i.get("ip")]


def sync_status(client: KubeClient, ingresses: list[dict], served: set[str], ips: list[str]) -> int:
    """status.loadBalancer.ingress[].ip = ``ips`` on every served Ingress; removed from those
    no longer served that still carry one of our addresses. Returns how many were patched."""
    want = [{"ip": ip} for ip in ips]
    n = 0
    for ing in ingresses:
        md = ing["metadata"]
        key = f"{md.get('namespace')}/{md['name']}"
        have = lb_ips(ing)  # an Ingress' status has the same shape as a Service's
        if key in served:
            if have == ips:
                continue
            body = {"status": {"loadBalancer": {"ingress": want}}}
        elif have and set(have) & set(ips or have):
            body = {"status": {"loadBalancer": {"ingress": None}}}
        else:
            continue
        try:
            client.patch("networking.k8s.io/v1", "ingresses", md["name"], body, md.get("namespace"), sub="status")
            n += 1
        except ApiError as e:
            if e.code != 404:
                raise
    return n


class EventRecorder:
    """Warning Events for Problems, each (object, reason, message) once per controller run."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.sent: set[tuple] = set()

    def record(self, p: Problem, uid: str = "") -> bool:
        key = (p.kind, p.namespace, p.name, p.reason, p.message)
        if key in self.sent:
            return False
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:10]
        ev = {"apiVersion": "v1", "kind": "Event",
              "metadata": {"name": f"{p.name}.{digest}", "namespace": p.namespace},
              "involvedObject": {"kind": p.kind, "apiVersion": API_VERSIONS.get(p.kind, "v1"), "name": p.name,
                                 "namespace": p.namespace, "uid": uid},
              "reason": p.reason, "message": p.message, "type": "Warning", "count": 1,
              "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
              "firstTimestamp": now, "lastTimestamp": now}
        try:
            self.client.create("v1", "events", ev, p.namespace)
        except ApiError as e:
            if e.code != 409:
                log.warning("event for %s %s/%s: %s", p.kind, p.namespace, p.name, e)
                return False
        log.warning("%s %s/%s: %s: %s", p.kind, p.namespace, p.name, p.reason, p.message)
        self.sent.add(key)
        return True
