"""Workload controllers of the lab: Deployment -> ReplicaSet -> Pods.

As in Kubernetes, a Deployment owns one ReplicaSet per pod template (named
``<deployment>-<pod-template-hash>``) and a ReplicaSet owns its pods (named
``<replicaset>-<suffix>``). A template change creates a new ReplicaSet; old
ones are scaled down as the new one's pods become ready (a rolling update).
Garbage collection by ownerReferences happens in the API server.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time

from trellis.kube import selectors
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.events import NORMAL, WARNING, EventRecorder
from trellis.kube.informer import Informer, Reconciler
from trellis.lab import placement

log = logging.getLogger("trellis.workloads")
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
REVISION, CHANGE_CAUSE = "deployment.kubernetes.io/revision", "kubernetes.io/change-cause"


def template_hash(template: dict) -> str:
    template = copy.deepcopy(template)
    md = template.get("metadata") or {}
    if "creationTimestamp" in md and md["creationTimestamp"] is None:
        del md["creationTimestamp"]  # what Go writes for the zero time: `rollout undo` sends it back
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(ALPHABET[b % len(ALPHABET)] for b in digest[:10])


def owner_ref(obj: dict) -> dict:
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def owned_by(obj: dict, owner_uid: str) -> bool:
    return any(o.get("uid") == owner_uid and o.get("controller") for o in obj["metadata"].get("ownerReferences") or [])


def pod_ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


class ReplicaSetController(Reconciler):
    name = "replicaset"

    def __init__(self, client: KubeClient, pods: Informer, rsets: Informer,
                 events: EventRecorder | None = None) -> None:
        super().__init__()
        self.client, self.pods, self.rsets = client, pods, rsets
        self.events = events or EventRecorder(client, "replicaset-controller")
        # expectations, as kube-controller-manager keeps them: pods this controller created or
        # deleted that its informer has not shown yet. A sync between a create and its watch event
        # would otherwise count the pod missing and create one more (7 pods for 6, then a delete)
        # (a pod that never shows up, say deleted at once, is forgotten after EXPECTATION_TTL)
        self.created: dict[str, dict[str, float]] = {}
        self.deleted: dict[str, dict[str, float]] = {}
        rsets.add_handler(lambda t, o, old: self.queue.add(f"{o['metadata']['namespace']}/{o['metadata']['name']}"))
        pods.add_handler(self._on_pod)

    def _on_pod(self, typ: str, pod: dict, old: dict | None) -> None:
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "ReplicaSet":
                self.queue.add(f"{pod['metadata']['namespace']}/{ref['name']}")

    def sync(self, key: str) -> None:
        ns, name = key.split("/", 1)
        rs = self.rsets.get(ns, name)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        uid = rs["metadata"]["uid"]
        pods = [p for p in self.pods.items() if p["metadata"]["namespace"] == ns and owned_by(p, uid)]
        names = {p["metadata"]["name"]: p for p in pods}
        fresh = time.monotonic() - EXPECTATION_TTL
        created = {n: t for n, t in self.created.get(key, {}).items() if n not in names and t > fresh}
        deleted = {n: t for n, t in self.deleted.get(key, {}).items()
                   if n in names and not names[n]["metadata"].get("deletionTimestamp") and t > fresh}
        self.created[key], self.deleted[key] = created, deleted
        active = [p for p in pods if not p["metadata"].get("deletionTimestamp")
                  and p["metadata"]["name"] not in deleted
                  and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
        want = rs["spec"].get("replicas", 1)
        if len(active) + len(created) < want:
            tmpl = rs["spec"]["template"]
            # at most BURST_REPLICAS per sync, as kube-controller-manager's burstReplicas: the pods
            # made wake the next sync, and a quota error stops the burst at once
            for _ in range(min(want - len(active) - len(created), BURST_REPLICAS)):
                pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                    "generateName": f"{name}-", "namespace": ns,
                    "labels": dict(tmpl.get("metadata", {}).get("labels") or {}),
                    "annotations": dict(tmpl.get("metadata", {}).get("annotations") or {}),
                    "ownerReferences": [owner_ref(rs)]}, "spec": copy.deepcopy(tmpl.get("spec", {}))}
                try:
                    made = self.client.create("v1", "pods", pod, ns)
                except ApiError as e:
                    self.events.event(rs, WARNING, "FailedCreate", f"Error creating: {e.message}",
                                      kind="ReplicaSet", api_version="apps/v1")
                    raise
                created[made["metadata"]["name"]] = time.monotonic()
                self.events.event(rs, NORMAL, "SuccessfulCreate", f"Created pod: {made['metadata']['name']}",
                                  kind="ReplicaSet", api_version="apps/v1")
        elif len(active) + len(created) > want:
            # delete the least useful first: unscheduled, then not ready, then newest
            active.sort(key=lambda p: (bool(p["spec"].get("nodeName")), pod_ready(p),
                                       p["metadata"].get("creationTimestamp", "")), reverse=False)
            for p in active[: len(active) + len(created) - want]:
                self.client.delete("v1", "pods", p["metadata"]["name"], ns)
                deleted[p["metadata"]["name"]] = time.monotonic()
                self.events.event(rs, NORMAL, "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}",
                                  kind="ReplicaSet", api_version="apps/v1")
        ready = sum(1 for p in active if pod_ready(p))
        status = {"replicas": min(len(active), max(want, len(active))), "fullyLabeledReplicas": len(active),
                  "readyReplicas": ready, "availableReplicas": ready,
                  "observedGeneration": rs["metadata"].get("generation", 1)}
        if {k: rs.get("status", {}).get(k) for k in status} != status:
            self.client.patch("apps/v1", "replicasets", name, {"status": status}, ns, sub="status")


class DeploymentController(Reconciler):
    name = "deployment"

    def __init__(self, client: KubeClient, deploys: Informer, rsets: Informer,
                 events: EventRecorder | None = None) -> None:
        super().__init__()
        self.client, self.deploys, self.rsets = client, deploys, rsets
        self.events = events or EventRecorder(client, "deployment-controller")
        deploys.add_handler(lambda t, o, old: self.queue.add(f"{o['metadata']['namespace']}/{o['metadata']['name']}"))
        rsets.add_handler(self._on_rs)

    def _scaled(self, d: dict, rs: dict, old: int, new: int) -> None:
        self.events.event(d, NORMAL, "ScalingReplicaSet", f"Scaled {'up' if new > old else 'down'} replica set "
                          f"{rs['metadata']['name']} from {old} to {new}", kind="Deployment", api_version="apps/v1")

    def _on_rs(self, typ: str, rs: dict, old: dict | None) -> None:
        for ref in rs["metadata"].get("ownerReferences") or []:
            if ref.get("kind") == "Deployment":
                self.queue.add(f"{rs['metadata']['namespace']}/{ref['name']}")

    def sync(self, key: str) -> None:
        ns, name = key.split("/", 1)
        d = self.deploys.get(ns, name)
        if d is None or d["metadata"].get("deletionTimestamp"):
            return
        uid, spec = d["metadata"]["uid"], d["spec"]
        tmpl = copy.deepcopy(spec["template"])
        h = template_hash(tmpl)
        owned = [r for r in self.rsets.items() if r["metadata"]["namespace"] == ns and owned_by(r, uid)]
        new = next((r for r in owned if r["metadata"].get("labels", {}).get("pod-template-hash") == h), None)
        want = spec.get("replicas", 1)
        top = max((revision(r) for r in owned), default=0)
        if new is None:
            tmpl.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
            sel = copy.deepcopy(spec["selector"])
            sel.setdefault("matchLabels", {})["pod-template-hash"] = h
            rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {
                "name": f"{name}-{h}", "namespace": ns, "ownerReferences": [owner_ref(d)],
                "annotations": revision_annotations(d, top + 1),
                "labels": {**(spec["template"].get("metadata", {}).get("labels") or {}), "pod-template-hash": h}},
                "spec": {"replicas": want, "selector": sel, "template": tmpl}}
            try:
                new = self.client.create("apps/v1", "replicasets", rs, ns)
                self._scaled(d, new, 0, want)
            except ApiError as e:
                if e.code != 409:
                    raise
                new = self.client.get("apps/v1", "replicasets", rs["metadata"]["name"], ns)
        else:
            patch = {}
            if new["spec"].get("replicas") != want:
                patch["spec"] = {"replicas": want}
            if revision(new) < top or (revision(new) == 0 and top == 0):
                # a template seen before (rollout undo): its ReplicaSet becomes the newest revision
                patch["metadata"] = {"annotations": revision_annotations(d, top + 1)}
            elif (new["metadata"].get("annotations") or {}).get(CHANGE_CAUSE) != (
                    d["metadata"].get("annotations") or {}).get(CHANGE_CAUSE):
                # the newest ReplicaSet follows the Deployment's change cause, as upstream
                patch["metadata"] = {"annotations": {CHANGE_CAUSE: (d["metadata"].get("annotations") or {})
                                                     .get(CHANGE_CAUSE)}}
            if patch:
                before = new["spec"].get("replicas", 0)
                new = self.client.patch("apps/v1", "replicasets", new["metadata"]["name"], patch, ns)
                if "spec" in patch:
                    self._scaled(d, new, before, want)
        rev = str(revision(new))
        if (d["metadata"].get("annotations") or {}).get(REVISION) != rev:
            self.client.patch("apps/v1", "deployments", name, {"metadata": {"annotations": {REVISION: rev}}}, ns)
        new_ready = new.get("status", {}).get("readyReplicas", 0)
        olds = [r for r in owned if r["metadata"]["uid"] != new["metadata"]["uid"]]
        old_budget = max(0, want - new_ready)  # old pods keep serving until new ones are ready
        for r in sorted(olds, key=lambda r: r["metadata"].get("creationTimestamp", ""), reverse=True):
            target = min(r["spec"].get("replicas", 0), old_budget)
            old_budget -= target
            if r["spec"].get("replicas") != target:
                self.client.patch("apps/v1", "replicasets", r["metadata"]["name"], {"spec": {"replicas": target}}, ns)
                self._scaled(d, r, r["spec"].get("replicas", 0), target)
        self._prune(olds, spec.get("revisionHistoryLimit", 10), ns)
        allrs = [new] + olds
        ready = sum(r.get("status", {}).get("readyReplicas", 0) for r in allrs)
        replicas = sum(r.get("status", {}).get("replicas", 0) for r in allrs)
        status = {"observedGeneration": d["metadata"].get("generation", 1), "replicas": replicas,
                  "updatedReplicas": new.get("status", {}).get("replicas", 0), "readyReplicas": ready,
                  "availableReplicas": ready, "unavailableReplicas": max(0, want - ready),
                  "conditions": [{"type": "Available", "status": "True" if ready >= want else "False",
                                  "reason": "MinimumReplicasAvailable" if ready >= want else
                                  "MinimumReplicasUnavailable"}]}
        if {k: d.get("status", {}).get(k) for k in status} != status:
            self.client.patch("apps/v1", "deployments", name, {"status": status}, ns, sub="status")


    def _prune(self, olds: list[dict], limit: int, ns: str) -> None:
        """Old ReplicaSets scaled to zero beyond revisionHistoryLimit go, oldest revision first."""
        idle = sorted((r for r in olds if not r["spec"].get("replicas") and not r.get("status", {}).get("replicas")),
                      key=revision)
        for r in idle[:max(0, len(idle) - limit)]:
            try:
                self.client.delete("apps/v1", "replicasets", r["metadata"]["name"], ns)
            except ApiError as e:
                if e.code != 404:
                    raise


def revision(rs: dict) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, 0))
    except ValueError:
        return 0


def revision_annotations(d: dict, rev: int) -> dict:
    """What `kubectl rollout history` reads on a ReplicaSet: its revision and the change cause."""
    out = {REVISION: str(rev)}
    cause = (d["metadata"].get("annotations") or {}).get(CHANGE_CAUSE)
    if cause:
        out[CHANGE_CAUSE] = cause
    return out


class Scheduler(Reconciler):
    """Binds pending pods to Ready nodes: honours nodeName and nodeSelector, spreads siblings, then by pod count."""

    name = "scheduler"

    def __init__(self, client: KubeClient, pods: Informer, nodes: Informer,
                 events: EventRecorder | None = None) -> None:
        super().__init__()
        self.client, self.pods, self.nodes = client, pods, nodes
        self.events = events or EventRecorder(client, "default-scheduler")
        # pods bound but not yet seen bound by the informer ("assumed", as in kube-scheduler)
        self.assumed: dict[str, str] = {}
        pods.add_handler(self._on_pod)
        nodes.add_handler(lambda t, o, old: [self.queue.add(k) for k in self._pending()])

    def _pending(self) -> list[str]:
        return [f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in self.pods.items()
                if not p["spec"].get("nodeName") and not p["metadata"].get("deletionTimestamp")]

    def _on_pod(self, typ: str, pod: dict, old: dict | None) -> None:
        key = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
        if typ == "DELETED" or pod["spec"].get("nodeName"):
            self.assumed.pop(key, None)
        if typ != "DELETED" and not pod["spec"].get("nodeName"):
            self.queue.add(f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")

    def sync(self, key: str) -> bool:
        ns, name = key.split("/", 1)
        pod = self.pods.get(ns, name)
        if pod is None or pod["spec"].get("nodeName") or pod["metadata"].get("deletionTimestamp"):
            return True
        if pod["spec"].get("schedulerName", "default-scheduler") != "default-scheduler":
            return True
        # the assumed bindings first, then the pods: the informer updates its cache before it drops
        # a binding from ``assumed``, so every pod this scheduler bound is in one of the two views
        # (pods first could see a pod unbound and miss it in ``assumed`` too, and pile pods on a node)
        assumed = dict(self.assumed)
        nodes = self.nodes.items()
        chosen = placement.place(pod, nodes, self.pods.items(), assumed)
        if chosen.node is None:
            msg = chosen.message
            cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}
            if (pod.get("status", {}).get("conditions") or [None])[0] != cond:
                self.client.patch("v1", "pods", name, {"status": {"conditions": [cond]}}, ns, sub="status",
                                  kind="strategic")
                self.events.event(pod, WARNING, "FailedScheduling", msg + ".", kind="Pod", api_version="v1")
            return False
        target = chosen.node
        try:
            self.client.create("v1", "bindings", {"apiVersion": "v1", "kind": "Binding",
                                                  "metadata": {"name": name, "namespace": ns},
                                                  "target": {"apiVersion": "v1", "kind": "Node", "name": target}}, ns)
            self.assumed[key] = target
            self.events.event(pod, NORMAL, "Scheduled", f"Successfully assigned {ns}/{name} to {target}",
                              kind="Pod", api_version="v1")
        except ApiError as e:
            if e.code not in (404, 409):
                raise
        return True


BURST_REPLICAS = 500  # pods a ReplicaSet creates per sync, as the replicaset controller's burstReplicas
EXPECTATION_TTL = 30.0  # seconds a create or delete waits to be seen before it is no longer expected


def label_selector_string(sel: dict | None) -> str:
    return selectors.to_string(sel)
