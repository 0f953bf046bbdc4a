"""The agent's book of CNI attachments: which container (and interface) holds which address,
and which pod, if any, the ADD named.

Policy needs to know a pod's address before the pod's status carries it, but what CNI ADD
says is only a claim: any process that can reach the socket can send K8S_POD_* names, a pod
can be force-deleted before its ADD runs, and an ADD or DEL may come with no names at all.
So the book is keyed by what identifies an attachment (container ID + ifname, as IPAM is),
not by pod name, and every entry goes when its DEL (or GC) comes or when the full sync finds
its pod gone. Rules (``ip_for``):

* an address belongs to the newest attachment holding it (IPAM hands an address to one
  attachment at a time, so an older entry with the same address is stale and dropped);
* a pod whose status address is held by one of its own attachments keeps that address: a
  later ADD that merely names the pod cannot move it (the status is what the kubelet, which
  created the sandbox, reported);
* otherwise the pod's newest attachment gives its address (the status lags an ADD);
* an ADD whose K8S_POD_UID is not the pod's is not that pod's.

Not thread-safe: the policy controller calls it under its lock.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Attachment:
    container_id: str
    ifname: str
    ip: str
    pod: str = ""   # "namespace/name" from K8S_POD_*; "" for a container that is no Kubernetes pod
    uid: str = ""   # K8S_POD_UID when the runtime sent it
    since: float = field(default_factory=time.monotonic)


class Attachments:
    def __init__(self) -> None:
        self.by_key: dict[tuple[str, str], Attachment] = {}

    def add(self, a: Attachment) -> list[Attachment]:
        """Record an ADD; returns the entries it replaced (same key, or same address)."""
        gone = [b for k, b in self.by_key.items() if k == (a.container_id, a.ifname) or b.ip == a.ip]
        for b in gone:
            del self.by_key[(b.container_id, b.ifname)]
        self.by_key[(a.container_id, a.ifname)] = a
        return gone

    def remove(self, container_id: str, ifname: str) -> Attachment | None:
        return self.by_key.pop((container_id, ifname), None)

    def owner(self, ip: str) -> Attachment | None:
        return next((a for a in self.by_key.values() if a.ip == ip), None)

    def of_pod(self, pod: str, uid: str = "") -> list[Attachment]:
        """The pod's attachments, newest first (an ADD that sent another UID is not the pod's)."""
        mine = [a for a in self.by_key.values() if a.pod == pod and (not a.uid or not uid or a.uid == uid)]
        return sorted(mine, key=lambda a: (bool(uid) and a.uid == uid, a.since), reverse=True)

    def ip_for(self, pod: str, uid: str, status_ip: str) -> str:
        """The address policy uses for a pod of this node ("" when it has none it may use)."""
        mine = self.of_pod(pod, uid)
        if status_ip and any(a.ip == status_ip for a in mine):
            return status_ip
        if mine:
            return mine[0].ip
        if status_ip and self.owner(status_ip) is None:
            return status_ip  # e.g. an attachment made before this agent started
        return ""

    def unmanaged(self) -> set[str]:
        """Addresses of containers that are no Kubernetes pod (reachable, no policy selects them)."""
        return {a.ip for a in self.by_key.values() if not a.pod}

    def reconcile(self, live: dict[str, str], held: set[tuple[str, str]] | None, grace: float,
                  now: float | None = None) -> list[Attachment]:
        """Full sync: drop entries whose pod is not in ``live`` (pod key -> uid) and is older than
        ``grace`` (the watch may not have the pod yet), whose UID is not the live pod's, or whose
        attachment IPAM no longer holds (``held``; None: unknown)."""
        now = time.monotonic() if now is None else now
        gone = []
        for k, a in list(self.by_key.items()):
            stale_pod = bool(a.pod) and (a.pod not in live and now - a.since > grace
                                         or a.pod in live and a.uid and live[a.pod] and live[a.pod] != a.uid)
            if stale_pod or (held is not None and k not in held):
                gone.append(self.by_key.pop(k))
        return gone
