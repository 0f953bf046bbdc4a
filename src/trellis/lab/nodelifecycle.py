"""Node lifecycle, as kube-controller-manager's: a node whose kubelet stopped heartbeating is
not Ready any more.

Each kubelet renews its Lease ``kube-node-lease/<node>`` (coordination.k8s.io/v1) every few
seconds. When a node's lease was last renewed longer ago than the grace period (upstream's
``--node-monitor-grace-period``, 40 s by default), its Ready condition becomes ``Unknown``
with reason ``NodeStatusUnknown``, so nothing takes a dead kubelet's node for a live one.
The kubelet sets Ready back to True with its next status update when it returns.
A node without a lease is judged by its Ready condition's ``lastHeartbeatTime``.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading

from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer

log = logging.getLogger("trellis.lab.nodelifecycle")
LEASE_NS = "kube-node-lease"


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


class NodeLifecycleController:
    def __init__(self, client: KubeClient, nodes: Informer, grace: float = 40.0, period: float = 2.0) -> None:
        self.client, self.nodes, self.grace, self.period = client, nodes, grace, period
        self.leases = Informer(client, "coordination.k8s.io/v1", "leases", ns=LEASE_NS)

    def check(self) -> list[str]:
        """One pass; returns the nodes marked Unknown."""
        now = dt.datetime.now(dt.timezone.utc)
        marked = []
        for node in self.nodes.items():
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

    def run(self, stop: threading.Event) -> None:
        self.leases.start()
        self.leases.synced.wait(30)
        while not stop.wait(self.period):
            try:
                self.check()
            except Exception:  # noqa: BLE001 - one bad pass must not end the loop
                log.exception("node lifecycle pass failed")
