"""The lab's copy of the Ingress conformance echo server answers with the original's JSON keys."""
from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import tempfile
import threading

import pytest

from trellis.lab.images import echoserver


@pytest.fixture
def echo(monkeypatch):
    for k, v in {"NAMESPACE": "ns1", "POD_NAME": "pod-a", "SERVICE_NAME": "svc-a"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("INGRESS_NAME", raising=False)
    d = tempfile.mkdtemp()
    crt, key = os.path.join(d, "crt"), os.path.join(d, "key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", "/CN=echo.test"], check=True, capture_output=True)
    plain = echoserver._server(0, "127.0.0.1")
    tls = echoserver._server(0, "127.0.0.1")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(crt, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    for s in (plain, tls):
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield plain.server_address[1], tls.server_address[1]
    for s in (plain, tls):
        s.shutdown()
        s.server_close()


def test_echo_keys_headers_and_health(echo):
    c = http.client.HTTPConnection("127.0.0.1", echo[0], timeout=5)
    c.request("PATCH", "/a/b?x=1&y", body=b"data", headers={"Host": "my-host:8080", "x-custom-thing": "v1"})
    r = c.getresponse()
    assert r.status == 200 and r.getheader("Content-Type") == "application/json"
    got = json.loads(r.read())
    assert set(got) == {"path", "host", "method", "proto", "headers", "namespace", "ingress", "service", "pod"}
    assert (got["path"], got["host"], got["method"], got["proto"]) == ("/a/b?x=1&y", "my-host:8080", "PATCH", "HTTP/1.1")
    assert got["headers"]["X-Custom-Thing"] == ["v1"] and "Host" not in got["headers"]
    assert (got["namespace"], got["ingress"], got["service"], got["pod"]) == ("ns1", "", "svc-a", "pod-a")
    c.request("GET", "/health", headers={"Connection": "close"})
    r = c.getresponse()
    assert (r.status, r.read()) == (200, b"OK")
    assert r.getheader("Connection") == "close"


def test_echo_tls_key(echo):
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    c = http.client.HTTPSConnection("127.0.0.1", echo[1], timeout=5, context=ctx)
    c.request("GET", "/", headers={"Host": "echo.test"})
    got = json.loads(c.getresponse().read())
    assert got["tls"]["version"].startswith("TLS")
