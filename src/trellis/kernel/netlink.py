"""Netlink through pyroute2: the one place trellis changes links, addresses, routes,
neighbours and FDB entries.

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

from trellis.kernel.netns import KernelError, in_netns

RTPROT_TRELLIS = 201  # routes trellis owns carry this protocol number, so stale ones can be swept
GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}


class NetlinkError(KernelError):
    def __init__(self, step: str, netns: str | None, err: Exception) -> None:
        code = getattr(err, "code", None)
        name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
        where = f" in netns {netns}" if netns else ""
        super().__init__(f"{step}{where}: {name or ''} {os.strerror(code) if isinstance(code, int) else err}".strip())
        self.code = code


class LinkNotFound(NetlinkError):
    pass


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


@dataclass
class Link:
    name: str
    index: int
    mac: str
    mtu: int
    up: bool
    kind: str


def get_link(name: str, netns: str | None = None) -> Link | None:
    with ipr(netns) as ip:
        found = ip.link_lookup(ifname=name)
        if not found:
            return None
        link = ip.get_links(found[0])[0]
        info = link.get_attr("IFLA_LINKINFO")
        return Link(name, found[0], link.get_attr("IFLA_ADDRESS"), link.get_attr("IFLA_MTU"),
                    bool(link["flags"] & 1), info.get_attr("IFLA_INFO_KIND") if info else "")


def list_links(netns: str | None = None, prefix: str = "") -> list[str]:
    with ipr(netns) as ip:
        names = [l.get_attr("IFLA_IFNAME") for l in ip.get_links()]
    return [n for n in names if n.startswith(prefix)]


def delete_link(name: str, netns: str | None = None) -> bool:
    with ipr(netns) as ip:
        found = ip.link_lookup(ifname=name)
        if not found:
            return False
        try:
            ip.link("del", index=found[0])
        except _PyNLError as e:
            if e.code in GONE:
                return False
            raise NetlinkError(f"delete link {name}", netns, e) from None
    return True


def create_pod_veth(host_if: str, pod_netns: str, pod_if: str, pod_ip: str, mtu: int,
                    gateway: str = "169.254.1.1", host_netns: str | None = None) -> str:
    """Routed-pod veth (Calico style). Returns the pod interface's MAC.

    Pod side: ``pod_ip/32``, a link route to the gateway, default route via it.
    Host side: up, no address; the caller adds proxy ARP and the /32 route.
    A temporary peer name avoids clashing with an ``eth0`` that already exists
    in the host namespace while the peer is created.
    """
    tmp = "tmp" + host_if[-12:]
    with ipr(host_netns) as ip:
        try:
            ip.link("add", ifname=host_if, kind="veth", mtu=mtu,
                    peer={"ifname": tmp, "net_ns_fd": pod_netns, "mtu": mtu})
        except _PyNLError as e:
            raise NetlinkError(f"create veth {host_if} (peer in {pod_netns})", host_netns, e) from None
        try:
            hidx = _idx(ip, host_if, host_netns)
            ip.link("set", index=hidx, state="up")
            host_mac = ip.get_links(hidx)[0].get_attr("IFLA_ADDRESS")
        except _PyNLError as e:
            raise NetlinkError(f"set {host_if} up", host_netns, e) from None
    step = "rename peer"
    try:
        with ipr(pod_netns) as ip:
            idx = _idx(ip, tmp, pod_netns)
            ip.link("set", index=idx, ifname=pod_if)
            step = f"address {pod_ip}/32 on {pod_if}"
            ip.addr("add", index=idx, address=pod_ip, prefixlen=32)
            step = f"set {pod_if} up"
            ip.link("set", index=idx, state="up")
            step = f"route to gateway {gateway}"
            ip.route("add", dst=f"{gateway}/32", oif=idx, scope=253)
            step = "default route"
            ip.route("add", dst="0.0.0.0/0", gateway=gateway, oif=idx)
            # NOTE: a permanent neighbour for the gateway (the host veth's MAC) means the pod
            # never has to ARP for it; proxy ARP on the host side stays as the fallback.
            step = f"neighbour {gateway} -> {host_mac}"
            ip.neigh("replace", dst=gateway, lladdr=host_mac, ifindex=idx, state=0x80)
            lo = ip.link_lookup(ifname="lo")
            if lo:
                ip.link("set", index=lo[0], state="up")
            return ip.get_links(idx)[0].get_attr("IFLA_ADDRESS")
    except _PyNLError as e:
        raise NetlinkError(step, pod_netns, e) from None


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
