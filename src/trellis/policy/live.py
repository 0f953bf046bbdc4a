"""Build a ``PolicyState`` from a live API (for ``trellis explain`` / ``trellis probe``).

The agent builds the very same state from its watches; this reads it once.
"""
from __future__ import annotations

from trellis.kube.client import ApiError, KubeClient
from trellis.policy import model
from trellis.policy.engine import PolicyState


def _list(client: KubeClient, api_version: str, plural: str, ns: str | None = None) -> list[dict]:
    try:
        return client.list(api_version, plural, ns)[0]
    except ApiError as e:
        if e.code == 404:  # CRD not installed
            return []
        raise


def load(client: KubeClient) -> tuple[PolicyState, dict[str, str], list[str]]:
    """-> (state, node name -> internal IP, problems with objects that are not enforced)."""
    problems: list[str] = []
    mode = "cluster"
    try:
        cm = client.get("v1", "configmaps", "trellis-config", "kube-system")
        mode = model.mode_from_config(cm.get("data"))
    except ApiError:
        pass
    except model.PolicyError as e:
        problems.append(f"ConfigMap kube-system/trellis-config: {e}")
    st = PolicyState(mode)
    for ns in _list(client, "v1", "namespaces"):
        st.set_namespace(model.ns_info(ns))
    for pod in _list(client, "v1", "pods"):
        if pod.get("status", {}).get("phase") not in ("Succeeded", "Failed"):
            st.set_pod(model.pod_info(pod))
    for kind, api, plural, setter, parse in (
            ("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", st.set_policy, model.netpol),
            ("EndpointGroup", "trellis.dev/v1alpha1", "endpointgroups", st.set_group, model.group),
            ("Contract", "trellis.dev/v1alpha1", "contracts", st.set_contract, model.contract)):
        for obj in _list(client, api, plural):
            key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
            try:
                setter(key, parse(obj))
            except model.PolicyError as e:
                problems.append(f"{kind} {key}: {e}")
    nodes = {}
    for n in _list(client, "v1", "nodes"):
        ip = next((a["address"] for a in n.get("status", {}).get("addresses") or [] if a.get("type") == "InternalIP"), "")
        nodes[n["metadata"]["name"]] = ip
    return st, nodes, problems
