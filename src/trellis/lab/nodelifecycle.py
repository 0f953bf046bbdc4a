"""Node lifecycle, as kube-controller-manager's: a node whose kubelet stopped heartbeating is
not Ready any more.

Each kubelet renews its Lease ``kube-node-lease/<node>`` (coordination.k8s.io/v1) every few
seconds. When a node's lease was last renewed longer ago than the grace period (upstream's
``--node-monitor-grace-period``, 40 s by default), its Ready condition becomes ``Unknown``
with reason ``NodeStatusUnknown``, so nothing takes a dead kubelet's node for a live one.
The kubelet sets Ready back to True with its next status update when it returns.
A node without a lease is judged by its Ready condition's ``lastHeartbeatTime``.

It also keeps the taints that stand for a node's conditions (TaintNodesByCondition), which is
how the scheduler and the DaemonSet controller learn that a node is not ready: Ready False
taints ``node.kubernetes.io/not-ready``, Ready Unknown ``node.kubernetes.io/unreachable``, each
NoSchedule and NoExecute; memory, disk and PID pressure and an unavailable network their own
NoSchedule taint; a cordoned node ``node.kubernetes.io/unschedulable:NoSchedule``. Taints it
adds carry ``timeAdded``; taints of other keys (a user's, the kubelet's) are left as they are.
A node event whose taints are behind its conditions wakes a pass at once, so a node that turns
Ready loses its not-ready taint (the kubelet registers the node with one) without waiting for the
period. What upstream does with NoExecute taints (evicting pods that do not tolerate them) is not
done here.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading

from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer
from trellis.lab.placement import (CONDITION_TAINTS, NO_EXECUTE, NO_SCHEDULE, NOT_READY, UNREACHABLE,
                                   UNSCHEDULABLE, condition_taints)

log = logging.getLogger("trellis.lab.nodelifecycle")
LEASE_NS = "kube-node-lease"
# the (key, effect) pairs this controller owns on every node
MANAGED_TAINTS = frozenset({(k, NO_SCHEDULE) for k in CONDITION_TAINTS.values()} | {
    (UNSCHEDULABLE, NO_SCHEDULE), (NOT_READY, NO_EXECUTE), (UNREACHABLE, NO_EXECUTE)})


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def last_heartbeat(node: dict, lease: dict | None) -> dt.datetime | None:
    renew = parse_time(((lease or {}).get("spec") or {}).get("renewTime"))
    if renew is not None:
        return renew
    ready = next((c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
    return parse_time(ready.get("lastHeartbeatTime"))


def stale_ready(node: dict, lease: dict | None, now: dt.datetime, grace: float) -> dict | None:
    """The Ready condition to write when the node's heartbeat is older than ``grace`` (None: leave it)."""
    seen = last_heartbeat(node, lease)
    if seen is None or (now - seen).total_seconds() <= grace:
        return None
    conds = (node.get("status") or {}).get("conditions") or []
    ready = next((c for c in conds if c.get("type") == "Ready"), None)
    if ready is not None and ready.get("status") == "Unknown":
        return None
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
            "message": "Kubelet stopped posting node status.",
            "lastHeartbeatTime": (ready or {}).get("lastHeartbeatTime") or stamp, "lastTransitionTime": stamp}


def reconciled_taints(node: dict, now: dt.datetime) -> list[dict] | None:
    """The node's taints with the managed ones matching its conditions (None: nothing to change).
    Taints kept keep their place and their timeAdded; new ones go last, stamped ``now``."""
    current = list((node.get("spec") or {}).get("taints") or [])
    want = condition_taints(node)
    want_keys = {(t["key"], t["effect"]) for t in want}
    have_keys = {(t.get("key"), t.get("effect")) for t in current}
    kept = [t for t in current if (t.get("key"), t.get("effect")) not in MANAGED_TAINTS
            or (t.get("key"), t.get("effect")) in want_keys]
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    added = [dict(t, timeAdded=stamp) for t in want if (t["key"], t["effect"]) not in have_keys]
    if len(kept) == len(current) and not added:
        return None
    return kept + added


class NodeLifecycleController:
    def __init__(self, client: KubeClient, nodes: Informer, grace: float = 40.0, period: float = 2.0) -> None:
        self.client, self.nodes, self.grace, self.period = client, nodes, grace, period
        self.leases = Informer(client, "coordination.k8s.io/v1", "leases", ns=LEASE_NS)
        self.wake = threading.Event()
        nodes.add_handler(self._on_node)

    def _on_node(self, typ: str, node: dict, old: dict | None) -> None:
        if typ != "DELETED" and reconciled_taints(node, dt.datetime.now(dt.timezone.utc)) is not None:
            self.wake.set()

    def check(self) -> list[str]:
        """One pass; returns the nodes marked Unknown."""
        now = dt.datetime.now(dt.timezone.utc)
        marked = []
        for node in self.nodes.items():
            self.taint(node, now)
            name = node["metadata"]["name"]
            cond = stale_ready(node, self.leases.get(LEASE_NS, name), now, self.grace)
            if cond is None:
                continue
            others = [c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") != "Ready"]
            try:
                self.client.patch("v1", "nodes", name, {"status": {"conditions": others + [cond]}}, sub="status")
                marked.append(name)
                log.warning("node %s: no heartbeat for more than %.0fs; Ready is Unknown", name, self.grace)
            except ApiError as e:
                log.info("node %s: marking Ready Unknown failed: %s", name, e)
        return marked

    def taint(self, node: dict, now: dt.datetime) -> bool:
        """Write the node's condition taints if they are behind; True when written."""
        taints = reconciled_taints(node, now)
        if taints is None:
            return False
        name = node["metadata"]["name"]
        # the resourceVersion makes it a compare-and-swap: a taint someone added since the cache
        # saw the node is not lost (a conflict is retried on the next pass, woken by the new node)
        patch = {"metadata": {"resourceVersion": node["metadata"].get("resourceVersion")},
                 "spec": {"taints": taints or None}}
        try:
            self.client.patch("v1", "nodes", name, patch)
        except ApiError as e:
            log.info("node %s: updating its condition taints failed: %s", name, e)
            return False
        log.info("node %s: taints now %s", name, ", ".join(f"{t.get('key')}:{t.get('effect')}" for t in taints)
                 or "none")
        return True

    def run(self, stop: threading.Event) -> None:
        self.leases.start()
        self.leases.synced.wait(30)
        while not stop.is_set():
            self.wake.wait(self.period)
            self.wake.clear()
            if stop.is_set():
                return
            try:
                self.check()
            except Exception:  # noqa: BLE001 - one bad pass must not end the loop
                log.exception("node lifecycle pass failed")
