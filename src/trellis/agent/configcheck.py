"""What is wrong with the cluster's trellis config (ConfigMap trellis-config in trellis-system, or in
kube-system for older installs and labs).

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
    # the rest of what deploy/trellis.yaml writes (trellis manifests): read by the DaemonSet's env
    "blockSize": "the prefix length of each node's pod block, e.g. 24",
    "serviceCIDR": "the Service CIDR, e.g. 10.96.0.0/16",
    "mtu": "the pod MTU (0: from the underlay device)",
    "kubernetesServiceHost": "the API server's address, which trellis reaches directly",
    "kubernetesServicePort": "the API server's port",
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
