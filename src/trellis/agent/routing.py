"""Routes between nodes' pod blocks.

vxlan (default), as flannel's VXLAN backend: one device per node (learning off)
whose address is the node block's network address (/32). Per remote node we
program exactly three things, and never react to kernel misses:

1. a permanent neighbour: remote block's .0 -> remote VTEP MAC (no ARP on the overlay),
2. an FDB entry: remote VTEP MAC -> remote underlay IP (where to send the frame),
3. a route: remote block via remote .0, dev vxlan, onlink.

Order matters: neighbour and FDB first, then the route, so the first packet
routed to a new node never finds a half-made path.

direct: remote block via the remote node's underlay IP, onlink (nodes share L2).

``reconcile`` computes the desired state from the Node objects and makes the
kernel match it: adds what is missing, replaces what differs, deletes what
trellis owns but no longer wants (routes carry protocol 201). It is idempotent
and runs on every node change and periodically, so an agent restart or a route
deleted by hand is repaired without touching established connections.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
from dataclasses import dataclass

from trellis.kernel import netlink

log = logging.getLogger("trellis.agent.routing")
VXLAN_DEV = "trellis-vxlan"
VNI = 1
VTEP_ANNOTATION = "trellis.dev/vtep-mac"
VXLAN_OVERHEAD = 50


def vtep_mac(node_name: str) -> str:
    """A stable, locally administered unicast MAC for a node's VTEP."""
    h = hashlib.sha1(node_name.encode()).digest()
    return "0e:" + ":".join(f"{b:02x}" for b in h[:5])


@dataclass(frozen=True)
class Peer:
    name: str
    ip: str
    block: str
    mac: str | None


def internal_ip(node: dict) -> str | None:
    for a in node.get("status", {}).get("addresses") or []:
        if a.get("type") == "InternalIP":
            return a["address"]
    return None


def peers(nodes: list[dict]) -> list[Peer]:
    out = []
    for n in nodes:
        ip, block = internal_ip(n), n.get("spec", {}).get("podCIDR")
        if ip and block:
            out.append(Peer(n["metadata"]["name"], ip, block,
                            (n["metadata"].get("annotations") or {}).get(VTEP_ANNOTATION)))
    return out


class Routing:
    def __init__(self, node: str, mode: str = "vxlan", underlay_dev: str = "eth0", netns: str | None = None) -> None:
        if mode not in ("vxlan", "direct"):
            raise ValueError(f"routing mode {mode!r}: must be 'vxlan' or 'direct'")
        self.node, self.mode, self.underlay_dev, self.netns = node, mode, underlay_dev, netns

    def pod_mtu(self) -> int:
        link = netlink.get_link(self.underlay_dev, self.netns)
        base = link.mtu if link else 1500
        return base - VXLAN_OVERHEAD if self.mode == "vxlan" else base

    def reconcile(self, nodes: list[dict]) -> dict:
        """Make the kernel match the nodes; returns counts of what changed."""
        all_peers = peers(nodes)
        me = next((p for p in all_peers if p.name == self.node), None)
        if me is None:
            return {"ready": False}
        remote = [p for p in all_peers if p.name != self.node]
        if self.mode == "vxlan":
            return self._vxlan(me, remote)
        return self._direct(me, remote)

    def _sweep_routes(self, want: dict[str, netlink.Route]) -> tuple[int, int]:
        have = {r.dst: r for r in netlink.owned_routes(self.netns) if not r.dst.endswith("/32")}  # /32: pods, gateway
        added = removed = 0
        for dst, r in want.items():
            if have.get(dst) != r:
                netlink.replace_route(r, self.netns)
                added += 1
        for dst in set(have) - set(want):
            netlink.delete_route(dst, self.netns)
            removed += 1
        return added, removed

    def _vxlan(self, me: Peer, remote: list[Peer]) -> dict:
        if not me.mac:
            return {"ready": False}
        netlink.ensure_vxlan(VXLAN_DEV, VNI, me.ip, self.underlay_dev, me.mac, self.pod_mtu(), netns=self.netns)
        block = ipaddress.ip_network(me.block)
        netlink.ensure_address(VXLAN_DEV, f"{block.network_address}/32", self.netns)
        usable = [p for p in remote if p.mac]
        want_neigh = {str(ipaddress.ip_network(p.block).network_address): p.mac for p in usable}
        want_fdb = {p.mac: p.ip for p in usable}
        have_neigh = netlink.neighbours(VXLAN_DEV, self.netns)
        have_fdb = netlink.fdb_entries(VXLAN_DEV, self.netns)
        changes = 0
        for ip, mac in want_neigh.items():  # 1. neighbours
            if have_neigh.get(ip) != mac:
                netlink.replace_neigh(VXLAN_DEV, ip, mac, self.netns)
                changes += 1
        for mac, dst in want_fdb.items():  # 2. FDB
            if have_fdb.get(mac) != dst:
                netlink.replace_fdb(VXLAN_DEV, mac, dst, self.netns)
                changes += 1
        routes = {p.block: netlink.Route(p.block, VXLAN_DEV, str(ipaddress.ip_network(p.block).network_address))
                  for p in usable}
        added, removed = self._sweep_routes(routes)  # 3. routes (and stale ones out)
        for ip in set(have_neigh) - set(want_neigh):
            netlink.delete_neigh(VXLAN_DEV, ip, self.netns)
            changes += 1
        for mac, dst in have_fdb.items():
            if want_fdb.get(mac) != dst:
                netlink.delete_fdb(VXLAN_DEV, mac, dst, self.netns)
                changes += 1
        if changes or added or removed:
            log.info("vxlan: %d peers; %d neighbour/fdb changes, %d routes set, %d removed",
                     len(usable), changes, added, removed)
        return {"ready": True, "peers": len(usable), "changes": changes + added + removed}

    def _direct(self, me: Peer, remote: list[Peer]) -> dict:
        netlink.delete_link(VXLAN_DEV, self.netns)  # switching modes: the overlay goes
        routes = {p.block: netlink.Route(p.block, self.underlay_dev, p.ip) for p in remote}
        added, removed = self._sweep_routes(routes)
        if added or removed:
            log.info("direct: %d peers; %d routes set, %d removed", len(remote), added, removed)
        return {"ready": True, "peers": len(remote), "changes": added + removed}
