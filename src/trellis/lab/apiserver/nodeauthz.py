"""The Node authorizer (with NodeRestriction's name checks), as kube-apiserver runs it before
RBAC: a kubelet (user ``system:node:<node>``, group ``system:nodes``) may do what a node's
kubelet needs and nothing about other nodes or their pods. Pure: pods come in through the same
``lookup`` the RBAC authorizer uses.

Allowed, and only this (everything else falls through to RBAC, which grants nodes nothing):

- read Nodes, Pods, Services, Endpoints and EndpointSlices (a kubelet watches its pods by field
  selector, and Services for the pods' environment);
- create a Node; get, update, patch its own Node and its status;
- its own Lease in kube-node-lease (create, get, update, patch);
- the status of pods bound to it, and deleting them (the final delete after termination);
- ``get`` of a Secret or ConfigMap, and a token for a ServiceAccount, that a pod bound to it
  uses (volumes, env, envFrom, projected sources; the pod's service account);
- Events (create, patch, update).

Simplified against upstream's graph: references are read from the pods' specs at each request
(the lab's scale), and a Node's create is not checked against the name in its body.
"""
from __future__ import annotations

from trellis.lab.apiserver.rbac import READ, Attributes, Lookup, User

NODES_GROUP = "system:nodes"
PREFIX = "system:node:"
LEASE_NS = "kube-node-lease"
READABLE = {("", "nodes"), ("", "pods"), ("", "services"), ("", "endpoints"), ("discovery.k8s.io", "endpointslices")}
EVENT_GROUPS = ("", "events.k8s.io")


def node_of(user: User) -> str | None:
    """The node a kubelet's identity names (None: not a node)."""
    if NODES_GROUP in user.groups and user.name.startswith(PREFIX) and len(user.name) > len(PREFIX):
        return user.name[len(PREFIX):]
    return None


def references(pod: dict) -> set[tuple[str, str]]:
    """(resource, name) of every Secret, ConfigMap and ServiceAccount the pod uses."""
    spec = pod.get("spec") or {}
    out = {("serviceaccounts", spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")}
    for s in spec.get("imagePullSecrets") or []:
        out.add(("secrets", s.get("name", "")))
    for v in spec.get("volumes") or []:
        if v.get("secret"):
            out.add(("secrets", v["secret"].get("secretName", "")))
        if v.get("configMap"):
            out.add(("configmaps", v["configMap"].get("name", "")))
        for src in (v.get("projected") or {}).get("sources") or []:
            if src.get("secret"):
                out.add(("secrets", src["secret"].get("name", "")))
            if src.get("configMap"):
                out.add(("configmaps", src["configMap"].get("name", "")))
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []) + (spec.get("ephemeralContainers") or []):
        for e in c.get("env") or []:
            ref = e.get("valueFrom") or {}
            if ref.get("secretKeyRef"):
                out.add(("secrets", ref["secretKeyRef"].get("name", "")))
            if ref.get("configMapKeyRef"):
                out.add(("configmaps", ref["configMapKeyRef"].get("name", "")))
        for e in c.get("envFrom") or []:
            if e.get("secretRef"):
                out.add(("secrets", e["secretRef"].get("name", "")))
            if e.get("configMapRef"):
                out.add(("configmaps", e["configMapRef"].get("name", "")))
    return out


def _pods_on(node: str, ns: str, lookup: Lookup) -> list[dict]:
    return [p for p in lookup("/pods", ns) if (p.get("spec") or {}).get("nodeName") == node]


def authorize(user: User, a: Attributes, lookup: Lookup) -> bool:
    node = node_of(user)
    if node is None or not a.resource_request:
        return False
    what = (a.group, a.resource)
    if a.verb in READ and not a.subresource and what in READABLE:
        return True
    if a.group in EVENT_GROUPS and a.resource == "events":
        return a.verb in ("create", "patch", "update")
    if what == ("", "nodes"):
        if a.verb == "create" and not a.subresource:
            return True
        return a.name == node and a.subresource in ("", "status") and a.verb in ("get", "update", "patch")
    if what == ("coordination.k8s.io", "leases"):
        return a.namespace == LEASE_NS and (a.verb == "create" or (
            a.name == node and a.verb in ("get", "update", "patch")))
    if what == ("", "pods") and a.name:
        ok = (a.subresource == "status" and a.verb in ("get", "update", "patch")) or (
            not a.subresource and a.verb == "delete")
        return ok and any(p["metadata"]["name"] == a.name for p in _pods_on(node, a.namespace, lookup))
    used = (a.verb == "get" and not a.subresource and a.resource in ("secrets", "configmaps")) or (
        a.resource == "serviceaccounts" and a.subresource == "token" and a.verb == "create")
    if a.group == "" and used and a.name:
        return any((a.resource, a.name) in references(p) for p in _pods_on(node, a.namespace, lookup))
    return False
