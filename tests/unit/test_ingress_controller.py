"""`trellis ingress` against the lab API server (a process on 127.0.0.1) and a real haproxy on
127.0.0.1: status addresses written and removed, Events for what cannot be served, endpoint
changes through the runtime API (no reload), config changes through reloads."""
from __future__ import annotations

import base64
import json
import shutil
import tempfile
import threading

import pytest
from ingress_objects import ingress, ingress_class, path
from test_ingress_haproxy import backends, free_port, get  # noqa: F401 - fixture
from test_ingress_compile import _tls_secret

from trellis.ingress.main import IngressController
from trellis.ingress.runtime import HAProxy
from trellis.ingress.tlscerts import self_signed

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
NET = "networking.k8s.io/v1"


def wait_for(cond, what, timeout=15):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def controller(client):
    d = tempfile.mkdtemp(prefix="trellis-ingress-ctl-")
    h = HAProxy(d, free_port(), free_port(), bind_address="127.0.0.1")
    client.create("v1", "services", {"metadata": {"name": "trellis-ingress", "namespace": "kube-system"},
                                      "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]}},
                  "kube-system")
    client.patch("v1", "services", "trellis-ingress", {"status": {"loadBalancer": {"ingress": [{"ip": "172.31.0.200"}]}}},
                 "kube-system", sub="status")
    client.create(NET, "ingressclasses", ingress_class())
    ctl = IngressController(client, h, "kube-system/trellis-ingress", debounce=0.02)
    stop = threading.Event()
    t = threading.Thread(target=ctl.run, args=(stop,), daemon=True)
    t.start()
    yield ctl
    stop.set()
    t.join(15)
    h.stop()
    shutil.rmtree(d, ignore_errors=True)


def backend_service(client, backends, name: str, n: int = 1):
    ports = [backends(f"{name}-{i}") for i in range(n)]
    client.create("v1", "services", {"metadata": {"name": name, "namespace": "default"},
                                      "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}, "default")
    slice_obj = {"metadata": {"name": f"{name}-1", "namespace": "default",
                              "labels": {"kubernetes.io/service-name": name}},
                 "addressType": "IPv4", "ports": [{"name": "http", "port": ports[0], "protocol": "TCP"}],
                 "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]}
    client.create("discovery.k8s.io/v1", "endpointslices", slice_obj, "default")
    return ports


def status_ips(client, name):
    ing = client.get(NET, "ingresses", name, "default")
    return [i.get("ip") for i in ((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]


def events_for(client, name):
    return {e["reason"]: e for e in client.list("v1", "events", "default")[0] if e["involvedObject"]["name"] == name}


def test_status_events_runtime_and_reload(client, controller, backends):  # noqa: F811
    h = controller.haproxy
    ports = backend_service(client, backends, "web", 2)
    client.create(NET, "ingresses", ingress("web", [("web.test", [path("/", "web")])]), "default")
    wait_for(lambda: status_ips(client, "web") == ["172.31.0.200"], "the Ingress status address")
    assert json.loads(get(h, "web.test", "/x")[2])["backend"] == "web-0"
    reloads = h.reloads
    # endpoints move to the other backend server: runtime API only
    client.patch("discovery.k8s.io/v1", "endpointslices", "web-1", {"ports": [{"name": "http", "port": ports[1],
                                                                               "protocol": "TCP"}]}, "default")
    wait_for(lambda: json.loads(get(h, "web.test", "/x")[2])["backend"] == "web-1", "the new endpoint")
    assert h.reloads == reloads
    # a resource backend is refused with an Event, the rest keeps serving
    bad = ingress("res", [("res.test", [{"path": "/r", "pathType": "Prefix", "backend": {"resource": {
        "apiGroup": "k8s.example.com", "kind": "StorageBucket", "name": "b"}}}, path("/ok", "web")])])
    client.create(NET, "ingresses", bad, "default")
    ev = wait_for(lambda: events_for(client, "res").get("UnsupportedBackend"), "the UnsupportedBackend Event")
    assert ev["type"] == "Warning" and "resource" in ev["message"]
    assert get(h, "res.test", "/ok")[0] == 200 and get(h, "res.test", "/r")[0] == 404
    assert h.reloads == reloads  # a new host and path on a known backend: map entries, no reload
    # another class: no longer served, status removed, host gone
    client.create(NET, "ingressclasses", ingress_class("other", False, "example.com/other"))
    client.patch(NET, "ingresses", "web", {"spec": {"ingressClassName": "other"}}, "default")
    wait_for(lambda: status_ips(client, "web") == [], "the status address to be removed")
    wait_for(lambda: get(h, "web.test", "/x")[0] == 404, "the host to be gone")


def test_malformed_secret_is_an_event_and_http_keeps_working(client, controller, backends):  # noqa: F811
    h = controller.haproxy
    backend_service(client, backends, "web")
    sec = _tls_secret("bad", self_signed("a.test"))
    sec["data"]["tls.crt"] = base64.b64encode(b"garbage").decode()
    client.create("v1", "secrets", sec, "default")
    client.create(NET, "ingresses", ingress("t", [("a.test", [path("/", "web")])],
                                            tls=[{"hosts": ["a.test"], "secretName": "bad"}]), "default")
    wait_for(lambda: events_for(client, "bad").get("InvalidTLSSecret"), "the Secret's Event")
    # the Ingress's Event is recorded right after the Secret's
    wait_for(lambda: events_for(client, "t").get("InvalidTLSSecret"), "the Ingress's Event")
    status, headers, _, _ = get(h, "a.test", "/")
    assert status == 200 and "location" not in headers  # no redirect to a TLS it cannot serve
    # the Secret is fixed: served over TLS within seconds, and plain HTTP redirects
    client.update("v1", "secrets", dict(_tls_secret("bad", self_signed("a.test")), metadata={
        "name": "bad", "namespace": "default"}))
    wait_for(lambda: get(h, "a.test", "/")[0] == 308, "the redirect to https")
    assert get(h, "a.test", "/q?x=1")[1]["location"] == "https://a.test/q?x=1"
    status, _, body, _ = get(h, "a.test", "/", https=True, sni="a.test")
    assert status == 200 and json.loads(body)["backend"] == "web-0"
