"""The lab components' identities as tables: a kubelet (Node authorizer) may touch its own node,
its lease, its pods and what they use, and nothing of another node's; the controller-manager's
ClusterRole allows its controllers' calls and no Secrets or RBAC (pure; the lab runs them)."""
import pytest

from trellis.lab.apiserver import nodeauthz, rbac
from trellis.lab.apiserver.rbac import Attributes, User

NODE1 = User("system:node:node-1", ("system:nodes", "system:authenticated"))
IMPOSTOR = User("system:node:node-1", ("system:authenticated",))  # the name without the group
CM = User(rbac.CONTROLLER_MANAGER, ("system:authenticated",))


def pod(name, node, **spec):
    return {"metadata": {"name": name, "namespace": "app"}, "spec": {"nodeName": node, **spec}}


PODS = [
    pod("mine", "node-1", serviceAccountName="builder",
        volumes=[{"name": "v", "secret": {"secretName": "mine-secret"}},
                 {"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}],
        containers=[{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "mine-env",
                                                                                            "key": "k"}}}],
                     "envFrom": [{"secretRef": {"name": "mine-envfrom"}}]}]),
    pod("theirs", "node-2", volumes=[{"name": "v", "secret": {"secretName": "their-secret"}}]),
]
POLICY = rbac.bootstrap_policy()


def lookup(bucket, ns):
    if bucket == "/pods":
        return [p for p in PODS if ns is None or p["metadata"]["namespace"] == ns]
    kinds = {rbac.CLUSTER_ROLES: "ClusterRole", rbac.CLUSTER_BINDINGS: "ClusterRoleBinding"}
    return [o for o in POLICY if o["kind"] == kinds.get(bucket)]


def allowed(user, a):
    return nodeauthz.authorize(user, a, lookup) or rbac.authorize(user, a, lookup)


@pytest.mark.parametrize("user,attrs,ok", [
    (NODE1, Attributes("patch", "", "nodes", "status", "node-1"), True),
    (NODE1, Attributes("patch", "", "nodes", "status", "node-2"), False),
    (NODE1, Attributes("patch", "", "nodes", "", "node-2"), False),
    (NODE1, Attributes("delete", "", "nodes", "", "node-1"), False),
    (NODE1, Attributes("create", "", "nodes"), True),
    (NODE1, Attributes("list", "", "pods"), True),
    (NODE1, Attributes("watch", "", "services"), True),
    (NODE1, Attributes("patch", "coordination.k8s.io", "leases", "", "node-1", "kube-node-lease"), True),
    (NODE1, Attributes("update", "coordination.k8s.io", "leases", "", "node-2", "kube-node-lease"), False),
    (NODE1, Attributes("update", "coordination.k8s.io", "leases", "", "node-1", "kube-system"), False),
    (NODE1, Attributes("patch", "", "pods", "status", "mine", "app"), True),
    (NODE1, Attributes("patch", "", "pods", "status", "theirs", "app"), False),
    (NODE1, Attributes("delete", "", "pods", "", "mine", "app"), True),
    (NODE1, Attributes("delete", "", "pods", "", "theirs", "app"), False),
    (NODE1, Attributes("create", "", "pods", "", "", "app"), False),
    (NODE1, Attributes("patch", "", "pods", "", "mine", "app"), False),  # its spec: not the kubelet's
    (NODE1, Attributes("create", "", "pods", "exec", "mine", "app"), False),
    (NODE1, Attributes("get", "", "secrets", "", "mine-secret", "app"), True),
    (NODE1, Attributes("get", "", "secrets", "", "mine-envfrom", "app"), True),
    (NODE1, Attributes("get", "", "configmaps", "", "mine-env", "app"), True),
    (NODE1, Attributes("get", "", "configmaps", "", "kube-root-ca.crt", "app"), True),
    (NODE1, Attributes("get", "", "secrets", "", "their-secret", "app"), False),
    (NODE1, Attributes("get", "", "secrets", "", "mine-secret", "other"), False),
    (NODE1, Attributes("list", "", "secrets", "", "", "app"), False),
    (NODE1, Attributes("create", "", "serviceaccounts", "token", "builder", "app"), True),
    (NODE1, Attributes("create", "", "serviceaccounts", "token", "default", "app"), False),  # no pod of it here
    (NODE1, Attributes("create", "", "events", "", "", "app"), True),
    (NODE1, Attributes("create", "rbac.authorization.k8s.io", "clusterrolebindings"), False),
    (IMPOSTOR, Attributes("patch", "", "nodes", "status", "node-1"), False),
    (IMPOSTOR, Attributes("get", "", "secrets", "", "mine-secret", "app"), False),
    (CM, Attributes("create", "", "pods", "", "", "app"), True),
    (CM, Attributes("create", "", "pods", "binding", "mine", "app"), True),
    (CM, Attributes("patch", "apps", "daemonsets", "status", "ds", "app"), True),
    (CM, Attributes("delete", "batch", "jobs", "", "j", "app"), True),
    (CM, Attributes("update", "discovery.k8s.io", "endpointslices", "", "s", "app"), True),
    (CM, Attributes("patch", "", "nodes", "", "node-1"), True),
    (CM, Attributes("get", "", "secrets", "", "mine-secret", "app"), False),
    (CM, Attributes("list", "", "secrets"), False),
    (CM, Attributes("create", "rbac.authorization.k8s.io", "rolebindings", "", "", "app"), False),
    (CM, Attributes("delete", "", "nodes", "", "node-1"), False),
    (CM, Attributes("create", "", "pods", "exec", "mine", "app"), False),
    (CM, Attributes("update", "networking.k8s.io", "networkpolicies", "", "np", "app"), False),
])
def test_who_may_do_what(user, attrs, ok):
    assert allowed(user, attrs) is ok, (user.name, attrs)


def test_references_cover_every_way_a_pod_names_a_secret_or_configmap():
    assert nodeauthz.references(PODS[0]) == {
        ("serviceaccounts", "builder"), ("secrets", "mine-secret"), ("configmaps", "kube-root-ca.crt"),
        ("configmaps", "mine-env"), ("secrets", "mine-envfrom")}
    assert ("serviceaccounts", "default") in nodeauthz.references(PODS[1])
