"""The kinds the lab API serves, and the discovery documents kubectl reads.

A ``Resource`` is one (group, version, plural). Several may share one storage
bucket: ``extensions/v1beta1`` Deployments are stored and served as ``apps/v1``.
CustomResourceDefinitions add resources at run time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
STREAM_VERBS = {"log": ["get"], "exec": ["create", "get"], "portforward": ["create", "get"]}


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    storage_group: str | None = None  # stored under another group's bucket
    custom: bool = False  # a CRD-defined kind (no strategic merge patch)
    categories: tuple[str, ...] = field(default=())

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_api_version(self) -> str:
        if self.storage_group is None:
            return self.api_version
        return f"{self.storage_group}/v1" if self.storage_group else "v1"

    @property
    def key(self) -> str:
        """Storage bucket: one per group/plural, whatever the version."""
        return f"{self.storage_group if self.storage_group is not None else self.group}/{self.plural}"

    @property
    def singular(self) -> str:
        return self.kind.lower()


def _core(kind, plural, namespaced, short=(), sub=(), cats=()):
    return Resource("", "v1", kind, plural, namespaced, tuple(short), tuple(sub), categories=tuple(cats))


BUILTIN: list[Resource] = [
    _core("Namespace", "namespaces", False, ["ns"], ["status"]),
    _core("Node", "nodes", False, ["no"], ["status"]),
    _core("Pod", "pods", True, ["po"], ["status", "log", "exec", "portforward"], ["all"]),
    _core("Service", "services", True, ["svc"], ["status"], ["all"]),
    _core("Endpoints", "endpoints", True, ["ep"]),
    _core("Binding", "bindings", True),
    _core("Secret", "secrets", True),
    _core("ConfigMap", "configmaps", True, ["cm"]),
    _core("Event", "events", True, ["ev"]),
    _core("ServiceAccount", "serviceaccounts", True, ["sa"], ["token"]),
    _core("ResourceQuota", "resourcequotas", True, ["quota"], ["status"]),
    _core("LimitRange", "limitranges", True, ["limits"]),
    Resource("apps", "v1", "Deployment", "deployments", True, ("deploy",), ("status", "scale"),
             categories=("all",)),
    Resource("apps", "v1", "ReplicaSet", "replicasets", True, ("rs",), ("status", "scale"),
             categories=("all",)),
    Resource("apps", "v1", "DaemonSet", "daemonsets", True, ("ds",), ("status",), categories=("all",)),
    Resource("apps", "v1", "ControllerRevision", "controllerrevisions", True),
    # Legacy manifests only: no short names, so "deploy" means apps/v1 without a warning.
    Resource("extensions", "v1beta1", "Deployment", "deployments", True, (),
             ("status", "scale"), storage_group="apps"),
    # the same Events as core/v1, under events.k8s.io's field names (eventsapi converts)
    Resource("events.k8s.io", "v1", "Event", "events", True, ("ev",), storage_group=""),
    Resource("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", True),
    Resource("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", True, ("netpol",)),
    Resource("networking.k8s.io", "v1", "Ingress", "ingresses", True, ("ing",), ("status",)),
    Resource("networking.k8s.io", "v1", "IngressClass", "ingressclasses", False),
    Resource("coordination.k8s.io", "v1", "Lease", "leases", True),
    Resource("apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions",
             False, ("crd", "crds"), ("status",)),
    # the kinds kubectl's generators create ('kubectl create job|cronjob|role|pdb|priorityclass ...')
    Resource("batch", "v1", "Job", "jobs", True, (), ("status",), categories=("all",)),
    Resource("batch", "v1", "CronJob", "cronjobs", True, ("cj",), ("status",), categories=("all",)),
    Resource("rbac.authorization.k8s.io", "v1", "Role", "roles", True),
    Resource("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", True),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False),
    Resource("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False),
    Resource("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", True, ("pdb",), ("status",)),
    Resource("scheduling.k8s.io", "v1", "PriorityClass", "priorityclasses", False, ("pc",)),
    # asked, never stored (access.py): kubectl auth can-i / whoami, TokenReview
    Resource("authorization.k8s.io", "v1", "SelfSubjectAccessReview", "selfsubjectaccessreviews", False),
    Resource("authorization.k8s.io", "v1", "SelfSubjectRulesReview", "selfsubjectrulesreviews", False),
    Resource("authentication.k8s.io", "v1", "SelfSubjectReview", "selfsubjectreviews", False),
    Resource("authentication.k8s.io", "v1", "TokenReview", "tokenreviews", False),
]

# Preferred version per group, as Kubernetes lists it.
PREFERRED = {"": "v1", "apps": "v1", "extensions": "v1beta1", "discovery.k8s.io": "v1",
             "events.k8s.io": "v1", "networking.k8s.io": "v1", "coordination.k8s.io": "v1",
             "apiextensions.k8s.io": "v1", "batch": "v1", "rbac.authorization.k8s.io": "v1", "policy": "v1",
             "scheduling.k8s.io": "v1", "authorization.k8s.io": "v1", "authentication.k8s.io": "v1",
             "metrics.k8s.io": "v1beta1"}


class Registry:
    def __init__(self) -> None:
        self._by_path: dict[tuple[str, str, str], Resource] = {}
        for r in BUILTIN:
            self.add(r)

    def add(self, r: Resource) -> None:
        self._by_path[(r.group, r.version, r.plural)] = r

    def remove_group_plural(self, group: str, plural: str) -> None:
        for k in [k for k in self._by_path if k[0] == group and k[2] == plural]:
            del self._by_path[k]

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_path.get((group, version, plural))

    def all(self) -> list[Resource]:
        return list(self._by_path.values())

    def groups(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for g, v, _ in self._by_path:
            out.setdefault(g, [])
            if v not in out[g]:
                out[g].append(v)
        return out

    def by_kind(self, api_version: str, kind: str) -> Resource | None:
        for r in self._by_path.values():
            if r.api_version == api_version and r.kind == kind:
                return r
        return None

    # -- discovery documents --
    def api_versions(self) -> dict:
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}

    def api_group_list(self) -> dict:
        groups = []
        for g, versions in sorted(self.groups().items()):
            if not g:
                continue
            pref = PREFERRED.get(g, versions[0])
            groups.append({
                "name": g,
                "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in versions],
                "preferredVersion": {"groupVersion": f"{g}/{pref}", "version": pref},
            })
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def resource_list(self, group: str, version: str) -> dict | None:
        rs = [r for (g, v, _), r in sorted(self._by_path.items()) if g == group and v == version]
        if not rs:
            return None
        items = []
        for r in rs:
            items.append({"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                          "kind": r.kind, "verbs": VERBS, "shortNames": list(r.short_names),
                          **({"categories": list(r.categories)} if r.categories else {})})
            for sub in r.subresources:
                verbs = STREAM_VERBS.get(sub, ["get", "patch", "update"])
                kind = {"scale": "Scale", "log": "Pod", "exec": "PodExecOptions",
                        "portforward": "PodPortForwardOptions"}.get(sub, r.kind)
                entry = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                         "kind": kind, "verbs": verbs}
                if sub == "scale":
                    entry.update(group="autoscaling", version="v1")
                items.append(entry)
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": items}


    # -- OpenAPI v3: just enough for kubectl to use server-side field validation --
    def openapi_index(self) -> dict:
        paths = {}
        for g, versions in self.groups().items():
            for v in versions:
                gv = f"api/{v}" if not g else f"apis/{g}/{v}"
                paths[gv] = {"serverRelativeURL": f"/openapi/v3/{gv}"}
        return {"paths": paths}

    def openapi_gv(self, group: str, version: str) -> dict | None:
        rs = [r for (g, v, _), r in self._by_path.items() if g == group and v == version]
        if not rs:
            return None
        prefix = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        paths = {}
        for r in rs:
            scope = "/namespaces/{namespace}" if r.namespaced else ""
            # No requestBody on purpose: kubectl then computes strategic merge
            # patches from its compiled-in types instead of schemas we do not serve.
            paths[f"{prefix}{scope}/{r.plural}/{{name}}"] = {"patch": {
                "x-kubernetes-group-version-kind": {"group": r.group, "version": r.version, "kind": r.kind},
                "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "OK"}}}}
        return {"openapi": "3.0.0", "info": {"title": "trellis lab", "version": "v1.32.0"},
                "paths": paths, "components": {"schemas": {}}}


def resource_from_crd(crd: dict) -> list[Resource]:
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    out = []
    for v in spec.get("versions", []):
        if not v.get("served", True):
            continue
        subs = tuple(k for k in (v.get("subresources") or {}) if k in ("status", "scale"))
        out.append(Resource(spec["group"], v["name"], names["kind"], names["plural"],
                            spec.get("scope", "Namespaced") == "Namespaced",
                            tuple(names.get("shortNames", [])), subs, custom=True,
                            categories=tuple(names.get("categories", []))))
    return out
