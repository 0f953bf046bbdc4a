"""Netlink: the one place trellis changes links, addresses, routes, neighbours and FDB entries.

The per-pod path (veth, pod addresses and routes, link lookups and deletes) speaks
rtnetlink directly (``rtnl``), since it runs on every CNI ADD and DEL; the rest
(VXLAN, FDB, dumps, reconcile) goes through pyroute2.

Functions take names, CIDRs and a namespace (None: the caller's own) and return
plain data. They have "ensure" semantics: EEXIST on add and ENOENT/ESRCH/ENODEV
on delete are success. Kernel errors become ``NetlinkError`` naming the step,
the object and the namespace.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError as _PyNLError

from trellis.kernel import rtnl
from trellis.kernel.netns import KernelError, in_netns
from trellis.kernel.rtnl import GONE, RTPROT_TRELLIS, Link, LinkNotFound, NetlinkError  # noqa: F401 (re-exported)

_pool: list[IPRoute] = []  # idle sockets of the caller's own namespace, reused across calls
_pool_lock = threading.Lock()


@contextmanager
def ipr(netns: str | None) -> Iterator[IPRoute]:
    """A netlink socket in ``netns``. Opening one costs ~4 ms (pyroute2 sets up an event loop),
    so sockets of the caller's own namespace are pooled; others (pods) are opened per use,
    so that no cached socket keeps a deleted namespace alive."""
    pooled = netns is None
    ip = None
    if pooled:
        with _pool_lock:
            ip = _pool.pop() if _pool else None
    try:
        if ip is None:
            # NOTE: a netlink socket belongs to the namespace it is created in; entering the
            # namespace on this thread just for the socket() call costs <1 ms, where pyroute2's
            # own netns= support forks a helper process (~7 ms).
            with in_netns(netns):
                ip = IPRoute()
    except (OSError, _PyNLError) as e:
        raise NetlinkError("open netlink", netns, e) from None
    ok = False
    try:
        yield ip
        ok = True
    finally:
        if pooled and ok:
            with _pool_lock:
                _pool.append(ip)
        else:
            ip.close()


def _idx(ip: IPRoute, name: str, netns: str | None) -> int:
    found = ip.link_lookup(ifname=name)
    if not found:
        raise LinkNotFound(f"look up link {name}", netns, OSError(errno.ENODEV, "no such device"))
    return found[0]


def get_link(name: str, netns: str | None = None) -> Link | None:
    with rtnl.Rtnl(netns) as nl:
        return nl.get_link(name)


def list_links(netns: str | None = None, prefix: str = "") -> list[str]:
    with ipr(netns) as ip:
        names = [l.get_attr("IFLA_IFNAME") for l in ip.get_links()]
    return [n for n in names if n.startswith(prefix)]


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
    """What a pod interface looks like now (for CHECK and repeated ADD)."""
    try:
        with ipr(pod_netns) as ip:
            found = ip.link_lookup(ifname=pod_if)
            if not found:
                return None
            link = ip.get_links(found[0])[0]
            addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ip.get_addr(index=found[0], family=2)]
            routes = [(r.get_attr("RTA_DST"), r["dst_len"], r.get_attr("RTA_GATEWAY"))
                      for r in ip.get_routes(family=2, oif=found[0])]
            return {"mac": link.get_attr("IFLA_ADDRESS"), "mtu": link.get_attr("IFLA_MTU"), "addrs": addrs,
                    "routes": routes}
    except NetlinkError:
        return None


# ---- routes -------------------------------------------------------------------

@dataclass(frozen=True)
class Route:
    dst: str  # CIDR
    dev: str
    gateway: str | None = None


def _route_args(ip: IPRoute, r: Route, netns: str | None) -> dict:
    args = {"dst": r.dst, "oif": _idx(ip, r.dev, netns), "proto": RTPROT_TRELLIS}
    if r.gateway:
        args["gateway"] = r.gateway
        args["flags"] = 4  # RTNH_F_ONLINK: the gateway needs no covering route (vxlan, direct L2)
    else:
        args["scope"] = 253  # link
    return args


def replace_route(r: Route, netns: str | None = None) -> None:
    with ipr(netns) as ip:
        try:
            ip.route("replace", **_route_args(ip, r, netns))
        except _PyNLError as e:
            raise NetlinkError(f"route {r.dst} dev {r.dev} via {r.gateway or '-'}", netns, e) from None


def delete_route(dst: str, netns: str | None = None) -> bool:
    with ipr(netns) as ip:
        try:
            ip.route("del", dst=dst, proto=RTPROT_TRELLIS)
            return True
        except _PyNLError as e:
            if e.code in GONE:
                return False
            raise NetlinkError(f"delete route {dst}", netns, e) from None


def owned_routes(netns: str | None = None) -> list[Route]:
    """IPv4 routes of the main table with trellis' protocol number."""
    out = []
    with ipr(netns) as ip:
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in ip.get_links()}
        for r in ip.get_routes(family=2, table=254):
            if r["proto"] != RTPROT_TRELLIS:
                continue
            dst = f"{r.get_attr('RTA_DST') or '0.0.0.0'}/{r['dst_len']}"
            out.append(Route(dst, names.get(r.get_attr("RTA_OIF"), "?"), r.get_attr("RTA_GATEWAY")))
    return out


# ---- vxlan, neighbours, FDB ---------------------------------------------------------

def ensure_vxlan(name: str, vni: int, local: str, underlay_dev: str, mac: str, mtu: int, port: int = 4789,
                 netns: str | None = None) -> None:
    """Create (or fix) the VXLAN device; learning off, since every entry is programmed."""
    with ipr(netns) as ip:
        found = ip.link_lookup(ifname=name)
        if found:
            link = ip.get_links(found[0])[0]
            data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            if data.get_attr("IFLA_VXLAN_ID") != vni or data.get_attr("IFLA_VXLAN_LOCAL") != local:
                ip.link("del", index=found[0])  # wrong identity: recreate
                found = []
        try:
            if not found:
                ip.link("add", ifname=name, kind="vxlan", vxlan_id=vni, vxlan_local=local,
                        vxlan_link=_idx(ip, underlay_dev, netns), vxlan_port=port, vxlan_learning=0)
            idx = _idx(ip, name, netns)
            link = ip.get_links(idx)[0]
            # NOTE: setting the address, even to the same value, flushes the device's
            # neighbours; change only what differs so a reconcile disturbs nothing.
            changes = {}
            if link.get_attr("IFLA_ADDRESS") != mac:
                changes["address"] = mac
            if link.get_attr("IFLA_MTU") != mtu:
                changes["mtu"] = mtu
            if not link["flags"] & 1:
                changes["state"] = "up"
            if changes:
                ip.link("set", index=idx, **changes)
        except _PyNLError as e:
            raise NetlinkError(f"vxlan device {name} (vni {vni}, local {local})", netns, e) from None


def ensure_address(dev: str, cidr: str, netns: str | None = None) -> None:
    iface = ipaddress.ip_interface(cidr)
    with ipr(netns) as ip:
        idx = _idx(ip, dev, netns)
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ip.get_addr(index=idx, family=2)}
        if (str(iface.ip), iface.network.prefixlen) in have:
            return
        try:
            ip.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except _PyNLError as e:
            if e.code != errno.EEXIST:
                raise NetlinkError(f"address {cidr} on {dev}", netns, e) from None


def addresses(dev: str, netns: str | None = None, label: str | None = None) -> list[str]:
    """The device's IPv4 addresses as CIDRs (only those with ``label`` if given)."""
    with ipr(netns) as ip:
        found = ip.link_lookup(ifname=dev)
        if not found:
            return []
        return [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ip.get_addr(index=found[0], family=2)
                if label is None or a.get_attr("IFA_LABEL") == label]


def add_labelled_address(dev: str, cidr: str, label: str, netns: str | None = None, host_scope: bool = False) -> None:
    """``host_scope``: never chosen as a source address for traffic leaving the node."""
    iface = ipaddress.ip_interface(cidr)
    with ipr(netns) as ip:
        try:
            ip.addr("add", index=_idx(ip, dev, netns), address=str(iface.ip), prefixlen=iface.network.prefixlen,
                    label=label, **({"scope": 254} if host_scope else {}))
        except _PyNLError as e:
            if e.code != errno.EEXIST:
                raise NetlinkError(f"address {cidr} ({label}) on {dev}", netns, e) from None


def delete_address(dev: str, cidr: str, netns: str | None = None) -> None:
    iface = ipaddress.ip_interface(cidr)
    with ipr(netns) as ip:
        try:
            ip.addr("del", index=_idx(ip, dev, netns), address=str(iface.ip), prefixlen=iface.network.prefixlen)
        except LinkNotFound:
            return
        except _PyNLError as e:
            if e.code not in GONE:
                raise NetlinkError(f"delete address {cidr} from {dev}", netns, e) from None


def replace_neigh(dev: str, ip_addr: str, mac: str, netns: str | None = None) -> None:
    with ipr(netns) as ip:
        try:
            ip.neigh("replace", dst=ip_addr, lladdr=mac, ifindex=_idx(ip, dev, netns), state=0x80)  # PERMANENT
        except _PyNLError as e:
            raise NetlinkError(f"neighbour {ip_addr} lladdr {mac} dev {dev}", netns, e) from None


def delete_neigh(dev: str, ip_addr: str, netns: str | None = None) -> None:
    with ipr(netns) as ip:
        try:
            ip.neigh("del", dst=ip_addr, ifindex=_idx(ip, dev, netns))
        except _PyNLError as e:
            if e.code not in GONE:
                raise NetlinkError(f"delete neighbour {ip_addr} dev {dev}", netns, e) from None


def neighbours(dev: str, netns: str | None = None) -> dict[str, str]:
    """Permanent neighbours of dev: ip -> mac."""
    with ipr(netns) as ip:
        idx = _idx(ip, dev, netns)
        return {n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR") for n in ip.get_neighbours(ifindex=idx, family=2)
                if n["state"] & 0x80}


def replace_fdb(dev: str, mac: str, dst: str, netns: str | None = None) -> None:
    with ipr(netns) as ip:
        try:
            ip.fdb("replace", ifindex=_idx(ip, dev, netns), lladdr=mac, dst=dst, state=0x80, flags=0x02)  # NTF_SELF
        except _PyNLError as e:
            raise NetlinkError(f"fdb {mac} dst {dst} dev {dev}", netns, e) from None


def delete_fdb(dev: str, mac: str, dst: str, netns: str | None = None) -> None:
    with ipr(netns) as ip:
        try:
            ip.fdb("del", ifindex=_idx(ip, dev, netns), lladdr=mac, dst=dst, flags=0x02)
        except _PyNLError as e:
            if e.code not in GONE:
                raise NetlinkError(f"delete fdb {mac} dev {dev}", netns, e) from None


def fdb_entries(dev: str, netns: str | None = None) -> dict[str, str]:
    """Remote FDB entries of a vxlan device: mac -> underlay dst."""
    out = {}
    with ipr(netns) as ip:
        idx = _idx(ip, dev, netns)
        for e in ip.fdb("dump", ifindex=idx):
            if e["ifindex"] == idx and e.get_attr("NDA_DST") and e["state"] & 0x80:
                out[e.get_attr("NDA_LLADDR")] = e.get_attr("NDA_DST")
    return out


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
