"""The lab API server: Kubernetes REST over HTTP (aiohttp), backed by ``Api``.

Run as ``python -m trellis.lab.apiserver.server``. It listens on 127.0.0.1 in
the namespace it starts in (for the user's kubectl) and, with ``--netns-listen
NS=IP:PORT``, on a socket created inside the lab's master namespace (for the
nodes). A socket belongs to the namespace it was created in, so one process
serves both without any address in the root namespace.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import socket
import ssl
import sys
import time

from aiohttp import web

from trellis.kernel.netns import in_netns
from trellis.kube import selectors
from trellis.lab.apiserver import (access, errors, eventsapi, metrics, openapi2, openapi3, rbac, reqinput, schema,
                                   tables)
from trellis.lab.apiserver.api import CRD_BUCKET, DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, WARNINGS, Api
from trellis.lab.apiserver.attach import attach_pod
from trellis.lab.apiserver.resources import Resource
from trellis.lab.apiserver.store import Store, Watcher, dumps
from trellis.lab.apiserver.podforward import portforward_pod
from trellis.lab.apiserver.streams import exec_pod
from trellis.lab.kubelet import logstamps

log = logging.getLogger("trellis.apiserver")
BOOKMARK_INTERVAL = 5.0
# pods/<sub> served over an upgraded connection
STREAMING = {"exec": exec_pod, "attach": attach_pod, "portforward": portforward_pod}
VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-trellis", "gitCommit": "trellis",
           "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "python",
           "compiler": "cpython", "platform": "linux/amd64"}


def jresp(obj, status: int = 200) -> web.Response:
    return web.Response(body=dumps(obj), status=status, content_type="application/json")


def err(e: errors.ApiError) -> web.Response:
    return jresp(e.status(), e.code)


class Server:
    def __init__(self, api: Api, state_dir: str, guard: access.Access | None = None) -> None:
        self.api = api
        self.state_dir = state_dir
        self.access = guard or access.Access(api, None, False)
        for r in metrics.RESOURCES:  # computed from the kubelets' samples, never stored
            api.registry.add(r)

    # -- routing --
    def parse(self, path: str):
        seg = [s for s in path.split("/") if s]
        if len(seg) >= 2 and seg[0] == "api":
            group, version, rest = "", seg[1], seg[2:]
        elif len(seg) >= 3 and seg[0] == "apis":
            group, version, rest = seg[1], seg[2], seg[3:]
        else:
            return None
        watch = False
        if rest and rest[0] == "watch":
            watch, rest = True, rest[1:]
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces" and self.api.registry.lookup(group, version, rest[2]):
            ns, rest = rest[1], rest[2:]
        if not rest:
            return group, version, None, None, None, None, watch
        res = self.api.registry.lookup(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub == "finalize":
            sub = "status"
        return group, version, res, ns, name, sub, watch

    async def handle(self, request: web.Request) -> web.StreamResponse:
        warnings: list[str] = []
        WARNINGS.set(warnings)  # each request is its own task: these stay with it
        DRY_RUN.set(False)  # (requests on one keep-alive connection share a task)
        user = self.access.authenticate(request)
        if user is None:
            return err(access.UNAUTHORIZED)
        access.USER.set(user)
        resp = await self._handle(request)
        if warnings and not resp.prepared:
            for w in dict.fromkeys(warnings):
                resp.headers.add("Warning", "299 - " + json.dumps(w))  # quoted, control characters escaped
        return resp

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        try:
            self.authorize(request, path)
            if path in ("/healthz", "/livez", "/readyz"):
                return web.Response(text="ok")
            if path == "/version":
                return jresp(VERSION)
            if path == "/openapi/v2":
                if "protobuf" in request.headers.get("Accept", ""):
                    return web.Response(body=openapi2.document_protobuf(), content_type="application/octet-stream")
                return jresp(openapi2.document_json())
            if path == "/openapi/v3":
                return jresp(self.api.registry.openapi_index())
            if path.startswith("/openapi/v3/"):
                seg = path[len("/openapi/v3/"):].split("/")
                doc = (self.api.registry.openapi_gv("", seg[1]) if seg[0] == "api" and len(seg) == 2 else
                       self.api.registry.openapi_gv(seg[1], seg[2]) if seg[0] == "apis" and len(seg) == 3 else None)
                if doc is None:
                    raise errors.ApiError(404, "NotFound", f"no OpenAPI document at {path}")
                return jresp(self.with_schemas(doc, seg[1] if seg[0] == "apis" else "", seg[-1]))
            if path == "/api":
                return jresp(self.api.registry.api_versions())
            if path == "/apis":
                return jresp(self.api.registry.api_group_list())
            parsed = self.parse(path)
            if parsed is None:
                raise errors.ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            group, version, res, ns, name, sub, watch = parsed
            if res is None and ns is None and name is None and sub is None:
                doc = self.api.registry.resource_list(group, version)
                if doc is None:
                    raise errors.ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
                return jresp(doc)
            if res is None:
                raise errors.ApiError(404, "NotFound", f"the server could not find the requested resource ({path})")
            if res.group == metrics.GROUP:
                return jresp(metrics.serve(request.method, res, ns, name, self.state_dir))
            if res.namespaced and ns is None and name is not None and request.method != "GET":
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return await self.dispatch(request, res, ns, name, sub, watch)
        except errors.ApiError as e:
            return err(e)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - an API server answers 500, it does not die
            log.exception("internal error on %s %s", request.method, path)
            return err(errors.ApiError(500, "InternalError", f"internal error: {e}"))

    def with_schemas(self, doc: dict, group: str, version: str) -> dict:
        """The group-version's OpenAPI v3 document with the schemas of its kinds (kubectl explain)."""
        roots, crds = {}, {}
        for r in self.api.registry.all():
            if r.group != group or r.version != version:
                continue
            if r.custom:
                crds[r.kind] = r
            elif (model := schema.model_name(r.group, r.version, r.kind)) is not None:
                roots[model] = (r.group, r.version, r.kind)
        comps = openapi3.components(roots, ("V1ObjectMeta",) if crds else ())
        for crd in self.api.store.list(CRD_BUCKET) if crds else []:
            spec = crd.get("spec") or {}
            if spec.get("group") != group or spec.get("names", {}).get("kind") not in crds:
                continue
            for v in spec.get("versions") or []:
                if v.get("name") == version:
                    name, body = openapi3.crd_component(group, version, spec["names"]["kind"],
                                                        (v.get("schema") or {}).get("openAPIV3Schema"))
                    comps[name] = body
        return dict(doc, components={"schemas": comps})

    def authorize(self, request: web.Request, path: str) -> None:
        """403 unless RBAC allows the request (the trusted in-lab port skips this)."""
        if not self.access.enabled or not request.secure:
            return
        parsed = self.parse(path)
        if parsed is not None and parsed[2] is not None:
            _, _, res, ns, name, sub, watch = parsed
            attrs = access.attributes(request.method, res, ns, name, sub, watch, request.query)
        else:
            attrs = rbac.Attributes(request.method.lower(), path=path)
        self.access.check(access.USER.get(), attrs)

    async def body(self, request: web.Request):
        return await reqinput.body(request)

    async def dispatch(self, request, res: Resource, ns, name, sub, watch):
        api, q, m = self.api, request.query, request.method
        if m in ("POST", "PUT", "PATCH", "DELETE"):
            DRY_RUN.set(reqinput.dry_run(q.getall("dryRun", [])))
        if m in ("POST", "PUT", "PATCH"):
            FIELD_VALIDATION.set(reqinput.field_validation(q))
            FIELD_MANAGER.set(reqinput.field_manager(q, request.headers.get("User-Agent", "")))
        nsq = ns if res.namespaced else ""
        if res.group in access.REVIEW_GROUPS:
            if m != "POST" or name is not None:
                raise errors.ApiError(405, "MethodNotAllowed", f"{res.plural} can only be created")
            return jresp(self.access.review(res, access.USER.get(), await self.body(request)), 201)
        if sub == "token" and res.key == "/serviceaccounts" and m == "POST":
            return jresp(self.access.token_request(nsq, name, await self.body(request)), 201)
        if name is None:
            if m == "GET" and (watch or q.get("watch") in ("1", "true")):
                return await self.watch(request, res, ns)
            if m == "GET":
                return self.list(request, res, ns)
            if m == "POST":
                if res.namespaced and ns is None:
                    raise errors.ApiError(405, "MethodNotAllowed", "create needs a namespace in the path")
                return jresp(self.serve(res, api.create(res, nsq, self.stored(res, await self.body(request)))), 201)
            if m == "DELETE":
                opts = self.delete_options(await self.body(request) if request.can_read_body else {}, q)
                items = api.list(res, ns, q.get("labelSelector"), self.field_selector(res, q))
                for o in items:
                    api.delete(res, o["metadata"].get("namespace", ""), o["metadata"]["name"], opts)
                return jresp(self.list_doc(res, items))
        else:
            if watch:
                return await self.watch(request, res, ns, name)
            if sub == "log" and res.key == "/pods":
                return await self.pod_log(request, api.get(res, nsq, name))
            if sub in STREAMING and res.key == "/pods":
                return await STREAMING[sub](request, api.get(res, nsq, name), self.state_dir)
            if sub == "binding" and res.key == "/pods" and m == "POST":
                return jresp(api.bind(nsq, name, await self.body(request)), 201)
            if sub == "scale":
                return await self.scale(request, res, nsq, name)
            if sub not in (None, "status"):
                raise errors.ApiError(404, "NotFound", f"subresource {sub!r} not found")
            if m == "GET":
                obj = self.serve(res, api.get(res, nsq, name))
                if not sub and "as=Table" in request.headers.get("Accept", ""):
                    return jresp(tables.table(res.key, [obj], {"resourceVersion": obj["metadata"]["resourceVersion"]},
                                              request.query.get("includeObject", "Metadata")))
                return jresp(obj)
            if m == "PUT":
                return jresp(self.serve(res, api.update(res, nsq, name, self.stored(res, await self.body(request)),
                                                        sub)))
            if m == "PATCH":
                body, ct = await self.body(request), request.content_type or ""
                if ct == "application/apply-patch+yaml":
                    return self.apply(request, res, nsq, name, sub, body)
                if "force" in q:
                    raise errors.bad_request("force: Forbidden: may not be specified for non-apply patch")
                if res.group == eventsapi.GROUP:  # patch the shape the client sees, store the core one
                    old = api.get(res, nsq, name)
                    new = eventsapi.to_core(api.patched(res, eventsapi.to_events_v1(old), body, ct))
                    return jresp(self.serve(res, api.update(res, nsq, name, new, sub)))
                return jresp(self.serve(res, api.patch(res, nsq, name, body, ct, sub)))
            if m == "DELETE":
                opts = self.delete_options(await self.body(request) if request.can_read_body else {}, q)
                return jresp(self.serve(res, api.delete(res, nsq, name, opts)))
        raise errors.ApiError(405, "MethodNotAllowed", f"{m} is not allowed here")

    def apply(self, request, res: Resource, ns: str, name: str, sub, body) -> web.Response:
        """Server-side apply (PATCH application/apply-patch+yaml); it creates a missing object."""
        q = request.query
        if not q.get("fieldManager"):
            raise errors.bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: "
                                     "is required for apply patch")
        if sub is not None or res.group == eventsapi.GROUP:
            raise errors.ApiError(415, "UnsupportedMediaType", "server-side apply of a subresource or of "
                                  f"{res.group} is not supported by the lab API server")
        obj, created = self.api.apply(res, ns, name, body, q["fieldManager"], q.get("force") in ("1", "true"))
        return jresp(self.serve(res, obj), 201 if created else 200)

    @staticmethod
    def delete_options(body, q) -> dict:
        """DeleteOptions from the body and the query, typed as kube-apiserver decodes them."""
        if not isinstance(body, dict):
            raise errors.bad_request("DeleteOptions must be an object")
        try:
            opts = schema.decode(body, "V1DeleteOptions").obj
        except schema.TypeMismatch as e:
            raise errors.bad_request(f"DeleteOptions cannot be decoded: {e}") from None
        grace = reqinput.integer(q, "gracePeriodSeconds")
        if grace is not None:
            opts["gracePeriodSeconds"] = grace
        if "propagationPolicy" in q:
            opts["propagationPolicy"] = q["propagationPolicy"]
        policy = opts.get("propagationPolicy")
        if policy not in (None, "Orphan", "Background", "Foreground"):
            raise errors.bad_request(f"propagationPolicy {policy!r} is not one of Orphan, Background, Foreground")
        if opts.get("dryRun"):
            DRY_RUN.set(reqinput.dry_run(opts["dryRun"], "DeleteOptions.dryRun") or DRY_RUN.get())
        if isinstance(opts.get("gracePeriodSeconds"), int) and opts["gracePeriodSeconds"] < 0:
            raise errors.Invalid("DeleteOptions", "", [("gracePeriodSeconds", "FieldValueInvalid",
                                 f"Invalid value: {opts['gracePeriodSeconds']}: must be >= 0")])
        return opts

    def stored(self, res: Resource, body):
        if res.group == eventsapi.GROUP and isinstance(body, dict):
            return eventsapi.to_core(body)
        return body

    def field_selector(self, res: Resource, q) -> str | None:
        if res.key != "/events":
            return q.get("fieldSelector")
        try:
            return eventsapi.field_selector(q.get("fieldSelector"), res.group)
        except selectors.SelectorError as e:
            raise errors.bad_request(str(e)) from None

    def serve(self, res: Resource, obj: dict) -> dict:
        if res.group == eventsapi.GROUP:
            return eventsapi.to_events_v1(obj)
        if res.custom and obj.get("apiVersion") != res.api_version:
            return dict(obj, apiVersion=res.api_version)
        return obj

    def list_doc(self, res: Resource, items: list[dict], cont: str = "") -> dict:
        md = {"resourceVersion": str(self.api.store.rv)}
        if cont:
            md["continue"] = cont
        return {"kind": f"{res.kind}List", "apiVersion": res.storage_api_version if not res.custom
                and res.group != eventsapi.GROUP else res.api_version, "metadata": md, "items": [self.serve(res, o) for o in items]}

    def list(self, request, res: Resource, ns):
        q = request.query
        items = self.api.list(res, ns, q.get("labelSelector"), self.field_selector(res, q))
        cont = ""
        if q.get("continue"):
            try:
                start = json.loads(base64.urlsafe_b64decode(q["continue"]))["start"]
                if not (isinstance(start, list) and len(start) == 2 and all(isinstance(x, str) for x in start)):
                    raise ValueError(start)
            except (ValueError, KeyError, TypeError):
                raise errors.bad_request("invalid continue token") from None
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start]
        limit = reqinput.integer(q, "limit", 0)
        if limit and len(items) > limit:
            items = items[:limit]
            last = items[-1]["metadata"]
            cont = base64.urlsafe_b64encode(json.dumps(
                {"start": [last.get("namespace", ""), last["name"]]}).encode()).decode()
        if "as=Table" in request.headers.get("Accept", ""):
            md = {"resourceVersion": str(self.api.store.rv), **({"continue": cont} if cont else {})}
            return jresp(tables.table(res.key, items, md, q.get("includeObject", "Metadata")))
        return web.Response(body=dumps(self.list_doc(res, items, cont)), content_type="application/json")

    # -- watch --
    async def watch(self, request, res: Resource, ns, name=None):
        q = request.query
        try:
            ls = selectors.parse_label_selector(q.get("labelSelector"))
            fs = selectors.parse_field_selector(self.field_selector(res, q))
        except selectors.SelectorError as e:
            raise errors.bad_request(str(e)) from None
        if name:
            fs = fs + (("metadata.name", "=", name),)
        timeout = reqinput.integer(q, "timeoutSeconds", 1800)

        def accept(o):
            if o is None:
                return False
            if res.namespaced and ns is not None and o["metadata"].get("namespace") != ns:
                return False
            return selectors.matches(ls, o["metadata"].get("labels")) and selectors.fields_match(fs, o)

        store = self.api.store
        w = Watcher(res.key, accept)
        store.subscribe(w)  # subscribe and snapshot with no await in between: nothing is missed
        try:
            rv = q.get("resourceVersion", "")
            initial: list[tuple[str, dict, dict | None]] = []
            expired = False
            if rv in ("", "0"):
                initial = [("ADDED", o, None) for o in self.api.list(res, ns) if accept(o)]
            else:
                try:
                    evs = store.events_since(res.key, int(rv))
                except ValueError:
                    raise errors.bad_request(f"invalid resourceVersion {rv!r}") from None
                if evs is None:
                    expired = True
                else:
                    initial = [(e.type, e.obj, e.old) for e in evs]
            resp = web.StreamResponse(headers={"Content-Type": "application/json",
                                               "Transfer-Encoding": "chunked"})
            await resp.prepare(request)
            if expired:
                status = errors.gone(f"too old resource version: {rv} ({store.oldest_rv})").status()
                await resp.write(dumps({"type": "ERROR", "object": status}) + b"\n")
                return resp
            bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
            deadline = time.monotonic() + timeout
            for typ, obj, old in initial:
                line = self._event_line(res, typ, obj, old, accept)
                if line:
                    await resp.write(line)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(w.queue.get(), min(remaining, BOOKMARK_INTERVAL))
                except asyncio.TimeoutError:
                    if bookmarks:
                        await resp.write(dumps({"type": "BOOKMARK", "object": {
                            "kind": res.kind, "apiVersion": res.api_version,
                            "metadata": {"resourceVersion": str(store.rv)}}}) + b"\n")
                    continue
                if w.overflowed:
                    break  # a client too slow to keep up restarts its watch, as with etcd
                line = self._event_line(res, ev.type, ev.obj, ev.old, accept)
                if line:
                    await resp.write(line)
            return resp
        finally:
            store.unsubscribe(w)

    def _event_line(self, res, typ, obj, old, accept) -> bytes | None:
        new_ok = accept(obj)
        old_ok = accept(old) if old is not None else False
        if typ == "MODIFIED":
            if new_ok and not old_ok and old is not None:
                typ = "ADDED"
            elif old_ok and not new_ok:
                typ = "DELETED"
            elif not new_ok:
                return None
        elif typ == "DELETED":
            if not (new_ok or old_ok):
                return None
        elif not new_ok:
            return None
        return dumps({"type": typ, "object": self.serve(res, obj)}) + b"\n"

    # -- subresources --
    async def scale(self, request, res: Resource, ns: str, name: str):
        obj = self.api.get(res, ns, name)
        if request.method in ("PUT", "PATCH"):
            body = await self.body(request)
            if request.method == "PATCH":
                from trellis.lab.apiserver.patch import json_merge_patch, json_patch
                current = self._scale_doc(obj)
                body = (json_patch(current, body) if "json-patch" in (request.content_type or "")
                        else json_merge_patch(current, body))
            replicas = (body.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise errors.Invalid("Scale", name, [("spec.replicas", "FieldValueInvalid",
                                                      f"Invalid value: {replicas!r}: must be greater than or equal to 0")],
                                     "autoscaling")
            rv = (body.get("metadata") or {}).get("resourceVersion")
            if rv and rv != obj["metadata"]["resourceVersion"]:
                raise errors.conflict(res.plural, name, res.group)
            new = json.loads(json.dumps(obj))
            new["spec"]["replicas"] = replicas
            obj = self.api.update(res, ns, name, new)
        return jresp(self._scale_doc(obj))

    def _scale_doc(self, obj: dict) -> dict:
        md = obj["metadata"]
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {k: md[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                                "creationTimestamp") if k in md},
                "spec": {"replicas": obj["spec"].get("replicas", 0)},
                "status": {"replicas": obj.get("status", {}).get("replicas", 0),
                           "selector": selectors.to_string(obj["spec"].get("selector"))}}

    async def pod_log(self, request, pod: dict):
        containers = [c["name"] for c in pod["spec"].get("containers", [])]
        inits = [c["name"] for c in pod["spec"].get("initContainers") or []]
        container = request.query.get("container") or (containers[0] if len(containers) == 1 else "")
        if container not in containers + inits:
            more = f" or one of the init containers: [{' '.join(inits)}]" if inits else ""
            raise errors.bad_request(f"a container name must be specified for pod {pod['metadata']['name']}, "
                                     f"choose one of: [{' '.join(containers)}]{more}")
        node = pod["spec"].get("nodeName")
        previous = request.query.get("previous") in ("1", "true")
        path = os.path.join(self.state_dir, "nodes", node or "-", "pods", pod["metadata"]["uid"],
                            f"{container}.previous.log" if previous else f"{container}.log")
        if previous and not os.path.exists(path):
            raise errors.bad_request(f'previous terminated container "{container}" in pod '
                                     f'"{pod["metadata"]["name"]}" not found')
        if not os.path.exists(path):
            raise errors.bad_request(f'container "{container}" in pod "{pod["metadata"]["name"]}" is '
                                     "waiting to start")
        with open(path, "rb") as f:
            data = f.read()
        stamps = logstamps.read_index(path) if request.query.get("timestamps") in ("1", "true") else None
        if stamps is not None:
            data = logstamps.stamp_lines(data, stamps)
        tail = reqinput.integer(request.query, "tailLines")
        if tail is not None:
            data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail else b""
        if previous or request.query.get("follow") not in ("1", "true"):
            return web.Response(body=data, content_type="text/plain")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        await resp.write(data)
        with open(path, "rb") as f:
            f.seek(0, 2)
            while self.api.store.get("/pods", pod["metadata"]["namespace"], pod["metadata"]["name"]):
                chunk = f.read()
                if chunk:
                    await resp.write(chunk)
                else:
                    await asyncio.sleep(0.2)
        return resp


async def expire_events(api: Api, ttl: float) -> None:
    """Events live ttl seconds after their last write, as kube-apiserver's --event-ttl makes etcd do."""
    while True:
        try:
            n = api.expire_events(time.time(), ttl)
            if n:
                log.info("%d events older than %.0fs expired", n, ttl)
        except Exception:  # noqa: BLE001 - the sweeper must outlive one bad object
            log.exception("expiring events failed")
        await asyncio.sleep(min(60.0, max(ttl / 10, 0.5)))


def listen_socket(addr: str, netns: str | None = None) -> socket.socket:
    host, _, port = addr.rpartition(":")
    with in_netns(netns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(512)
    s.setblocking(False)
    return s


def secure_context(args) -> ssl.SSLContext:
    """TLS for the secure port: the serving certificate, and client certificates of the lab CA
    verified when sent (a request without one must then bring a token)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # not create_default_context: no system CA store to load
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(args.tls_cert_file, args.tls_private_key_file)
    if args.client_ca_file:
        ctx.load_verify_locations(args.client_ca_file)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def make_app(server: Server) -> web.Application:
    app = web.Application(client_max_size=reqinput.MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    return app


async def serve(args) -> None:
    os.makedirs(args.state_dir, exist_ok=True)
    store = Store(os.path.join(args.state_dir, "api.sqlite"), window=args.watch_window)
    api = Api(store, args.service_cidr, args.max_pods)
    if args.advertise_address:
        api.ensure_kubernetes_service(args.advertise_address)
    for ns in store.list("/namespaces"):
        if ns["metadata"].get("deletionTimestamp"):
            api._start_namespace_termination(ns["metadata"]["name"])
    api.ensure_objects(rbac.bootstrap_policy())
    tls = secure_context(args) if args.tls_cert_file else None
    tokens = None
    if args.service_account_signing_key_file:
        with open(args.service_account_signing_key_file, "rb") as f, open(args.service_account_key_file, "rb") as g:
            tokens = access.Tokens(f.read(), g.read(), lambda b, ns, n: api.store.get(b, ns, n))
    app = make_app(Server(api, args.state_dir, access.Access(api, tokens, tls is not None)))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    socks = [(listen_socket(a), tls) for a in args.listen]
    for spec in args.netns_listen:
        ns, _, addr = spec.partition("=")
        socks.append((listen_socket(addr, ns), tls))  # the same secure port, for the lab's nodes and pods
    for s, ctx in socks:
        await web.SockSite(runner, s, shutdown_timeout=0.5, ssl_context=ctx).start()
    sweeper = asyncio.get_running_loop().create_task(expire_events(api, args.event_ttl))
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write(" ".join("%s:%d" % s.getsockname()[:2] for s, _ in socks))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    sweeper.cancel()
    await runner.cleanup()
    store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trellis-apiserver", description="The lab's Kubernetes API server.")
    p.add_argument("--state-dir", required=True, help="where api.sqlite and pod logs live")
    p.add_argument("--listen", action="append", default=[], help="IP:PORT in this namespace (repeatable)")
    p.add_argument("--netns-listen", action="append", default=[], help="NETNS=IP:PORT (repeatable)")
    p.add_argument("--service-cidr", default="10.96.0.0/16")
    p.add_argument("--advertise-address", help="IP:PORT the default/kubernetes Service points at")
    p.add_argument("--max-pods", type=int, default=0,
                   help="refuse new pods beyond this many (a quota of sanity; 0: no limit)")
    p.add_argument("--ready-file", help="written with the bound addresses once listening")
    p.add_argument("--tls-cert-file", help="serve --listen over HTTPS with this certificate; then every "
                   "request there must authenticate (401) and RBAC authorizes it (403)")
    p.add_argument("--tls-private-key-file")
    p.add_argument("--client-ca-file", help="CA of the client certificates (user = CN, groups = O)")
    p.add_argument("--service-account-signing-key-file", help="private key ServiceAccount tokens are signed with")
    p.add_argument("--service-account-key-file", help="public key ServiceAccount tokens are verified with")
    p.add_argument("--event-ttl", type=float, default=eventsapi.DEFAULT_TTL,
                   help="seconds an Event lives after its last update (kube-apiserver: --event-ttl=1h)")
    p.add_argument("--watch-window", type=int, default=50_000,
                   help="events kept for watches to resume from; older versions get 410 Gone")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s apiserver %(levelname)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
