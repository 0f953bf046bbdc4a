"""Netlink: the one place trellis changes links, addresses, routes, neighbours and FDB entries.

Functions take names, CIDRs and a namespace (None: the caller's own) and return plain
data. They have "ensure" semantics: EEXIST on add and ENOENT/ESRCH/ENODEV on delete are
success. Kernel errors become ``NetlinkError`` naming the step, the object, the namespace
and, when the kernel gives one, its reason. Everything goes through ``rtnl`` (synchronous
rtnetlink); the per-pod path batches its requests, since it runs on every CNI ADD.
"""
from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass

from trellis.kernel import rtnl
from trellis.kernel.netns import KernelError, in_netns
from trellis.kernel.rtnl import GONE, RTPROT_TRELLIS, Link, LinkNotFound, NetlinkError  # noqa: F401 (re-exported)


def _idx(nl: rtnl.Rtnl, name: str) -> int:
    link = nl.get_link(name)
    if link is None:
        raise LinkNotFound(f"look up link {name}", nl.netns, OSError(errno.ENODEV, "no such device"))
    return link.index


def get_link(name: str, netns: str | None = None) -> Link | None:
    with rtnl.Rtnl(netns) as nl:
        return nl.get_link(name)


def list_links(netns: str | None = None, prefix: str = "") -> list[str]:
    with rtnl.Rtnl(netns) as nl:
        return [link.name for link in nl.links() if link.name.startswith(prefix)]


def delete_link(name: str, netns: str | None = None) -> bool:
    """True when it was there (deleting a veth takes its peer and its routes with it)."""
    with rtnl.Rtnl(netns) as nl:
        return nl.delete_link(name)


def create_pod_veth(host_if: str, pod_netns: str, pod_if: str, pod_ip: str, link_mtu: int, route_mtu: int,
                    local_block: str, gateway: str = "169.254.1.1",
                    host_netns: str | None = None) -> tuple[Link, str]:
    """Routed-pod veth (Calico style), the peer created directly in the pod's namespace under
    its final name. Returns the host end and the pod interface's MAC.

    Pod side: ``pod_ip/32``, a link route to the gateway, a permanent neighbour for the
    gateway (the host end's MAC, so the pod never ARPs for it; proxy ARP on the host end
    stays as the fallback), and two routes via the gateway: the default one with
    ``route_mtu`` (what leaves the node: the overlay's MTU) and ``local_block`` (the other
    pods of this node) at the link's own ``link_mtu``. Seven requests in one write.
    The caller adds the host side's proxy ARP and /32 route.
    """
    try:
        fd = os.open(pod_netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetlinkError(f"open pod netns for {host_if}", pod_netns, e) from None
    try:
        with rtnl.Rtnl(host_netns) as nl:
            nl.add_veth(host_if, pod_if, fd, link_mtu)
            host = nl.get_link(host_if)
    finally:
        os.close(fd)
    if host is None:
        raise LinkNotFound(f"look up {host_if} after creating it", host_netns, OSError(errno.ENODEV, "gone"))
    with rtnl.Rtnl(pod_netns) as nl:
        pod = nl.get_link(pod_if)
        if pod is None:
            raise LinkNotFound(f"look up {pod_if} after creating it", pod_netns, OSError(errno.ENODEV, "gone"))
        nl.call(rtnl.set_up(pod_if, f"set {pod_if} up", pod.index),
                rtnl.add_address(pod.index, f"{pod_ip}/32", f"address {pod_ip}/32 on {pod_if}"),
                rtnl.route(f"{gateway}/32", pod.index, f"route to gateway {gateway}"),
                rtnl.route("0.0.0.0/0", pod.index, f"default route (mtu {route_mtu})", gateway=gateway,
                           mtu=route_mtu),
                rtnl.route(local_block, pod.index, f"route to this node's pods {local_block}", gateway=gateway),
                rtnl.permanent_neighbour(pod.index, gateway, host.mac, f"neighbour {gateway} -> {host.mac}"),
                rtnl.set_up("lo", "set lo up"))
    return host, pod.mac


def replace_host_route(dst: str, link: Link, netns: str | None = None) -> None:
    """The pod's /32 on its host veth (what the anti-spoofing reverse-path check matches)."""
    with rtnl.Rtnl(netns) as nl:
        nl.call(rtnl.route(dst, link.index, f"route {dst} dev {link.name}", proto=RTPROT_TRELLIS, replace=True))


def pod_interface(pod_netns: str, pod_if: str) -> dict | None:
    """What a pod interface looks like now (for CHECK and repeated ADD): routes of the main
    table through it as (dst or None for the default, prefix length, gateway)."""
    try:
        with rtnl.Rtnl(pod_netns) as nl:
            link = nl.get_link(pod_if)
            if link is None:
                return None
            routes = [(None if r.dst == "0.0.0.0/0" else r.dst.split("/")[0], int(r.dst.split("/")[1]), r.gateway)
                      for r in nl.routes() if r.oif == link.index and r.table == rtnl.RT_TABLE_MAIN]
            return {"mac": link.mac, "mtu": link.mtu, "addrs": [a.cidr for a in nl.addresses(link.index)],
                    "routes": routes}
    except KernelError:
        return None


# ---- routes -------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    dst: str  # CIDR
    dev: str
    gateway: str | None = None


def replace_route(r: Route, netns: str | None = None, table: int = rtnl.RT_TABLE_MAIN) -> None:
    """Trellis' protocol number; a gateway is onlink (vxlan, direct L2), no gateway means link scope."""
    where = f" table {table}" if table != rtnl.RT_TABLE_MAIN else ""
    with rtnl.Rtnl(netns) as nl:
        nl.call(rtnl.route(r.dst, _idx(nl, r.dev), f"route {r.dst} dev {r.dev} via {r.gateway or '-'}{where}",
                           gateway=r.gateway, proto=RTPROT_TRELLIS, replace=True, table=table))


def delete_route(dst: str, netns: str | None = None, table: int = rtnl.RT_TABLE_MAIN) -> bool:
    with rtnl.Rtnl(netns) as nl:
        try:
            nl.call(rtnl.delete_route(dst, f"delete route {dst}", table=table))
            return True
        except NetlinkError as e:
            if e.code in GONE:
                return False
            raise


def owned_routes(netns: str | None = None, table: int = rtnl.RT_TABLE_MAIN) -> list[Route]:
    """IPv4 routes of one table (main by default) with trellis' protocol number."""
    with rtnl.Rtnl(netns) as nl:
        names = {link.index: link.name for link in nl.links()}
        return [Route(r.dst, names.get(r.oif, "?"), r.gateway) for r in nl.routes()
                if r.proto == RTPROT_TRELLIS and r.table == table]


def ensure_fwmark_rule(priority: int, mark: int, table: int, netns: str | None = None) -> None:
    """``ip rule add priority P fwmark MARK/MARK lookup TABLE``, once (a rule at that
    priority that differs is replaced)."""
    with rtnl.Rtnl(netns) as nl:
        have = [r for r in nl.rules() if r.priority == priority]
        if any(r.table == table and r.fwmark == mark and r.fwmask == mark for r in have):
            return
        for r in have:
            nl.call(rtnl.fwmark_rule(priority, r.fwmark or 0, r.fwmask or 0, r.table, f"delete rule {priority}",
                                     delete=True), ok=frozenset(GONE))
        nl.call(rtnl.fwmark_rule(priority, mark, mark, table, f"rule {priority}: fwmark {mark:#x} lookup {table}"),
                ok=frozenset({errno.EEXIST}))


def delete_fwmark_rule(priority: int, mark: int, table: int, netns: str | None = None) -> None:
    with rtnl.Rtnl(netns) as nl:
        nl.call(rtnl.fwmark_rule(priority, mark, mark, table, f"delete rule {priority}", delete=True),
                ok=frozenset(GONE))


# ---- vxlan, addresses, neighbours, FDB ------------------------------------------------

def ensure_vxlan(name: str, vni: int, local: str, underlay_dev: str | None, mac: str, mtu: int, port: int = 4789,
                 netns: str | None = None, gbp: bool = False) -> None:
    """Create (or fix) the VXLAN device; learning off, since every entry is programmed.
    ``underlay_dev`` None: bound to no device, so ``mtu`` may exceed the underlay's minus the
    header (the outer packet is then fragmented). ``gbp``: with the Group Based Policy
    extension (the packet mark travels in the header)."""
    with rtnl.Rtnl(netns) as nl:
        link = nl.get_link(name)
        if link is not None:
            info = link.info or {}
            if (info.get(rtnl.IFLA_VXLAN_ID) != rtnl.u32(vni)
                    or info.get(rtnl.IFLA_VXLAN_LOCAL) != rtnl.ip4(local)
                    or (rtnl.IFLA_VXLAN_GBP in info) != gbp
                    or (rtnl.IFLA_VXLAN_LINK in info) != (underlay_dev is not None)):
                nl.delete_link(name)  # wrong identity: recreate
                link = None
        if link is None:
            nl.add_vxlan(name, vni, local, _idx(nl, underlay_dev) if underlay_dev else 0, port, gbp)
            link = nl.get_link(name)
            if link is None:
                raise LinkNotFound(f"look up {name} after creating it", netns, OSError(errno.ENODEV, "gone"))
        # NOTE: setting the address, even to the same value, flushes the device's
        # neighbours; change only what differs so a reconcile disturbs nothing.
        if link.mac != mac or link.mtu != mtu or not link.up:
            nl.set_link(link.index, f"vxlan device {name}: address {mac}, mtu {mtu}, up",
                        mac=mac if link.mac != mac else None, mtu=mtu if link.mtu != mtu else None,
                        up=True if not link.up else None)


def ensure_address(dev: str, cidr: str, netns: str | None = None) -> None:
    with rtnl.Rtnl(netns) as nl:
        idx = _idx(nl, dev)
        if any(a.cidr == cidr for a in nl.addresses(idx)):
            return
        nl.call(rtnl.add_address(idx, cidr, f"address {cidr} on {dev}"), ok=frozenset({errno.EEXIST}))


def addresses(dev: str, netns: str | None = None, label: str | None = None) -> list[str]:
    """The device's IPv4 addresses as CIDRs (only those with ``label`` if given)."""
    with rtnl.Rtnl(netns) as nl:
        link = nl.get_link(dev)
        if link is None:
            return []
        return [a.cidr for a in nl.addresses(link.index) if label is None or a.label == label]


def add_labelled_address(dev: str, cidr: str, label: str, netns: str | None = None, host_scope: bool = False) -> None:
    """``host_scope``: never chosen as a source address for traffic leaving the node."""
    with rtnl.Rtnl(netns) as nl:
        nl.call(rtnl.labelled_address(_idx(nl, dev), cidr, label, f"address {cidr} ({label}) on {dev}",
                                      rtnl.SCOPE_HOST if host_scope else rtnl.SCOPE_UNIVERSE),
                ok=frozenset({errno.EEXIST}))


def delete_address(dev: str, cidr: str, netns: str | None = None) -> None:
    with rtnl.Rtnl(netns) as nl:
        link = nl.get_link(dev)
        if link is not None:
            nl.call(rtnl.delete_address(link.index, cidr, f"delete address {cidr} from {dev}"), ok=frozenset(GONE))


def replace_neigh(dev: str, ip_addr: str, mac: str, netns: str | None = None) -> None:
    with rtnl.Rtnl(netns) as nl:
        nl.call(rtnl.permanent_neighbour(_idx(nl, dev), ip_addr, mac, f"neighbour {ip_addr} lladdr {mac} dev {dev}"))


def delete_neigh(dev: str, ip_addr: str, netns: str | None = None) -> None:
    with rtnl.Rtnl(netns) as nl:
        nl.call(rtnl.delete_neighbour(_idx(nl, dev), ip_addr, f"delete neighbour {ip_addr} dev {dev}"),
                ok=frozenset(GONE))


def neighbours(dev: str, netns: str | None = None) -> dict[str, str]:
    """Permanent neighbours of dev: ip -> mac."""
    with rtnl.Rtnl(netns) as nl:
        return {n.ip: n.mac for n in nl.neighbours(socket.AF_INET, _idx(nl, dev))
                if n.ip and n.state & rtnl.NUD_PERMANENT}


def replace_fdb(dev: str, mac: str, dst: str, netns: str | None = None) -> None:
    with rtnl.Rtnl(netns) as nl:
        nl.call(rtnl.fdb(_idx(nl, dev), mac, dst, f"fdb {mac} dst {dst} dev {dev}"))


def delete_fdb(dev: str, mac: str, dst: str, netns: str | None = None) -> None:
    with rtnl.Rtnl(netns) as nl:
        nl.call(rtnl.fdb(_idx(nl, dev), mac, dst, f"delete fdb {mac} dev {dev}", delete=True), ok=frozenset(GONE))


def fdb_entries(dev: str, netns: str | None = None) -> dict[str, str]:
    """Remote FDB entries of a vxlan device: mac -> underlay dst."""
    with rtnl.Rtnl(netns) as nl:
        return {e.mac: e.ip for e in nl.neighbours(rtnl.AF_BRIDGE, _idx(nl, dev))
                if e.ip and e.state & rtnl.NUD_PERMANENT}


def write_sysctl(key: str, value: str, netns: str | None = None) -> None:
    """A per-namespace sysctl (the agent's own namespace when netns is None).

    ``key`` uses '/' separators (``net/ipv4/conf/<if>/proxy_arp``): interface names may hold dots.
    /proc/sys/net shows the namespace of the thread that opens it, hence ``in_netns``.
    """
    path = "/proc/sys/" + key
    try:
        with in_netns(netns):
            fd = os.open(path, os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(value)
    except OSError as e:
        where = f" in netns {netns}" if netns else ""
        raise KernelError(f"sysctl {key}={value}{where}: {e.strerror}") from None
