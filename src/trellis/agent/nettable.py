"""The agent's nftables table for the pod network: anti-spoofing and egress masquerade.

``table inet trellis-net`` is owned entirely by the agent and never changes per
pod. Anti-spoofing is a strict reverse-path check: a packet from a pod's host
veth passes only if the route back to its source address leaves through that
same veth, which holds exactly for the pod's own /32. One FIB lookup per packet,
whatever the number of pods, and nothing to add or remove on CNI ADD/DEL. Pods
are IPv4-only, so IPv6 from a pod is dropped. Traffic from the cluster CIDR to
anywhere outside it is masqueraded.
"""
from __future__ import annotations

TABLE = "trellis-net"
HOST_IF_PREFIX = "tpd"  # never a prefix of another trellis device (trellis-vxlan)


def render(cluster_cidr: str) -> str:
    """The whole table as one transaction that replaces any previous version."""
    return f"""table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  chain raw-prerouting {{
    type filter hook prerouting priority raw; policy accept;
    iifname "{HOST_IF_PREFIX}*" fib saddr . iif oif missing counter drop comment "anti-spoofing"
    iifname "{HOST_IF_PREFIX}*" meta nfproto ipv6 counter drop comment "pods are IPv4-only"
  }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {cluster_cidr} ip daddr != {cluster_cidr} oifname != "{HOST_IF_PREFIX}*" counter masquerade comment "egress"
  }}
}}
"""
