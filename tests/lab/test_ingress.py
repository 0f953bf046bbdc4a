"""Ingress end to end on a 2-node lab: the controller `lab up` deploys (haproxy in its own pod),
the Ingress conformance suite's scenarios with its echo server and pod spec, the API reference's
path table, TLS with two hosts and openssl-made certificates, and 20 Ingress changes under a
constant wrk load from the lab's client namespace with zero failed requests. Every request is
a real connection from the client namespace to the LoadBalancer address."""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import module_lab, needs_root
from ingress_cases import API_TABLE
from helpers import running_pods, wait_for
from trellis.kernel import netns as kns
from trellis.kube.client import KubeClient
from trellis.lab import topology

pytestmark = [needs_root, pytest.mark.lab]
NET = "networking.k8s.io/v1"
NS = "conformance"
ECHO_IMAGE = "registry.k8s.io/ingressconformance/echoserver:v0.0.1"
SERVICES = ["echo-service", "foo-exact", "foo-prefix", "aaa-slash-bbb-prefix", "aaa-prefix",
            "aaa-slash-bbb-slash-prefix", "foo-slash-exact", "wildcard-foo-com", "foo-bar-com"]
CLIENT = os.path.join(os.path.dirname(__file__), "ingress_client.py")


def echo_objects(name: str, replicas: int = 1) -> list[tuple[str, str, dict]]:
    """The conformance suite's echo Deployment and Service, unchanged in what matters."""
    labels = {"app.kubernetes.io/name": name}
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
           "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {"containers": [{
                        "name": "conformance-echo", "image": ECHO_IMAGE,
                        "env": [{"name": "INGRESS_NAME", "value": name}, {"name": "SERVICE_NAME", "value": name},
                                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                                {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                        "ports": [{"name": "http-api", "containerPort": 3000}],
                        "readinessProbe": {"httpGet": {"path": "/health", "port": 3000}, "initialDelaySeconds": 1,
                                           "periodSeconds": 1, "timeoutSeconds": 1, "successThreshold": 1,
                                           "failureThreshold": 3}}]}}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": 3000}]}}
    return [("apps/v1", "deployments", dep), ("v1", "services", svc)]


lab = module_lab("ing", 2)  # TRELLIS_TEST_LAB=<name> reuses a running lab while developing


@pytest.fixture(scope="module")
def kc(lab):
    c = lab.client()
    if not c.get_or_none("v1", "namespaces", NS):
        c.create("v1", "namespaces", {"metadata": {"name": NS}})
    for svc in SERVICES:
        for api, plural, obj in echo_objects(svc, 4 if svc == "echo-service" else 1):
            if not c.get_or_none(api, plural, obj["metadata"]["name"], NS):
                c.create(api, plural, obj, NS)
    for svc in SERVICES:
        running_pods(c, NS, f"app.kubernetes.io/name={svc}", 4 if svc == "echo-service" else 1, timeout=120)
    yield c
    c.close()


@pytest.fixture(scope="module")
def lb_ip(kc):
    return wait_for(lambda: (((kc.get("v1", "services", "trellis-ingress", "kube-system").get("status") or {})
                              .get("loadBalancer") or {}).get("ingress") or [{}])[0].get("ip"), 30, "the LB address")


def requests(lab, reqs: list[dict]) -> list[dict]:
    p = subprocess.run(["nsenter", f"--net={os.path.join(kns.NETNS_DIR, lab.ns('client'))}", "--",
                        sys.executable, CLIENT, json.dumps(reqs)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def get(lab, ip, host, target="/", method="GET", https=False, **kw) -> dict:
    url = f"{'https' if https else 'http'}://{ip}{target}"
    return requests(lab, [{"method": method, "url": url, "host": host, **kw}])[0]


def served_by(resp: dict) -> str:
    assert resp.get("status") == 200, resp
    return json.loads(resp["body"])["service"]


def make_ingress(kc, name: str, spec: dict, ns: str = NS, annotations: dict | None = None) -> None:
    obj = {"apiVersion": NET, "kind": "Ingress", "metadata": {"name": name, "annotations": annotations or {}},
           "spec": spec}
    kc.create(NET, "ingresses", obj, ns)


def status_ip(kc, name: str, ns: str = NS) -> str | None:
    ing = kc.get(NET, "ingresses", name, ns)
    return ((((ing.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [{}])[0]).get("ip")


def delete_ingress(kc, lab, ip, name: str, probe_host: str) -> None:
    kc.delete(NET, "ingresses", name, NS)
    wait_for(lambda: get(lab, ip, probe_host).get("status") == 404, 20, f"{name}'s routes to go")


def rule(host: str | None, paths: list[tuple]) -> dict:
    """An Ingress rule; each path is (path, pathType, service[, port number or name, default 8080])."""
    out = []
    for p, ptype, svc, *port in paths:
        port = port[0] if port else 8080
        out.append({"path": p, "pathType": ptype, "backend": {"service": {
            "name": svc, "port": {"name": port} if isinstance(port, str) else {"number": port}}}})
    r = {"http": {"paths": out}}
    if host:
        r["host"] = host
    return r


def test_lab_deploys_the_controller(kc, lab, lb_ip):
    cls = kc.get(NET, "ingressclasses", "trellis")
    assert cls["spec"]["controller"] == "trellis.dev/ingress-controller"
    assert cls["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"
    pods = running_pods(kc, "kube-system", "app.kubernetes.io/name=trellis-ingress", 1)
    assert not pods[0]["spec"].get("hostNetwork")
    # haproxy runs inside the ingress pod's network namespace, next to the controller, nowhere else
    def cmdlines(ns: str) -> list[bytes]:
        out = []
        for pid in kns.pids(ns):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
        return out
    with_haproxy = [ns for ns in topology.owned_netns(lab.name)
                    if any(c.startswith(b"haproxy\0") for c in cmdlines(ns))]
    assert len(with_haproxy) == 1 and "-p-" in with_haproxy[0], with_haproxy
    assert any(b"trellis.ingress.main" in c for c in cmdlines(with_haproxy[0]))
    svc = kc.get("v1", "services", "trellis-ingress", "kube-system")
    assert svc["spec"]["type"] == "LoadBalancer" and [p["port"] for p in svc["spec"]["ports"]] == [80, 443]
    # nothing matches and there is no default backend: 404 from the controller, with a Server header
    r = get(lab, lb_ip, "nothing.example", "/x")
    assert r["status"] == 404 and r["headers"]["server"] == "trellis-ingress"


def test_host_rules(kc, lab, lb_ip, tmp_path):
    crt, key = openssl_cert(tmp_path, "foo.bar.com")
    kc.create("v1", "secrets", tls_secret("conformance-tls", crt, key), NS)
    make_ingress(kc, "host-rules", {"tls": [{"hosts": ["foo.bar.com"], "secretName": "conformance-tls"}],
                                    "rules": [rule("*.foo.com", [("/", "Prefix", "wildcard-foo-com")]),
                                              rule("foo.bar.com", [("/", "Prefix", "foo-bar-com", "http")])]})
    wait_for(lambda: status_ip(kc, "host-rules") == lb_ip, 20, "the Ingress status address")
    wait_for(lambda: get(lab, lb_ip, "bar.foo.com").get("status") == 200, 20, "the rules to be served")
    r = get(lab, lb_ip, "foo.bar.com", https=True, ca=str(crt))  # verifies the certificate and hostname
    assert served_by(r) == "foo-bar-com" and json.loads(r["body"])["host"] == "foo.bar.com"
    # plain HTTP to a TLS host is redirected (on by default) ...
    r = get(lab, lb_ip, "foo.bar.com", "/p?q=1")
    assert r["status"] == 308 and r["headers"]["location"] == "https://foo.bar.com/p?q=1"
    # ... and served when the Ingress says so
    kc.patch(NET, "ingresses", "host-rules", {"metadata": {"annotations": {"trellis.dev/ssl-redirect": "false"}}}, NS)
    wait_for(lambda: get(lab, lb_ip, "foo.bar.com").get("status") == 200, 20, "the redirect to be off")
    assert served_by(get(lab, lb_ip, "foo.bar.com")) == "foo-bar-com"
    assert get(lab, lb_ip, "subdomain.bar.com")["status"] == 404
    r = get(lab, lb_ip, "bar.foo.com")
    assert served_by(r) == "wildcard-foo-com" and json.loads(r["body"])["host"] == "bar.foo.com"
    assert get(lab, lb_ip, "baz.bar.foo.com")["status"] == 404
    assert get(lab, lb_ip, "foo.com")["status"] == 404
    delete_ingress(kc, lab, lb_ip, "host-rules", "bar.foo.com")


PATH_RULES = {"rules": [
    rule("exact-path-rules", [("/foo", "Exact", "foo-exact")]),
    rule("prefix-path-rules", [("/foo", "Prefix", "foo-prefix"), ("/aaa/bbb", "Prefix", "aaa-slash-bbb-prefix"),
                               ("/aaa", "Prefix", "aaa-prefix")]),
    rule("mixed-path-rules", [("/foo", "Prefix", "foo-prefix"), ("/foo", "Exact", "foo-exact")]),
    rule("trailing-slash-path-rules", [("/aaa/bbb/", "Prefix", "aaa-slash-bbb-slash-prefix"),
                                       ("/foo/", "Exact", "foo-slash-exact")])]}
PATH_SCENARIOS = [  # the conformance suite's path_rules.feature: host, path, service (None: 404)
    ("exact-path-rules", "/foo", "foo-exact"), ("exact-path-rules", "/foo/", None),
    ("exact-path-rules", "/FOO", None), ("exact-path-rules", "/bar", None),
    ("prefix-path-rules", "/foo", "foo-prefix"), ("prefix-path-rules", "/foo/", "foo-prefix"),
    ("prefix-path-rules", "/FOO", None), ("prefix-path-rules", "/aaa/bbb", "aaa-slash-bbb-prefix"),
    ("prefix-path-rules", "/aaa/bbb/ccc", "aaa-slash-bbb-prefix"), ("prefix-path-rules", "/aaa/ccc", "aaa-prefix"),
    ("prefix-path-rules", "/aaaccc", None), ("mixed-path-rules", "/foo", "foo-exact"),
    ("trailing-slash-path-rules", "/aaa/bbb", "aaa-slash-bbb-slash-prefix"),
    ("trailing-slash-path-rules", "/aaa/bbb/", "aaa-slash-bbb-slash-prefix"),
    ("trailing-slash-path-rules", "/foo", None)]


def test_path_rules(kc, lab, lb_ip):
    make_ingress(kc, "path-rules", PATH_RULES)
    wait_for(lambda: status_ip(kc, "path-rules") == lb_ip, 20, "the Ingress status address")
    wait_for(lambda: get(lab, lb_ip, "exact-path-rules", "/foo").get("status") == 200, 20, "the rules")
    answers = requests(lab, [{"url": f"http://{lb_ip}{p}", "host": h} for h, p, _ in PATH_SCENARIOS])
    for (host, p, want), r in zip(PATH_SCENARIOS, answers):
        if want is None:
            assert r["status"] == 404, (host, p, r)
        else:
            assert served_by(r) == want, (host, p, r)
            assert json.loads(r["body"])["path"] == p
    delete_ingress(kc, lab, lb_ip, "path-rules", "exact-path-rules")


def test_api_reference_path_table(kc, lab, lb_ip):
    """The API reference's table, one host per row; rule j of a row goes to SERVICES[1 + j]."""
    rows = API_TABLE
    rules = [rule(f"row{i}.table", [(p, t, SERVICES[1 + j]) for j, (t, p) in enumerate(rs)])
             for i, (rs, _, _) in enumerate(rows)]
    make_ingress(kc, "path-table", {"rules": rules})
    wait_for(lambda: get(lab, lb_ip, "row0.table", "/").get("status") == 200, 20, "the table to be served")
    answers = requests(lab, [{"url": f"http://{lb_ip}{req}", "host": f"row{i}.table"}
                             for i, (_, req, _) in enumerate(rows)])
    for i, ((rs, req, want), r) in enumerate(zip(rows, answers)):
        if want is None:
            assert r["status"] == 404, (rs, req, r)
            continue
        wtype, _, wpath = want.rpartition(" ")
        j = next(j for j, (t, p) in enumerate(rs) if p == wpath and (not wtype or t == wtype))
        assert served_by(r) == SERVICES[1 + j], (rs, req, r)
    delete_ingress(kc, lab, lb_ip, "path-table", "row0.table")


def test_ingress_class(kc, lab, lb_ip):
    make_ingress(kc, "test-ingress-class", {"ingressClassName": "some-invalid-class-name",
                                            "rules": [rule("ingress-class", [("/", "Prefix", "foo-prefix")])]})
    make_ingress(kc, "class-witness", {"ingressClassName": "trellis",
                                       "rules": [rule("class-witness", [("/", "Prefix", "foo-prefix")])]})
    wait_for(lambda: status_ip(kc, "class-witness") == lb_ip, 20, "the witness' status address")
    # the witness came after it: the controller has seen the invalid one, and ignores it
    assert status_ip(kc, "test-ingress-class") is None
    assert get(lab, lb_ip, "ingress-class")["status"] == 404
    # taking it into our class serves it; leaving it removes the address
    kc.patch(NET, "ingresses", "test-ingress-class", {"spec": {"ingressClassName": "trellis"}}, NS)
    wait_for(lambda: status_ip(kc, "test-ingress-class") == lb_ip, 20, "the status address")
    assert served_by(get(lab, lb_ip, "ingress-class")) == "foo-prefix"
    kc.patch(NET, "ingresses", "test-ingress-class", {"spec": {"ingressClassName": "some-invalid-class-name"}}, NS)
    wait_for(lambda: status_ip(kc, "test-ingress-class") is None, 20, "the status address to be removed")
    kc.delete(NET, "ingresses", "test-ingress-class", NS)
    delete_ingress(kc, lab, lb_ip, "class-witness", "class-witness")


def test_default_backend_and_load_balancing(kc, lab, lb_ip):
    make_ingress(kc, "default-backend", {"defaultBackend": {"service": {"name": "echo-service",
                                                                        "port": {"number": 8080}}}})
    wait_for(lambda: status_ip(kc, "default-backend") == lb_ip, 20, "the Ingress status address")
    wait_for(lambda: get(lab, lb_ip, "my-host").get("status") == 200, 20, "the default backend")
    cases = [("GET", "my-host", "/"), ("GET", "my-host", "/sub-path"), ("POST", "some-host", "/"),
             ("PUT", "", "/resource"), ("DELETE", "some-host", "/resource"), ("PATCH", "my-host", "/resource")]
    answers = requests(lab, [{"method": m, "url": f"http://{lb_ip}{p}", "host": h} for m, h, p in cases])
    for (method, host, p), r in zip(cases, answers):
        assert served_by(r) == "echo-service", r
        assert r["version"] == 11
        for h in ("content-length", "content-type", "date", "server"):
            assert r["headers"].get(h), (h, r["headers"])
        got = json.loads(r["body"])
        assert (got["method"], got["path"], got["proto"]) == (method, p, "HTTP/1.1")
        assert got["headers"]["User-Agent"] == ["Go-http-client/1.1"]
    # load balancing: 100 requests reach every one of the 4 replicas
    pods = {json.loads(r["body"])["pod"] for r in requests(lab, [{"url": f"http://{lb_ip}/", "host": "lb"}] * 100)}
    assert len(pods) == 4, pods
    kc.delete(NET, "ingresses", "default-backend", NS)
    wait_for(lambda: get(lab, lb_ip, "my-host").get("status") == 404, 20, "the default backend to go")


def openssl_cert(tmp_path, host: str):
    crt, key = tmp_path / f"{host}.crt", tmp_path / f"{host}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout", str(key),
                    "-out", str(crt), "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}"],
                   check=True, capture_output=True)
    return crt, key


def tls_secret(name: str, crt, key) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "type": "kubernetes.io/tls",
            "data": {"tls.crt": base64.b64encode(crt.read_bytes()).decode(),
                     "tls.key": base64.b64encode(key.read_bytes()).decode()}}


def test_tls_two_hosts_sni_default_cert_and_secret_change(kc, lab, lb_ip, tmp_path):
    a_crt, a_key = openssl_cert(tmp_path, "a.tls.test")
    b_crt, b_key = openssl_cert(tmp_path, "b.tls.test")
    kc.create("v1", "secrets", tls_secret("a-tls", a_crt, a_key), NS)
    kc.create("v1", "secrets", tls_secret("b-tls", b_crt, b_key), NS)
    make_ingress(kc, "tls", {"tls": [{"hosts": ["a.tls.test"], "secretName": "a-tls"},
                                     {"hosts": ["b.tls.test"], "secretName": "b-tls"}],
                             "rules": [rule("a.tls.test", [("/", "Prefix", "foo-prefix")]),
                                       rule("b.tls.test", [("/", "Prefix", "aaa-prefix")]),
                                       rule("c.tls.test", [("/", "Prefix", "foo-exact", 8080)])]})
    wait_for(lambda: get(lab, lb_ip, "a.tls.test", https=True, ca=str(a_crt)).get("status") == 200, 20, "TLS")
    a, b, c = requests(lab, [{"url": f"https://{lb_ip}/", "host": h, "ca": str(crt)} for h, crt in
                             (("a.tls.test", a_crt), ("b.tls.test", b_crt))] +
                       [{"url": f"https://{lb_ip}/", "host": "c.tls.test"}])
    assert served_by(a) == "foo-prefix" and a["cert_cn"] == "a.tls.test"
    assert served_by(b) == "aaa-prefix" and b["cert_cn"] == "b.tls.test"
    assert served_by(c) == "foo-exact" and c["cert_cn"] == "trellis-ingress-default"  # no certificate: default
    assert get(lab, lb_ip, "c.tls.test")["status"] == 200  # not a TLS host: no redirect
    # a Secret that changes is served within seconds
    n_crt, n_key = openssl_cert(_sub(tmp_path), "a.tls.test")
    kc.update("v1", "secrets", dict(tls_secret("a-tls", n_crt, n_key), metadata={"name": "a-tls", "namespace": NS}))
    wait_for(lambda: get(lab, lb_ip, "a.tls.test", https=True, ca=str(n_crt)).get("status") == 200, 10,
             "the new certificate")
    # a malformed Secret: an Event, and the host keeps serving plain HTTP
    kc.patch("v1", "secrets", "b-tls", {"data": {"tls.crt": base64.b64encode(b"garbage").decode()}}, NS)
    wait_for(lambda: get(lab, lb_ip, "b.tls.test").get("status") == 200, 20, "plain HTTP for b.tls.test")
    evs = kc.list("v1", "events", NS)[0]
    assert any(e["reason"] == "InvalidTLSSecret" and e["involvedObject"]["name"] == "b-tls" for e in evs)
    kc.delete(NET, "ingresses", "tls", NS)


def _sub(tmp_path):
    d = tmp_path / "renewed"
    d.mkdir()
    return d


def test_twenty_changes_under_load_lose_nothing(kc, lab, lb_ip):
    make_ingress(kc, "steady", {"rules": [rule("steady.test", [("/", "Prefix", "echo-service")])]})
    wait_for(lambda: get(lab, lb_ip, "steady.test").get("status") == 200, 20, "the steady host")
    pod = running_pods(kc, "kube-system", "app.kubernetes.io/name=trellis-ingress", 1)[0]
    client_ns = os.path.join(kns.NETNS_DIR, lab.ns("client"))
    wrk = [subprocess.Popen(["nsenter", f"--net={client_ns}", "--", "wrk", "-t1", "-c4", "-d35s", "--timeout", "5s",
                             "-H", "Host: steady.test", *extra, f"http://{lb_ip}/"], stdout=subprocess.PIPE, text=True)
           for extra in ([], ["-H", "Connection: close"])]
    svc = {"metadata": {"name": ""}, "spec": {"selector": {"app.kubernetes.io/name": "foo-exact"},
                                              "ports": [{"name": "http", "port": 8080, "targetPort": 3000}]}}
    try:
        for i in range(20):
            # a path to a new Service: a new haproxy backend, so a reload, waited for until served
            kc.create("v1", "services", dict(svc, metadata={"name": f"change-{i}"}), NS)
            make_ingress(kc, f"change-{i}", {"rules": [rule("changes.test", [(f"/c{i}", "Exact", f"change-{i}")])]})
            wait_for(lambda: get(lab, lb_ip, "changes.test", f"/c{i}").get("status") == 200, 20, f"change {i}")
            # a new path to a known backend: map entries through the runtime API, no reload
            make_ingress(kc, f"runtime-{i}", {"rules": [rule("changes.test", [(f"/r{i}", "Exact", "foo-exact")])]})
            wait_for(lambda: get(lab, lb_ip, "changes.test", f"/r{i}").get("status") == 200, 20, f"runtime {i}")
        outs = [w.communicate(timeout=60)[0] for w in wrk]
    finally:
        for w in wrk:
            if w.poll() is None:
                w.kill()
    for out in outs:
        assert re.search(r"\d+ requests in", out), out
        assert "Socket errors" not in out and "Non-2xx" not in out, out
    log = subprocess.run([sys.executable, "-m", "trellis.cli.main", "logs", "--lab", lab.name, "-n", "kube-system",
                          pod["metadata"]["name"]], capture_output=True, text=True).stdout
    assert len(re.findall(r"haproxy reloaded", log)) >= 20
    assert len(re.findall(r"runtime API: \d+ commands", log)) >= 20
    for i in range(20):
        kc.delete(NET, "ingresses", f"change-{i}", NS)
        kc.delete(NET, "ingresses", f"runtime-{i}", NS)
        kc.delete("v1", "services", f"change-{i}", NS)
    delete_ingress(kc, lab, lb_ip, "steady", "steady.test")


def test_policy_judges_the_ingress_pod_and_explain_says_so(kc, lab, lb_ip):
    """A backend's policy sees the ingress pod as the source: admitting only the outside client
    blocks the request at the backend (haproxy answers 503), admitting the ingress pod lets it
    through; `trellis explain outside http://HOST/PATH` names the ingress pod and agrees each time."""
    for api, plural, obj in echo_objects("explain-echo", 2):  # its own backends: none has pooled connections
        kc.create(api, plural, obj, NS)
    running_pods(kc, NS, "app.kubernetes.io/name=explain-echo", 2, timeout=60)
    make_ingress(kc, "explained", {"rules": [rule("explain.example", [("/", "Prefix", "explain-echo")])]})

    def explain():
        r = subprocess.run([sys.executable, "-m", "trellis.cli.main", "explain", "--lab", lab.name, "outside",
                            "http://explain.example/x", "80/tcp", "-o", "json"], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode in (0, 3), r.stderr
        return json.loads(r.stdout)
    np_api = "networking.k8s.io/v1"
    sel = {"matchLabels": {"app.kubernetes.io/name": "explain-echo"}}
    ing_pod = running_pods(kc, "kube-system", "app.kubernetes.io/name=trellis-ingress", 1)[0]["status"]["podIP"]
    try:
        # no request yet: haproxy keeps its connections to backends open, and a policy judges new
        # connections only (docs/policy.md)
        wait_for(lambda: status_ip(kc, "explained") == lb_ip, 20, "the Ingress served")
        doc = explain()
        assert doc["verdict"] == "allowed" and len(doc["hops"]) == 2  # one per echo pod
        assert {h["source_seen"] for h in doc["hops"]} == {ing_pod}
        kc.create(np_api, "networkpolicies", {"apiVersion": np_api, "kind": "NetworkPolicy",
                                              "metadata": {"name": "only-outside"}, "spec": {
            "podSelector": sel, "ingress": [{"from": [{"ipBlock": {"cidr": f"{topology.CLIENT_IP}/32"}}]}]}}, NS)
        assert explain()["verdict"] == "denied"
        # haproxy retries a rejected connection (about 7 s) before it answers 503
        wait_for(lambda: get(lab, lb_ip, "explain.example", "/x", timeout=20).get("status") == 503, 40,
                 "the backends blocked")
        kc.patch(np_api, "networkpolicies", "only-outside", {"spec": {"ingress": [{"from": [{
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "trellis-ingress"}}}]}]}}, NS)
        wait_for(lambda: get(lab, lb_ip, "explain.example", "/x").get("status") == 200, 20, "the ingress admitted")
        assert explain()["verdict"] == "allowed"
    finally:
        kc.delete(np_api, "networkpolicies", "only-outside", NS) if kc.get_or_none(
            np_api, "networkpolicies", "only-outside", NS) else None
        kc.delete(NET, "ingresses", "explained", NS)
        for api, plural, obj in echo_objects("explain-echo"):
            kc.delete(api, plural, obj["metadata"]["name"], NS)


def test_probe_ingress_hosts_and_paths_agrees_with_explain(kc, lab, lb_ip):
    """`trellis probe --ingresses`, from a pod and from outside: a backend on node-1 answers, one
    on node-2 whose policy admits only the outside client is denied at the ingress pod's
    connection, a Service without endpoints is refused; explain agrees with every cell."""
    made = []
    for name, node in (("probe-a", "node-1"), ("probe-b", "node-2")):
        for api, plural, obj in echo_objects(name):
            if plural == "deployments":
                obj["spec"]["template"]["spec"]["nodeName"] = node
            kc.create(api, plural, obj, NS)
            made.append((api, plural, obj["metadata"]["name"]))
    kc.create("v1", "services", {"metadata": {"name": "probe-z"}, "spec": {
        "selector": {"app.kubernetes.io/name": "nothing"}, "ports": [{"name": "http", "port": 8080}]}}, NS)
    made.append(("v1", "services", "probe-z"))
    np_api = "networking.k8s.io/v1"
    kc.create(np_api, "networkpolicies", {"metadata": {"name": "probe-b-outside-only"}, "spec": {
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "probe-b"}},
        "ingress": [{"from": [{"ipBlock": {"cidr": f"{topology.CLIENT_IP}/32"}}]}]}}, NS)
    made.append((np_api, "networkpolicies", "probe-b-outside-only"))
    make_ingress(kc, "probed", {"rules": [rule("probe.test", [("/a", "Prefix", "probe-a"), ("/b", "Prefix", "probe-b"),
                                                              ("/z", "Prefix", "probe-z")])]})
    made.append((NET, "ingresses", "probed"))
    try:
        for name in ("probe-a", "probe-b"):
            running_pods(kc, NS, f"app.kubernetes.io/name={name}", 1, timeout=60)
        wait_for(lambda: get(lab, lb_ip, "probe.test", "/a").get("status") == 200, 20, "the probed Ingress")

        def probe(*extra):
            r = subprocess.run([sys.executable, "-m", "trellis.cli.main", "probe", "--lab", lab.name, "--namespaces", NS,
                                "--ingresses", "--explain", "-o", "json", *extra], capture_output=True, text=True,
                               timeout=180)
            assert r.returncode in (0, 1), r.stderr
            return json.loads(r.stdout)
        want = {"probe.test/a": "ok", "probe.test/b": "denied", "probe.test/z": "refused"}
        for extra in (["-l", "app.kubernetes.io/name=probe-a"], ["--from-outside"]):
            doc = probe(*extra)
            rows = doc["observed"]["TCP/80"]
            assert len(rows) == 1, rows
            row = next(iter(rows.values()))
            got = {dst.split(" ", 1)[1]: seen for dst, seen in row.items() if dst.startswith("ing/")}
            assert {k: got.get(k) for k in want} == want, (extra, row)
            assert doc["disagreements"] == [], (extra, doc)
            # explain's word for the denied cell names the backend's policy, not the ingress
            ing_cells = {dst: v for dst, v in doc["explained"]["TCP/80"][next(iter(rows))].items()
                         if dst.startswith("ing/")}
            assert ing_cells[f"ing/{NS}/probed probe.test/b"] == "denied"
    finally:
        for api, plural, name in reversed(made):
            if kc.get_or_none(api, plural, name, NS):
                kc.delete(api, plural, name, NS)
