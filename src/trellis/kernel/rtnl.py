"""Synchronous rtnetlink: links, addresses, routes, neighbours and FDB entries. No event loop.

trellis needs a small part of rtnetlink, and needs it fast: CNI ADD issues a dozen
requests, half of them in a namespace that is new for every pod. (pyroute2, used before,
runs every request through an asyncio loop: ~0.5-1 ms a request and ~4 ms to open a
socket.) Here a request is one ``sendto`` and one ``recv`` (tens of microseconds), a
socket in another namespace is opened by entering it on the calling thread for the
``socket()`` call only, and several requests can go in one write: each is acknowledged
on its own, and the first one that failed raises ``NetlinkError`` naming its step, the
namespace and the kernel's own reason (extended ACK) when it gives one. Dumps read
until NLMSG_DONE.

The message layouts are those of <linux/rtnetlink.h>, <linux/if_link.h>,
<linux/if_addr.h> and <linux/neighbour.h>.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from trellis.kernel.netns import KernelError, in_netns

GONE = {errno.ENOENT, errno.ESRCH, errno.ENODEV, errno.EADDRNOTAVAIL}
RTPROT_BOOT, RTPROT_TRELLIS = 3, 201  # routes trellis owns carry 201, so stale ones can be swept

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x4, 0x300, 0x10
RECV_BUFFER = 1 << 16  # the kernel fills dump messages up to 32 KB; a single link's reply is far less
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # in an ACK: payload left out; extended-ACK attributes follow
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NLMSGERR_ATTR_MSG = 1
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34
FRA_PRIORITY, FRA_FWMARK, FRA_TABLE, FRA_FWMASK = 6, 10, 15, 16
FR_ACT_TO_TBL = 1
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_VXLAN_ID, IFLA_VXLAN_LINK, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PORT = 1, 3, 4, 7, 15
IFLA_VXLAN_GBP = 23  # a flag: the Group Based Policy extension carries the packet mark's low 16 bits
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_METRICS = 1, 4, 5, 8
RTAX_MTU = 2
NDA_DST, NDA_LLADDR = 1, 2
RTA_TABLE = 15
IFF_UP, NUD_PERMANENT, RTN_UNICAST, RT_TABLE_MAIN = 0x1, 0x80, 1, 254
NTF_SELF, AF_BRIDGE = 0x02, 7
SCOPE_UNIVERSE, SCOPE_LINK, SCOPE_HOST, SCOPE_NOWHERE = 0, 253, 254, 255
RTNH_F_ONLINK = 0x4
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER


class NetlinkError(KernelError):
    """A netlink request failed: which step, which namespace, and the kernel's errno."""

    def __init__(self, step: str, netns: str | None, err: Exception, detail: str = "") -> None:
        """``detail``: the kernel's own words (extended ACK), when it gave any."""
        code = getattr(err, "code", None)
        if not isinstance(code, int):
            code = getattr(err, "errno", None)
        name = errno.errorcode.get(code, "") if isinstance(code, int) else ""
        where = f" in netns {netns}" if netns else ""
        text = f"{step}{where}: {name or ''} {os.strerror(code) if isinstance(code, int) else err}".strip()
        super().__init__(f"{text} ({detail})" if detail else text)
        self.code = code


class LinkNotFound(NetlinkError):
    pass


@dataclass
class Link:
    name: str
    index: int
    mac: str
    mtu: int
    up: bool
    kind: str
    info: dict[int, bytes] | None = None  # IFLA_INFO_DATA attributes (the vxlan's id, local address...)


@dataclass(frozen=True)
class Address:
    cidr: str
    index: int
    label: str


@dataclass(frozen=True)
class RouteEntry:
    dst: str  # CIDR
    oif: int
    gateway: str | None
    proto: int
    table: int


@dataclass(frozen=True)
class Neighbour:
    ip: str | None  # NDA_DST: the IP for ARP entries, the remote underlay address for FDB entries
    mac: str
    index: int
    state: int


@dataclass(frozen=True)
class FibRule:
    priority: int
    table: int
    fwmark: int | None
    fwmask: int | None


# ---- encoding ----------------------------------------------------------------------

def attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * (-n % 4)


def _name(s: str) -> bytes:
    return s.encode() + b"\0"


def u32(v: int) -> bytes:
    return struct.pack("=I", v)


def ip4(a: str) -> bytes:
    return ipaddress.IPv4Address(a).packed


def _mac(m: str) -> bytes:
    return bytes.fromhex(m.replace(":", ""))


def ifinfomsg(index: int = 0, up: bool | None = None) -> bytes:
    """family, pad, type, index, flags, change: ``up`` None leaves the flags alone."""
    flags, change = (0, 0) if up is None else (IFF_UP if up else 0, IFF_UP)
    return struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)


def rtmsg(dst_len: int, scope: int, proto: int, flags: int = 0, table: int = RT_TABLE_MAIN) -> bytes:
    """family, dst_len, src_len, tos, table, protocol, scope, type, flags (tables above 255
    go in RTA_TABLE, which the callers add)."""
    return struct.pack("=BBBBBBBBI", socket.AF_INET, dst_len, 0, 0, table if table < 256 else 0, proto, scope,
                       RTN_UNICAST, flags)


def parse_attrs(data: bytes, off: int = 0) -> dict[int, bytes]:
    out = {}
    while off + 4 <= len(data):
        n, kind = struct.unpack_from("=HH", data, off)
        if n < 4:
            break
        out[kind & NLA_TYPE_MASK] = data[off + 4:off + n]
        off += (n + 3) & ~3
    return out


def _text(b: bytes) -> str:
    return b.rstrip(b"\0").decode()


def _ip(b: bytes | None) -> str | None:
    return str(ipaddress.IPv4Address(b)) if b and len(b) == 4 else None


def parse_link(payload: bytes) -> Link:
    _, _, index, flags, _ = struct.unpack_from("=BxHiII", payload, 0)
    a = parse_attrs(payload, 16)
    info = parse_attrs(a.get(IFLA_LINKINFO, b""))
    return Link(_text(a.get(IFLA_IFNAME, b"")), index, a.get(IFLA_ADDRESS, b"").hex(":"),
                struct.unpack("=I", a[IFLA_MTU])[0] if IFLA_MTU in a else 0, bool(flags & IFF_UP),
                _text(info.get(IFLA_INFO_KIND, b"")), parse_attrs(info.get(IFLA_INFO_DATA, b"")))


def parse_address(payload: bytes) -> Address:
    _, prefixlen, _, _, index = struct.unpack_from("=BBBBI", payload, 0)
    a = parse_attrs(payload, 8)
    return Address(f"{_ip(a.get(IFA_LOCAL) or a.get(IFA_ADDRESS))}/{prefixlen}", index, _text(a.get(IFA_LABEL, b"")))


def parse_route(payload: bytes) -> RouteEntry:
    _, dst_len, _, _, table, proto, _, _, _ = struct.unpack_from("=BBBBBBBBI", payload, 0)
    a = parse_attrs(payload, 12)
    if RTA_TABLE in a:
        table = struct.unpack("=I", a[RTA_TABLE])[0]
    return RouteEntry(f"{_ip(a.get(RTA_DST)) or '0.0.0.0'}/{dst_len}",
                      struct.unpack("=I", a[RTA_OIF])[0] if RTA_OIF in a else 0, _ip(a.get(RTA_GATEWAY)), proto, table)


def fib_rule_hdr(table: int, action: int = 0) -> bytes:
    """family, dst_len, src_len, tos, table, res1, res2, action, flags."""
    return struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, table if table < 256 else 0, 0, 0, action, 0)


def parse_rule(payload: bytes) -> FibRule:
    table = payload[4]
    a = parse_attrs(payload, 12)
    u = lambda k: struct.unpack("=I", a[k])[0] if k in a else None  # noqa: E731
    return FibRule(u(FRA_PRIORITY) or 0, u(FRA_TABLE) or table, u(FRA_FWMARK), u(FRA_FWMASK))


def parse_neighbour(payload: bytes) -> Neighbour:
    _, index, state, _, _ = struct.unpack_from("=BxxxiHBB", payload, 0)
    a = parse_attrs(payload, 12)
    return Neighbour(_ip(a.get(NDA_DST)), a.get(NDA_LLADDR, b"").hex(":"), index, state)


# ---- the socket ----------------------------------------------------------------------

Request = tuple[str, int, int, bytes]  # (step, message type, extra flags, body)


class Rtnl:
    """An rtnetlink socket in ``netns`` (a name, a path, or None for the caller's own)."""

    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns
        self.seq = 0
        try:
            with in_netns(netns):
                self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                          socket.NETLINK_ROUTE)
            self.sock.bind((0, 0))
            # ACKs without a copy of the request, and with the kernel's reason when it has one
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError as e:
            raise NetlinkError("open netlink", netns, e) from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "Rtnl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call(self, *reqs: Request, ok: frozenset[int] = frozenset()) -> list[bytes | None]:
        """Send the requests in one write and wait for every ACK. Returns each request's reply
        payload (for GET) or None. The first request whose error is not in ``ok`` raises."""
        buf = bytearray()
        first = self.seq + 1
        for step, kind, flags, body in reqs:
            self.seq += 1
            buf += struct.pack("=IHHII", 16 + len(body), kind, flags | NLM_F_REQUEST | NLM_F_ACK, self.seq, 0)
            buf += body
        try:
            self.sock.sendto(buf, (0, 0))
        except OSError as e:
            raise NetlinkError(reqs[0][0], self.netns, e) from None
        replies: list[bytes | None] = [None] * len(reqs)
        errors: list[int] = [0] * len(reqs)
        details: list[str] = [""] * len(reqs)
        pending = len(reqs)
        while pending:
            data = self.sock.recv(RECV_BUFFER)
            off = 0
            while off + 16 <= len(data):
                n, kind, flags, seq, _ = struct.unpack_from("=IHHII", data, off)
                i = seq - first
                if 0 <= i < len(reqs):
                    if kind == NLMSG_ERROR:
                        errors[i] = -struct.unpack_from("=i", data, off + 16)[0]
                        if errors[i] and flags & NLM_F_ACK_TLVS and flags & NLM_F_CAPPED:
                            msg = parse_attrs(data[off + 36:off + n]).get(NLMSGERR_ATTR_MSG, b"")
                            details[i] = msg.rstrip(b"\0").decode(errors="replace")
                        pending -= 1
                    else:
                        replies[i] = bytes(data[off + 16:off + n])
                off += (n + 3) & ~3
        for (step, _, _, _), err, detail in zip(reqs, errors, details):
            if err and err not in ok:
                cls = LinkNotFound if err == errno.ENODEV else NetlinkError
                raise cls(step, self.netns, OSError(err, os.strerror(err)), detail)
        return [None if e else r for r, e in zip(replies, errors)]

    # -- links --
    def get_link(self, name: str) -> Link | None:
        body = ifinfomsg() + attr(IFLA_IFNAME, _name(name))
        (reply,) = self.call((f"look up link {name}", RTM_GETLINK, 0, body), ok=frozenset(GONE))
        return parse_link(reply) if reply else None

    def delete_link(self, name: str) -> bool:
        """True when it was there."""
        body = ifinfomsg() + attr(IFLA_IFNAME, _name(name))
        try:
            self.call((f"delete link {name}", RTM_DELLINK, 0, body))
        except NetlinkError as e:
            if e.code in GONE:
                return False
            raise
        return True

    def add_veth(self, name: str, peer: str, peer_netns_fd: int, mtu: int) -> None:
        """The host end comes up at once; the peer is created directly in the namespace of
        ``peer_netns_fd``, down (it cannot open before the pair is joined: ENOTCONN)."""
        peer_body = (ifinfomsg() + attr(IFLA_IFNAME, _name(peer)) + attr(IFLA_MTU, u32(mtu))
                     + attr(IFLA_NET_NS_FD, u32(peer_netns_fd)))
        info = attr(IFLA_INFO_KIND, b"veth") + attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_body))
        body = ifinfomsg(up=True) + attr(IFLA_IFNAME, _name(name)) + attr(IFLA_MTU, u32(mtu)) + attr(IFLA_LINKINFO, info)
        self.call((f"create veth {name} (peer {peer})", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body))

    def add_vxlan(self, name: str, vni: int, local: str, underlay_index: int, port: int, gbp: bool = False) -> None:
        """Learning off: every FDB entry is programmed. ``underlay_index`` 0: bound to no
        device (the outer packets follow the routes; the MTU is then not capped at the
        underlay's minus the header). ``gbp``: the Group Based Policy
        extension, which sends the packet mark's low 16 bits in the header and sets the mark
        of what it receives from them (every peer must have it too)."""
        data = (attr(IFLA_VXLAN_ID, u32(vni)) + attr(IFLA_VXLAN_LOCAL, ip4(local))
                + (attr(IFLA_VXLAN_LINK, u32(underlay_index)) if underlay_index else b"")
                + attr(IFLA_VXLAN_PORT, struct.pack("!H", port))
                + attr(IFLA_VXLAN_LEARNING, b"\0") + (attr(IFLA_VXLAN_GBP, b"") if gbp else b""))
        info = attr(IFLA_INFO_KIND, b"vxlan") + attr(IFLA_INFO_DATA, data)
        self.call((f"create vxlan {name} (vni {vni}, local {local})", RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                   ifinfomsg() + attr(IFLA_IFNAME, _name(name)) + attr(IFLA_LINKINFO, info)))

    def set_link(self, index: int, step: str, mac: str | None = None, mtu: int | None = None,
                 up: bool | None = None) -> None:
        body = ifinfomsg(index, up=up)
        if mac:
            body += attr(IFLA_ADDRESS, _mac(mac))
        if mtu:
            body += attr(IFLA_MTU, u32(mtu))
        self.call((step, RTM_SETLINK, 0, body))

    # -- dumps --
    def dump(self, kind: int, body: bytes, step: str, attempts: int = 5) -> list[bytes]:
        """Every message of a dump request, until NLMSG_DONE. A dump the kernel marks as
        interrupted (the table changed under it: NLM_F_DUMP_INTR) is read again, so a
        reconcile never acts on half of an old table and half of a new one."""
        for _ in range(attempts):
            out, interrupted = self._dump_once(kind, body, step)
            if not interrupted:
                return out
        raise NetlinkError(step, self.netns, OSError(errno.EAGAIN, "dump interrupted"),
                           f"the table kept changing during {attempts} dumps")

    def _dump_once(self, kind: int, body: bytes, step: str) -> tuple[list[bytes], bool]:
        self.seq += 1
        seq = self.seq
        try:
            self.sock.sendto(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body,
                             (0, 0))
        except OSError as e:
            raise NetlinkError(step, self.netns, e) from None
        out, interrupted = [], False
        while True:
            data = self.sock.recv(RECV_BUFFER)
            off = 0
            while off + 16 <= len(data):
                n, mkind, flags, mseq, _ = struct.unpack_from("=IHHII", data, off)
                if mseq == seq:
                    interrupted |= bool(flags & NLM_F_DUMP_INTR)
                    if mkind == NLMSG_DONE:
                        return out, interrupted
                    if mkind == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", data, off + 16)[0]
                        raise NetlinkError(step, self.netns, OSError(err, os.strerror(err)))
                    out.append(bytes(data[off + 16:off + n]))
                off += (n + 3) & ~3

    def links(self) -> list[Link]:
        return [parse_link(m) for m in self.dump(RTM_GETLINK, ifinfomsg(), "list links")]

    def addresses(self, index: int = 0) -> list[Address]:
        """IPv4 addresses (of one link when ``index`` is given)."""
        msgs = self.dump(RTM_GETADDR, struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0), "list addresses")
        return [a for a in map(parse_address, msgs) if not index or a.index == index]

    def routes(self) -> list[RouteEntry]:
        """IPv4 unicast routes of every table."""
        return [parse_route(m) for m in self.dump(RTM_GETROUTE, rtmsg(0, 0, 0), "list routes")]

    def rules(self) -> list[FibRule]:
        """IPv4 policy-routing rules."""
        return [parse_rule(m) for m in self.dump(RTM_GETRULE, fib_rule_hdr(0), "list rules")]

    def neighbours(self, family: int = socket.AF_INET, index: int = 0) -> list[Neighbour]:
        """ARP entries, or with ``family=AF_BRIDGE`` FDB entries (of one link when ``index`` is given)."""
        body = struct.pack("=BxxxiHBB", family, index, 0, 0, 0)
        return [e for e in map(parse_neighbour, self.dump(RTM_GETNEIGH, body, "list neighbours"))
                if not index or e.index == index]


# ---- requests to batch with Rtnl.call ---------------------------------------------------

def add_address(index: int, cidr: str, step: str) -> Request:
    iface = ipaddress.IPv4Interface(cidr)
    body = struct.pack("=BBBBI", socket.AF_INET, iface.network.prefixlen, 0, SCOPE_UNIVERSE, index)
    body += attr(IFA_LOCAL, iface.ip.packed) + attr(IFA_ADDRESS, iface.ip.packed)
    return (step, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)


def route(dst: str, oif: int, step: str, gateway: str | None = None, proto: int = RTPROT_BOOT,
          replace: bool = False, mtu: int | None = None, table: int = RT_TABLE_MAIN) -> Request:
    """A route (of the main table unless ``table``): link scope without a gateway; with one,
    universe scope (onlink when ``proto`` is trellis', so the gateway needs no covering
    route). ``mtu``: the route's own MTU (``ip route ... mtu N``), below the device's."""
    net = ipaddress.IPv4Network(dst)
    onlink = RTNH_F_ONLINK if gateway and proto == RTPROT_TRELLIS else 0
    body = rtmsg(net.prefixlen, SCOPE_UNIVERSE if gateway else SCOPE_LINK, proto, onlink, table)
    if table != RT_TABLE_MAIN:
        body += attr(RTA_TABLE, u32(table))
    if net.prefixlen:
        body += attr(RTA_DST, net.network_address.packed)
    if gateway:
        body += attr(RTA_GATEWAY, ip4(gateway))
    body += attr(RTA_OIF, u32(oif))
    if mtu:
        body += attr(RTA_METRICS, attr(RTAX_MTU, u32(mtu)))
    return (step, RTM_NEWROUTE, NLM_F_CREATE | (NLM_F_REPLACE if replace else NLM_F_EXCL), body)


def permanent_neighbour(index: int, ip: str, mac: str, step: str) -> Request:
    body = struct.pack("=BxxxiHBB", socket.AF_INET, index, NUD_PERMANENT, 0, 0)
    body += attr(NDA_DST, ip4(ip)) + attr(NDA_LLADDR, _mac(mac))
    return (step, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body)


def set_up(name: str, step: str, index: int = 0) -> Request:
    """By index, or by name when index is 0."""
    return (step, RTM_SETLINK, 0, ifinfomsg(index, up=True) + (b"" if index else attr(IFLA_IFNAME, _name(name))))


def delete_address(index: int, cidr: str, step: str) -> Request:
    iface = ipaddress.IPv4Interface(cidr)
    body = struct.pack("=BBBBI", socket.AF_INET, iface.network.prefixlen, 0, 0, index)
    return (step, RTM_DELADDR, 0, body + attr(IFA_LOCAL, iface.ip.packed))


def labelled_address(index: int, cidr: str, label: str, step: str, scope: int = SCOPE_UNIVERSE) -> Request:
    step_, kind, flags, body = add_address(index, cidr, step)
    body = body[:3] + bytes([scope]) + body[4:]
    return (step_, kind, flags, body + attr(IFA_LABEL, _name(label)))


def delete_route(dst: str, step: str, proto: int = RTPROT_TRELLIS, table: int = RT_TABLE_MAIN) -> Request:
    """A route to ``dst`` (of the main table unless ``table``) with this protocol, whatever
    its scope and next hop."""
    net = ipaddress.IPv4Network(dst)
    body = struct.pack("=BBBBBBBBI", socket.AF_INET, net.prefixlen, 0, 0, table if table < 256 else 0, proto,
                       SCOPE_NOWHERE, 0, 0)
    if table != RT_TABLE_MAIN:
        body += attr(RTA_TABLE, u32(table))
    if net.prefixlen:
        body += attr(RTA_DST, net.network_address.packed)
    return (step, RTM_DELROUTE, 0, body)


def delete_neighbour(index: int, ip: str, step: str) -> Request:
    body = struct.pack("=BxxxiHBB", socket.AF_INET, index, 0, 0, 0) + attr(NDA_DST, ip4(ip))
    return (step, RTM_DELNEIGH, 0, body)


def fdb(index: int, mac: str, dst: str, step: str, delete: bool = False) -> Request:
    """A permanent FDB entry on the device itself (``bridge fdb replace MAC dev X dst IP self``)."""
    body = struct.pack("=BxxxiHBB", AF_BRIDGE, index, NUD_PERMANENT, NTF_SELF, 0)
    body += attr(NDA_LLADDR, _mac(mac)) + attr(NDA_DST, ip4(dst))
    return (step, RTM_DELNEIGH, 0, body) if delete else (step, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, body)


def fwmark_rule(priority: int, mark: int, mask: int, table: int, step: str, delete: bool = False) -> Request:
    """``ip rule add priority P fwmark MARK/MASK lookup TABLE`` (or its deletion)."""
    body = fib_rule_hdr(table, FR_ACT_TO_TBL) + attr(FRA_PRIORITY, u32(priority)) + attr(FRA_FWMARK, u32(mark))
    body += attr(FRA_FWMASK, u32(mask)) + attr(FRA_TABLE, u32(table))
    return (step, RTM_DELRULE, 0, body) if delete else (step, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, body)
