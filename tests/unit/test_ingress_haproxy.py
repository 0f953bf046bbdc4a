"""The rendered configuration in a real haproxy (master-worker) on 127.0.0.1, with real HTTP
backends on 127.0.0.1: routing as the API reference says, 404/503/Server header, runtime-API
endpoint changes without reload, and reloads under load without a failed request."""
from __future__ import annotations

import http.client
import json
import random
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from ingress_objects import ingress, ingress_class, path, service, slice_
from ingress_cases import API_TABLE

from trellis.ingress.compile import compile_plan
from trellis.ingress.haproxy import runtime_commands
from trellis.ingress.runtime import HAProxy
from trellis.ingress.tlscerts import self_signed

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):  # noqa: N802
        body = json.dumps({"backend": self.server.name, "host": self.headers.get("Host"), "path": self.path}).encode()
        self.send_response_only(200)  # no Server header: the ingress adds its own
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def free_port() -> int:
    """A free port below the ephemeral range, so that no client connection takes it before
    haproxy binds it (haproxy binds with SO_REUSEPORT: a port in use would not even fail)."""
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if not _listening(port):
            return port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def backends():
    servers = {}

    def make(name: str) -> int:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        srv.daemon_threads = True
        srv.name = name
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers[name] = srv
        return srv.server_address[1]
    yield make
    for s in servers.values():
        s.shutdown()
        s.server_close()


@pytest.fixture
def haproxy():
    d = tempfile.mkdtemp(prefix="trellis-ingress-test-")
    h = HAProxy(d, free_port(), free_port(), bind_address="127.0.0.1")
    yield h
    h.stop()
    shutil.rmtree(d, ignore_errors=True)


def get(h: HAProxy, host: str, target: str, https: bool = False, sni: str | None = None):
    if https:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        c = http.client.HTTPSConnection("127.0.0.1", h.paths.https_port, timeout=5, context=ctx)
        raw = socket.create_connection(("127.0.0.1", h.paths.https_port), timeout=5)
        c.sock = ctx.wrap_socket(raw, server_hostname=sni or host.split(":")[0])
    else:
        c = http.client.HTTPConnection("127.0.0.1", h.paths.http_port, timeout=5)
    c.request("GET", target, headers={"Host": host})
    r = c.getresponse()
    body = r.read()
    peer = c.sock.getpeercert(binary_form=True) if https else None
    c.close()
    return r.status, r.headers, body, peer  # case-insensitive: haproxy sends lower-case names


def world(backends, names: list[str], ready: bool = True):
    svcs, slices = {}, {}
    for n in names:
        port = backends(n)
        svcs[f"default/{n}"] = service(n, [("http", 80, port)])
        slices[f"default/{n}"] = [slice_(n, [("http", port)], [("127.0.0.1", ready)])]
    return svcs, slices


def test_api_path_table_through_haproxy(backends, haproxy):
    ings, names = [], []
    for i, (rules, _, _) in enumerate(API_TABLE):
        ps = []
        for j, (t, p) in enumerate(rules):
            names.append(f"c{i}r{j}")
            ps.append(path(p, f"c{i}r{j}", t))
        ings.append(ingress(f"c{i}", [(f"c{i}.test", ps)], created=f"2024-01-01T00:00:{i:02d}Z"))
    svcs, slices = world(backends, names)
    plan = compile_plan(ings, [ingress_class()], svcs, slices, {}, default_cert=self_signed())
    haproxy.write(plan)
    haproxy.start()
    for i, (rules, req, want) in enumerate(API_TABLE):
        status, headers, body, _ = get(haproxy, f"c{i}.test:80", req + "?q=1")
        if want is None:
            assert status == 404, (i, rules, req)
            assert headers["Server"] == "trellis-ingress"
            continue
        wtype, _, wpath = want.rpartition(" ")
        j = next(j for j, (t, p) in enumerate(rules) if p == wpath and (not wtype or t == wtype))
        assert status == 200, (i, rules, req, body)
        got = json.loads(body)
        assert got == {"backend": f"c{i}r{j}", "host": f"c{i}.test:80", "path": req + "?q=1"}, (rules, req)
        assert headers["Server"] == "trellis-ingress"


def test_wildcard_default_backend_503_and_runtime_endpoint_changes(backends, haproxy):
    svcs, slices = world(backends, ["wild", "dflt", "down"])
    ings = [ingress("a", [("*.foo.com", [path("/", "wild")]), ("down.com", [path("/", "down")])],
                    default={"service": {"name": "dflt", "port": {"name": "http"}}})]
    slices["default/down"][0]["endpoints"][0]["conditions"]["ready"] = False
    plan = compile_plan(ings, [ingress_class()], svcs, slices, {}, default_cert=self_signed())
    haproxy.write(plan)
    haproxy.start()
    assert json.loads(get(haproxy, "x.foo.com", "/")[2])["backend"] == "wild"
    assert json.loads(get(haproxy, "a.x.foo.com", "/")[2])["backend"] == "dflt"
    assert json.loads(get(haproxy, "foo.com", "/")[2])["backend"] == "dflt"
    status, headers, body, _ = get(haproxy, "down.com", "/")
    assert status == 503 and headers["Server"] == "trellis-ingress" and body == b"503 no ready endpoints\n"
    # the endpoint becomes ready: a runtime-API change, same worker, no reload
    pid = haproxy.worker_pid()
    slices["default/down"][0]["endpoints"][0]["conditions"]["ready"] = True
    prev = {n: b.slots for n, b in plan.backends.items()}
    new = compile_plan(ings, [ingress_class()], svcs, slices, {}, prev, default_cert=plan.certs[0].pem)
    assert new.structure() == plan.structure()
    haproxy.apply(runtime_commands(plan, new, haproxy.paths))
    assert json.loads(get(haproxy, "down.com", "/")[2])["backend"] == "down"
    assert haproxy.worker_pid() == pid and haproxy.reloads == 0
    # and goes away again: 503
    slices["default/down"][0]["endpoints"] = []
    gone = compile_plan(ings, [ingress_class()], svcs, slices, {}, {n: b.slots for n, b in new.backends.items()},
                        default_cert=plan.certs[0].pem)
    haproxy.apply(runtime_commands(new, gone, haproxy.paths))
    assert get(haproxy, "down.com", "/")[0] == 503
    # an endpoint nothing listens on: haproxy's own 503, told apart from "no ready endpoints"
    slices["default/down"][0]["endpoints"] = [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]
    slices["default/down"][0]["ports"][0]["port"] = free_port()
    dead = compile_plan(ings, [ingress_class()], svcs, slices, {}, {n: b.slots for n, b in gone.backends.items()},
                        default_cert=plan.certs[0].pem)
    haproxy.apply(runtime_commands(gone, dead, haproxy.paths))
    status, headers, body, _ = get(haproxy, "down.com", "/")
    assert status == 503 and body == b"503 no endpoint could be connected to\n"


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_reloads_under_load_lose_nothing(backends, haproxy):
    svcs, slices = world(backends, ["a", "b"])
    cert = self_signed()

    def plan_n(n: int):
        ps = [path("/", "a")] + [path(f"/p{i}", "b") for i in range(n)]
        return compile_plan([ingress("x", [("", ps)])], [ingress_class()], svcs, slices, {}, default_cert=cert)
    haproxy.write(plan_n(0))
    haproxy.start()
    url = f"http://127.0.0.1:{haproxy.paths.http_port}/"
    runs = [subprocess.Popen(["wrk", "-t1", "-c4", "-d4s", url], stdout=subprocess.PIPE, text=True),
            subprocess.Popen(["wrk", "-t1", "-c4", "-d4s", "-H", "Connection: close", url],
                             stdout=subprocess.PIPE, text=True)]
    for n in range(1, 11):
        haproxy.write(plan_n(n))
        haproxy.reload()
    outs = [r.communicate(timeout=30)[0] for r in runs]
    assert haproxy.reloads == 10
    for out in outs:
        assert "requests in" in out, out
        assert "Socket errors" not in out and "Non-2xx" not in out, out


def test_rejected_config_keeps_the_live_one(backends, haproxy):
    svcs, slices = world(backends, ["a"])
    plan = compile_plan([ingress("x", [("", [path("/", "a")])])], [ingress_class()], svcs, slices, {},
                        default_cert=self_signed())
    haproxy.write(plan)
    haproxy.start()
    broken = compile_plan([], [ingress_class()], {}, {}, {}, default_cert=b"not a pem")
    with pytest.raises(Exception, match="haproxy rejected"):
        haproxy.write(broken)
    haproxy.reload()
    assert json.loads(get(haproxy, "h", "/")[2])["backend"] == "a"


def test_a_thousand_ingresses(backends, haproxy):
    svcs, slices = world(backends, ["a"])
    ings = [ingress(f"m{i}", [(f"h{i}.many.test", [path("/", "a")])], created=f"2024-01-01T{i // 3600:02d}:"
                    f"{i // 60 % 60:02d}:{i % 60:02d}Z", tls=[{"hosts": [f"h{i}.many.test"]}]) for i in range(1000)]
    plan = compile_plan(ings, [ingress_class()], svcs, slices, {}, default_cert=self_signed())
    haproxy.write(plan)
    haproxy.start()
    assert get(haproxy, "h999.many.test", "/")[0] == 308
    assert json.loads(get(haproxy, "h999.many.test", "/", https=True)[2])["backend"] == "a"
    assert get(haproxy, "h1000.many.test", "/")[0] == 404


HOSTS = ["a.test", "b.test", "*.w.test", "x.w.test", ""]
PATHS = ["/", "/foo", "/foo/", "/foo/bar", "/foob", "/a;b", "/deep/er/path"]
REQ_HOSTS = ["a.test", "A.TEST:80", "b.test", "x.w.test", "y.w.test", "z.y.w.test", ".w.test", "other.test"]
REQ_PATHS = ["/", "/foo", "/foo/", "/foo/bar", "/foo/bar/baz", "/foobar", "/foob", "/a;b", "/deep/er/path/x", "/x"]


def random_ingresses(rng: random.Random) -> list[dict]:
    # "all" references every backend, so that every plan has the same structure
    ings = [ingress("all", [("all.test", [path(f"/{s}", s) for s in ("s0", "s1", "s2")])])]
    for i in range(rng.randint(0, 6)):
        rules = [(rng.choice(HOSTS), [path(rng.choice(PATHS), rng.choice(["s0", "s1", "s2"]),
                                           rng.choice(["Exact", "Prefix", "ImplementationSpecific"]))
                                      for _ in range(rng.randint(1, 3))]) for _ in range(rng.randint(1, 2))]
        ings.append(ingress(f"r{i}", rules, created=f"2024-01-01T00:00:{rng.randint(0, 59):02d}Z"))
    return ings


def test_host_and_path_changes_by_runtime_api_route_as_select_says(backends, haproxy):
    """Random Ingress sets one after the other, each applied to the live haproxy through the
    runtime API (maps): every request goes where ``compile.select`` says, no reload."""
    from trellis.ingress.compile import select
    svcs, slices = world(backends, ["s0", "s1", "s2"])
    cert = self_signed()
    rng = random.Random(7)

    def plan_of(ings, prev=None):
        return compile_plan(ings, [ingress_class()], svcs, slices, {}, prev, default_cert=cert)
    plan = plan_of(random_ingresses(rng))
    haproxy.write(plan)
    haproxy.start()
    pid, checked = haproxy.worker_pid(), 0
    for step in range(25):
        new = plan_of(random_ingresses(rng), {n: b.slots for n, b in plan.backends.items()})
        assert new.structure() == plan.structure()
        haproxy.apply(runtime_commands(plan, new, haproxy.paths))
        plan = new
        for host in REQ_HOSTS:
            for req in REQ_PATHS:
                route = select(plan, host, req)
                status, _, body, _ = get(haproxy, host, req)
                if route is None:
                    assert status == 404, (step, host, req)
                else:
                    want = plan.backends[route.backend].ref.service
                    assert status == 200 and json.loads(body)["backend"] == want, (step, host, req, body)
                checked += 1
    assert haproxy.worker_pid() == pid and haproxy.reloads == 0
    # the files written for the last plan route the same after a reload
    haproxy.write(plan, check=False)
    haproxy.reload()
    for host in REQ_HOSTS:
        for req in REQ_PATHS:
            route = select(plan, host, req)
            want = plan.backends[route.backend].ref.service if route else None
            status, _, body, _ = get(haproxy, host, req)
            assert (json.loads(body)["backend"] if status == 200 else None) == want, (host, req)
    assert checked == 25 * len(REQ_HOSTS) * len(REQ_PATHS)
