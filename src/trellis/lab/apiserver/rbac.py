"""RBAC authorization as kube-apiserver does it (rbac.authorization.k8s.io/v1). Pure: the
Roles, ClusterRoles and bindings come in as objects, no store is touched here.

A request is described by ``Attributes`` (kube's RequestInfo: verb, API group, resource,
subresource, name, namespace, or a non-resource path). It is allowed when some binding
that names the user, one of its groups or its ServiceAccount refers to a role with a
matching rule: a RoleBinding's role applies in its namespace only, a ClusterRoleBinding's
everywhere. Members of ``system:masters`` are allowed everything, as kube-apiserver's
privileged-group authorizer allows them. ClusterRoles with an ``aggregationRule`` have the
rules of every ClusterRole its selectors match. Denial reasons use Kubernetes' words.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from trellis.kube import selectors

MASTERS = "system:masters"
AUTHENTICATED = "system:authenticated"
BOOTSTRAP_LABEL = {"kubernetes.io/bootstrapping": "rbac-defaults"}
READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]


@dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Attributes:
    verb: str
    group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    namespace: str = ""
    path: str = ""                 # a non-resource request: /healthz, /version, /apis ...

    @property
    def resource_request(self) -> bool:
        return bool(self.resource)


# Objects of a kind: (bucket, namespace or None for all) -> list; buckets as the store names them.
Lookup = Callable[[str, "str | None"], list]
ROLES, CLUSTER_ROLES = "rbac.authorization.k8s.io/roles", "rbac.authorization.k8s.io/clusterroles"
BINDINGS, CLUSTER_BINDINGS = "rbac.authorization.k8s.io/rolebindings", "rbac.authorization.k8s.io/clusterrolebindings"


def _has(values: Iterable[str] | None, want: str) -> bool:
    values = values or []
    return "*" in values or want in values


def rule_matches(rule: dict, a: Attributes) -> bool:
    if not _has(rule.get("verbs"), a.verb):
        return False
    if not a.resource_request:
        for url in rule.get("nonResourceURLs") or []:
            if url == "*" or url == a.path or (url.endswith("*") and a.path.startswith(url[:-1])):
                return True
        return False
    if not _has(rule.get("apiGroups"), a.group):
        return False
    full = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    resources = rule.get("resources") or []
    if not ("*" in resources or full in resources
            or (a.subresource and f"*/{a.subresource}" in resources)
            or (not a.subresource and f"{a.resource}/*" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or (bool(a.name) and a.name in names)


def subject_matches(subject: dict, user: User, binding_ns: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        return user.name == f"system:serviceaccount:{subject.get('namespace') or binding_ns}:{name}"
    return False


def _selects(sel: dict, labels: dict) -> bool:
    try:
        return selectors.labels_match(sel, labels)
    except (selectors.SelectorError, TypeError, AttributeError):
        return False  # a malformed aggregation selector aggregates nothing


def cluster_role_rules(role: dict, lookup: Lookup) -> list[dict]:
    agg = role.get("aggregationRule") or {}
    if not agg.get("clusterRoleSelectors"):
        return role.get("rules") or []
    out = list(role.get("rules") or [])
    for other in lookup(CLUSTER_ROLES, None):
        if other["metadata"]["name"] == role["metadata"]["name"] or other.get("aggregationRule"):
            continue
        labels = other["metadata"].get("labels") or {}
        if any(_selects(s, labels) for s in agg["clusterRoleSelectors"]):
            out += other.get("rules") or []
    return out


def _role_rules(ref: dict, binding_ns: str, lookup: Lookup) -> list[dict]:
    kind, name = ref.get("kind"), ref.get("name")
    if kind == "ClusterRole":
        role = next((r for r in lookup(CLUSTER_ROLES, None) if r["metadata"]["name"] == name), None)
        return cluster_role_rules(role, lookup) if role else []
    if kind == "Role":
        role = next((r for r in lookup(ROLES, binding_ns) if r["metadata"]["name"] == name), None)
        return (role or {}).get("rules") or []
    return []


def rules_for(user: User, namespace: str, lookup: Lookup) -> list[dict]:
    """Every rule that applies to ``user`` in ``namespace`` ("" = cluster scope only)."""
    out: list[dict] = []
    for b in lookup(CLUSTER_BINDINGS, None):
        if any(subject_matches(s, user, "") for s in b.get("subjects") or []):
            out += _role_rules(b.get("roleRef") or {}, "", lookup)
    if namespace:
        for b in lookup(BINDINGS, namespace):
            if any(subject_matches(s, user, namespace) for s in b.get("subjects") or []):
                out += _role_rules(b.get("roleRef") or {}, namespace, lookup)
    return out


def authorize(user: User, a: Attributes, lookup: Lookup) -> bool:
    if MASTERS in user.groups:
        return True
    return any(rule_matches(r, a) for r in rules_for(user, a.namespace, lookup))


def forbidden_message(user: User, a: Attributes) -> str:
    """kube-apiserver's words for a denied request."""
    if not a.resource_request:
        return f'forbidden: User "{user.name}" cannot {a.verb} path "{a.path}"'
    what = a.resource + (f".{a.group}" if a.group else "") + (f' "{a.name}"' if a.name else "")
    full = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    return (f'{what} is forbidden: User "{user.name}" cannot {a.verb} resource "{full}" in API group '
            f'"{a.group}" {scope}')


# ---- the default roles (kube-apiserver's bootstrap policy, the ones that matter here) -------------

_APP_GROUPS = ["", "apps", "batch", "autoscaling", "networking.k8s.io", "policy", "discovery.k8s.io",
               "coordination.k8s.io", "trellis.dev"]
_VIEWABLE = ["pods", "pods/log", "pods/status", "services", "services/status", "endpoints", "configmaps",
             "persistentvolumeclaims", "replicationcontrollers", "serviceaccounts", "events", "limitranges",
             "resourcequotas", "deployments", "deployments/scale", "deployments/status", "replicasets",
             "replicasets/scale", "replicasets/status", "statefulsets", "statefulsets/scale", "daemonsets",
             "jobs", "jobs/status", "cronjobs", "cronjobs/status", "ingresses", "ingresses/status",
             "networkpolicies", "poddisruptionbudgets", "endpointslices", "endpointgroups", "contracts",
             "namespaces", "namespaces/status", "horizontalpodautoscalers", "controllerrevisions"]
_EDITABLE = [r for r in _VIEWABLE if not r.endswith("/status") and r not in ("namespaces",)] + [
    "secrets", "pods/exec", "pods/attach", "pods/portforward", "pods/eviction", "services/proxy", "leases"]
DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/",
                  "/healthz", "/livez", "/readyz"]


def _cluster_role(name: str, rules: list[dict], labels: dict | None = None) -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {**BOOTSTRAP_LABEL, **(labels or {})},
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "rules": rules}


def _binding(name: str, role: str, group: str, kind: str = "Group") -> dict:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": dict(BOOTSTRAP_LABEL),
                         "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": group}]}


CONTROLLER_MANAGER = "system:kube-controller-manager"


def _controller_manager_rules() -> list[dict]:
    """The lab's controller-manager: one process runs the scheduler and the controllers (upstream
    splits them into kube-scheduler and per-controller ServiceAccounts; the union is this). No
    Secrets, no RBAC, no policy objects: it needs none."""
    full = READ + ["create", "update", "patch", "delete"]
    return [
        {"apiGroups": [""], "resources": ["pods"], "verbs": full},
        {"apiGroups": [""], "resources": ["pods/status", "nodes/status"], "verbs": ["patch", "update"]},
        {"apiGroups": [""], "resources": ["pods/binding", "bindings"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": READ + ["patch", "update"]},
        {"apiGroups": [""], "resources": ["services", "namespaces"], "verbs": READ},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": READ + ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": READ + ["create", "update", "patch"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        {"apiGroups": ["apps"], "resources": ["deployments", "replicasets", "daemonsets", "controllerrevisions"],
         "verbs": full},
        {"apiGroups": ["apps"], "resources": ["deployments/status", "replicasets/status", "daemonsets/status"],
         "verbs": ["patch", "update"]},
        {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": full},
        {"apiGroups": ["batch"], "resources": ["jobs/status", "cronjobs/status"], "verbs": ["patch", "update"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": full},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": full},
    ]


def bootstrap_policy() -> list[dict]:
    """The default ClusterRoles and ClusterRoleBindings, stored at API server start."""
    view = [{"apiGroups": _APP_GROUPS, "resources": _VIEWABLE, "verbs": READ}]
    edit = view + [{"apiGroups": _APP_GROUPS, "resources": _EDITABLE, "verbs": READ + WRITE}]
    admin = edit + [{"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles", "rolebindings"],
                     "verbs": READ + WRITE},
                    {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"],
                     "verbs": ["create"]}]
    return [
        _cluster_role("cluster-admin", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                                        {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        _cluster_role("admin", admin),
        _cluster_role("edit", edit),
        _cluster_role("view", view),
        _cluster_role("system:discovery", [{"nonResourceURLs": DISCOVERY_URLS, "verbs": ["get"]}]),
        _cluster_role("system:public-info-viewer", [{"nonResourceURLs": ["/healthz", "/livez", "/readyz",
                                                                          "/version", "/version/"],
                                                     "verbs": ["get"]}]),
        _cluster_role("system:basic-user", [
            {"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews",
                                                                  "selfsubjectrulesreviews"], "verbs": ["create"]},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
        _cluster_role(CONTROLLER_MANAGER, _controller_manager_rules()),
        _binding("cluster-admin", "cluster-admin", MASTERS),
        _binding(CONTROLLER_MANAGER, CONTROLLER_MANAGER, CONTROLLER_MANAGER, "User"),
        _binding("system:discovery", "system:discovery", AUTHENTICATED),
        _binding("system:basic-user", "system:basic-user", AUTHENTICATED),
        _binding("system:public-info-viewer", "system:public-info-viewer", AUTHENTICATED),
    ]
