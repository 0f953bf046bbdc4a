"""The lab's EndpointSlice controller (on a real cluster kube-controller-manager runs it).

For every Service with a selector it keeps the slices labelled
``kubernetes.io/service-name=<svc>`` and ``endpointslice.kubernetes.io/managed-by:
endpointslice-controller.k8s.io`` equal to the selected pods, as upstream does:

* one endpoint per pod with an IP (pods that Succeeded or Failed are left out);
* conditions: ``serving`` = the pod is Ready, ``terminating`` = it is being
  deleted, ``ready`` = serving and not terminating, or always true with
  ``publishNotReadyAddresses``;
* a named targetPort is resolved per pod against its containers' port names, so
  pods that name a port differently land in different slices; a pod lacking
  the name is left out of that port;
* at most 100 endpoints per slice; a service with no endpoints keeps one empty
  placeholder slice; ``hostname`` is set when the pod's hostname and subdomain
  (= the service name) say so.

Services without a selector are left alone: their slices are the user's.
"""
from __future__ import annotations

import logging

from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer, Reconciler, obj_key
from trellis.kube.selectors import labels_match
from trellis.lab.workloads import pod_ready

log = logging.getLogger("trellis.lab.endpointslices")
SERVICE_LABEL = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CONTROLLER = "endpointslice-controller.k8s.io"
MAX_PER_SLICE = 100


def resolve_port(pod: dict, target) -> int | None:
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target:
                return int(p["containerPort"])
    return None


def endpoint_of(pod: dict, svc: dict) -> dict:
    serving = pod_ready(pod)
    terminating = bool(pod["metadata"].get("deletionTimestamp"))
    ready = True if svc["spec"].get("publishNotReadyAddresses") else (serving and not terminating)
    ep = {"addresses": [pod["status"]["podIP"]],
          "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
          "targetRef": {"kind": "Pod", "namespace": pod["metadata"]["namespace"],
                        "name": pod["metadata"]["name"], "uid": pod["metadata"].get("uid", "")}}
    if pod["spec"].get("nodeName"):
        ep["nodeName"] = pod["spec"]["nodeName"]
    if pod["spec"].get("hostname") and pod["spec"].get("subdomain") == svc["metadata"]["name"]:
        ep["hostname"] = pod["spec"]["hostname"]
    return ep


def desired_slices(svc: dict, pods: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """(ports, endpoints) per slice to have; ports is a tuple of (name, port, protocol)."""
    groups: dict[tuple, list[dict]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if not (pod.get("status") or {}).get("podIP") or pod["status"].get("phase") in ("Succeeded", "Failed"):
            continue
        ports = []
        for sp in svc["spec"].get("ports") or []:
            port = resolve_port(pod, sp.get("targetPort", sp["port"]))
            if port is not None:
                ports.append((sp.get("name") or "", port, sp.get("protocol") or "TCP"))
        groups.setdefault(tuple(ports), []).append(endpoint_of(pod, svc))
    out = []
    for ports, eps in sorted(groups.items()):
        for i in range(0, len(eps), MAX_PER_SLICE):
            out.append((ports, eps[i:i + MAX_PER_SLICE]))
    return out or [((), [])]


class EndpointSliceController(Reconciler):
    name = "endpointslice"

    def __init__(self, client: KubeClient, services: Informer, pods: Informer, slices: Informer) -> None:
        super().__init__()
        self.client, self.services, self.pods, self.slices = client, services, pods, slices
        services.add_handler(lambda t, o, old: self.queue.add(obj_key(o)))
        pods.add_handler(self._on_pod)
        slices.add_handler(self._on_slice)

    def _on_pod(self, typ: str, pod: dict, old: dict | None) -> None:
        ns = pod["metadata"]["namespace"]
        for svc in self.services.items():
            if svc["metadata"]["namespace"] != ns or not svc["spec"].get("selector"):
                continue
            sel = {"matchLabels": svc["spec"]["selector"]}
            if labels_match(sel, pod["metadata"].get("labels")) or (
                    old and labels_match(sel, old["metadata"].get("labels"))):
                self.queue.add(obj_key(svc))

    def _on_slice(self, typ: str, sl: dict, old: dict | None) -> None:
        labels = sl["metadata"].get("labels") or {}
        if labels.get(MANAGED_BY) == CONTROLLER and labels.get(SERVICE_LABEL):
            self.queue.add(f"{sl['metadata']['namespace']}/{labels[SERVICE_LABEL]}", 0.2)

    def _owned(self, ns: str, name: str) -> list[dict]:
        return sorted((s for s in self.slices.items() if s["metadata"]["namespace"] == ns
                       and (s["metadata"].get("labels") or {}).get(SERVICE_LABEL) == name
                       and (s["metadata"].get("labels") or {}).get(MANAGED_BY) == CONTROLLER),
                      key=lambda s: s["metadata"]["name"])

    def sync(self, key: str) -> None:
        ns, name = key.split("/", 1)
        svc = self.services.get(ns, name)
        owned = self._owned(ns, name)
        if svc is None or not svc["spec"].get("selector"):
            for s in owned:
                self._delete(s)
            return
        sel = {"matchLabels": svc["spec"]["selector"]}
        pods = [p for p in self.pods.items() if p["metadata"]["namespace"] == ns
                and labels_match(sel, p["metadata"].get("labels"))]
        want = desired_slices(svc, pods)
        for i, (ports, eps) in enumerate(want):
            body = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"namespace": ns,
                                 "labels": {SERVICE_LABEL: name, MANAGED_BY: CONTROLLER},
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": name,
                                                      "uid": svc["metadata"]["uid"], "controller": True,
                                                      "blockOwnerDeletion": True}]},
                    "addressType": "IPv4", "endpoints": eps,
                    "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports]}
            if i < len(owned):
                cur = owned[i]
                if cur.get("endpoints") == eps and (cur.get("ports") or []) == body["ports"]:
                    continue
                body["metadata"].update(name=cur["metadata"]["name"],
                                        resourceVersion=cur["metadata"]["resourceVersion"])
                self.client.update("discovery.k8s.io/v1", "endpointslices", body)
            else:
                body["metadata"]["generateName"] = f"{name}-"
                self.client.create("discovery.k8s.io/v1", "endpointslices", body, ns)
        for s in owned[len(want):]:
            self._delete(s)

    def _delete(self, sl: dict) -> None:
        try:
            self.client.delete("discovery.k8s.io/v1", "endpointslices", sl["metadata"]["name"],
                               sl["metadata"]["namespace"])
        except ApiError as e:
            if e.code != 404:
                raise
