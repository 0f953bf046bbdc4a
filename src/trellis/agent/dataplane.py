"""Routed pod networking on a node: what CNI ADD, DEL, CHECK and GC do.

ADD reads as a story: validate -> allocate an IP -> veth into the pod ->
host side (proxy ARP, /32 route, which is also what anti-spoofing checks) -> result. Each
step registers its undo; a failure undoes what was done, in reverse, so a
failed ADD leaks no IP, link, route or nft element. DEL is idempotent: a
missing namespace or link is success and the IP is released anyway.
"""
from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field

from trellis.agent import nettable
from trellis.agent.ipam import Allocator, Exhausted, IPAMError, Reservation
from trellis.kernel import netlink, nft
from trellis.kernel.netns import KernelError, netns_path_problem

log = logging.getLogger("trellis.agent.dataplane")
GATEWAY = "169.254.1.1"
# NOTE: same-node traffic never crosses a wire, so the pod link's MTU only sets the per-packet
# cost between pods of a node: the largest a veth takes, as lo has. What leaves the node gets
# the overlay's MTU from the pod's default route (Cilium's split of device and route MTU), so
# TCP's MSS and PMTU toward other nodes are exactly what a 1450-byte interface would give.
LINK_MTU = 65535


IP_POOL_EXHAUSTED = "IPPoolExhausted"  # Event reason: the node's pod block has no free address


class CNIFailure(Exception):
    """An error to report to the runtime with a CNI error code."""

    def __init__(self, code: int, msg: str, details: str = "", reason: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details
        self.reason = reason  # an Event reason for the pod, when the cause is one an operator must fix


@dataclass
class Request:
    command: str
    container_id: str
    netns: str
    ifname: str
    args: dict[str, str] = field(default_factory=dict)
    config: dict = field(default_factory=dict)

    @property
    def pod(self) -> str:
        ns, name = self.args.get("K8S_POD_NAMESPACE"), self.args.get("K8S_POD_NAME")
        return f"{ns}/{name}" if ns and name else ""


def netns_problem(path: str) -> str | None:
    return "CNI_NETNS is unset" if not path else netns_path_problem(path)


def check_netns(req: Request) -> None:
    """CNI_NETNS must be a network namespace before anything is allocated: a missing path is
    3 (the container is gone), anything else that is no netns (a FIFO would block the
    opener forever) is 4, both answered at once."""
    why = netns_problem(req.netns)
    if why:
        missing = bool(req.netns) and not os.path.lexists(req.netns)
        raise CNIFailure(3 if missing else 4, f"CNI_NETNS: {why}", f"container {req.container_id}")


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a == b


def host_ifname(container_id: str, ifname: str) -> str:
    return nettable.HOST_IF_PREFIX + hashlib.sha1(f"{container_id}/{ifname}".encode()).hexdigest()[:12]


class PodNetwork:
    def __init__(self, allocator: Allocator, mtu: int, cluster_cidr: str, netns: str | None = None,
                 link_mtu: int = LINK_MTU) -> None:
        """``mtu``: for traffic leaving the node (the pod's default route); ``link_mtu``: the
        veth's, for traffic between pods of this node. ``netns``: the node's namespace; None
        when the agent runs inside it (as deployed)."""
        self.ipam, self.mtu, self.cluster_cidr, self.netns = allocator, mtu, cluster_cidr, netns
        self.link_mtu = max(link_mtu, mtu)
        self.overlay_peers: set[str] = set()  # as in the table's overlay-peers set
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def result(self, req: Request, r: Reservation, mac: str, host: netlink.Link | None) -> dict:
        """The host veth is listed too (as ptp/bridge do), so chained plugins such as
        ``bandwidth`` find the pod's peer on the host."""
        host_if = host_ifname(req.container_id, req.ifname)
        return {"cniVersion": req.config.get("cniVersion", "1.0.0"),
                "interfaces": [{"name": host_if, "mac": host.mac if host else ""},
                               {"name": req.ifname, "mac": mac, "sandbox": req.netns}],
                "ips": [{"address": f"{r.ip}/32", "gateway": GATEWAY, "interface": 1}],
                "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}, {"dst": str(self.ipam.net), "gw": GATEWAY}],
                "dns": {}}

    # -- ADD --
    def add(self, req: Request) -> dict:
        check_netns(req)
        with self._lock(f"{req.container_id}/{req.ifname}"):
            host_if = host_ifname(req.container_id, req.ifname)
            held = self.ipam.find(req.container_id, req.ifname)
            if held is not None:
                host = netlink.get_link(host_if, self.netns)
                where = held.netns or req.netns
                now = netlink.pod_interface(where, req.ifname) if host and not netns_problem(where) else None
                if now and f"{held.ip}/32" in now["addrs"]:
                    if not same_file(where, req.netns):
                        # NOTE: rewiring would delete the working veth of the first ADD; a repeat
                        # ADD of a live attachment may only repeat it, as the runtime must DEL first
                        raise CNIFailure(4, f"container {req.container_id} {req.ifname} is already attached in "
                                         f"{where} ({held.ip}); CNI_NETNS {req.netns} differs (DEL it first)")
                    return self.result(req, held, now["mac"], host)  # a repeated ADD: same answer
                if not same_file(where, req.netns):
                    self.ipam.release(req.container_id, req.ifname)  # broken and elsewhere: start afresh
            with contextlib.ExitStack() as undo:
                try:
                    r = self.ipam.allocate(req.container_id, req.ifname, req.pod, req.netns)
                except Exhausted as e:
                    raise CNIFailure(11, str(e), reason=IP_POOL_EXHAUSTED) from None
                except IPAMError as e:
                    raise CNIFailure(999, str(e)) from None
                undo.callback(self.ipam.release, req.container_id, req.ifname)
                try:
                    undo.callback(netlink.delete_link, host_if, self.netns)  # before: creation may fail half-way
                    wire = functools.partial(netlink.create_pod_veth, host_if, req.netns, req.ifname, r.ip,
                                             self.link_mtu, self.mtu, str(self.ipam.net), GATEWAY, self.netns)
                    try:
                        host, mac = wire()
                    except netlink.NetlinkError as e:
                        if e.code != errno.EEXIST:
                            raise
                        netlink.delete_link(host_if, self.netns)  # a half-made veth of an earlier failed ADD
                        host, mac = wire()
                    netlink.write_sysctl(f"net/ipv4/conf/{host_if}/proxy_arp", "1", self.netns)
                    netlink.write_sysctl(f"net/ipv4/neigh/{host_if}/proxy_delay", "0", self.netns)
                    netlink.replace_host_route(f"{r.ip}/32", host, self.netns)  # also the RPF check
                except KernelError as e:
                    raise CNIFailure(999, f"wiring pod {req.pod or req.container_id} ({r.ip}, {host_if}): {e}") from None
                undo.pop_all()
            log.info("ADD %s %s -> %s via %s", req.pod or req.container_id, req.ifname, r.ip, host_if)
            return self.result(req, r, mac, host)

    # -- DEL --
    def delete(self, req: Request) -> None:
        with self._lock(f"{req.container_id}/{req.ifname}"):
            host_if = host_ifname(req.container_id, req.ifname)
            r = self.ipam.release(req.container_id, req.ifname)
            netlink.delete_link(host_if, self.netns)  # takes the pod end and the /32 route with it
            log.info("DEL %s %s (released %s)", req.pod or req.container_id, req.ifname, r.ip if r else "nothing")

    # -- CHECK --
    def check(self, req: Request) -> None:
        check_netns(req)
        held = self.ipam.find(req.container_id, req.ifname)
        if held is None:
            raise CNIFailure(999, f"no address is allocated to container {req.container_id} {req.ifname}")
        host_if = host_ifname(req.container_id, req.ifname)
        if netlink.get_link(host_if, self.netns) is None:
            raise CNIFailure(999, f"host interface {host_if} of {req.pod or req.container_id} is missing")
        now = netlink.pod_interface(req.netns, req.ifname)
        if now is None or f"{held.ip}/32" not in now["addrs"]:
            raise CNIFailure(999, f"{req.ifname} in {req.netns} does not hold {held.ip}/32 (has {now})")
        if not any(dst is None and gw == GATEWAY for dst, _, gw in now["routes"]):
            raise CNIFailure(999, f"{req.ifname} in {req.netns} has no default route via {GATEWAY}")
        prev = (req.config.get("prevResult") or {}).get("ips") or []
        if prev and prev[0].get("address") != f"{held.ip}/32":
            raise CNIFailure(999, f"prevResult says {prev[0].get('address')}, the pod holds {held.ip}/32")

    # -- GC --
    def gc(self, keep: set[tuple[str, str]], keep_live: bool = False) -> list[Reservation]:
        """Release what is not in ``keep``; with ``keep_live`` also keep every attachment whose
        namespace still exists (a runtime's GC list can lag or be wrong; a live pod is never cut)."""
        if keep_live:
            keep = keep | {(r.container_id, r.ifname) for r in self.ipam.store.all()
                           if r.netns and not netns_problem(r.netns)}
        gone = self.ipam.gc(keep)
        for r in gone:
            host_if = host_ifname(r.container_id, r.ifname)
            netlink.delete_link(host_if, self.netns)
            log.info("GC released %s of %s (%s)", r.ip, r.pod or r.container_id, r.ifname)
        return gone

    # -- restart --
    def restore(self) -> None:
        """After an agent restart: the table and /32 routes again, from the IPAM store."""
        pods = [(host_ifname(r.container_id, r.ifname), r.ip) for r in self.ipam.store.all()]
        live = [(h, ip) for h, ip in pods if netlink.get_link(h, self.netns) is not None]
        nft.apply(nettable.render(self.cluster_cidr, self.overlay_peers), "restore the pod network table", self.netns)
        for h, ip in live:
            netlink.replace_route(netlink.Route(f"{ip}/32", h), self.netns)

    def set_overlay_peers(self, ips: set[str]) -> None:
        """The other nodes' underlay addresses: the only sources VXLAN is accepted from."""
        script = nettable.peers_update(self.overlay_peers, ips)
        if script:
            nft.apply(script, "overlay peers", self.netns)
            self.overlay_peers = set(ips)
