"""The API verbs over the store, independent of HTTP.

Semantics follow the Kubernetes API server: optimistic concurrency on
resourceVersion, generation bumps on spec changes, status subresources, pod
graceful deletion (the kubelet finishes it), namespace termination that empties
the namespace first, finalizers, and ownerReference garbage collection.
"""
from __future__ import annotations

import asyncio
import copy
import datetime as dt
import random
import time
import uuid
from contextvars import ContextVar
from typing import Any

from trellis.kube import selectors
from trellis.lab.apiserver import admission, batch, daemonsetsapi, errors, eventsapi, fieldmanager, patch as patching, schema  # noqa: F401 - batch, daemonsetsapi register
from trellis.lab.apiserver.resources import Registry, Resource, resource_from_crd
from trellis.lab.apiserver.services import Allocators
from trellis.lab.apiserver.store import Store

NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
CRD_BUCKET = "apiextensions.k8s.io/customresourcedefinitions"
# per request (the HTTP layer sets them): the fieldValidation query parameter, and where the
# warnings for unknown fields go (sent back as Warning headers)
FIELD_VALIDATION: ContextVar[str] = ContextVar("field_validation", default="Warn")
WARNINGS: ContextVar[list | None] = ContextVar("warnings", default=None)
FIELD_VALIDATIONS = ("Ignore", "Warn", "Strict")
NAMESPACE_CONTROLLER_DELAY = 1.0  # seconds between a namespace's delete and the first pass over its content
# dryRun=All: every check runs, the answer is the object as it would be stored, nothing is
# stored, allocated, indexed or started
DRY_RUN: ContextVar[bool] = ContextVar("dry_run", default=False)
# who writes (the fieldManager parameter or the user agent's name): recorded in managedFields;
# None (the API server's own writes) records nothing
FIELD_MANAGER: ContextVar[str | None] = ContextVar("field_manager", default=None)


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n: int = 5) -> str:
    return "".join(random.choice(NAME_CHARS) for _ in range(n))


def _comparable(obj: dict) -> dict:
    o = copy.deepcopy(obj)
    o["metadata"].pop("resourceVersion", None)
    o["metadata"].pop("managedFields", None)
    return o


class Api:
    def __init__(self, store: Store, service_cidr: str = "10.96.0.0/16", max_pods: int = 0) -> None:
        self.store = store
        self.max_pods = max_pods  # a quota of sanity on the pods stored (0: none)
        self.registry = Registry()
        self.alloc = Allocators(service_cidr)
        self.alloc.load(store.list("/services"))
        self.owners: dict[str, set[tuple[str, str, str]]] = {}
        self.uids: set[str] = set()  # every live object's uid: owners that exist
        # when each Event was last written (its TTL runs from there; after a restart, its timestamps)
        self.event_writes: dict[tuple[str, str], float] = {}
        for bucket, objs in list(store.buckets.items()):
            for o in objs.values():
                self._index(bucket, o)
        for crd in store.list(CRD_BUCKET):
            for r in resource_from_crd(crd):
                self.registry.add(r)
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            if store.get("/namespaces", "", ns) is None:
                self.create(self.registry.lookup("", "v1", "namespaces"), "",
                            {"metadata": {"name": ns}})
        for ns in list(store.list("/namespaces")):
            if ns["metadata"].get("deletionTimestamp"):
                self._start_namespace_termination(ns["metadata"]["name"])

    def ensure_objects(self, objs: list[dict]) -> None:
        """Create the objects that do not exist yet (the bootstrap RBAC policy); kept as they are
        when they do (a user's change to a default role survives a restart)."""
        for obj in objs:
            group, _, version = obj["apiVersion"].rpartition("/")
            res = next(r for r in self.registry.all() if r.group == group and r.kind == obj["kind"])
            if self.store.get(res.key, "", obj["metadata"]["name"]) is None:
                self.create(res, "", copy.deepcopy(obj))

    def ensure_kubernetes_service(self, advertise: str) -> None:
        """default/kubernetes: the first service IP, port 443, with a slice pointing at the API
        server (as kube-apiserver keeps its own Service and endpoints)."""
        ip, _, port = advertise.rpartition(":")
        first = str(next(self.alloc.net.hosts()))
        svc_res = self.registry.lookup("", "v1", "services")
        if self.store.get("/services", "default", "kubernetes") is None:
            self.create(svc_res, "default", {"metadata": {"name": "kubernetes", "labels": {
                "component": "apiserver", "provider": "kubernetes"}}, "spec": {
                "type": "ClusterIP", "clusterIP": first, "ports": [
                    {"name": "https", "port": 443, "protocol": "TCP", "targetPort": int(port)}]}})
        sl_res = self.registry.lookup("discovery.k8s.io", "v1", "endpointslices")
        body = {"metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
                "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
                "ports": [{"name": "https", "port": int(port), "protocol": "TCP"}]}
        if self.store.get(sl_res.key, "default", "kubernetes") is None:
            self.create(sl_res, "default", body)

    # -- helpers --
    def _index(self, bucket: str, obj: dict, remove: bool = False) -> None:
        md = obj["metadata"]
        ref = (bucket, md.get("namespace", ""), md["name"])
        (self.uids.discard if remove else self.uids.add)(md.get("uid", ""))
        for o in md.get("ownerReferences") or []:
            s = self.owners.setdefault(o.get("uid", ""), set())
            if remove:
                s.discard(ref)
            else:
                s.add(ref)

    def _put(self, res: Resource, obj: dict, event: str, old: dict | None) -> dict:
        if DRY_RUN.get():
            out = copy.deepcopy(obj)
            if old is not None:
                out["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            else:
                out["metadata"].pop("resourceVersion", None)
            return out
        obj["metadata"]["resourceVersion"] = str(self.store.next_rv())
        if res.key == "/events":
            self.event_writes[(obj["metadata"]["namespace"], obj["metadata"]["name"])] = time.time()
        if old is not None:
            self._index(res.key, old, remove=True)
        self._index(res.key, obj)
        return self.store.put(res.key, obj, event, old)

    def _ns_of(self, res: Resource, ns: str) -> str:
        return ns if res.namespaced else ""

    def get(self, res: Resource, ns: str, name: str) -> dict:
        obj = self.store.get(res.key, self._ns_of(res, ns), name)
        if obj is None:
            raise errors.not_found(res.plural, name, res.group)
        return obj

    def list(self, res: Resource, ns: str | None, label_sel: str | None = None,
             field_sel: str | None = None) -> list[dict]:
        try:
            ls = selectors.parse_label_selector(label_sel)
            fs = selectors.parse_field_selector(field_sel)
        except selectors.SelectorError as e:
            raise errors.bad_request(str(e)) from None
        out = [o for o in self.store.list(res.key, ns if res.namespaced else None)
               if selectors.matches(ls, o["metadata"].get("labels")) and selectors.fields_match(fs, o)]
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    # -- create --
    def bind(self, ns: str, name: str, body: dict) -> dict:
        """POST pods/NAME/binding or bindings: set spec.nodeName once, as the scheduler does."""
        pods = self.registry.lookup("", "v1", "pods")
        pod = self.get(pods, ns, name)
        node = (body.get("target") or {}).get("name")
        if not node:
            raise errors.Invalid("Binding", name, [admission.required("target.name")])
        if pod["spec"].get("nodeName"):
            raise errors.ApiError(409, "Conflict", f'Operation cannot be fulfilled on pods/binding "{name}": '
                                  f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"')
        new = copy.deepcopy(pod)
        new["spec"]["nodeName"] = node
        conds = [c for c in new["status"].get("conditions") or [] if c.get("type") != "PodScheduled"]
        new["status"]["conditions"] = [{"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                        "lastTransitionTime": now()}] + conds
        self._put(pods, new, "MODIFIED", pod)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}

    def decoded(self, res: Resource, body: Any) -> Any:
        """body as kube-apiserver's decoder leaves it: typed (400 on a wrong type), unknown fields dropped."""
        if res.custom or not isinstance(body, dict):
            return body
        group, _, version = res.storage_api_version.rpartition("/")
        model = schema.model_name(group, version, res.kind)
        if model is None:
            return body
        try:
            d = schema.decode(body, model)
        except schema.TypeMismatch as e:
            raise errors.bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a '
                                     f"{res.kind}: {e}") from None
        if d.unknown:
            found = [f'unknown field "{p}"' for p in d.unknown]
            if FIELD_VALIDATION.get() == "Strict":
                raise errors.bad_request(f'{res.kind} in version "{res.version}" cannot be handled as a '
                                         f"{res.kind}: strict decoding error: {', '.join(found)}")
            sink = WARNINGS.get()
            if FIELD_VALIDATION.get() == "Warn" and sink is not None:
                sink.extend(found)
        return d.obj

    def create(self, res: Resource, ns: str, body: Any, managed: list | None = None) -> dict:
        if not isinstance(body, dict):
            raise errors.bad_request("the request body must be a JSON or YAML object")
        if res.key == "/bindings":
            return self.bind(ns, (body.get("metadata") or {}).get("name", ""), body)
        obj = self.decoded(res, copy.deepcopy(body))
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise errors.bad_request("metadata: must be an object")
        obj["apiVersion"], obj["kind"] = res.storage_api_version, res.kind
        if res.namespaced:
            if md.get("namespace") and md["namespace"] != ns:
                raise errors.bad_request("the namespace of the provided object does not match the "
                                         "namespace sent on the request")
            md["namespace"] = ns
            nso = self.store.get("/namespaces", "", ns)
            if nso is None:
                raise errors.not_found("namespaces", ns)
            if nso["metadata"].get("deletionTimestamp"):
                raise errors.ApiError(403, "Forbidden", f'{res.plural} "{md.get("name") or md.get("generateName")}" '
                                      f"is forbidden: unable to create new content in namespace {ns} "
                                      "because it is being terminated")
        else:
            md.pop("namespace", None)
        if not md.get("name") and md.get("generateName"):
            md["name"] = md["generateName"] + random_suffix()
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            md.pop(k, None)
        if md.get("name") and self.store.get(res.key, md.get("namespace", ""), md["name"]):
            raise errors.already_exists(res.plural, md["name"], res.group)
        if res.key == "/pods" and self.max_pods and self.store.count("/pods") >= self.max_pods:
            n = self.store.count("/pods")
            raise errors.ApiError(403, "Forbidden", f'pods "{md.get("name") or md.get("generateName", "")}" is '
                                  f"forbidden: exceeded quota: lab-max-pods, requested: pods=1, used: pods={n}, "
                                  f"limited: pods={self.max_pods}")
        md["uid"] = str(uuid.uuid4())
        md["creationTimestamp"] = now()
        if "spec" in obj or res.custom:
            md["generation"] = 1
        if "status" in res.subresources and res.key not in ("/pods", "/services", "/nodes"):
            obj.pop("status", None)
        self._admit(res, obj, None)
        self._record(res, None, obj, None, None, managed)
        if res.key == CRD_BUCKET and not DRY_RUN.get():
            self._register_crd(obj)
        out = self._put(res, obj, "ADDED", None)
        refs = md.get("ownerReferences") or []
        if refs and not any(r.get("uid") in self.uids for r in refs):
            # every owner is already gone (a controller acting on a stale cache): collect
            # the dependent at once, as Kubernetes' garbage collector does
            self.delete(res, md.get("namespace", ""), md["name"])
        return out

    def _admit(self, res: Resource, obj: dict, old: dict | None) -> None:
        causes = admission.admit(res.key, obj, old, legacy=res.group == "extensions")
        if res.key == "/services" and not causes:
            taken = (set(self.alloc.ips), set(self.alloc.ports))
            causes = self.alloc.admit(obj, old)
            if DRY_RUN.get():  # the answer shows the addresses and ports; none stays taken
                self.alloc.ips, self.alloc.ports = taken
        if res.key == CRD_BUCKET and not causes:
            causes = _validate_crd(obj)
        if causes:
            raise errors.Invalid(res.kind, obj["metadata"].get("name", ""), causes, res.group)

    def _register_crd(self, crd: dict) -> None:
        spec = crd.get("spec", {})
        self.registry.remove_group_plural(spec["group"], spec["names"]["plural"])
        for r in resource_from_crd(crd):
            self.registry.add(r)
        crd["status"] = {"conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": now()},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "lastTransitionTime": now()}], "acceptedNames": spec["names"],
            "storedVersions": [v["name"] for v in spec.get("versions", []) if v.get("storage")]}

    # -- update --
    def update(self, res: Resource, ns: str, name: str, body: Any, sub: str | None = None,
               managed: list | None = None) -> dict:
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise errors.bad_request("the request body must be an object with metadata")
        body = self.decoded(res, body)
        old = self.get(res, ns, name)
        bmd = body.get("metadata", {})
        if bmd.get("name") and bmd["name"] != name:
            raise errors.bad_request(f"the name of the object ({bmd['name']}) does not match the name on "
                                     f"the URL ({name})")
        if bmd.get("resourceVersion") and bmd["resourceVersion"] != old["metadata"]["resourceVersion"]:
            raise errors.conflict(res.plural, name, res.group)
        if sub == "status":
            obj = copy.deepcopy(old)
            obj["status"] = copy.deepcopy(body.get("status", {}))
        else:
            obj = copy.deepcopy(body)
            obj["apiVersion"], obj["kind"] = res.storage_api_version, res.kind
            md = obj.setdefault("metadata", {})
            for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                      "generation"):
                if k in old["metadata"]:
                    md[k] = old["metadata"][k]
                else:
                    md.pop(k, None)
            md["name"] = name
            if res.namespaced:
                md["namespace"] = old["metadata"]["namespace"]
            if "status" in res.subresources:
                if "status" in old:
                    obj["status"] = copy.deepcopy(old["status"])
                else:
                    obj.pop("status", None)
            if obj.get("spec") != old.get("spec") and "generation" in md:
                md["generation"] = md["generation"] + 1
            self._admit(res, obj, old)
            if res.key == CRD_BUCKET and not DRY_RUN.get():
                self._register_crd(obj)
        self._record(res, old, obj, None if sub else bmd.get("managedFields"), sub, managed)
        if _comparable(obj) == _comparable(old) and obj["metadata"].get("managedFields") == \
                old["metadata"].get("managedFields"):
            return old  # a no-op update does not bump the resourceVersion
        md = obj["metadata"]
        if md.get("deletionTimestamp") and not md.get("finalizers") and res.key not in ("/pods", "/namespaces"):
            self._put(res, obj, "MODIFIED", old)
            return self._remove(res, obj)
        return self._put(res, obj, "MODIFIED", old)

    def _model(self, res: Resource) -> str | None:
        group, _, version = res.storage_api_version.rpartition("/")
        return None if res.custom else schema.model_name(group, version, res.kind)

    def _record(self, res: Resource, old: dict | None, obj: dict, given: list | None, sub: str | None,
                managed: list | None) -> None:
        """Set obj's managedFields: ``managed`` (an apply's), or the old ones (or those the writer
        sent, which replace them, as upstream allows) with this writer's Update entry."""
        md = obj["metadata"]
        if managed is None:
            base = given if given else (old or {}).get("metadata", {}).get("managedFields")
            manager, has_status = FIELD_MANAGER.get(), "status" in res.subresources
            if manager is None:
                managed = base
            else:
                try:
                    managed = fieldmanager.managed_of(fieldmanager.record_update(
                        fieldmanager.entries_of(base), fieldmanager.owned_view(old, sub or "", has_status),
                        fieldmanager.owned_view(obj, sub or "", has_status), manager, res.api_version,
                        self._model(res), now(), sub or ""))
                except fieldmanager.FieldPathError:
                    managed = base  # a list the bookkeeping cannot key: the write itself stands
        if managed:
            md["managedFields"] = managed
        else:
            md.pop("managedFields", None)

    def apply(self, res: Resource, ns: str, name: str, body: Any, manager: str, force: bool) -> tuple[dict, bool]:
        """Server-side apply of the configuration ``body`` as ``manager``: (the object, created)."""
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise errors.bad_request("the request body must be an object with metadata")
        if body.get("metadata", {}).get("managedFields") is not None:
            raise errors.bad_request("metadata.managedFields must be nil")
        for key, want in (("apiVersion", res.api_version), ("kind", res.kind)):
            if body.get(key) != want:
                raise errors.bad_request(f"{key} must be {want!r} in an apply request (got {body.get(key)!r})")
        applied = self.decoded(res, copy.deepcopy(body))
        if applied["metadata"].get("name", name) != name:
            raise errors.bad_request(f"the name of the object ({applied['metadata']['name']}) does not match "
                                     f"the name on the URL ({name})")
        applied["metadata"]["name"] = name
        has_status, model = "status" in res.subresources, self._model(res)
        live = self.store.get(res.key, self._ns_of(res, ns), name)
        view = fieldmanager.owned_view(live, "", has_status)
        try:
            merged, entries = fieldmanager.apply(
                fieldmanager.entries_of((live or {}).get("metadata", {}).get("managedFields")), view,
                fieldmanager.owned_view(applied, "", has_status), manager, res.api_version, model, now(), force)
        except fieldmanager.FieldPathError as e:
            raise errors.ApiError(422, "Invalid", f"{res.kind} {name!r} cannot be applied: {e}") from None
        except fieldmanager.Conflicts as e:
            raise errors.ApiError(409, "Conflict", str(e), {"name": name, "group": res.group, "kind": res.plural,
                                  "causes": [{"reason": "FieldManagerConflict", "message": f"conflict with "
                                              f"{c.entry.ident()}", "field": fieldmanager.path_string(c.path)}
                                             for c in e.found]}) from None
        managed = fieldmanager.managed_of(entries)
        if live is None:
            obj = fieldmanager.with_view({"metadata": applied["metadata"]}, merged, has_status)
            return self.create(res, ns, obj, managed), True
        return self.update(res, ns, name, fieldmanager.with_view(live, merged, has_status), managed=managed), False

    def patch(self, res: Resource, ns: str, name: str, body: Any, content_type: str,
              sub: str | None = None) -> dict:
        old = self.get(res, ns, name)
        return self.update(res, ns, name, self.patched(res, old, body, content_type), sub)

    def patched(self, res: Resource, old: dict, body: Any, content_type: str) -> dict:
        """old with the patch applied (not stored)."""
        try:
            if "json-patch" in content_type:
                patched = patching.json_patch(old, body)
            elif "strategic-merge-patch" in content_type:
                if res.custom:
                    raise errors.ApiError(415, "UnsupportedMediaType", "strategic merge patch is not "
                                          "supported for custom resources; use a merge patch")
                patched = patching.strategic_merge_patch(old, body)
            elif "merge-patch" in content_type:
                patched = patching.json_merge_patch(old, body)
            else:
                raise errors.ApiError(415, "UnsupportedMediaType", f"the body of the request was in an "
                                      f"unknown format - accepted media types include: application/json-patch"
                                      f"+json, application/merge-patch+json, application/strategic-merge-"
                                      f"patch+json, application/apply-patch+yaml (got {content_type!r})")
        except patching.PatchError as e:
            raise errors.ApiError(422, "Invalid", f"the patch could not be applied: {e}") from None
        if not isinstance(patched, dict) or not isinstance(patched.get("metadata"), dict):
            raise errors.ApiError(422, "Invalid", "the patched object is not a valid object")
        patched["metadata"].setdefault("resourceVersion", old["metadata"]["resourceVersion"])
        return patched

    # -- delete --
    def delete(self, res: Resource, ns: str, name: str, opts: dict | None = None) -> dict:
        opts = opts or {}
        obj = self.get(res, ns, name)
        md = obj["metadata"]
        pre = opts.get("preconditions") or {}
        if pre.get("uid") and pre["uid"] != md["uid"]:
            raise errors.conflict(res.plural, name, res.group)
        if pre.get("resourceVersion") and pre["resourceVersion"] != md["resourceVersion"]:
            raise errors.conflict(res.plural, name, res.group)
        grace = opts.get("gracePeriodSeconds")
        if res.key == "/pods" and obj.get("spec", {}).get("nodeName"):
            if grace is None:
                grace = obj["spec"].get("terminationGracePeriodSeconds", 30)
            if grace > 0:
                if md.get("deletionTimestamp"):
                    return obj
                new = copy.deepcopy(obj)
                new["metadata"]["deletionTimestamp"] = now()
                new["metadata"]["deletionGracePeriodSeconds"] = grace
                return self._put(res, new, "MODIFIED", obj)
        if res.key == "/namespaces":
            if md.get("deletionTimestamp"):
                return obj
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now()
            new["status"]["phase"] = "Terminating"
            out = self._put(res, new, "MODIFIED", obj)
            if not DRY_RUN.get():
                self._start_namespace_termination(name)
            return out
        if md.get("finalizers"):
            if md.get("deletionTimestamp"):
                return obj
            new = copy.deepcopy(obj)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._put(res, new, "MODIFIED", obj)
        policy = opts.get("propagationPolicy") or ("Orphan" if opts.get("orphanDependents") else "Background")
        return self._remove(res, obj, policy)

    def _remove(self, res: Resource, obj: dict, policy: str = "Background") -> dict:
        if DRY_RUN.get():
            return obj
        self._index(res.key, obj, remove=True)
        self.event_writes.pop((obj["metadata"].get("namespace", ""), obj["metadata"]["name"]), None)
        gone = self.store.remove(res.key, obj)
        if res.key == "/services":
            self.alloc.release(obj)
        if res.key == CRD_BUCKET:
            self._unregister_crd(obj)
        self._collect_dependents(obj["metadata"]["uid"], policy)
        return gone

    def expire_events(self, now: float, ttl: float) -> int:
        """Delete Events not written to for ttl seconds (kube-apiserver's --event-ttl)."""
        res = self.registry.lookup("", "v1", "events")
        gone = [e for e in self.store.list(res.key) if now - self.event_writes.get(
            (e["metadata"]["namespace"], e["metadata"]["name"]), eventsapi.last_activity(e)) > ttl]
        for ev in gone:
            self._remove(res, ev)
        return len(gone)

    def _unregister_crd(self, crd: dict) -> None:
        spec = crd["spec"]
        for r in resource_from_crd(crd):
            for o in list(self.store.list(r.key)):
                self._remove(r, o)
            break
        self.registry.remove_group_plural(spec["group"], spec["names"]["plural"])

    def _resource_for_bucket(self, bucket: str) -> Resource | None:
        for r in self.registry.all():
            if r.key == bucket and r.storage_group is None:
                return r
        return None

    def _collect_dependents(self, uid: str, policy: str) -> None:
        for bucket, ns, name in list(self.owners.pop(uid, ())):
            res = self._resource_for_bucket(bucket)
            dep = self.store.get(bucket, ns, name)
            if res is None or dep is None:
                continue
            if policy == "Orphan":
                new = copy.deepcopy(dep)
                new["metadata"]["ownerReferences"] = [o for o in new["metadata"]["ownerReferences"]
                                                      if o.get("uid") != uid]
                self._put(res, new, "MODIFIED", dep)
            else:
                try:
                    self.delete(res, ns, name, {"propagationPolicy": "Background"})
                except errors.ApiError:
                    pass

    # -- namespace termination --
    def _start_namespace_termination(self, name: str) -> None:
        try:
            asyncio.get_running_loop().create_task(self._terminate_namespace(name))
        except RuntimeError:
            pass  # no loop yet (startup); the server starts pending terminations itself

    async def _terminate_namespace(self, name: str) -> None:
        """Delete everything in the namespace, then the namespace once its pods are gone: the
        namespace controller's job, asynchronous as there. Its first pass waits a moment (upstream
        runs discovery first), so that ``kubectl delete -f`` of a manifest holding a namespace and
        its objects deletes each of them itself instead of finding them gone (NotFound, exit 1)."""
        await asyncio.sleep(NAMESPACE_CONTROLLER_DELAY)
        for _ in range(3600):
            remaining = 0
            for r in list(self.registry.all()):
                if not r.namespaced or r.storage_group is not None:
                    continue
                for o in list(self.store.list(r.key, name)):
                    remaining += 1
                    if not o["metadata"].get("deletionTimestamp"):
                        try:
                            self.delete(r, name, o["metadata"]["name"])
                        except errors.ApiError:
                            pass
            if remaining == 0:
                ns = self.store.get("/namespaces", "", name)
                if ns is not None:
                    self._remove(self.registry.lookup("", "v1", "namespaces"), ns)
                return
            await asyncio.sleep(0.2)


def _validate_crd(crd: dict) -> list:
    spec = crd.get("spec") or {}
    out = []
    names = spec.get("names") or {}
    for f in ("group",):
        if not spec.get(f):
            out.append(admission.required(f"spec.{f}"))
    for f in ("plural", "kind"):
        if not names.get(f):
            out.append(admission.required(f"spec.names.{f}"))
    if not spec.get("versions"):
        out.append(admission.required("spec.versions"))
    if names.get("plural") and spec.get("group"):
        expected = f"{names['plural']}.{spec['group']}"
        if crd["metadata"].get("name") != expected:
            out.append(admission.invalid("metadata.name", crd["metadata"].get("name"),
                                         f"must be spec.names.plural+\".\"+spec.group ({expected})"))
    names.setdefault("singular", (names.get("kind") or "").lower())
    names.setdefault("listKind", (names.get("kind") or "") + "List")
    return out
