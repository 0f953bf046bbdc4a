"""Where a connection goes and who decides: the path model behind ``trellis explain``. Pure.

The kernel does, per new connection (agent/, policy/nftables.py, proxy/nftables.py):

1. The client's node (a pod's, or a host-network client's own node) or, for a client
   outside the cluster, the node the address leads to (a NodePort's node, the node that
   announces a LoadBalancer IP, any node for an external IP) is the **entry node**.
2. If the address is a Service's (ClusterIP, NodePort, external IP, LoadBalancer IP),
   the entry node picks an endpoint, as its proxy would (traffic policies, source
   ranges; no endpoint: rejected; externalTrafficPolicy Local with none here: dropped),
   and DNATs: the **entry node judges the endpoint's ingress**, with the real client
   as the source and "reached through a Service" known, wherever the endpoint runs.
3. Otherwise (a pod address) the **destination's node judges** its ingress, with the
   source it sees: a pod's own address, or for a host-network client on another node
   that node's VTEP address (vxlan) or underlay address (direct).
4. A pod client's egress policy is judged at its own node, on the DNATed packet.
5. A pod's own node always reaches it (the output path is not filtered).

Each endpoint is one ``Hop``; a probe to a Service reaches one of them at random.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from trellis.policy import engine
from trellis.policy.engine import PolicyState, Step
from trellis.proxy.model import Endpoint, ServicePort

# what a connection's fate is, per endpoint (the probe's words are in lab/images/agnhost.py)
ALLOWED, DENIED, NO_ENDPOINTS, DROPPED, UNREACHABLE = "allowed", "denied", "no-endpoints", "dropped", "unreachable"
# what a probe may see for each fate ("ok" or "refused" when allowed: a listener decides)
OBSERVABLE = {ALLOWED: ("ok", "refused"), DENIED: ("denied",), NO_ENDPOINTS: ("refused",),
              DROPPED: ("timeout",), UNREACHABLE: ("unreachable", "timeout")}


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ip: str            # InternalIP (the underlay address)
    vtep: str = ""     # the VXLAN device's address: the first address of the node's pod block


@dataclass(frozen=True)
class Client:
    label: str
    ip: str
    kind: str          # "pod" | "host" (a host-network pod, or the node itself) | "outside"
    node: str = ""


@dataclass
class World:
    """Everything the path depends on, read once from the API (``policy.live``)."""
    state: PolicyState
    nodes: dict[str, NodeInfo]
    ports: list[ServicePort]
    announcers: dict[str, str] = field(default_factory=dict)   # LoadBalancer IP -> node
    mode: str = "vxlan"
    cluster_cidr: str = "10.244.0.0/16"

    def node_by_ip(self, ip: str) -> NodeInfo | None:
        return next((n for n in self.nodes.values() if ip in (n.ip, n.vtep)), None)

    def in_cluster(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in ipaddress.ip_network(self.cluster_cidr)
        except ValueError:
            return False


@dataclass
class Hop:
    via: str            # how the connection was addressed: "pod", "ClusterIP ...", "NodePort ..."
    entry: str          # the node that DNATed ("" when nothing did)
    endpoint: str       # the pod (namespace/name), or the address
    endpoint_ip: str
    endpoint_port: int
    endpoint_node: str
    judged_at: str      # the node whose table decided the ingress layers
    source_seen: str    # the source address those layers saw
    outcome: str
    reason: str
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["steps"] = [s.__dict__ for s in self.steps]
        return d


def _pod_label(world: World, ip: str) -> tuple[str, str]:
    pod = world.state.pod_by_ip(ip)
    return (pod.key, pod.node) if pod else (ip, "")


def _judge(world: World, hop: Hop, client: Client, src_ip: str, proto: str, dnat: bool) -> Hop:
    """The policy layers for one endpoint (egress at the client's node, then ingress)."""
    st = world.state
    dst = st.pod_by_ip(hop.endpoint_ip)
    if client.kind == "host" and dst is not None and dst.node == client.node:
        hop.outcome, hop.reason = ALLOWED, f"node {client.node}: a pod's own node always reaches it"
        hop.judged_at, hop.steps = "", [Step("ingress", "node", engine.ALLOW, hop.reason)]
        return hop
    if client.kind == "pod" and hop.endpoint_ip == client.ip:
        # Kubernetes: a pod cannot block access to itself (through its Service too: the hairpin)
        hop.outcome, hop.reason = ALLOWED, "a pod always reaches itself"
        hop.judged_at, hop.steps = "", [Step("ingress", "self", engine.ALLOW, hop.reason)]
        return hop
    verdict, steps = engine.explain(st, src_ip, hop.endpoint_ip, proto, hop.endpoint_port, dnat)
    hop.steps = steps
    hop.outcome = ALLOWED if verdict == engine.ALLOW else DENIED
    hop.reason = steps[-1].origin if steps else ""
    return hop


def _service(world: World, ip: str, proto: str, port: int) -> tuple[ServicePort | None, str]:
    for sp in world.ports:
        if sp.protocol != proto or sp.port != port:
            continue
        if ip in sp.cluster_ips:
            return sp, "cluster"
        if ip in sp.lb_ips:
            return sp, "lb"
        if ip in sp.external_ips:
            return sp, "external"
    return None, ""


def _node_port(world: World, ip: str, proto: str, port: int) -> tuple[ServicePort | None, NodeInfo | None]:
    node = world.node_by_ip(ip)
    if node is None:
        return None, None
    sp = next((p for p in world.ports if p.protocol == proto and p.node_port == port), None)
    return sp, node


def _endpoints(sp: ServicePort, kind: str, entry: str, client: Client) -> tuple[tuple[Endpoint, ...], str, str]:
    """-> (endpoints the entry node's proxy may pick, fate when there are none, why)."""
    if kind == "cluster":
        eps = sp.cluster_endpoints(entry)
        why = "no ready endpoint" + (f" on {entry} (internalTrafficPolicy Local)" if sp.itp_local else "")
        return eps, NO_ENDPOINTS, why + ": rejected by the proxy"
    if not sp.usable():
        return (), NO_ENDPOINTS, "no ready endpoint: rejected by the proxy"
    if client.kind in ("pod", "host") or not sp.etp_local:
        return sp.usable(), NO_ENDPOINTS, ""  # pods and nodes are not external: every endpoint
    eps = sp.external_endpoints(entry)
    return eps, DROPPED, f"externalTrafficPolicy Local and no endpoint on {entry}: dropped"


def _through_service(world: World, client: Client, sp: ServicePort, kind: str, entry: str, via: str,
                     proto: str) -> list[Hop]:
    if kind == "lb" and sp.source_ranges and not any(
            ipaddress.ip_address(client.ip) in ipaddress.ip_network(r, strict=False) for r in sp.source_ranges):
        return [Hop(via, entry, "-", "", 0, "", entry, client.ip, DROPPED,
                    f"{client.ip} is not in loadBalancerSourceRanges {', '.join(sp.source_ranges)}: dropped")]
    eps, fate, why = _endpoints(sp, kind, entry, client)
    if not eps:
        return [Hop(via, entry, "-", "", 0, "", entry, client.ip, fate, why)]
    hops = []
    for e in eps:
        label, node = _pod_label(world, e.ip)
        hop = Hop(via, entry, label, e.ip, e.port, node or e.node, entry, client.ip, ALLOWED, "")
        hops.append(_judge(world, hop, client, client.ip, proto, dnat=True))
    return hops


def _masqueraded(world: World, client: Client) -> Client:
    """A pod's connection to another node's address leaves its node masqueraded: the next
    node sees that node's address as the client."""
    node = world.nodes.get(client.node)
    ip = node.ip if node else client.ip
    return Client(f"{client.label} (masqueraded to {client.node} {ip})", ip, "outside", "")


def trace(world: World, client: Client, ip: str, proto: str, port: int) -> list[Hop]:
    """Every way a new connection from ``client`` to ``ip:port/proto`` can go, one Hop each."""
    proto = proto.lower()
    if client.kind == "outside":
        return _from_outside(world, client, ip, proto, port)
    entry = client.node
    sp, kind = _service(world, ip, proto, port)
    if sp is not None:
        return _through_service(world, client, sp, kind, entry, f"{_KIND_WORD[kind]} {ip}:{port}", proto)
    sp, node = _node_port(world, ip, proto, port)
    if node is not None:
        if node.name == entry and sp is not None:
            return _through_service(world, client, sp, "nodeport", entry, f"NodePort {node.name}:{port}", proto)
        if node.name != entry:
            # out of the client's node first (its egress is judged there, on the node's address)
            if client.kind == "pod":
                first = _judge(world, Hop("node address", "", node.name, ip, port, node.name, entry, client.ip,
                                          ALLOWED, ""), client, client.ip, proto, dnat=False)
                if first.outcome != ALLOWED:
                    return [first]
                client = _masqueraded(world, client)
            else:
                client = Client(client.label, world.nodes[entry].ip if entry in world.nodes else client.ip,
                                "outside")
            return _from_outside(world, client, ip, proto, port)
        return [Hop("node address", "", node.name, ip, port, node.name, "", client.ip, ALLOWED,
                    f"{ip} is node {node.name}'s address; no Service on {port}/{proto} (host networking, "
                    "no pod policy)")]
    if _is_service_ip(world, ip):
        return [Hop("Service address", entry, "-", "", 0, "", entry, client.ip, DROPPED,
                    f"no Service has port {port}/{proto} on {ip} (Services carry TCP, UDP and SCTP ports, "
                    "never ICMP): nothing answers")]
    # a pod address: the destination's node judges, with the source it sees
    label, node_name = _pod_label(world, ip)
    src = client.ip
    if client.kind == "host" and node_name and node_name != client.node:
        me = world.nodes.get(client.node)
        if me is not None:
            src = me.vtep if world.mode == "vxlan" and me.vtep else me.ip
    hop = Hop("pod", "", label, ip, port, node_name, node_name, src, ALLOWED, "")
    return [_judge(world, hop, client, src, proto, dnat=False)]


_KIND_WORD = {"cluster": "ClusterIP", "lb": "LoadBalancer", "external": "external IP", "nodeport": "NodePort"}


def _is_service_ip(world: World, ip: str) -> bool:
    return any(ip in (*sp.cluster_ips, *sp.lb_ips, *sp.external_ips) for sp in world.ports)


def _from_outside(world: World, client: Client, ip: str, proto: str, port: int) -> list[Hop]:
    sp, kind = _service(world, ip, proto, port)
    if sp is not None and kind == "lb":
        entry = world.announcers.get(ip)
        if entry is None:
            return [Hop(f"LoadBalancer {ip}:{port}", "", "-", "", 0, "", "", client.ip, UNREACHABLE,
                        f"no Ready node announces {ip}")]
        return _through_service(world, client, sp, "lb", entry, f"LoadBalancer {ip}:{port} (announced by {entry})",
                                proto)
    if sp is not None and kind == "external":
        # trellis does not announce external IPs: whichever node the network delivers it to
        return [h for n in sorted(world.nodes)
                for h in _through_service(world, client, sp, "external", n, f"external IP {ip}:{port} at {n}", proto)]
    sp, node = _node_port(world, ip, proto, port)
    if node is not None:
        if sp is None:
            return [Hop(f"{node.name}:{port}", node.name, "-", "", 0, node.name, node.name, client.ip, ALLOWED,
                        f"no NodePort {port}/{proto}: the node's own stack answers (no pod policy)")]
        return _through_service(world, client, sp, "nodeport", node.name, f"NodePort {node.name}:{port}", proto)
    if world.in_cluster(ip) or _is_service_ip(world, ip):
        return [Hop("-", "", ip, ip, port, "", "", client.ip, UNREACHABLE,
                    "pod and ClusterIP addresses are not routed outside the cluster: use a NodePort, "
                    "LoadBalancer or external IP")]
    return [Hop("-", "", ip, ip, port, "", "", client.ip, UNREACHABLE, f"{ip} is no address of this cluster")]


def verdict(hops: list[Hop]) -> str:
    """One word for a probe cell: the fate every endpoint shares, or "mixed"."""
    fates = {h.outcome for h in hops}
    return fates.pop() if len(fates) == 1 else "mixed"


def agrees(hops: list[Hop], observed: str) -> bool:
    """Does what a probe saw fit what the path model says (any endpoint may be picked)?"""
    return any(observed in OBSERVABLE[h.outcome] for h in hops)
