"""The agent's nftables table for the pod network: anti-spoofing, egress masquerade, overlay peers.

``table inet trellis-net`` is owned entirely by the agent and never changes per
pod. Anti-spoofing is a strict reverse-path check: a packet from a pod's host
veth passes only if the route back to its source address leaves through that
same veth, which holds exactly for the pod's own /32. One FIB lookup per packet,
whatever the number of pods, and nothing to add or remove on CNI ADD/DEL. Pods
are IPv4-only, so IPv6 from a pod is dropped. Traffic from the cluster CIDR to
anywhere outside it is masqueraded.

VXLAN is accepted only from the other nodes' underlay addresses (set
``overlay-peers``, kept by the agent from the Node objects), as Calico does: a
VXLAN packet carries an inner source address and, with GBP, a policy mark
(docs/policy.md), so a stranger on the underlay must not be able to inject one.
"""
from __future__ import annotations

from trellis.names import HOST_IF_PREFIX  # noqa: F401 (re-exported)

TABLE = "trellis-net"
VXLAN_PORT = 4789


def _elements(ips) -> str:
    return f" elements = {{ {', '.join(sorted(ips))} }}" if ips else ""


def render(cluster_cidr: str, peers: set[str] | frozenset[str] = frozenset()) -> str:
    """The whole table as one transaction that replaces any previous version."""
    return f"""table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  set overlay-peers {{ type ipv4_addr;{_elements(peers)} }}
  chain raw-prerouting {{
    type filter hook prerouting priority raw; policy accept;
    iifname "{HOST_IF_PREFIX}*" fib saddr . iif oif missing counter drop comment "anti-spoofing"
    iifname "{HOST_IF_PREFIX}*" meta nfproto ipv6 counter drop comment "pods are IPv4-only"
  }}
  chain input {{
    type filter hook input priority filter; policy accept;
    udp dport {VXLAN_PORT} ip saddr != @overlay-peers counter drop comment "VXLAN only from other nodes"
  }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {cluster_cidr} ip daddr != {cluster_cidr} oifname != "{HOST_IF_PREFIX}*" counter masquerade comment "egress"
  }}
}}
"""


def peers_update(old: set[str], new: set[str]) -> str:
    """The overlay peers set from ``old`` to ``new`` ('' when nothing changes)."""
    cmds = []
    if old - new:
        cmds.append(f"delete element inet {TABLE} overlay-peers {{ {', '.join(sorted(old - new))} }}")
    if new - old:
        cmds.append(f"add element inet {TABLE} overlay-peers {{ {', '.join(sorted(new - old))} }}")
    return "\n".join(cmds) + ("\n" if cmds else "")
