"""Names and numbers that several parts of trellis must agree on, in one neutral place.

The pure compilers (policy/, proxy/) and the agent both use these; keeping them here
lets the imports run one way (agent -> pure, never back).
"""
from __future__ import annotations

HOST_IF_PREFIX = "tpd"          # host ends of pod veths (never a prefix of another trellis device)
VXLAN_DEV = "trellis-vxlan"     # the overlay device (both routing modes: see agent/routing.py)
VTEP_ANNOTATION = "trellis.dev/vtep-mac"

# Packet mark bit: "this connection's ingress policy was judged at the node where it was
# DNATed, with the real client as the source". Set on the connection's new packets by the
# policy table at that node; the VXLAN Group Based Policy extension carries the mark's low
# 16 bits to the destination node, whose policy table then skips its own ingress check.
# The proxy's mark scratch (numgen ... mod N) stays below it for services of < 8192 endpoints,
# and the policy table clears the bit on every packet it did not set it on anyway.
JUDGED_MARK = 0x2000

# Policy routing for judged packets in direct mode (no header of its own): they take the
# VXLAN device, so the judgment travels with them.
TUNNEL_TABLE = 201
TUNNEL_RULE_PRIORITY = 100

# ConfigMap trellis-config: the cluster's trellis settings. `trellis manifests` puts it in
# trellis-system (deploy/trellis.yaml); labs and clusters set up before that keep it in
# kube-system, so readers take trellis-system's and fall back to kube-system's.
CONFIG_NAME = "trellis-config"
CONFIG_NAMESPACES = ("trellis-system", "kube-system")
