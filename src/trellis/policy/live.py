"""Build a ``PolicyState`` from a live API (for ``trellis explain`` / ``trellis probe``).

The agent builds the very same state from its watches; this reads it once.
"""
from __future__ import annotations

from trellis.kube.client import ApiError, KubeClient
from trellis.names import CONFIG_NAME, CONFIG_NAMESPACES
from trellis.policy import audit, model
from trellis.policy.engine import PolicyState


def _list(client: KubeClient, api_version: str, plural: str, ns: str | None = None) -> list[dict]:
    try:
        return client.list(api_version, plural, ns)[0]
    except ApiError as e:
        if e.code == 404:  # CRD not installed
            return []
        raise


def config(client: KubeClient) -> dict | None:
    """ConfigMap trellis-config: trellis-system's, else kube-system's; None when neither can be read."""
    for ns in CONFIG_NAMESPACES:
        try:
            cm = client.get_or_none("v1", "configmaps", CONFIG_NAME, ns)
        except ApiError:
            continue
        if cm is not None:
            return cm
    return None


def load(client: KubeClient) -> tuple[PolicyState, dict[str, str], list[str]]:
    """-> (state, node name -> internal IP, what is not honoured as written: ``policy.audit``)."""
    cm = config(client)
    st = PolicyState(model.mode_in_force(cm)[0])
    namespaces = _list(client, "v1", "namespaces")
    for ns in namespaces:
        st.set_namespace(model.ns_info(ns))
    pods = [p for p in _list(client, "v1", "pods") if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
    for pod in pods:
        st.set_pod(model.pod_info(pod))
    deployments = _list(client, "apps/v1", "deployments")
    for d in deployments:
        st.set_deployment_group(f"{d['metadata']['namespace']}/{d['metadata']['name']}", model.group_hint(d))
    objs = {}
    for kind, api, plural, setter, parse in (
            ("NetworkPolicy", "networking.k8s.io/v1", "networkpolicies", st.set_policy, model.netpol),
            ("EndpointGroup", "trellis.dev/v1alpha1", "endpointgroups", st.set_group, model.group),
            ("Contract", "trellis.dev/v1alpha1", "contracts", st.set_contract, model.contract)):
        objs[kind] = _list(client, api, plural)
        for obj in objs[kind]:
            try:
                setter(f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", parse(obj))
            except model.PolicyError:
                pass  # left out, as the agents do; audit names it
    problems = [str(p) for p in audit.problems(
        namespaces=namespaces, deployments=deployments, pods=pods, groups=objs["EndpointGroup"],
        contracts=objs["Contract"], netpols=objs["NetworkPolicy"], config=cm)]
    nodes = {}
    for n in _list(client, "v1", "nodes"):
        ip = next((a["address"] for a in n.get("status", {}).get("addresses") or [] if a.get("type") == "InternalIP"), "")
        nodes[n["metadata"]["name"]] = ip
    return st, nodes, problems


def world(client: KubeClient):
    """-> (paths.World, problems)."""
    # the path model's view of the cluster: policy, nodes, Services, who announces what
    from trellis.policy import paths
    from trellis.proxy import announce
    from trellis.proxy.model import service_ports
    import ipaddress
    st, node_ips, problems = load(client)
    nodes_raw = _list(client, "v1", "nodes")
    nodes = {}
    for n in nodes_raw:
        block = (n.get("spec") or {}).get("podCIDR")
        vtep = str(ipaddress.ip_network(block)[0]) if block else ""
        nodes[n["metadata"]["name"]] = paths.NodeInfo(n["metadata"]["name"], node_ips.get(n["metadata"]["name"], ""),
                                                      vtep)
    services = _list(client, "v1", "services")
    by_svc: dict[str, list[dict]] = {}
    for sl in _list(client, "discovery.k8s.io/v1", "endpointslices"):
        name = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if name:
            by_svc.setdefault(f"{sl['metadata']['namespace']}/{name}", []).append(sl)
    ports = [sp for svc in services
             for sp in service_ports(svc, by_svc.get(f"{svc['metadata']['namespace']}/{svc['metadata']['name']}", []))]

    def endpoint_nodes(ns: str, name: str) -> set[str]:
        return {e.node for sp in ports if sp.namespace == ns and sp.name == name for e in sp.usable()}
    data = (config(client) or {}).get("data") or {}
    mode, cidr = data.get("routingMode", "vxlan"), data.get("clusterCIDR", "10.244.0.0/16")
    return paths.World(st, nodes, ports, announce.announcers(services, nodes_raw, endpoint_nodes), mode, cidr), problems


INGRESS_SERVICE = ("kube-system", "trellis-ingress")


def ingress_plan(client: KubeClient):
    """What the ingress controller serves, compiled from the live objects as it compiles them."""
    from trellis.ingress.compile import compile_plan
    services = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in _list(client, "v1", "services")}
    slices: dict[str, list[dict]] = {}
    for sl in _list(client, "discovery.k8s.io/v1", "endpointslices"):
        svc = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc:
            slices.setdefault(f"{sl['metadata']['namespace']}/{svc}", []).append(sl)
    return compile_plan(_list(client, "networking.k8s.io/v1", "ingresses"),
                        _list(client, "networking.k8s.io/v1", "ingressclasses"), services, slices, {})
