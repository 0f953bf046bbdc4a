"""What is wrong with the cluster's trellis config (ConfigMap kube-system/trellis-config).

Pure: data -> problems. The agent turns each problem into a Warning Event on the
ConfigMap (reason ``InvalidConfig``), so a typo in a key is seen in ``kubectl
describe configmap -n kube-system trellis-config`` instead of silently ignored. (An
unsupported isolationMode is the trellis controller's to report, once for the cluster:
``controller/policyaudit``.)
"""
from __future__ import annotations

INVALID_CONFIG = "InvalidConfig"
KNOWN_KEYS = {
    "isolationMode": "cluster, namespace or deployment",
    "routingMode": "vxlan or direct",
    "clusterCIDR": "the pod CIDR, e.g. 10.244.0.0/16",
}
ROUTING_MODES = ("vxlan", "direct")


def problems(data: dict | None) -> list[str]:
    data = data or {}
    out = []
    for key in sorted(data):
        if key not in KNOWN_KEYS:
            out.append(f"unknown key {key!r} is ignored (known keys: {', '.join(sorted(KNOWN_KEYS))})")
    if "routingMode" in data and data["routingMode"] not in ROUTING_MODES:
        out.append(f"routingMode: unsupported value {data['routingMode']!r} ({', '.join(ROUTING_MODES)})")
    return out
