"""Resource discovery and client-side apply, as kubectl does them."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from trellis.kube.client import ApiError, KubeClient, base_path

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class ApiResource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...]

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def display(self) -> str:
        """``deployment.apps``, ``service``: how kubectl names a kind in messages."""
        return self.kind.lower() + (f".{self.group}" if self.group else "")


class Discovery:
    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self._resources: list[ApiResource] | None = None

    def resources(self) -> list[ApiResource]:
        if self._resources is None:
            gvs = ["v1"]
            for g in self.client.request("GET", "/apis").get("groups", []):
                pref = g.get("preferredVersion", {}).get("groupVersion")
                gvs += [v["groupVersion"] for v in g.get("versions", []) if v["groupVersion"] == pref]
                gvs += [v["groupVersion"] for v in g.get("versions", []) if v["groupVersion"] != pref]
            out = []
            for gv in gvs:
                try:
                    doc = self.client.request("GET", base_path(gv))
                except ApiError:
                    continue
                for r in doc.get("resources", []):
                    if "/" in r["name"]:
                        continue
                    out.append(ApiResource(gv, r["kind"], r["name"], r["namespaced"], tuple(r.get("shortNames") or ())))
            self._resources = out
        return self._resources

    def by_kind(self, api_version: str, kind: str) -> ApiResource:
        for r in self.resources():
            if r.api_version == api_version and r.kind == kind:
                return r
        raise ApiError(404, "NotFound", f'no matches for kind "{kind}" in version "{api_version}"')

    def resolve(self, name: str) -> ApiResource:
        """``pods``, ``pod``, ``po``, ``Pod``, ``deployments.apps``: like kubectl's resource names."""
        want, _, group = name.lower().partition(".")
        for r in self.resources():  # preferred versions come first
            if group and r.group != group and not r.group.startswith(group):
                continue
            if want in (r.plural, r.kind.lower()) or want in r.short_names:
                return r
        raise ApiError(404, "NotFound", f'the server doesn\'t have a resource type "{name}"')


def three_way_merge_patch(original: Any, modified: Any, current: Any) -> Any:
    """JSON merge patch turning ``current`` into what the user now declares.

    Fields present in ``original`` (last applied) but gone from ``modified`` are
    deleted; fields of ``modified`` that differ from ``current`` are set. Fields
    only the server or other writers set are left alone.
    """
    if not isinstance(modified, dict):
        return modified
    patch: dict = {}
    original = original if isinstance(original, dict) else {}
    current = current if isinstance(current, dict) else {}
    for k in original:
        if k not in modified:
            patch[k] = None
    for k, v in modified.items():
        cur = current.get(k)
        if isinstance(v, dict) and isinstance(cur, dict):
            sub = three_way_merge_patch(original.get(k), v, cur)
            if sub:
                patch[k] = sub
        elif v != cur:
            patch[k] = copy.deepcopy(v)
    return patch


def apply(client: KubeClient, disc: Discovery, obj: dict, default_ns: str) -> tuple[ApiResource, str, str]:
    """Create or update ``obj``; returns (resource, name, 'created'|'configured'|'unchanged')."""
    for field in ("apiVersion", "kind"):
        if not obj.get(field):
            raise ValueError(f"object is missing {field!r}: {json.dumps(obj)[:120]}")
    res = disc.by_kind(obj["apiVersion"], obj["kind"])
    md = obj.setdefault("metadata", {})
    name = md.get("name")
    if not name:
        raise ValueError(f"{obj['kind']}: metadata.name is required for apply")
    ns = (md.get("namespace") or default_ns) if res.namespaced else None
    if ns:
        md["namespace"] = ns
    declared = copy.deepcopy(obj)
    declared["metadata"].setdefault("annotations", {}).pop(LAST_APPLIED, None)
    applied_text = json.dumps(declared, sort_keys=True, separators=(",", ":")) + "\n"
    obj = copy.deepcopy(declared)
    obj["metadata"]["annotations"][LAST_APPLIED] = applied_text
    live = client.get_or_none(res.api_version, res.plural, name, ns)
    if live is None:
        client.create(res.api_version, res.plural, obj, ns)
        return res, name, "created"
    try:
        original = json.loads(live["metadata"].get("annotations", {}).get(LAST_APPLIED) or "{}")
    except ValueError:
        original = {}
    patch = three_way_merge_patch(original, obj, live)
    if not patch:
        return res, name, "unchanged"
    new = client.patch(res.api_version, res.plural, name, patch, ns, kind="merge")
    changed = new["metadata"].get("resourceVersion") != live["metadata"].get("resourceVersion")
    return res, name, "configured" if changed else "unchanged"
