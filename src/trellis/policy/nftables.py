"""The compiled policy model -> ``table inet trellis-policy``. Pure, no I/O.

Skeleton (fixed; only sets, maps and layer chains change)::

    chain mark-prerouting   hook prerouting, priority -90 (after DNAT at -100)
      from the overlay                           keep the mark it arrived with (VXLAN GBP)
      clear the JUDGED bit; set it on the new packets of a connection DNATed here to a pod
      on another node: this node judges that pod's ingress (below), with the real client
    chain mark-output       hook output (route), after DNAT: the same for the node's own sockets
    chain forward   hook forward, priority filter (after Service DNAT, so on the real pod)
      ct state established,related accept       replies and admitted flows
      a pod to itself (the hairpin through its   accept (Kubernetes: a pod cannot block
        own Service)                               access to itself)
      IPv6 towards a pod                         drop (pods are IPv4-only)
      from the overlay, JUDGED                   accept (judged where the connection was DNATed)
      from a pod veth                            jump egress
      to a pod veth                              jump ingress
      JUDGED (to a pod on another node)          jump ingress-peer
    chain output    hook output: JUDGED          jump ingress-peer
    chain ingress / ingress-peer
      daddr not in @known / @peers               reject (fail closed: policy not in place yet)
      daddr vmap @ingress-isolation / @ingress-group / @ingress-netpol
    chain egress
      saddr not in @known                        reject
      saddr vmap @egress-netpol

Each map sends a pod's address to its layer chain; a chain's rules ``return``
(allowed: on to the next layer) or reject, and a chain that runs out of rules
rejects. Denied connections are rejected with ICMP administratively-prohibited,
so clients fail at once instead of hanging. The ingress maps hold this node's
pods and, for the connections this node DNATs to them, every other node's pods
that back a Service (``peers``): a Service hides neither the real client nor the fact that it was
used from the layer that decides (docs/policy.md, "Paths").

Traffic a pod's own node originates (kubelet probes, hostNetwork pods on that
node) to its pods takes the output path and is not filtered here: upstream
NetworkPolicy always allows a pod's own node.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trellis.names import HOST_IF_PREFIX, JUDGED_MARK, VXLAN_DEV
from trellis.policy.engine import ALLOW, Chain, Match, PolicyState

TABLE = "trellis-policy"
T = f"inet {TABLE}"
REJECT = "reject with icmpx admin-prohibited"
MAPS = ("ingress-isolation", "ingress-group", "ingress-netpol", "egress-netpol")
SET_TYPES = {"named": "type ipv4_addr . inet_proto . inet_service;",
             "cidr": "type ipv4_addr; flags interval; auto-merge;"}


@dataclass
class Desired:
    sets: dict[str, tuple[str, frozenset[str]]] = field(default_factory=dict)
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    maps: dict[str, dict[str, str]] = field(default_factory=lambda: {m: {} for m in MAPS})
    known: frozenset[str] = frozenset()   # this node's pods (policy in place)
    peers: frozenset[str] = frozenset()   # other nodes' pods whose ingress chains are here


def render_match(m: Match, direction: str) -> str:
    addr = "ip saddr" if direction == "in" else "ip daddr"
    parts = []
    if m.peer_set is not None:
        parts.append(f"{addr} @{m.peer_set}")
    if m.cidrs is not None:
        parts.append(f"{addr} {m.cidrs[0]}")
    if m.tuple_set is not None:
        parts.append(f"ip daddr . meta l4proto . th dport @{m.tuple_set}")
    if m.proto is not None:
        parts.append(f"meta l4proto {m.proto}")
    if m.ports is not None:
        lo, hi = m.ports
        parts.append(f"th dport {lo}" if lo == hi else f"th dport {lo}-{hi}")
    if m.dnat:
        parts.append("ct status dnat")
    return " ".join(parts)


def render_chain(chain: Chain) -> tuple[str, ...]:
    out = []
    for r in chain.rules:
        verdict = "return" if r.verdict == ALLOW else REJECT
        out.append(f'{render_match(r.match, chain.direction)} {verdict} comment "{r.origin}"'.lstrip())
    out.append(f'counter {REJECT} comment "{chain.default_origin}"')
    return tuple(out)


_RENDERED: dict[str, tuple[str, ...]] = {}


def _rendered(name: str, chain: Chain) -> tuple[str, ...]:
    """render_chain, remembered by the chain's content address (a full sync of a node that holds
    thousands of pods' chains renders each distinct chain once, not once per sync)."""
    got = _RENDERED.get(name)
    if got is None:
        if len(_RENDERED) > 50_000:
            _RENDERED.clear()
        got = _RENDERED[name] = render_chain(chain)
    return got


def desired(state: PolicyState, node: str, service_endpoints: set[str] | frozenset[str] | None = None) -> Desired:
    """What the table must hold on ``node``: its pods' chains, the ingress chains of the other
    nodes' pods that back a Service (``service_endpoints``, None: every pod; judged here for the
    connections this node DNATs to them: a node DNATs only to Service endpoints), and the sets
    they use."""
    d = Desired()
    known, peers, referenced = set(), set(), set()
    for pod in state.pods.values():
        if pod.host_network or not pod.ip:
            continue
        local = pod.node == node
        if not local and service_endpoints is not None and pod.ip not in service_endpoints:
            continue
        (known if local else peers).add(pod.ip)
        for chain in state.chains(pod):
            if not local and chain.direction != "in":
                continue
            name = chain.name
            d.maps[f"{'ingress' if chain.direction == 'in' else 'egress'}-{chain.layer}"][pod.ip] = name
            if name not in d.chains:
                d.chains[name] = _rendered(name, chain)
                for r in chain.rules:
                    referenced.update(s for s in (r.match.peer_set, r.match.tuple_set) if s)
    for name in referenced:
        kind = state.set_defs[name][0]
        d.sets[name] = (SET_TYPES.get(kind, "type ipv4_addr;"), frozenset(state.members(name)))
    d.known = frozenset(known | state.unmanaged)
    d.peers = frozenset(peers - d.known)
    return d


def _elements(items) -> str:
    return ", ".join(sorted(items))


def _self_pairs(ips) -> list[str]:
    return [f"{ip} . {ip}" for ip in ips]


def _mark_rules(cluster_cidr: str) -> list[str]:
    """Clear the JUDGED bit, then set it on the new packets of connections DNATed here to a
    pod that is not on this node."""
    bit = f"{JUDGED_MARK:#x}"
    return [f"meta mark & {bit} == {bit} meta mark set meta mark & {~JUDGED_MARK & 0xffffffff:#x}",
            f"ct state new ct direction original ct status dnat ip daddr {cluster_cidr} ip daddr != @known "
            f'meta mark set meta mark | {bit} comment "DNATed here to a pod on another node: judged here"']


def full(d: Desired, cluster_cidr: str) -> str:
    """The whole table, replacing any previous one, as one atomic transaction."""
    out = [f"table {T}", f"delete table {T}", f"table {T} {{"]
    for name, (typ, elems) in sorted(d.sets.items()):
        body = f" elements = {{ {_elements(elems)} }}" if elems else ""
        out.append(f"  set {name} {{ {typ}{body} }}")
    for name, elems in (("known", d.known), ("peers", d.peers)):
        out.append(f"  set {name} {{ type ipv4_addr;{' elements = { ' + _elements(elems) + ' }' if elems else ''} }}")
    pairs = _elements(_self_pairs(d.known))
    out.append(f"  set self {{ type ipv4_addr . ipv4_addr;{' elements = { ' + pairs + ' }' if pairs else ''} }}")
    for name, rules in sorted(d.chains.items()):
        out.append(f"  chain {name} {{")
        out.extend(f"    {r}" for r in rules)
        out.append("  }")
    for m in MAPS:
        elems = d.maps.get(m, {})
        body = f" elements = {{ {', '.join(f'{k} : jump {v}' for k, v in sorted(elems.items()))} }}" if elems else ""
        out.append(f"  map {m} {{ type ipv4_addr : verdict;{body} }}")
    p, bit = HOST_IF_PREFIX, f"{JUDGED_MARK:#x}"
    vmaps = [f"    ip daddr vmap @{m}" for m in MAPS if m.startswith("ingress")]
    mark = [f"    {r}" for r in _mark_rules(cluster_cidr)]
    out += [
        "  chain ingress {",
        f'    ip daddr != @known counter {REJECT} comment "policy for this pod not in place yet (fail closed)"',
        *vmaps,
        "  }",
        "  chain ingress-peer {",
        f'    ip daddr != @peers counter {REJECT} comment "policy for this remote pod not known here yet (fail closed)"',
        *vmaps,
        "  }",
        "  chain egress {",
        f'    ip saddr != @known counter {REJECT} comment "policy for this pod not in place yet (fail closed)"',
        "    ip saddr vmap @egress-netpol",
        "  }",
        "  chain mark-prerouting {",
        "    type filter hook prerouting priority -90; policy accept;",
        f'    iifname "{VXLAN_DEV}" return comment "keeps the judgment it arrived with"',
        *mark,
        "  }",
        "  chain mark-output {",
        "    type route hook output priority -90; policy accept;",
        *mark,
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    ct state established,related accept",
        '    ip saddr . ip daddr @self accept comment "a pod always reaches itself"',
        f'    meta nfproto ipv6 oifname "{p}*" counter drop comment "pods are IPv4-only"',
        f'    iifname "{VXLAN_DEV}" meta mark & {bit} == {bit} counter accept comment "judged where it was DNATed"',
        f'    iifname "{p}*" jump egress',
        f'    oifname "{p}*" jump ingress',
        f"    meta mark & {bit} == {bit} jump ingress-peer",
        "  }",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        f"    meta mark & {bit} == {bit} jump ingress-peer",
        "  }",
        "}",
    ]
    return "\n".join(out) + "\n"


def transaction(old: Desired, new: Desired) -> str:
    """The minimal commands from ``old`` to ``new`` (chains are content-addressed: never edited)."""
    cmds: list[str] = []
    for name, (typ, elems) in new.sets.items():
        prev = old.sets.get(name)
        if prev is None:
            cmds.append(f"add set {T} {name} {{ {typ} }}")
            if elems:
                cmds.append(f"add element {T} {name} {{ {_elements(elems)} }}")
            continue
        gone, added = prev[1] - elems, elems - prev[1]
        if gone:
            cmds.append(f"delete element {T} {name} {{ {_elements(gone)} }}")
        if added:
            cmds.append(f"add element {T} {name} {{ {_elements(added)} }}")
    for name, rules in new.chains.items():
        if name not in old.chains:
            cmds.append(f"add chain {T} {name}")
            cmds.extend(f"add rule {T} {name} {r}" for r in rules)
    for m in MAPS:
        o, n = old.maps.get(m, {}), new.maps.get(m, {})
        gone = [k for k in o if n.get(k) != o[k]]
        added = [k for k in n if o.get(k) != n[k]]
        if gone:
            cmds.append(f"delete element {T} {m} {{ {_elements(gone)} }}")
        if added:
            cmds.append(f"add element {T} {m} {{ {', '.join(f'{k} : jump {n[k]}' for k in sorted(added))} }}")
    for name in ("known", "peers"):
        o, n = getattr(old, name), getattr(new, name)
        if n - o:
            cmds.append(f"add element {T} {name} {{ {_elements(n - o)} }}")
        if o - n:
            cmds.append(f"delete element {T} {name} {{ {_elements(o - n)} }}")
        if name == "known" and n - o:
            cmds.append(f"add element {T} self {{ {_elements(_self_pairs(n - o))} }}")
        if name == "known" and o - n:
            cmds.append(f"delete element {T} self {{ {_elements(_self_pairs(o - n))} }}")
    cmds.extend(f"delete chain {T} {name}" for name in old.chains if name not in new.chains)
    cmds.extend(f"delete set {T} {name}" for name in old.sets if name not in new.sets)
    return "\n".join(cmds) + ("\n" if cmds else "")
