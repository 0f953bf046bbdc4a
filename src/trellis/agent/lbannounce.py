"""LoadBalancer IPs on the underlay, MetalLB's layer-2 mode.

Every node DNATs traffic to a LoadBalancer IP (the proxy's ``service-ips`` map),
but exactly one node must answer ARP for it, or the underlay's switch would
flap. Which one is ``proxy.announce`` (pure, shared with ``trellis explain``):
addresses spread over nodes, and when the announcer goes, the next in that
order takes over as soon as its agent sees the Node change.

The announcer puts the address (/32) on the loopback device, labelled
``lo:trellis-lb`` so the agent can tell its own addresses apart; the kernel then
answers ARP for it on the underlay like for any local address (arp_ignore=0),
and the agent sends gratuitous ARP so that neighbours that cached the old
node's MAC switch at once. The address has host scope, so the kernel never picks
it as the source of the node's own traffic (masquerade, hairpin). (kube-proxy's IPVS mode uses a dummy device; lo
needs no extra kernel module and is never down.)
"""
from __future__ import annotations

import logging
import socket
import struct

from trellis.kernel import netlink
from trellis.proxy import announce

log = logging.getLogger("trellis.agent.lb")
LB_DEV = "lo"
LB_LABEL = "lo:trellis-lb"


def desired(node: str, services: list[dict], nodes: list[dict], endpoint_nodes) -> set[str]:
    """The LB IPs this node must answer for. ``endpoint_nodes(ns, name)`` gives the nodes
    with a usable endpoint of the service."""
    return {ip for ip, who in announce.announcers(services, nodes, endpoint_nodes).items() if who == node}


def gratuitous_arp(dev: str, ip: str, netns: str | None = None) -> None:
    """Broadcast 'ip is at my MAC' (an ARP request and a reply, as arping -U/-A do)."""
    link = netlink.get_link(dev, netns)
    if link is None:
        return
    mac = bytes.fromhex(link.mac.replace(":", ""))
    addr = socket.inet_aton(ip)
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((dev, 0))
        for op, target_mac in ((1, b"\x00" * 6), (2, b"\xff" * 6)):
            arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + mac + addr + target_mac + addr
            s.send(b"\xff" * 6 + mac + b"\x08\x06" + arp)


def reconcile(want: set[str], underlay_dev: str, netns: str | None = None) -> tuple[set[str], set[str]]:
    """Make lo hold exactly ``want`` under our label; returns (added, removed)."""
    have = {c.split("/")[0] for c in netlink.addresses(LB_DEV, netns, LB_LABEL)}
    for ip in sorted(have - want):
        netlink.delete_address(LB_DEV, f"{ip}/32", netns)
        log.info("no longer announcing %s", ip)
    for ip in sorted(want - have):
        netlink.add_labelled_address(LB_DEV, f"{ip}/32", LB_LABEL, netns, host_scope=True)
        try:
            gratuitous_arp(underlay_dev, ip)
        except OSError as e:
            log.warning("gratuitous ARP for %s on %s: %s", ip, underlay_dev, e)
        log.info("announcing %s on %s", ip, underlay_dev)
    return want - have, have - want
