"""RBAC as tables: subject x verb x resource -> allowed, over the bootstrap policy and a few
user objects (pure; the HTTPS side is in test_secure_api.py)."""
import pytest

from trellis.lab.apiserver import rbac
from trellis.lab.apiserver.rbac import Attributes, User

AUTH = ("system:authenticated",)


def role(ns, name, rules):
    return {"metadata": {"namespace": ns, "name": name}, "rules": rules}


def binding(ns, name, ref_kind, ref, subjects):
    return {"metadata": {"namespace": ns, "name": name}, "roleRef": {"kind": ref_kind, "name": ref},
            "subjects": subjects}


POLICY = rbac.bootstrap_policy()
OBJECTS = {
    rbac.CLUSTER_ROLES: [o for o in POLICY if o["kind"] == "ClusterRole"] + [
        {"metadata": {"name": "pod-reader-agg", "labels": {"demo/aggregate": "true"}},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]},
        {"metadata": {"name": "aggregated"}, "aggregationRule": {"clusterRoleSelectors": [
            {"matchLabels": {"demo/aggregate": "true"}}]}, "rules": []}],
    rbac.CLUSTER_BINDINGS: [o for o in POLICY if o["kind"] == "ClusterRoleBinding"] + [
        binding("", "carol-agg", "ClusterRole", "aggregated", [{"kind": "User", "name": "carol"}])],
    rbac.ROLES: [role("dev", "cm-one", [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"],
                                         "resourceNames": ["settings"]}]),
                 role("dev", "logs", [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}])],
    rbac.BINDINGS: [binding("dev", "alice-edit", "ClusterRole", "edit", [{"kind": "User", "name": "alice"}]),
                    binding("dev", "bob-cm", "Role", "cm-one", [{"kind": "Group", "name": "cm-editors"}]),
                    binding("dev", "sa-logs", "Role", "logs", [{"kind": "ServiceAccount", "name": "reader"}]),
                    binding("prod", "dave-view", "ClusterRole", "view", [{"kind": "User", "name": "dave"}])],
}


def lookup(bucket, ns):
    return [o for o in OBJECTS.get(bucket, []) if ns is None or o["metadata"].get("namespace") == ns]


ALICE, BOB, CAROL = User("alice", AUTH), User("bob", ("cm-editors",) + AUTH), User("carol", AUTH)
DAVE, ROOT = User("dave", AUTH), User("admin", ("system:masters",) + AUTH)
READER = User("system:serviceaccount:dev:reader", ("system:serviceaccounts",) + AUTH)
NOBODY = User("mallory", AUTH)


@pytest.mark.parametrize("user,attrs,allowed", [
    (ROOT, Attributes("delete", "", "nodes", name="node-1"), True),
    (ALICE, Attributes("create", "apps", "deployments", namespace="dev"), True),
    (ALICE, Attributes("create", "apps", "deployments", namespace="prod"), False),    # RoleBinding: dev only
    (ALICE, Attributes("create", "", "pods", "exec", "p", "dev"), True),
    (ALICE, Attributes("create", "rbac.authorization.k8s.io", "rolebindings", namespace="dev"), False),  # edit
    (ALICE, Attributes("list", "", "nodes"), False),                                  # cluster scope
    (ALICE, Attributes("get", path="/version"), True),                                # system:discovery
    (ALICE, Attributes("get", path="/apis/apps/v1"), True),
    (ALICE, Attributes("get", path="/metrics"), False),
    (ALICE, Attributes("create", "authorization.k8s.io", "selfsubjectaccessreviews"), True),  # basic-user
    (BOB, Attributes("get", "", "configmaps", name="settings", namespace="dev"), True),
    (BOB, Attributes("get", "", "configmaps", name="other", namespace="dev"), False),  # resourceNames
    (BOB, Attributes("list", "", "configmaps", namespace="dev"), False),               # no name: no match
    (BOB, Attributes("delete", "", "configmaps", name="settings", namespace="dev"), False),
    (READER, Attributes("get", "", "pods", "log", "p", "dev"), True),
    (READER, Attributes("get", "", "pods", name="p", namespace="dev"), False),         # the subresource only
    (CAROL, Attributes("get", "", "pods", name="p", namespace="x"), True),             # aggregated rule
    (CAROL, Attributes("list", "", "pods", namespace="x"), False),
    (DAVE, Attributes("list", "", "pods", namespace="prod"), True),
    (DAVE, Attributes("get", "", "secrets", name="s", namespace="prod"), False),       # view: no secrets
    (DAVE, Attributes("update", "", "pods", name="p", namespace="prod"), False),
    (NOBODY, Attributes("list", "", "pods", namespace="dev"), False),
])
def test_who_may_do_what(user, attrs, allowed):
    assert rbac.authorize(user, attrs, lookup) is allowed


def test_forbidden_messages_are_kubernetes_words():
    m = rbac.forbidden_message
    assert m(ALICE, Attributes("list", "", "nodes")) == \
        'nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope'
    assert m(ALICE, Attributes("get", "apps", "deployments", name="web", namespace="prod")) == \
        ('deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments" in API group '
         '"apps" in the namespace "prod"')
    assert m(NOBODY, Attributes("create", "", "pods", "exec", "p", "dev")) == \
        'pods "p" is forbidden: User "mallory" cannot create resource "pods/exec" in API group "" in the namespace "dev"'
    assert m(NOBODY, Attributes("get", path="/metrics")) == 'forbidden: User "mallory" cannot get path "/metrics"'
