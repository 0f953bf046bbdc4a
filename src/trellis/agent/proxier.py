"""The agent's service proxy: Services + EndpointSlices -> ``table inet trellis-proxy``.

Event handlers only record which services changed and mark the loop dirty (agent/syncloop.py).
Its one worker turns the changed services into the minimal nft transaction (``proxy.nftables``)
from state kept in memory — the ruleset is never read back, except once at start to
learn which chains an earlier agent left. A full sync runs at start, after a
failed transaction, and every ``resync`` seconds; it keeps affinity entries.
``on_applied(keys, t)`` is told which services a sync put in the table.
Conntrack: when a UDP endpoint goes, its flows are deleted (UDP has no close,
so a client would otherwise keep sending into the void); when a UDP service gets
its first endpoint, flows that were rejected while it had none are deleted too.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
from typing import Callable

from trellis.agent.syncloop import SyncLoop
from trellis.kernel import nft
from trellis.kernel.netns import KernelError
from trellis.kube.informer import Informer
from trellis.proxy import nftables as pnft
from trellis.proxy.model import ServicePort, service_ports

log = logging.getLogger("trellis.agent.proxy")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class Proxier:
    def __init__(self, services: Informer, slices: Informer, node: str, cluster_cidr: str,
                 netns: str | None = None, resync: float = 300.0,
                 on_applied: Callable[[set[str], float], None] | None = None, snat_ip: str | None = None,
                 beat: float | None = None) -> None:
        self.services, self.slices = services, slices
        self.snat_ip = snat_ip  # the node's address, the source of masqueraded service traffic
        self.node, self.cluster_cidr, self.netns, self.resync = node, cluster_cidr, netns, resync
        self.on_applied = on_applied
        self._lock = threading.Lock()
        self._dirty: dict[str, float] = {}  # service key -> when first marked
        self._by_service: dict[str, dict[str, dict]] = {}  # service key -> slice key -> slice
        self.ports: dict[str, list[ServicePort]] = {}  # service key -> its ports, as programmed
        self.objects: dict[str, pnft.Objects] = {}  # service key -> what it owns in the table
        self.syncs = 0  # full syncs
        self.loop = SyncLoop("proxy", self._sync, resync, beat, waiting=self._waiting)
        services.add_handler(self._on_service)
        slices.add_handler(self._on_slice)

    # ---- handlers: record only ----
    def _mark(self, key: str) -> None:
        with self._lock:
            self._dirty.setdefault(key, time.monotonic())
        self.loop.mark_dirty()

    def _on_service(self, typ: str, svc: dict, old: dict | None) -> None:
        self._mark(f"{svc['metadata'].get('namespace', '')}/{svc['metadata']['name']}")

    def _on_slice(self, typ: str, sl: dict, old: dict | None) -> None:
        md = sl["metadata"]
        ns = md.get("namespace", "")

        def service_of(obj: dict) -> str | None:
            name = (obj["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
            return f"{ns}/{name}" if name else None

        keys = {k for k in (service_of(sl), old and service_of(old)) if k}
        with self._lock:
            for k in keys:  # the slice may have moved between services (label changed)
                group = self._by_service.get(k, {})
                group.pop(md["name"], None)
                if not group:
                    self._by_service.pop(k, None)
            if typ != "DELETED" and service_of(sl):
                self._by_service.setdefault(service_of(sl), {})[md["name"]] = sl
        for k in keys:
            self._mark(k)

    # ---- compile ----
    def _desired(self, key: str) -> tuple[list[ServicePort], pnft.Objects | None]:
        ns, name = key.split("/", 1)
        svc = self.services.get(ns, name)
        if svc is None:
            return [], None
        with self._lock:
            slices = list(self._by_service.get(key, {}).values())
        ports = service_ports(svc, slices)
        if not ports:
            return [], None
        return ports, pnft.merge(pnft.compile_port(p, self.node, self.cluster_cidr) for p in ports)

    def full_sync(self) -> None:
        keys = {f"{s['metadata'].get('namespace', '')}/{s['metadata']['name']}" for s in self.services.items()}
        ports, objects = {}, {}
        for k in keys:
            p, o = self._desired(k)
            if o is not None:
                ports[k], objects[k] = p, o
        existing_chains, existing_sets = set(), set()
        if self.syncs == 0:  # learn what an earlier agent left; never again
            existing_chains, existing_sets = self._read_names()
        existing_chains |= {c for o in self.objects.values() for c in o.chains}
        existing_sets |= {s for o in self.objects.values() for s in o.sets}
        script = pnft.full_sync(pnft.merge(objects.values()), existing_chains, existing_sets, self.cluster_cidr,
                               self.snat_ip)
        nft.apply(script, f"full sync of {len(objects)} services", self.netns)
        old_ports = self.ports
        self.ports, self.objects = ports, objects
        self.syncs += 1
        self._conntrack_cleanup([(old_ports.get(k, []), ports.get(k, [])) for k in set(old_ports) | set(ports)])
        log.info("full sync: %d services, %d chains", len(objects), sum(len(o.chains) for o in objects.values()))

    def _read_names(self) -> tuple[set[str], set[str]]:
        doc = nft.list_table(pnft.FAMILY, pnft.TABLE, self.netns) or {"nftables": []}
        chains = {i["chain"]["name"] for i in doc["nftables"] if "chain" in i}
        sets = {i["set"]["name"] for i in doc["nftables"] if "set" in i and i["set"]["name"].startswith("aff-")}
        return chains, sets

    def sync_changed(self, keys: set[str]) -> None:
        changes, new_ports = [], {}
        for k in keys:
            p, o = self._desired(k)
            old = self.objects.get(k)
            if old is None and o is None:
                continue
            changes.append((old, o))
            new_ports[k] = (p, o)
        script = pnft.transaction(changes)
        if script:
            nft.apply(script, f"update of {len(changes)} services", self.netns)
        cleanup = []
        for k, (p, o) in new_ports.items():
            cleanup.append((self.ports.get(k, []), p))
            if o is None:
                self.objects.pop(k, None)
                self.ports.pop(k, None)
            else:
                self.objects[k], self.ports[k] = o, p
        self._conntrack_cleanup(cleanup)

    # ---- conntrack ----
    def _conntrack_cleanup(self, pairs: list[tuple[list[ServicePort], list[ServicePort]]]) -> None:
        cmds = []
        for old, new in pairs:
            new_by = {p.key: p for p in new}
            for op in old:
                if op.protocol != "udp":
                    continue
                np = new_by.get(op.key)
                gone = {e.ip for e in op.usable()} - ({e.ip for e in np.usable()} if np else set())
                for ip in gone:
                    cmds.append(["-p", "udp", "--dst-nat", ip])
            old_by = {p.key: p for p in old}
            for np in new:
                if np.protocol == "udp" and np.usable() and not (old_by.get(np.key) and old_by[np.key].usable()):
                    for ip in np.cluster_ips + np.external_ips + np.lb_ips:
                        cmds.append(["-p", "udp", "--orig-dst", ip, "--orig-port-dst", str(np.port)])
        for args in cmds:
            pre = ["ip", "netns", "exec", self.netns] if self.netns else []
            # exit status 1 = nothing matched; not an error
            subprocess.run(pre + ["conntrack", "-D", *args], capture_output=True, timeout=10)

    # ---- worker ----
    def _waiting(self) -> str:
        behind = [inf.plural for inf in (self.services, self.slices) if not inf.synced.is_set()]
        return f"waiting for {' and '.join(behind)} to list" if behind else ""

    def _sync(self, full: bool) -> None:
        with self._lock:
            batch, self._dirty = self._dirty, {}
        try:
            if full:
                self.full_sync()
            elif batch:
                self.sync_changed(set(batch))
        except BaseException:
            with self._lock:  # the retry's full sync covers them; on_applied is told after it
                for k, t in batch.items():
                    self._dirty.setdefault(k, t)
            raise
        if self.on_applied and batch:
            self.on_applied(set(batch), time.monotonic())

    def run(self, stop: threading.Event) -> None:
        self.loop.run(stop)

    def local_endpoints(self, ns: str, name: str) -> int:
        """For healthCheckNodePort: this node's usable endpoints of the service."""
        return max((len(p.usable(self.node)) for p in self.ports.get(f"{ns}/{name}", [])), default=0)
