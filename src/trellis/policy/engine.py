"""The policy engine: cluster objects -> per-pod layer chains over shared address sets. Pure.

The compiled model is small and explicit, so the same structure is rendered to
nftables (``policy/nftables.py``) and evaluated by ``trellis explain``:

* **Address sets** are defined by what they select, never listed by hand:
  ``("sel", ns, nsSelector, podSelector)`` for NetworkPolicy peers,
  ``("ns", name)`` for namespace isolation, ``("group", gid)`` for endpoint
  groups, ``("named", ...)`` for egress to a named port (address . proto .
  port), ``("cidr", ...)`` for ipBlocks with holes. A set's name is a hash of
  its definition, so every node and the CLI agree on it.
* **Chains** hold the rules one layer applies to one pod in one direction;
  rules return (allow: go on to the next layer) or reject, and the chain ends
  in a reject. Identical chains are shared (the name is a hash of the content).
* Per packet the datapath does a fixed number of map lookups (one per layer)
  and then only the rules of the pods' own policies; the number of policies in
  the cluster never enters the packet path.

Layers, in order (a connection must pass every layer that applies):

1. ``isolation`` - the namespace annotation (OpenContrail): only the namespace's
   own pods, or connections that came through a Service (DNATed), reach in.
2. ``group`` - endpoint groups and contracts (Contiv / ACI), with the implicit
   groups of the cluster's isolation mode (namespace / deployment).
3. ``netpol`` - Kubernetes NetworkPolicy, ingress at the destination's node and
   egress at the source's node.
"""
from __future__ import annotations

import functools
import hashlib
import ipaddress
from dataclasses import dataclass

from trellis.kube import selectors
from trellis.policy.model import (SYSTEM_NAMESPACES, Contract, Group, NetPol, NetRule, NsInfo, Peer, PodInfo,
                                  PortSpec)

LAYERS = ("isolation", "group", "netpol")
ALLOW, DENY = "allow", "deny"


@dataclass(frozen=True)
class Match:
    peer_set: str | None = None            # named address set
    cidrs: tuple[str, ...] | None = None   # IPv4 ranges (an ipBlock minus its excepts)
    tuple_set: str | None = None           # named set of address . protocol . port
    proto: str | None = None               # tcp / udp / sctp
    ports: tuple[int, int] | None = None
    dnat: bool = False                     # the connection was addressed to a Service


@dataclass(frozen=True)
class Rule:
    match: Match
    verdict: str
    origin: str


@dataclass(frozen=True)
class Chain:
    layer: str
    direction: str       # "in" (ingress to the pod) or "out" (egress from the pod)
    rules: tuple[Rule, ...]
    default_origin: str  # what denies when no rule matches

    @functools.cached_property  # content-addressed, and asked for every pod on every sync
    def name(self) -> str:
        h = hashlib.sha256(repr((self.layer, self.direction, self.rules, self.default_origin)).encode())
        return f"{self.layer}-{self.direction}-{h.hexdigest()[:12]}"


def set_name(defn: tuple) -> str:
    prefix = {"sel": "sel", "ns": "ns", "group": "grp", "named": "port", "cidr": "cidr"}[defn[0]]
    return f"{prefix}-{hashlib.sha256(repr(defn).encode()).hexdigest()[:12]}"


def cidrs_of(cidr: str, excepts: tuple[str, ...]) -> tuple[str, ...]:
    """IPv4 ranges of an ipBlock with its holes cut out (IPv6 blocks match no IPv4 packet)."""
    net = ipaddress.ip_network(cidr)
    if net.version != 4:
        return ()
    parts = [net]
    for ex in excepts:
        exn = ipaddress.ip_network(ex)
        nxt = []
        for p in parts:
            if exn.subnet_of(p):
                nxt.extend(p.address_exclude(exn))
            elif not p.subnet_of(exn):
                nxt.append(p)
        parts = nxt
    return tuple(str(p) for p in sorted(parts))


def _origin(text: str) -> str:
    return text.replace('"', "'")[:120]


class PolicyState:
    """Everything the policy layers read, indexed for incremental updates."""

    def __init__(self, mode: str = "cluster") -> None:
        self.mode = mode
        self.pods: dict[str, PodInfo] = {}
        self.namespaces: dict[str, NsInfo] = {}
        self.policies: dict[str, NetPol] = {}
        self.groups: dict[str, Group] = {}
        self.contracts: dict[str, Contract] = {}
        self.deployment_groups: dict[str, str] = {}   # ns/deployment -> the group its annotation asks for
        self.by_ns: dict[str, set[str]] = {}
        self.by_label: dict[tuple[str, str], set[str]] = {}
        self.set_defs: dict[str, tuple] = {}
        self._members: dict[str, set[str]] = {}      # cache: set name -> elements
        self._chains: dict[str, list[Chain]] = {}     # cache: pod key -> its chains
        self._chains_of_kind: dict[tuple, list[Chain]] = {}  # cache: what a pod's chains depend on -> them
        self._group_of: dict[str, str] = {}           # cache: pod key -> group id ("" none)
        self._ns_policies: dict[str, list[NetPol]] | None = None  # cache: namespace -> its policies, sorted
        self.unmanaged: set[str] = set()  # local addresses CNI gave to containers that are no Kubernetes pod
        self.generation = 0

    # ---- updates ---------------------------------------------------------------

    def _forget_pod(self, key: str) -> PodInfo | None:
        old = self.pods.pop(key, None)
        if old is not None:
            self.by_ns.get(old.ns, set()).discard(key)
            for kv in old.labels:
                self.by_label.get(kv, set()).discard(key)
        return old

    def set_pod(self, pod: PodInfo | None, key: str | None = None) -> None:
        """Add, change (same key) or remove (``pod`` None) one pod; caches follow incrementally."""
        key = pod.key if pod is not None else key
        old = self._forget_pod(key)
        if pod is not None:
            self.pods[key] = pod
            self.by_ns.setdefault(pod.ns, set()).add(key)
            for kv in pod.labels:
                self.by_label.setdefault(kv, set()).add(key)
        self._chains.pop(key, None)
        self._group_of.pop(key, None)
        for name, members in self._members.items():
            defn = self.set_defs[name]
            if old is not None:
                members.difference_update(self._elements(defn, old))
            if pod is not None:
                members.update(self._elements(defn, pod))
        self.generation += 1

    def _invalidate(self) -> None:
        self._ns_policies = None
        self._members.clear()
        self._chains.clear()
        self._chains_of_kind.clear()
        self._group_of.clear()
        self.generation += 1

    def set_namespace(self, ns: NsInfo | None, name: str | None = None) -> None:
        if ns is None:
            self.namespaces.pop(name, None)
        else:
            self.namespaces[ns.name] = ns
        self._invalidate()

    def set_policy(self, key: str, pol: NetPol | None) -> None:
        """A NetworkPolicy selects pods of its own namespace only: only their chains are recomputed
        (a node holds every Service-backed pod's chains; a full invalidation would redo thousands)."""
        ns = key.split("/", 1)[0]
        old = self.policies.get(key)
        if pol is None:
            self.policies.pop(key, None)
        else:
            self.policies[key] = pol
        for n in {ns, getattr(pol, "ns", ns), getattr(old, "ns", ns)}:
            for k in self.by_ns.get(n, ()):
                self._chains.pop(k, None)
                self._group_of.pop(k, None)
            self._chains_of_kind = {kind: c for kind, c in self._chains_of_kind.items() if kind[0] != n}
        self._ns_policies = None
        self.generation += 1

    def set_group(self, key: str, g: Group | None) -> None:
        self._put(self.groups, key, g)

    def set_contract(self, key: str, c: Contract | None) -> None:
        self._put(self.contracts, key, c)

    def set_deployment_group(self, key: str, hint: str) -> None:
        """A Deployment's group annotation ("" none): its pods' group unless a pod names its own."""
        if self.deployment_groups.get(key, "") != hint:
            self._put(self.deployment_groups, key, hint or None)

    def set_mode(self, mode: str) -> None:
        if mode != self.mode:
            self.mode = mode
            self._invalidate()

    def _put(self, table: dict, key: str, value) -> None:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
        self._invalidate()

    # ---- address sets ------------------------------------------------------------

    def _ns_labels(self, ns: str) -> dict[str, str]:
        info = self.namespaces.get(ns)
        return dict(info.labels) if info else {"kubernetes.io/metadata.name": ns}

    def _selected(self, pod: PodInfo, scope_ns: str | None, ns_sel, pod_sel) -> bool:
        if pod.host_network or not pod.ip:
            return False
        if ns_sel is None:
            if pod.ns != scope_ns:
                return False
        elif not selectors.matches(ns_sel, self._ns_labels(pod.ns)):
            return False
        return selectors.matches(pod_sel, pod.label_dict)

    def _elements(self, defn: tuple, pod: PodInfo) -> set[str]:
        kind = defn[0]
        if kind == "sel":
            return {pod.ip} if self._selected(pod, *defn[1:]) else set()
        if not pod.ip or pod.host_network:
            return set()
        if kind == "ns":
            return {pod.ip} if pod.ns == defn[1] else set()
        if kind == "group":
            return {pod.ip} if self.group_of(pod) == defn[1] else set()
        if kind == "named":
            _, peers_ns, peers, port_name, proto = defn
            num = pod.named_port(port_name, proto)
            if num is None or (peers is not None and not any(self._peer_has(peers_ns, p, pod) for p in peers)):
                return set()
            return {f"{pod.ip} . {proto.lower()} . {num}"}
        return set()

    def _peer_has(self, ns: str, peer: Peer, pod: PodInfo) -> bool:
        if peer.cidr is not None:
            return any(ipaddress.ip_address(pod.ip) in ipaddress.ip_network(c) for c in cidrs_of(peer.cidr, peer.excepts))
        return self._selected(pod, ns if peer.ns_selector is None else None, peer.ns_selector, peer.pod_selector)

    def _candidates(self, defn: tuple) -> set[str] | list[str]:
        """Pods worth testing for a set: narrowed by namespace and by exact-label requirements."""
        kind = defn[0]
        if kind == "ns":
            return self.by_ns.get(defn[1], set())
        if kind == "sel":
            _, scope_ns, ns_sel, pod_sel = defn
            exact = [self.by_label.get((r.key, r.values[0]), set()) for r in pod_sel or () if r.op == "="]
            if exact:
                return set.intersection(*exact) if len(exact) > 1 else exact[0]
            if ns_sel is None:
                return self.by_ns.get(scope_ns, set())
            out: set[str] = set()
            for ns in self.by_ns:
                if selectors.matches(ns_sel, self._ns_labels(ns)):
                    out |= self.by_ns[ns]
            return out
        return self.pods.keys()

    def define(self, defn: tuple) -> str:
        name = set_name(defn)
        self.set_defs.setdefault(name, defn)
        return name

    def members(self, name: str) -> set[str]:
        got = self._members.get(name)
        if got is None:
            defn = self.set_defs[name]
            got = set()
            if defn[0] == "cidr":
                got = set(defn[1])
            else:
                for key in list(self._candidates(defn)):
                    got |= self._elements(defn, self.pods[key])
            self._members[name] = got
        return got

    # ---- groups ----------------------------------------------------------------

    def explicit_group(self, pod: PodInfo) -> Group | None:
        ns = self.namespaces.get(pod.ns)
        # annotations first, the pod's over its Deployment's over its namespace's (ACI's order)
        for hint in (pod.group_hint, self.deployment_groups.get(f"{pod.ns}/{pod.deployment}", "")
                     if pod.deployment else "", ns.group_hint if ns is not None else ""):
            g = self.groups.get(f"{pod.ns}/{hint}") if hint else None
            if g is not None:
                return g
        for key in sorted(self.groups):
            g = self.groups[key]
            if g.pod_selector is None:
                continue
            in_scope = (pod.ns == g.ns) if g.ns_selector is None else selectors.matches(g.ns_selector, self._ns_labels(pod.ns))
            if in_scope and selectors.matches(g.pod_selector, pod.label_dict):
                return g
        return None

    def implicit_group(self, pod: PodInfo) -> str:
        if pod.ns in SYSTEM_NAMESPACES or self.mode == "cluster":
            return ""
        if self.mode == "namespace":
            return f"namespace:{pod.ns}"
        return f"deployment:{pod.ns}/{pod.deployment}" if pod.deployment else ""

    def group_of(self, pod: PodInfo) -> str:
        gid = self._group_of.get(pod.key)
        if gid is None:
            g = self.explicit_group(pod)
            gid = g.gid if g is not None else self.implicit_group(pod)
            self._group_of[pod.key] = gid
        return gid

    # ---- chains ----------------------------------------------------------------

    def selecting(self, pod: PodInfo, direction: str) -> list[NetPol]:
        if self._ns_policies is None:
            self._ns_policies = {}
            for key in sorted(self.policies):
                self._ns_policies.setdefault(self.policies[key].ns, []).append(self.policies[key])
        labels = pod.label_dict
        return [p for p in self._ns_policies.get(pod.ns, ())
                if (p.ingress if direction == "in" else p.egress) is not None and selectors.matches(p.pod_selector, labels)]

    def chains(self, pod: PodInfo) -> list[Chain]:
        """The chains that apply to one local pod, in layer order (ingress first, then egress)."""
        got = self._chains.get(pod.key)
        if got is None:
            # a pod's chains depend only on its namespace, labels, named ports and group hints, so the
            # replicas of a workload share one computation (a node holds thousands of pods' chains)
            kind = (pod.ns, pod.labels, pod.ports, pod.group_hint, pod.deployment)
            got = self._chains_of_kind.get(kind)
            if got is None:
                got = [c for c in (self._isolation_chain(pod), self._group_chain(pod),
                                   self._netpol_chain(pod, "in"), self._netpol_chain(pod, "out")) if c is not None]
                self._chains_of_kind[kind] = got
            self._chains[pod.key] = got
        return got

    def _isolation_chain(self, pod: PodInfo) -> Chain | None:
        ns = self.namespaces.get(pod.ns)
        if ns is None or not ns.isolated:
            return None
        what = f"Namespace {pod.ns} (isolated)"
        return Chain("isolation", "in", (
            Rule(Match(peer_set=self.define(("ns", pod.ns))), ALLOW, f"{what}: same namespace"),
            Rule(Match(dnat=True), ALLOW, f"{what}: reached through a Service"),
        ), f"{what}: only its own pods and Services reach it")

    def _group_chain(self, pod: PodInfo) -> Chain | None:
        g = self.explicit_group(pod)
        if g is not None:
            gid, intra = g.gid, g.intra
        else:
            gid, intra = self.implicit_group(pod), "allow"
            if gid and self.selecting(pod, "in"):
                gid = ""  # a NetworkPolicy governs this pod's ingress; its implicit group steps aside
        if not gid:
            return None
        label = _group_label(gid)
        contracts = [self.contracts[k] for k in sorted(self.contracts) if self.contracts[k].provider == gid]
        denies, allows = [], []
        for c in contracts:
            for i, r in enumerate(c.rules):
                out = denies if r.action == DENY else allows
                origin = f"Contract {c.key} rules[{i}] {r.action}"
                proto_ports = [(r.protocol, pr) for pr in r.ports] or [(r.protocol, None)]
                for consumer in c.consumers:
                    m = self.define(("group", consumer))
                    for proto, pr in proto_ports:
                        out.append(Rule(Match(peer_set=m, proto=proto and proto.lower(), ports=pr), r.action, origin))
                for cidr, ex in c.consumer_cidrs:
                    for proto, pr in proto_ports:
                        out.extend(Rule(m, r.action, origin) for m in self._cidr_matches(cidr, ex, proto, pr))
        own = self.define(("group", gid))
        intra_rule = Rule(Match(peer_set=own), intra, f"{label}: intra-group {intra}")
        return Chain("group", "in", tuple(denies + [intra_rule] + allows), f"{label}: no contract allows this source")

    def _cidr_matches(self, cidr: str, excepts: tuple[str, ...], proto: str | None, ports) -> list[Match]:
        ranges = cidrs_of(cidr, excepts)
        if not ranges:
            return []
        if len(ranges) > 1:
            return [Match(peer_set=self.define(("cidr", ranges)), proto=proto and proto.lower(), ports=ports)]
        return [Match(cidrs=ranges, proto=proto and proto.lower(), ports=ports)]

    def _netpol_chain(self, pod: PodInfo, direction: str) -> Chain | None:
        pols = self.selecting(pod, direction)
        if not pols:
            return None
        rules: list[Rule] = []
        for p in pols:
            for i, r in enumerate(p.ingress if direction == "in" else p.egress):
                origin = f"NetworkPolicy {p.key} {'ingress' if direction == 'in' else 'egress'}[{i}]"
                rules.extend(Rule(m, ALLOW, origin) for m in self._rule_matches(p, r, pod, direction))
        names = ", ".join(p.key for p in pols)
        return Chain("netpol", direction, tuple(rules),
                     f"NetworkPolicy {'ingress' if direction == 'in' else 'egress'} isolation ({names})")

    def _port_matches(self, ports: tuple[PortSpec, ...] | None, pod: PodInfo, direction: str,
                      p: NetPol, r: NetRule) -> list[Match]:
        """Port part of a rule; named ports resolve against the destination pod(s)."""
        if ports is None:
            return [Match()]
        out = []
        for spec in ports:
            proto = spec.protocol.lower()
            if spec.port is None:
                out.append(Match(proto=proto))
            elif isinstance(spec.port, int):
                out.append(Match(proto=proto, ports=(spec.port, spec.end_port or spec.port)))
            elif direction == "in":
                num = pod.named_port(spec.port, spec.protocol)
                if num is not None:
                    out.append(Match(proto=proto, ports=(num, num)))
            else:
                out.append(Match(tuple_set=self.define(("named", p.ns, r.peers, spec.port, spec.protocol))))
        return out

    def _rule_matches(self, p: NetPol, r: NetRule, pod: PodInfo, direction: str) -> list[Match]:
        port_ms = self._port_matches(r.ports, pod, direction, p, r)
        if r.peers is None:
            return port_ms
        out = []
        for pm in port_ms:
            if pm.tuple_set is not None:   # the named-port set already holds only the peers' addresses
                out.append(pm)
                continue
            for peer in r.peers:
                if peer.cidr is not None:
                    out.extend(Match(peer_set=m.peer_set, cidrs=m.cidrs, proto=pm.proto, ports=pm.ports)
                               for m in self._cidr_matches(peer.cidr, peer.excepts, None, None))
                else:
                    scope = p.ns if peer.ns_selector is None else None
                    name = self.define(("sel", scope, peer.ns_selector, peer.pod_selector))
                    out.append(Match(peer_set=name, proto=pm.proto, ports=pm.ports))
        return list(dict.fromkeys(out))

    # ---- evaluation (trellis explain) --------------------------------------------

    def matches(self, m: Match, peer_ip: str, dst_ip: str, proto: str, port: int, dnat: bool) -> bool:
        if m.peer_set is not None:
            if self.set_defs[m.peer_set][0] == "cidr":
                if not any(ipaddress.ip_address(peer_ip) in ipaddress.ip_network(c) for c in self.members(m.peer_set)):
                    return False
            elif peer_ip not in self.members(m.peer_set):
                return False
        if m.cidrs is not None and not any(ipaddress.ip_address(peer_ip) in ipaddress.ip_network(c) for c in m.cidrs):
            return False
        if m.tuple_set is not None and f"{dst_ip} . {proto} . {port}" not in self.members(m.tuple_set):
            return False
        if m.proto is not None and m.proto != proto:
            return False
        if m.ports is not None and not m.ports[0] <= port <= m.ports[1]:
            return False
        return not m.dnat or dnat

    def evaluate(self, chain: Chain, src_ip: str, dst_ip: str, proto: str, port: int, dnat: bool) -> tuple[str, str]:
        peer = src_ip if chain.direction == "in" else dst_ip
        for rule in chain.rules:
            if self.matches(rule.match, peer, dst_ip, proto, port, dnat):
                return rule.verdict, rule.origin
        return DENY, chain.default_origin

    def pod_by_ip(self, ip: str) -> PodInfo | None:
        return next((p for p in self.pods.values() if p.ip == ip and not p.host_network), None)


def _group_label(gid: str) -> str:
    kind, _, rest = gid.partition(":")
    return {"epg": "EndpointGroup", "namespace": "Namespace group", "deployment": "Deployment group"}[kind] + f" {rest}"


@dataclass(frozen=True)
class Step:
    direction: str   # egress (at the source's node) / ingress (at the destination's node)
    layer: str
    verdict: str
    origin: str


def explain(state: PolicyState, src_ip: str, dst_ip: str, proto: str, port: int,
            dnat: bool = False, node_ips: dict[str, str] | None = None) -> tuple[str, list[Step]]:
    """Walk a new connection through every layer, as the datapath does. -> (verdict, steps)."""
    proto = proto.lower()
    src, dst = state.pod_by_ip(src_ip), state.pod_by_ip(dst_ip)
    steps: list[Step] = []
    if dst is not None and node_ips and node_ips.get(dst.node) == src_ip:
        return ALLOW, [Step("ingress", "node", ALLOW, f"node {dst.node}: a pod's own node always reaches it")]
    for pod, direction, name in ((src, "out", "egress"), (dst, "in", "ingress")):
        for chain in state.chains(pod) if pod is not None else ():
            if chain.direction == direction:
                v, o = state.evaluate(chain, src_ip, dst_ip, proto, port, dnat)
                steps.append(Step(name, chain.layer, v, o))
                if v == DENY:
                    return DENY, steps
    if not steps:
        steps.append(Step("-", "-", ALLOW, "no layer applies to these pods"))
    return ALLOW, steps
