"""The agent's nftables table for the pod network: anti-spoofing and egress masquerade.

``table inet trellis-net`` is owned entirely by the agent. Anti-spoofing is one
set lookup per packet (``iifname . saddr`` must be a pod's own pair), whatever
the number of pods; pods are IPv4-only, so IPv6 from a pod is dropped. Traffic
from the cluster CIDR to anywhere outside it is masqueraded.
"""
from __future__ import annotations

TABLE = "trellis-net"
HOST_IF_PREFIX = "tpd"  # never a prefix of another trellis device (trellis-vxlan)


def element(host_if: str, ip: str) -> str:
    return f'"{host_if}" . {ip}'


def render(cluster_cidr: str, pods: list[tuple[str, str]]) -> str:
    """The whole table as one transaction that replaces any previous version."""
    elems = ", ".join(element(h, ip) for h, ip in sorted(pods))
    elements = f"\n    elements = {{ {elems} }}" if elems else ""
    return f"""table inet {TABLE}
delete table inet {TABLE}
table inet {TABLE} {{
  set pod-sources {{
    type ifname . ipv4_addr{elements}
  }}
  chain raw-prerouting {{
    type filter hook prerouting priority raw; policy accept;
    iifname "{HOST_IF_PREFIX}*" iifname . ip saddr != @pod-sources counter drop comment "anti-spoofing"
    iifname "{HOST_IF_PREFIX}*" meta nfproto ipv6 counter drop comment "pods are IPv4-only"
  }}
  chain nat-postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr {cluster_cidr} ip daddr != {cluster_cidr} oifname != "{HOST_IF_PREFIX}*" counter masquerade comment "egress"
  }}
}}
"""


def add_pod(host_if: str, ip: str) -> str:
    return f"add element inet {TABLE} pod-sources {{ {element(host_if, ip)} }}\n"


def delete_pod(host_if: str, ip: str) -> str:
    return f"delete element inet {TABLE} pod-sources {{ {element(host_if, ip)} }}\n"
