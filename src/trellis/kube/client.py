"""A small Kubernetes REST client (httpx), the same for the lab and a real cluster.

It speaks plain Kubernetes: paths from apiVersion + plural, metav1.Status
errors turned into ``ApiError`` with code and reason, watch as a stream of
newline-delimited JSON events. Config comes from a kubeconfig (token or client
certificates) or from the in-cluster service account.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import httpx
import yaml

log = logging.getLogger(__name__)

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, status: dict | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code, self.reason, self.message, self.status = code, reason, message, status or {}


class WatchExpired(ApiError):
    """The resourceVersion a watch started from is gone (410): relist."""


def base_path(api_version: str) -> str:
    return "/api/v1" if api_version == "v1" else f"/apis/{api_version}"


def resource_path(api_version: str, plural: str, ns: str | None = None, name: str | None = None,
                  sub: str | None = None) -> str:
    p = base_path(api_version)
    if ns:
        p += f"/namespaces/{ns}"
    p += f"/{plural}"
    if name:
        p += f"/{name}"
    if sub:
        p += f"/{sub}"
    return p


@dataclass
class ClusterConfig:
    server: str
    token: str | None = None
    verify: Any = True
    cert: tuple[str, str] | None = None


def load_kubeconfig(path: str) -> ClusterConfig:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    ctx_name = cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next((u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {}) or {}
    ca_file = cluster.get("certificate-authority")
    ca_data = base64.b64decode(cluster["certificate-authority-data"]).decode() \
        if cluster.get("certificate-authority-data") else None
    crt = user.get("client-certificate")
    crt_data = base64.b64decode(user["client-certificate-data"]) if user.get("client-certificate-data") else None
    key_data = base64.b64decode(user["client-key-data"]) if user.get("client-key-data") else None
    if cluster.get("insecure-skip-tls-verify"):
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    else:
        ctx = ssl.create_default_context(cafile=ca_file, cadata=ca_data)
    if crt or crt_data:
        tls_client(ctx, crt, user.get("client-key"), crt_data, key_data)
    return ClusterConfig(cluster["server"], user.get("token"), ctx)


def tls_client(ctx: ssl.SSLContext, crt: str | None, key: str | None, crt_data: bytes | None = None,
               key_data: bytes | None = None) -> None:
    """Load a client certificate into ``ctx``; embedded PEM data goes through a private temporary
    directory that is removed at once (ssl loads certificates from files only)."""
    if crt:
        ctx.load_cert_chain(crt, key)
        return
    d = tempfile.mkdtemp(prefix="trellis-kc-")
    try:
        c, k = os.path.join(d, "crt"), os.path.join(d, "key")
        for path, data in ((c, crt_data), (k, key_data)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data or b"")
        ctx.load_cert_chain(c, k)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def in_cluster_config() -> ClusterConfig:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    with open(os.path.join(SA_DIR, "token")) as f:
        token = f.read().strip()
    return ClusterConfig(f"https://{host}:{port}", token, ssl.create_default_context(
        cafile=os.path.join(SA_DIR, "ca.crt")))


def client_for(server: str | None = None) -> "KubeClient":
    """A client as client-go tools choose one: ``server`` (a URL, no credentials) when given, else
    the kubeconfig $KUBECONFIG names, else the in-cluster config (a pod's ServiceAccount)."""
    if server:
        return KubeClient(server)
    if os.environ.get("KUBECONFIG"):
        return KubeClient.from_kubeconfig(os.environ["KUBECONFIG"])
    return KubeClient(in_cluster_config())


class KubeClient:
    def __init__(self, config: ClusterConfig | str, timeout: float = 15.0) -> None:
        if isinstance(config, str):
            config = ClusterConfig(config)
        self.config = config
        headers = {"Accept": "application/json", "User-Agent": "trellis/0.1"}
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self.http = httpx.Client(base_url=config.server, headers=headers, timeout=timeout,
                                 verify=config.verify, cert=config.cert)

    @classmethod
    def from_kubeconfig(cls, path: str) -> "KubeClient":
        return cls(load_kubeconfig(path))

    def close(self) -> None:
        self.http.close()

    # -- raw --
    def request(self, method: str, path: str, body: Any = None, params: dict | None = None,
                content_type: str = "application/json") -> Any:
        data = None if body is None else json.dumps(body)
        try:
            r = self.http.request(method, path, content=data, params=params,
                                  headers={"Content-Type": content_type} if data else None)
        except httpx.HTTPError as e:
            raise ApiError(0, "ConnectionError", f"{method} {self.config.server}{path}: {e}") from None
        if r.status_code >= 400:
            raise _error(r.status_code, r.text)
        if r.headers.get("content-type", "").startswith("application/json"):
            return r.json()
        return r.text

    def wait_healthy(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until the API server answers ``/readyz`` (as kubelets and controller-managers do at
        start: they may be started before the API server listens). False at timeout or stop."""
        deadline = time.monotonic() + timeout
        pause = 0.05
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            try:
                self.request("GET", "/readyz")
                return True
            except ApiError as e:
                log.debug("waiting for the API server: %s", e.message)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)
        return False

    # -- typed verbs --
    def get(self, api_version: str, plural: str, name: str, ns: str | None = None) -> dict:
        return self.request("GET", resource_path(api_version, plural, ns, name))

    def get_or_none(self, api_version: str, plural: str, name: str, ns: str | None = None) -> dict | None:
        try:
            return self.get(api_version, plural, name, ns)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def list(self, api_version: str, plural: str, ns: str | None = None, label_selector: str | None = None,
             field_selector: str | None = None) -> tuple[list[dict], str]:
        params = {k: v for k, v in (("labelSelector", label_selector), ("fieldSelector", field_selector)) if v}
        doc = self.request("GET", resource_path(api_version, plural, ns), params=params)
        return doc.get("items") or [], doc["metadata"].get("resourceVersion", "")

    def create(self, api_version: str, plural: str, obj: dict, ns: str | None = None) -> dict:
        return self.request("POST", resource_path(api_version, plural, ns), obj)

    def update(self, api_version: str, plural: str, obj: dict, sub: str | None = None) -> dict:
        md = obj["metadata"]
        return self.request("PUT", resource_path(api_version, plural, md.get("namespace"), md["name"], sub), obj)

    def patch(self, api_version: str, plural: str, name: str, patch: Any, ns: str | None = None,
              sub: str | None = None, kind: str = "merge") -> dict:
        ct = {"merge": "application/merge-patch+json", "strategic": "application/strategic-merge-patch+json",
              "json": "application/json-patch+json"}[kind]
        return self.request("PATCH", resource_path(api_version, plural, ns, name, sub), patch, content_type=ct)

    def delete(self, api_version: str, plural: str, name: str, ns: str | None = None,
               grace_period: int | None = None, propagation: str | None = None) -> dict | None:
        body = {}
        if grace_period is not None:
            body["gracePeriodSeconds"] = grace_period
        if propagation:
            body["propagationPolicy"] = propagation
        try:
            return self.request("DELETE", resource_path(api_version, plural, ns, name), body or None)
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def watch(self, api_version: str, plural: str, ns: str | None = None, resource_version: str = "",
              label_selector: str | None = None, field_selector: str | None = None,
              timeout_seconds: int = 300, bookmarks: bool = True) -> Iterator[tuple[str, dict]]:
        params = {"watch": "true", "resourceVersion": resource_version, "timeoutSeconds": str(timeout_seconds),
                  "allowWatchBookmarks": "true" if bookmarks else "false"}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        path = resource_path(api_version, plural, ns)
        timeout = httpx.Timeout(10.0, read=timeout_seconds + 30)
        with self.http.stream("GET", path, params=params, timeout=timeout) as r:
            if r.status_code >= 400:
                r.read()
                raise _error(r.status_code, r.text)
            for line in r.iter_lines():
                if not line:
                    continue
                ev = json.loads(line)
                if ev.get("type") == "ERROR":
                    st = ev.get("object") or {}
                    cls = WatchExpired if st.get("code") == 410 else ApiError
                    raise cls(st.get("code", 500), st.get("reason", ""), st.get("message", ""), st)
                yield ev["type"], ev["object"]


def _error(code: int, text: str) -> ApiError:
    try:
        st = json.loads(text)
        reason, msg = st.get("reason", ""), st.get("message", text)
    except ValueError:
        st, reason, msg = None, "", text.strip()
    cls = WatchExpired if code == 410 else ApiError
    return cls(code, reason, msg, st)
