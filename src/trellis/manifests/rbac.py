"""The ServiceAccounts of trellis' components and what each may do, derived from the code.

Every rule below is a call the component makes, found by reading every ``Informer(...)``
(list + watch), ``client.get/create/update/patch/delete`` and ``EventRecorder`` in agent/,
controller/, kube/, policy/, proxy/ and dns/; the ``why`` of each rule names it and becomes
the rule's comment in deploy/trellis.yaml. Nothing else is granted: no Secrets, no writes to
pods, and the one ConfigMap and the one Lease by name. tests/unit/test_manifests.py checks
the rules against the informers and calls found in the source, so a new watch without its
rule fails there, not on a cluster.
"""
from __future__ import annotations

from dataclasses import dataclass

from trellis.names import CONFIG_NAME, CONFIG_NAMESPACES

NAMESPACE = CONFIG_NAMESPACES[0]            # trellis-system
LEGACY_CONFIG_NAMESPACE = CONFIG_NAMESPACES[1]  # kube-system
AGENT, CONTROLLER, DNS = "trellis-agent", "trellis-controller", "trellis-dns"
DNS_NAMESPACE = "kube-system"               # with the kube-dns Service it backs
LEASE_NAME = "trellis-controller"
RBAC_API = "rbac.authorization.k8s.io"
WATCH = ("list", "watch")                   # an Informer: list once, then watch
RECORD = ("create", "patch")                # kube/events.py: a new Event, or the count of a repeat


@dataclass(frozen=True)
class Rule:
    why: str
    groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    names: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        out: dict = {"apiGroups": list(self.groups), "resources": list(self.resources)}
        if self.names:
            out["resourceNames"] = list(self.names)
        out["verbs"] = list(self.verbs)
        return out


@dataclass(frozen=True)
class Grant:
    """Rules for one ServiceAccount: a ClusterRole (``namespace`` None) or a Role in ``namespace``."""
    name: str
    account: str
    account_namespace: str
    why: str
    rules: tuple[Rule, ...]
    namespace: str | None = None


def _events(who: str) -> Rule:
    return Rule(f"kube/events.py (EventRecorder): {who}", ("",), ("events",), RECORD)


AGENT_CLUSTER = (
    Rule("agent/main.py Informer(nodes): this node's pod block (spec.podCIDR), the other nodes' addresses "
         "and VTEP MACs for routes; LoadBalancer announcement picks among Ready nodes",
         ("",), ("nodes",), WATCH),
    Rule("agent/main.py Informer(pods): policy peers and IPAM garbage collection; get: agent/policy.py "
         "pod_added reads a pod a CNI ADD names before the watch shows it", ("",), ("pods",), ("get",) + WATCH),
    Rule("agent/main.py Informer(services): the service proxy, LoadBalancer announcement, healthCheckNodePorts",
         ("",), ("services",), WATCH),
    Rule("agent/main.py Informer(endpointslices): Service endpoints for the proxy; agent/policy.py: the "
         "addresses behind Services, whose ingress policy this node judges", ("discovery.k8s.io",),
         ("endpointslices",), WATCH),
    Rule("agent/policy.py Informer(namespaces): namespace selectors and the isolation annotation",
         ("",), ("namespaces",), WATCH),
    Rule("agent/policy.py Informer(networkpolicies)", ("networking.k8s.io",), ("networkpolicies",), WATCH),
    Rule("agent/policy.py Informer(endpointgroups, contracts): endpoint groups and contracts",
         ("trellis.dev",), ("endpointgroups", "contracts"), WATCH),
    Rule("agent/policy.py Informer(deployments): a Deployment's endpoint-group annotation",
         ("apps",), ("deployments",), WATCH),
    _events("CNI failures on pods (agent/cniserver.py), InvalidConfig on trellis-config (agent/policy.py)"),
)
CONTROLLER_CLUSTER = (
    Rule("controller/main.py NodeBlocks: Informer(nodes); patch writes spec.podCIDR(s) of a node without one "
         "and its VTEP MAC annotation", ("",), ("nodes",), WATCH + ("patch",)),
    Rule("controller/lbipam.py Informer(services): Services of type LoadBalancer", ("",), ("services",), WATCH),
    Rule("controller/lbipam.py: status.loadBalancer.ingress and the allocation condition",
         ("",), ("services/status",), ("patch",)),
    Rule("controller/main.py Informer(ippools): the LoadBalancer address pools", ("trellis.dev",), ("ippools",),
         WATCH),
    Rule("controller/policyaudit.py Informer(namespaces, pods): what policy names, to report what it cannot "
         "honour", ("",), ("namespaces", "pods"), WATCH),
    Rule("controller/policyaudit.py Informer(deployments): endpoint-group annotations", ("apps",),
         ("deployments",), WATCH),
    Rule("controller/policyaudit.py Informer(networkpolicies)", ("networking.k8s.io",), ("networkpolicies",),
         WATCH),
    Rule("controller/policyaudit.py Informer(endpointgroups, contracts)", ("trellis.dev",),
         ("endpointgroups", "contracts"), WATCH),
    _events("AllocationFailed / IPAllocated on Services (lbipam), NotEnforced and friends (policyaudit)"),
)


def _config(why: str, verbs: tuple[str, ...]) -> Rule:
    return Rule(why, ("",), ("configmaps",), verbs, (CONFIG_NAME,))


def grants(with_dns: bool = False) -> list[Grant]:
    """Every Role and ClusterRole of the manifest, in order: cluster-wide first."""
    out = [
        Grant(AGENT, AGENT, NAMESPACE, "The node agent: reads what it programs, writes only Events.", AGENT_CLUSTER),
        Grant(CONTROLLER, CONTROLLER, NAMESPACE, "The cluster controller: node blocks, LoadBalancer addresses, "
              "policy audit.", CONTROLLER_CLUSTER),
    ]
    if with_dns:
        out.append(Grant(DNS, DNS, DNS_NAMESPACE, "Cluster DNS: the records come from Services, their "
                         "EndpointSlices and pods.", (
                             Rule("dns/server.py Informer(services, pods)", ("",), ("services", "pods"), WATCH),
                             Rule("dns/server.py Informer(endpointslices)", ("discovery.k8s.io",),
                                  ("endpointslices",), WATCH))))
    out += [
        Grant(AGENT, AGENT, NAMESPACE, "The agent's config, in the namespace trellis installs it in.", (
            _config("agent/policy.py Informer(configmaps, fieldSelector metadata.name=trellis-config): the "
                    "isolation mode, here where names.CONFIG_NAMESPACES looks first", WATCH),), NAMESPACE),
        Grant(CONTROLLER, CONTROLLER, NAMESPACE, "Leader election and the controller's config.", (
            Rule("kube/leader.py: the first candidate creates the Lease (create cannot be limited to a name)",
                 ("coordination.k8s.io",), ("leases",), ("create",)),
            Rule("kube/leader.py: read, renew and take over the Lease trellis-controller",
                 ("coordination.k8s.io",), ("leases",), ("get", "update"), (LEASE_NAME,)),
            _config("controller/policyaudit.py Informer(trellis-config); patch records the isolation mode in "
                    "force (annotation trellis.dev/isolation-mode-in-force)", WATCH + ("patch",))), NAMESPACE),
        # before deploy/trellis.yaml, trellis-config lived in kube-system (labs still keep it there),
        # and the readers fall back to it: read access to that one ConfigMap, nothing else there
        Grant(AGENT, AGENT, NAMESPACE, "The agent's config where it was kept before trellis-system.", (
            _config("agent/policy.py Informer(kube-system/trellis-config): the location it reads today, the "
                    "fallback of names.CONFIG_NAMESPACES", WATCH),),
            LEGACY_CONFIG_NAMESPACE),
        Grant(CONTROLLER, CONTROLLER, NAMESPACE, "The controller's config where it was kept before "
              "trellis-system.", (
                  _config("controller/policyaudit.py: the fallback location, as in trellis-system",
                          WATCH + ("patch",)),), LEGACY_CONFIG_NAMESPACE),
    ]
    return out


def service_account(name: str, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


def role(g: Grant) -> dict:
    md: dict = {"name": g.name}
    if g.namespace:
        md["namespace"] = g.namespace
    return {"apiVersion": f"{RBAC_API}/v1", "kind": "Role" if g.namespace else "ClusterRole", "metadata": md,
            "rules": [r.as_dict() for r in g.rules]}


def binding(g: Grant) -> dict:
    kind = "Role" if g.namespace else "ClusterRole"
    md: dict = {"name": g.name}
    if g.namespace:
        md["namespace"] = g.namespace
    return {"apiVersion": f"{RBAC_API}/v1", "kind": f"{kind}Binding", "metadata": md,
            "roleRef": {"apiGroup": RBAC_API, "kind": kind, "name": g.name},
            "subjects": [{"kind": "ServiceAccount", "name": g.account, "namespace": g.account_namespace}]}
