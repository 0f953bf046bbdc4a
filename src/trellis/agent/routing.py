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

Both modes keep the VXLAN device, with the Group Based Policy extension: a
connection DNATed on this node to a pod on another node has its ingress policy
judged here, where the real client is still known, and the packet mark saying so
(``names.JUDGED_MARK``) must reach the destination node (docs/policy.md, "Paths").
VXLAN GBP carries the mark in the header. Direct routing has no header, so in
direct mode the packets that carry a judgment (a connection's first packets,
marked by the policy table) are policy-routed into the tunnel (a fwmark rule and
routing table ``names.TUNNEL_TABLE``); everything else takes the plain routes.
(Cilium sends its DSR traffic through Geneve in native-routing mode for the same
reason: the fact must travel with the packet.) The device's reverse-path filter is
loose, since in direct mode a tunnelled packet's source is routed via the underlay.

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
from trellis.kernel.rtnl import RT_TABLE_MAIN
from trellis.names import JUDGED_MARK, TUNNEL_RULE_PRIORITY, TUNNEL_TABLE, VTEP_ANNOTATION, VXLAN_DEV

log = logging.getLogger("trellis.agent.routing")
VNI = 1
VXLAN_OVERHEAD = 50
__all__ = ["Routing", "Peer", "peers", "internal_ip", "vtep_mac", "VXLAN_DEV", "VTEP_ANNOTATION"]


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
    def __init__(self, node: str, mode: str = "vxlan", underlay_dev: str = "eth0", netns: str | None = None,
                 cluster_cidr: str = "10.244.0.0/16") -> None:
        if mode not in ("vxlan", "direct"):
            raise ValueError(f"routing mode {mode!r}: must be 'vxlan' or 'direct'")
        self.node, self.mode, self.underlay_dev, self.netns = node, mode, underlay_dev, netns
        self.cluster = ipaddress.ip_network(cluster_cidr)

    def _underlay_mtu(self) -> int:
        link = netlink.get_link(self.underlay_dev, self.netns)
        return link.mtu if link else 1500

    def pod_mtu(self) -> int:
        base = self._underlay_mtu()
        return base - VXLAN_OVERHEAD if self.mode == "vxlan" else base

    def reconcile(self, nodes: list[dict]) -> dict:
        """Make the kernel match the nodes; returns counts of what changed."""
        all_peers = peers(nodes)
        me = next((p for p in all_peers if p.name == self.node), None)
        if me is None:
            return {"ready": False}
        remote = [p for p in all_peers if p.name != self.node]
        if not me.mac:
            return {"ready": False}
        usable, changes = self._overlay(me, remote)
        tunnel = {p.block: netlink.Route(p.block, VXLAN_DEV, str(ipaddress.ip_network(p.block).network_address))
                  for p in usable}
        if self.mode == "vxlan":
            added, removed = self._sweep_routes(tunnel)  # 3. routes (and stale ones out)
            t_added, t_removed = self._sweep_routes({}, TUNNEL_TABLE)
            netlink.delete_fwmark_rule(TUNNEL_RULE_PRIORITY, JUDGED_MARK, TUNNEL_TABLE, self.netns)
        else:
            added, removed = self._sweep_routes({p.block: netlink.Route(p.block, self.underlay_dev, p.ip)
                                                 for p in remote})
            t_added, t_removed = self._sweep_routes(tunnel, TUNNEL_TABLE)
            netlink.ensure_fwmark_rule(TUNNEL_RULE_PRIORITY, JUDGED_MARK, TUNNEL_TABLE, self.netns)
        changes += self._sweep_overlay(usable)
        total = changes + added + removed + t_added + t_removed
        if total:
            log.info("%s: %d peers; %d neighbour/fdb changes, %d routes set, %d removed", self.mode, len(remote),
                     changes, added + t_added, removed + t_removed)
        return {"ready": True, "peers": len(usable), "changes": total, "underlay_ips": sorted(p.ip for p in remote)}

    def _sweep_routes(self, want: dict[str, netlink.Route], table: int = RT_TABLE_MAIN) -> tuple[int, int]:
        # only routes to other nodes' blocks are this module's (the agent owns pods' /32s,
        # the gateway's and the Service range's)
        have = {r.dst: r for r in netlink.owned_routes(self.netns, table)
                if not r.dst.endswith("/32") and ipaddress.ip_network(r.dst).subnet_of(self.cluster)}
        added = removed = 0
        for dst, r in want.items():
            if have.get(dst) != r:
                netlink.replace_route(r, self.netns, table)
                added += 1
        for dst in set(have) - set(want):
            netlink.delete_route(dst, self.netns, table)
            removed += 1
        return added, removed

    def _overlay(self, me: Peer, remote: list[Peer]) -> tuple[list[Peer], int]:
        """The VXLAN device, its address, and per peer 1. neighbour, 2. FDB entry."""
        # In direct mode the tunnel carries only connections' first packets, at the pods' MTU
        # (the underlay's): the rare one too big for a frame is fragmented outside (no DF),
        # and an unbound device is what allows an MTU above the underlay's minus the header.
        netlink.ensure_vxlan(VXLAN_DEV, VNI, me.ip, self.underlay_dev if self.mode == "vxlan" else None, me.mac,
                             self.pod_mtu(), netns=self.netns, gbp=True)
        netlink.write_sysctl(f"net/ipv4/conf/{VXLAN_DEV}/rp_filter", "2", self.netns)
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
        return usable, changes

    def _sweep_overlay(self, usable: list[Peer]) -> int:
        """Neighbours and FDB entries of peers that left (after their routes went)."""
        want_neigh = {str(ipaddress.ip_network(p.block).network_address): p.mac for p in usable}
        want_fdb = {p.mac: p.ip for p in usable}
        have_neigh = netlink.neighbours(VXLAN_DEV, self.netns)
        have_fdb = netlink.fdb_entries(VXLAN_DEV, self.netns)
        changes = 0
        for ip in set(have_neigh) - set(want_neigh):
            netlink.delete_neigh(VXLAN_DEV, ip, self.netns)
            changes += 1
        for mac, dst in have_fdb.items():
            if want_fdb.get(mac) != dst:
                netlink.delete_fdb(VXLAN_DEV, mac, dst, self.netns)
                changes += 1
        return changes
