"""The lab's DaemonSet controller, as kube-controller-manager's: one pod per eligible node.

A node is eligible when the pod would fit it (NodeShouldRunDaemonPod): the template's
nodeSelector and required node affinity match, and every NoSchedule/NoExecute taint is
tolerated by the template's tolerations plus the ones every daemon pod gets (not-ready and
unreachable NoExecute, the pressure, unschedulable and, for hostNetwork, network-unavailable
NoSchedule taints). A pod already there stays as long as its NoExecute taints are tolerated.
The decisions use placement's own functions, so the controller and the scheduler never disagree.

Pods are placed the upstream way: each gets a required node affinity ``matchFields
metadata.name In [node]`` and the scheduler binds it. They are named ``<ds>-<5 chars>`` and
labelled ``controller-revision-hash`` (the template's hash, which also names the
ControllerRevision ``<ds>-<hash>`` that `kubectl rollout history` reads) and
``pod-template-generation``. A failed daemon pod is deleted (with a back-off per node, 1 s
doubling to 15 min) and so replaced; an extra one on a node goes, the oldest stays.

RollingUpdate replaces pods of an older revision node by node, never more than maxUnavailable
(an int, or a percent of the desired count rounded up; at least 1) unavailable at once, a pod
counting available once Ready for minReadySeconds; a node's new pod is created only when its
old one is gone. OnDelete replaces a pod only when someone deletes it. maxSurge is validated
but not acted on (such a DaemonSet rolls as with maxUnavailable 1).
"""
from __future__ import annotations

import datetime as dt
import logging
import time

from trellis.kube import selectors
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.events import NORMAL, WARNING, EventRecorder
from trellis.kube.informer import Informer, Reconciler
from trellis.lab.daemonplan import (HASH_LABEL, Backoff, NodesPlan, by_node, daemon_status, deleting, new_pod,
                                    plan_nodes, plan_rollout, revision_body, stale_revisions)
from trellis.lab.workloads import owned_by, owner_ref, template_hash

log = logging.getLogger("trellis.daemonsets")
EXPECTATION_TTL = 30.0  # seconds a create or delete waits to be seen before it is no longer expected


# ---- the controller -----------------------------------------------------------------

class DaemonSetController(Reconciler):
    name = "daemonset"

    def __init__(self, client: KubeClient, dsets: Informer, pods: Informer, nodes: Informer,
                 revisions: Informer, events: EventRecorder | None = None) -> None:
        super().__init__()
        self.client, self.dsets, self.pods, self.nodes, self.revisions = client, dsets, pods, nodes, revisions
        self.events = events or EventRecorder(client, "daemonset-controller")
        self.backoff = Backoff()
        # expectations: pods created or deleted that the informer has not shown yet (as upstream)
        self.created: dict[str, dict[str, float]] = {}
        self.deleted: dict[str, dict[str, float]] = {}
        dsets.add_handler(lambda t, o, old: self.queue.add(key_of(o)))
        pods.add_handler(self._on_pod)
        revisions.add_handler(lambda t, o, old: self._owner(o))
        nodes.add_handler(self._on_node)

    def _owner(self, obj: dict) -> bool:
        ref = next((r for r in obj["metadata"].get("ownerReferences") or [] if r.get("controller")), None)
        if ref is not None and ref.get("kind") == "DaemonSet":
            self.queue.add(f"{obj['metadata']['namespace']}/{ref['name']}")
        return ref is not None

    def _on_pod(self, typ: str, pod: dict, old: dict | None) -> None:
        if not self._owner(pod) and typ != "DELETED":  # an orphan: whoever may adopt it
            for ds in self.dsets.items():
                if ds["metadata"]["namespace"] == pod["metadata"]["namespace"] and selectors.labels_match(
                        ds["spec"].get("selector"), pod["metadata"].get("labels")):
                    self.queue.add(key_of(ds))

    def _on_node(self, typ: str, node: dict, old: dict | None) -> None:
        if old is None or typ == "DELETED" or node_view(node) != node_view(old):
            for ds in self.dsets.items():
                self.queue.add(key_of(ds))

    def _expected(self, key: str, pods: list[dict]) -> bool:
        """True when every create and delete this controller made is seen (or too old to wait for)."""
        names = {p["metadata"]["name"]: p for p in pods}
        fresh = time.monotonic() - EXPECTATION_TTL
        self.created[key] = {n: t for n, t in self.created.get(key, {}).items() if n not in names and t > fresh}
        self.deleted[key] = {n: t for n, t in self.deleted.get(key, {}).items()
                             if n in names and not deleting(names[n]) and t > fresh}
        return not self.created[key] and not self.deleted[key]

    def sync(self, key: str) -> bool | None:
        ns, name = key.split("/", 1)
        ds = self.dsets.get(ns, name)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            self.created.pop(key, None), self.deleted.pop(key, None)
            return None
        nodes, now = self.nodes.items(), dt.datetime.now(dt.timezone.utc)
        hash_ = template_hash(ds["spec"]["template"])
        revisions = self._history(ds, hash_)
        pods = self._claim(ds)
        settled = self._expected(key, pods)
        if settled:
            plan = plan_nodes(ds, nodes, by_node(pods))
            busy = self._apply(ds, key, plan, hash_)
            if not busy and (ds["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate":
                for victim in plan_rollout(ds, nodes, by_node(pods, False), hash_, now):
                    self._delete(ds, key, victim)
            live = {(p["metadata"].get("labels") or {}).get(HASH_LABEL) for p in pods}
            for r in stale_revisions([r for r in revisions if r["metadata"]["name"] != f"{name}-{hash_}"],
                                     ds["spec"].get("revisionHistoryLimit", 10), live):
                self.client.delete("apps/v1", "controllerrevisions", r["metadata"]["name"], ns)
        status = daemon_status(ds, nodes, by_node(pods, False), hash_, now)
        status["observedGeneration"] = ds["metadata"].get("generation", 1) if settled else \
            (ds.get("status") or {}).get("observedGeneration")
        self._write_status(ds, status)
        min_ready = ds["spec"].get("minReadySeconds", 0)
        if min_ready and status["numberReady"] != status["numberAvailable"]:
            self.queue.add(key, float(min_ready))  # a pod turns available with time alone
        return None

    def _claim(self, ds: dict) -> list[dict]:
        """The DaemonSet's pods: those it controls, and orphans its selector matches (adopted)."""
        ns, uid = ds["metadata"]["namespace"], ds["metadata"]["uid"]
        out = []
        for p in self.pods.items():
            if p["metadata"]["namespace"] != ns:
                continue
            if owned_by(p, uid):
                out.append(p)
            elif (not any(r.get("controller") for r in p["metadata"].get("ownerReferences") or [])
                  and not deleting(p) and selectors.labels_match(ds["spec"].get("selector"), p["metadata"].get("labels"))):
                self.client.patch("v1", "pods", p["metadata"]["name"], {"metadata": {
                    "ownerReferences": [owner_ref(ds)], "uid": p["metadata"]["uid"]}}, ns, kind="strategic")
                out.append(p)
        return out

    def _apply(self, ds: dict, key: str, plan: NodesPlan, hash_: str) -> bool:
        """Create and delete what the plan says; True when anything was done."""
        ns, busy = ds["metadata"]["namespace"], False
        for node, pod in plan.failed:
            wait = self.backoff.wait(f"{key}/{node}", time.monotonic())
            if wait:
                self.queue.add(key, wait)
                continue
            self.backoff.next(f"{key}/{node}", time.monotonic())
            self.events.event(ds, WARNING, "FailedDaemonPod", f"Found failed daemon pod {ns}/{pod} on node {node}, "
                              "will try to kill it", kind="DaemonSet", api_version="apps/v1")
            plan.delete.append(pod)
        for pod in plan.delete:
            self._delete(ds, key, pod)
            busy = True
        for node in plan.create:
            try:
                made = self.client.create("v1", "pods", new_pod(ds, node, hash_), ns)
            except ApiError as e:
                self.events.event(ds, WARNING, "FailedCreate", f"Error creating: {e.message}",
                                  kind="DaemonSet", api_version="apps/v1")
                raise
            self.created.setdefault(key, {})[made["metadata"]["name"]] = time.monotonic()
            self.events.event(ds, NORMAL, "SuccessfulCreate", f"Created pod: {made['metadata']['name']}",
                              kind="DaemonSet", api_version="apps/v1")
            busy = True
        return busy

    def _delete(self, ds: dict, key: str, pod: str) -> None:
        try:
            self.client.delete("v1", "pods", pod, ds["metadata"]["namespace"])
        except ApiError as e:
            if e.code != 404:
                raise
            return
        self.deleted.setdefault(key, {})[pod] = time.monotonic()
        self.events.event(ds, NORMAL, "SuccessfulDelete", f"Deleted pod: {pod}", kind="DaemonSet",
                          api_version="apps/v1")

    def _history(self, ds: dict, hash_: str) -> list[dict]:
        """constructHistory: the current template's ControllerRevision exists and is the newest;
        returns every revision of the DaemonSet."""
        ns, uid = ds["metadata"]["namespace"], ds["metadata"]["uid"]
        revs = [r for r in self.revisions.items() if r["metadata"]["namespace"] == ns and owned_by(r, uid)]
        cur = next((r for r in revs if (r["metadata"].get("labels") or {}).get(HASH_LABEL) == hash_), None)
        top = max((r.get("revision", 0) for r in revs), default=0)
        if cur is None:
            try:
                cur = self.client.create("apps/v1", "controllerrevisions", revision_body(ds, hash_, top + 1), ns)
            except ApiError as e:
                if e.code != 409:
                    raise
                cur = self.client.get("apps/v1", "controllerrevisions", f"{ds['metadata']['name']}-{hash_}", ns)
            revs.append(cur)
        elif cur.get("revision", 0) < top:  # a template seen before (rollout undo) is the newest again
            self.client.patch("apps/v1", "controllerrevisions", cur["metadata"]["name"], {"revision": top + 1}, ns)
        return revs

    def _write_status(self, ds: dict, status: dict) -> None:
        old = ds.get("status") or {}
        # omitempty fields of DaemonSetStatus go when zero, as kube-apiserver would print them
        want = {k: (None if not v and k not in REQUIRED_STATUS else v) for k, v in status.items()}
        if any(old.get(k) != v for k, v in want.items()):
            self.client.patch("apps/v1", "daemonsets", ds["metadata"]["name"], {"status": want},
                              ds["metadata"]["namespace"], sub="status")


REQUIRED_STATUS = ("currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady")


def key_of(obj: dict) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def node_view(node: dict) -> tuple:
    """What of a node matters to daemon pods (not its heartbeats)."""
    conds = tuple(sorted((c.get("type"), c.get("status")) for c in (node.get("status") or {}).get("conditions") or []))
    spec = node.get("spec") or {}
    return (node["metadata"].get("labels"), spec.get("taints"), spec.get("unschedulable"), conds)
