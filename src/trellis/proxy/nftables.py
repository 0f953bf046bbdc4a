"""Service ports -> nftables, in the style of kube-proxy's nftables backend. Pure, no I/O.

One table, ``inet trellis-proxy``, owned by the agent. The per-packet work is a
fixed number of lookups whatever the number of services:

* ``service-ips`` (daddr . proto . dport -> goto a service chain) for cluster
  IPs, external IPs and LoadBalancer IPs; ``service-nodeports`` (proto . dport)
  for NodePorts on any local address; ``no-endpoint-*`` send connections to a
  service with no usable endpoint to ``reject-chain`` (TCP reset / ICMP port
  unreachable, never a black hole); ``firewall-ips`` enforces
  loadBalancerSourceRanges.
* A service chain picks an endpoint and DNATs. Random choice uses the packet
  mark as a scratch register (``meta mark set numgen random mod N`` then one
  rule per endpoint). NOTE: we avoid the anonymous ``numgen ... vmap {..}`` maps
  kube-proxy uses: the kernel names anonymous sets by scanning every set of
  the table, so loading 10,000 of them took ~10 s on kernel 6.18 (one chain of
  plain rules per service loads 10,000 services in < 1 s).
* Only the first packet of a connection crosses NAT chains; replies and the
  rest of the flow follow conntrack.
* Masquerade is decided per connection with ct mark bit ``0x4000``: set for
  external traffic with externalTrafficPolicy Cluster, and for hairpin (a pod
  reaching itself through its service: the route to the DNATed destination
  leaves through the interface the packet came in on). The source becomes the
  node's own address (``snat ip to NODE-IP``) rather than the outgoing device's
  (``masquerade``): NOTE: the kernel kills a masqueraded connection whose packets
  change output device (nf_nat_oif_changed), and in direct routing mode a
  connection's first packets take the VXLAN device while the rest take the
  underlay (agent/routing.py). Without a node address, ``masquerade``.

Each service port owns a few chains (and, for ClientIP affinity, one dynamic
set per endpoint) named ``<kind>-<HASH>-<ns>/<name>/<proto>/<port>``; the hash
makes names unique and lets a full sync sweep chains nobody owns any more.
``transaction`` turns (old, new) object pairs into the minimal commands.
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from trellis.proxy.model import Endpoint, ServicePort

TABLE = "trellis-proxy"
MASQ_BIT = 0x4000
FAMILY = "inet"
T = f"{FAMILY} {TABLE}"

MAPS = {
    "service-ips": "type ipv4_addr . inet_proto . inet_service : verdict; size 131072;",
    "service-nodeports": "type inet_proto . inet_service : verdict; size 65536;",
    "no-endpoint-services": "type ipv4_addr . inet_proto . inet_service : verdict; size 131072;",
    "no-endpoint-nodeports": "type inet_proto . inet_service : verdict; size 65536;",
    "firewall-ips": "type ipv4_addr . inet_proto . inet_service : verdict; size 131072;",
}


def fixed_chains(cluster_cidr: str, snat_ip: str | None = None) -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (hook spec or "", rules): the table's skeleton."""
    snat = f"snat ip to {snat_ip} fully-random" if snat_ip else "masquerade fully-random"
    local_dst = "fib daddr type local ip daddr != 127.0.0.0/8"
    checks = ("ip daddr . meta l4proto . th dport vmap @firewall-ips",
              "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",
              f"{local_dst} meta l4proto . th dport vmap @no-endpoint-nodeports")
    return {
        "reject-chain": ("", ("meta l4proto tcp reject with tcp reset", "reject with icmpx port-unreachable")),
        "services": ("", ("ip daddr . meta l4proto . th dport vmap @service-ips",
                          f"{local_dst} meta l4proto . th dport vmap @service-nodeports")),
        "service-checks": ("", checks),
        "filter-prerouting": ("type filter hook prerouting priority dstnat - 10; policy accept;",
                              ("ct state new jump service-checks",)),
        "filter-output": ("type filter hook output priority -110; policy accept;",
                          ("ct state new jump service-checks",)),
        "nat-prerouting": ("type nat hook prerouting priority dstnat; policy accept;", ("jump services",)),
        "nat-output": ("type nat hook output priority -100; policy accept;", ("jump services",)),
        "filter-prerouting-dnat": ("type filter hook prerouting priority dstnat + 10; policy accept;",
                                   (f"ct state new ct status dnat fib daddr . iif oif exists "
                                    f"ct mark set ct mark | {MASQ_BIT:#x} comment \"hairpin\"",)),
        "nat-postrouting": ("type nat hook postrouting priority srcnat; policy accept;",
                            (f"ct mark & {MASQ_BIT:#x} != 0 {snat}",)),
    }


@dataclass
class Objects:
    """What one service port owns in the table."""
    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)  # dynamic affinity sets: name -> definition
    elements: dict[tuple[str, str], str] = field(default_factory=dict)  # (map, key) -> verdict


def _hash(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest())[:8].decode()


def chain_name(kind: str, key: str) -> str:
    return f"{kind}-{_hash(key)}-{key}"[:250]


def _pick(sp: ServicePort, eps: tuple[Endpoint, ...], objs: Objects) -> list[str]:
    """Rules that choose one endpoint (uniformly at random) and DNAT to it."""
    p = sp.protocol
    if sp.affinity_timeout:
        rules, targets = [], []
        for e in eps:
            ek = f"{sp.key}__{e.ip}/{e.port}"
            # The timeout is part of the set's identity: a changed timeout makes a new set.
            aff, sep = f"aff-{_hash(f'{ek}/{sp.affinity_timeout}')}", chain_name("sep", ek)
            objs.sets[aff] = f"{{ type ipv4_addr; flags dynamic,timeout; timeout {sp.affinity_timeout}s; }}"
            objs.chains[sep] = (f"update @{aff} {{ ip saddr }}", f"meta l4proto {p} dnat ip to {e.ip}:{e.port}")
            rules.append(f"ip saddr @{aff} goto {sep}")
            targets.append(f"goto {sep}")
    else:
        rules, targets = [], [f"meta l4proto {p} dnat ip to {e.ip}:{e.port}" for e in eps]
    if len(targets) == 1:
        return rules + targets
    rules.append(f"meta mark set numgen random mod {len(targets)}")
    rules += [f"meta mark {i} {t}" for i, t in enumerate(targets[:-1])]
    return rules + [targets[-1]]


def compile_port(sp: ServicePort, node: str, cluster_cidr: str) -> Objects:
    objs = Objects()
    p, port = sp.protocol, sp.port
    reject = "goto reject-chain"
    cluster = sp.cluster_endpoints(node)
    svc = chain_name("svc", sp.key)
    if cluster:
        objs.chains[svc] = tuple(_pick(sp, cluster, objs))
    for ip in sp.cluster_ips:
        objs.elements[("service-ips" if cluster else "no-endpoint-services", f"{ip} . {p} . {port}")] = (
            f"goto {svc}" if cluster else reject)

    outside = sp.external_ips + sp.lb_ips
    if not outside and not sp.node_port:
        return objs
    everywhere = sp.usable()
    ext = chain_name("ext", sp.key)
    if not everywhere:
        for ip in outside:
            objs.elements[("no-endpoint-services", f"{ip} . {p} . {port}")] = reject
        if sp.node_port:
            objs.elements[("no-endpoint-nodeports", f"{p} . {sp.node_port}")] = reject
        return objs
    if sp.etp_local:
        # Pods and the node itself are not "external": they use every endpoint (as kube-proxy).
        all_chain = svc if cluster == everywhere else chain_name("all", sp.key)
        if all_chain not in objs.chains:
            objs.chains[all_chain] = tuple(_pick(sp, everywhere, objs))
        local = sp.external_endpoints(node)
        rules = [f"ip saddr {cluster_cidr} goto {all_chain}", f"fib saddr type local goto {all_chain}"]
        rules += _pick(sp, local, objs) if local else ["drop comment \"no local endpoint\""]
    else:
        rules = [f"ct mark set ct mark | {MASQ_BIT:#x}"] + _pick(sp, everywhere, objs)
    objs.chains[ext] = tuple(rules)
    for ip in outside:
        objs.elements[("service-ips", f"{ip} . {p} . {port}")] = f"goto {ext}"
    if sp.node_port:
        objs.elements[("service-nodeports", f"{p} . {sp.node_port}")] = f"goto {ext}"
    if sp.source_ranges and sp.lb_ips:
        fw = chain_name("fw", sp.key)
        objs.chains[fw] = (f"ip saddr {{ {', '.join(sp.source_ranges)} }} return",
                           "drop comment \"loadBalancerSourceRanges\"")
        for ip in sp.lb_ips:
            objs.elements[("firewall-ips", f"{ip} . {p} . {port}")] = f"jump {fw}"
    return objs


def merge(parts) -> Objects:
    out = Objects()
    for o in parts:
        out.chains.update(o.chains)
        out.sets.update(o.sets)
        out.elements.update(o.elements)
    return out


def _chain_cmds(name: str, rules: tuple[str, ...]) -> list[str]:
    return [f"add rule {T} {name} {r}" for r in rules]


def _element_cmds(op: str, elements: dict[tuple[str, str], str]) -> list[str]:
    by_map: dict[str, list[str]] = {}
    for (m, key), verdict in sorted(elements.items()):
        by_map.setdefault(m, []).append(key if op == "delete" else f"{key} : {verdict}")
    return [f"{op} element {T} {m} {{ {', '.join(items)} }}" for m, items in by_map.items()]


def skeleton(cluster_cidr: str, snat_ip: str | None = None) -> list[str]:
    """Create-or-reset the fixed objects (safe to repeat: 'add' is idempotent, chains are flushed)."""
    cmds = [f"add table {T}"]
    cmds += [f"add map {T} {m} {{ {spec} }}" for m, spec in MAPS.items()]
    chains = fixed_chains(cluster_cidr, snat_ip)
    for name, (hook, _) in chains.items():
        cmds.append(f"add chain {T} {name}" + (f" {{ {hook} }}" if hook else ""))
        cmds.append(f"flush chain {T} {name}")
    for name, (_, rules) in chains.items():
        cmds += _chain_cmds(name, rules)
    return cmds


def full_sync(desired: Objects, existing_chains: set[str], existing_sets: set[str], cluster_cidr: str,
              snat_ip: str | None = None) -> str:
    """The whole table in one transaction. Affinity sets that stay keep their entries."""
    fixed = set(fixed_chains(cluster_cidr))
    cmds = skeleton(cluster_cidr, snat_ip)
    cmds += [f"flush map {T} {m}" for m in MAPS]
    cmds += [f"add set {T} {n} {d}" for n, d in sorted(desired.sets.items())]
    for name in sorted(desired.chains):
        cmds += [f"add chain {T} {name}", f"flush chain {T} {name}"]
    for name, rules in sorted(desired.chains.items()):
        cmds += _chain_cmds(name, rules)
    cmds += _element_cmds("add", desired.elements)
    stale = sorted(existing_chains - set(desired.chains) - fixed)
    cmds += [f"flush chain {T} {n}" for n in stale]
    cmds += [f"delete chain {T} {n}" for n in stale]
    cmds += [f"delete set {T} {n}" for n in sorted(existing_sets - set(desired.sets))]
    return "\n".join(cmds) + "\n"


def transaction(changes: list[tuple[Objects | None, Objects | None]]) -> str:
    """Minimal commands that turn each old Objects into its new one, in a safe order:
    new sets and chains before the elements that point at them; elements removed
    before the chains and sets they point at."""
    add_sets, add_chains, fill, del_el, add_el, drop_chains, drop_sets = [], [], [], {}, {}, [], []
    for old, new in changes:
        old, new = old or Objects(), new or Objects()
        add_sets += [f"add set {T} {n} {d}" for n, d in new.sets.items() if n not in old.sets]
        drop_sets += [n for n in old.sets if n not in new.sets]
        for name, rules in new.chains.items():
            if name not in old.chains:
                add_chains.append(f"add chain {T} {name}")
                fill += _chain_cmds(name, rules)
            elif old.chains[name] != rules:
                fill += [f"flush chain {T} {name}"] + _chain_cmds(name, rules)
        drop_chains += [n for n in old.chains if n not in new.chains]
        for k, v in old.elements.items():
            if new.elements.get(k) != v:
                del_el[k] = v
        for k, v in new.elements.items():
            if old.elements.get(k) != v:
                add_el[k] = v
    cmds = add_sets + add_chains + fill + _element_cmds("delete", del_el) + _element_cmds("add", add_el)
    cmds += [f"flush chain {T} {n}" for n in drop_chains]
    cmds += [f"delete chain {T} {n}" for n in drop_chains]
    cmds += [f"delete set {T} {n}" for n in drop_sets]
    return "\n".join(cmds) + ("\n" if cmds else "")
