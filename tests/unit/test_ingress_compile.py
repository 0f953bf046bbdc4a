"""The ingress compiler against networking.k8s.io/v1 semantics (pure; no haproxy)."""
from __future__ import annotations

import base64

import pytest
from ingress_cases import API_TABLE
from ingress_objects import backend, ingress, ingress_class, path, service, slice_

from trellis.ingress.compile import assign_slots, compile_plan, select
from trellis.ingress.model import path_matches
from trellis.ingress.tlscerts import self_signed



def _svc_name(i: int) -> str:
    return f"s{i}"


def plan_for(rules: list[tuple[str, str]], host: str = "", **kw):
    ings = [ingress("t", [(host, [path(p, _svc_name(i), t) for i, (t, p) in enumerate(rules)])], **kw)]
    svcs = {f"default/{_svc_name(i)}": service(_svc_name(i), [("", 80, 80)]) for i in range(len(rules))}
    return compile_plan(ings, [ingress_class()], svcs, {}, {})


@pytest.mark.parametrize("rules,request_path,want", API_TABLE)
def test_api_reference_path_table(rules, request_path, want):
    plan = plan_for(rules)
    got = select(plan, "any.host", request_path)
    if want is None:
        assert got is None
        return
    wtype, _, wpath = want.rpartition(" ")
    assert got is not None and got.rule.path == wpath
    if wtype:
        assert got.rule.path_type == wtype
    i = next(i for i, (t, p) in enumerate(rules) if p == wpath and (not wtype or t == wtype))
    assert got.backend == f"b.default.{_svc_name(i)}.80"


@pytest.mark.parametrize("rule_host,request_host,want", [
    ("foo.bar.com", "foo.bar.com", True), ("foo.bar.com", "FOO.bar.com:8080", True),
    ("foo.bar.com", "bar.com", False), ("*.foo.com", "bar.foo.com", True),
    ("*.foo.com", "foo.com", False), ("*.foo.com", "baz.bar.foo.com", False),
    ("*.foo.com", ".foo.com", False), ("", "whatever.example", True)])
def test_hosts(rule_host, request_host, want):
    plan = plan_for([("Prefix", "/")], host=rule_host)
    assert (select(plan, request_host, "/") is not None) is want


def test_exact_host_beats_wildcard_beats_no_host_and_host_is_chosen_before_paths():
    ings = [ingress("a", [("", [path("/", "any")]), ("*.foo.com", [path("/", "wild")]),
                          ("bar.foo.com", [path("/only", "exact")])])]
    svcs = {f"default/{n}": service(n, [("", 80, 80)]) for n in ("any", "wild", "exact")}
    plan = compile_plan(ings, [ingress_class()], svcs, {}, {})
    assert [v.host for v in plan.vhosts] == ["bar.foo.com", "*.foo.com", ""]
    assert select(plan, "bar.foo.com", "/only/x").backend == "b.default.exact.80"
    assert select(plan, "bar.foo.com", "/other") is None  # host chosen: its paths only -> default backend
    assert select(plan, "qux.foo.com", "/other").backend == "b.default.wild.80"
    assert select(plan, "foo.com", "/").backend == "b.default.any.80"


def test_merge_oldest_first_and_conflicts_reported():
    old = ingress("old", [("h.com", [path("/", "a")])], created="2024-01-01T00:00:00Z")
    young = ingress("young", [("h.com", [path("/", "b"), path("/y", "b")])], created="2024-02-01T00:00:00Z",
                    default=backend("b"))
    older_default = ingress("d", [], created="2023-01-01T00:00:00Z", default=backend("a"))
    plan = compile_plan([young, old, older_default], [ingress_class()], {}, {}, {})
    assert select(plan, "h.com", "/").backend == "b.default.a.80"
    assert select(plan, "h.com", "/y/1").backend == "b.default.b.80"
    assert plan.default_backend == "b.default.a.80"
    reasons = {(p.name, p.reason) for p in plan.problems}
    assert ("young", "PathConflict") in reasons and ("young", "DefaultBackendIgnored") in reasons
    assert plan.served == ["default/d", "default/old", "default/young"]


@pytest.mark.parametrize("cls_name,classes,served", [
    ("trellis", [ingress_class()], True),
    ("other", [ingress_class(), ingress_class("other", False, "example.com/else")], False),
    ("missing", [ingress_class()], False),
    (None, [ingress_class()], True),  # no class: the default class, which is ours
    (None, [ingress_class(default=False)], False),
    (None, [ingress_class(default=False), ingress_class("other", True, "example.com/else")], False),
])
def test_class_selection(cls_name, classes, served):
    plan = compile_plan([ingress("x", [("", [path("/", "a")])], cls=cls_name)], classes, {}, {}, {})
    assert (plan.served == ["default/x"]) is served
    assert bool(plan.vhosts) is served


def test_legacy_class_annotation():
    ing = ingress("x", [("", [path("/", "a")])], annotations={"kubernetes.io/ingress.class": "other"})
    assert compile_plan([ing], [ingress_class()], {}, {}, {}).served == []


def test_ports_by_number_and_name_resolve_to_ready_endpoints():
    svc = service("web", [("http", 80, 3000), ("admin", 81, 9000)])
    sl = slice_("web", [("http", 3000), ("admin", 9000)],
                [("10.244.1.2", True), ("10.244.2.3", True), ("10.244.3.4", False)])
    ings = [ingress("x", [("", [path("/n", "web", port=81), path("/h", "web", port="http")])])]
    plan = compile_plan(ings, [ingress_class()], {"default/web": svc}, {"default/web": [sl]}, {})
    assert plan.backends["b.default.web.81"].endpoints == {("10.244.1.2", 9000), ("10.244.2.3", 9000)}
    assert plan.backends["b.default.web.http"].endpoints == {("10.244.1.2", 3000), ("10.244.2.3", 3000)}


def test_missing_service_and_port_are_problems_and_empty_backends():
    ings = [ingress("x", [("", [path("/a", "gone"), path("/b", "web", port=99)])])]
    plan = compile_plan(ings, [ingress_class()], {"default/web": service("web", [("", 80, 80)])}, {}, {})
    assert {p.reason for p in plan.problems} == {"ServiceNotFound", "ServicePortNotFound"}
    assert all(not b.endpoints for b in plan.backends.values())


def test_resource_backend_rejected_with_a_problem_rest_served():
    ing = ingress("x", [("", [path("/ok", "web"),
                              {"path": "/r", "pathType": "Prefix",
                               "backend": {"resource": {"apiGroup": "k8s.example.com", "kind": "StorageBucket",
                                                        "name": "static"}}}])])
    plan = compile_plan([ing], [ingress_class()], {}, {}, {})
    assert [p.reason for p in plan.problems if p.name == "x"][0] == "UnsupportedBackend"
    assert "spec.rules[0].http.paths[1].backend.resource" in plan.problems[0].message
    assert select(plan, "h", "/ok").backend == "b.default.web.80" and select(plan, "h", "/r") is None


@pytest.mark.parametrize("bad_path,field", [
    ({"path": "foo", "pathType": "Prefix", "backend": backend("a")}, ".path"),
    ({"path": "/a b", "pathType": "Exact", "backend": backend("a")}, ".path"),
    ({"path": "/a", "pathType": "Regex", "backend": backend("a")}, ".pathType"),
    ({"path": "/a", "pathType": "Prefix", "backend": {"service": {"name": "a", "port": {}}}}, ".backend.service.port"),
])
def test_invalid_paths_name_the_field(bad_path, field):
    plan = compile_plan([ingress("x", [("", [bad_path])])], [ingress_class()], {}, {}, {})
    assert plan.problems and f"spec.rules[0].http.paths[0]{field}" in plan.problems[0].message


def test_slots_keep_positions_and_grow_by_doubling():
    a, b, c, d, e = [(f"10.0.0.{i}", 80) for i in range(1, 6)]
    s1 = assign_slots(None, {a, b})
    assert s1 == [a, b, None, None]
    s2 = assign_slots(s1, {b, c})
    assert s2 == [c, b, None, None]
    s3 = assign_slots(s2, {a, b, c, d, e})
    assert len(s3) == 8 and s3[:2] == [c, b] and set(s3) - {None} == {a, b, c, d, e}


def _tls_secret(name: str, pem: bytes, typ: str = "kubernetes.io/tls") -> dict:
    cert, _, key = pem.partition(b"-----END CERTIFICATE-----\n")
    cert += b"-----END CERTIFICATE-----\n"
    return {"metadata": {"name": name, "namespace": "default"}, "type": typ,
            "data": {"tls.crt": base64.b64encode(cert).decode(), "tls.key": base64.b64encode(key).decode()}}


def test_tls_certs_per_host_redirect_and_bad_secrets():
    good = _tls_secret("good", self_signed("a.com"))
    broken = dict(good, metadata={"name": "broken", "namespace": "default"},
                  data={"tls.crt": base64.b64encode(b"not a cert").decode(), "tls.key": good["data"]["tls.key"]})
    ings = [ingress("x", [("a.com", [path("/", "w")]), ("b.com", [path("/", "w")]), ("c.com", [path("/", "w")])],
                    tls=[{"hosts": ["a.com"], "secretName": "good"}, {"hosts": ["b.com"], "secretName": "broken"},
                         {"hosts": ["c.com"], "secretName": "absent"}]),
            ingress("noredirect", [("d.com", [path("/", "w")])], tls=[{"hosts": ["d.com"], "secretName": "good"}],
                    annotations={"trellis.dev/ssl-redirect": "false"}, created="2024-03-01T00:00:00Z")]
    plan = compile_plan(ings, [ingress_class()], {}, {}, {"default/good": good, "default/broken": broken},
                        default_cert=b"DEFAULT")
    assert [(c.name, c.hosts) for c in plan.certs] == [("default", ()), ("default_good", ("a.com", "d.com"))]
    redirect = {vh.host: vh.routes[0].redirect for vh in plan.vhosts}
    assert redirect == {"a.com": True, "b.com": False, "c.com": False, "d.com": False}
    reasons = sorted((p.kind, p.name, p.reason) for p in plan.problems if "TLS" in p.reason)
    assert reasons == [("Ingress", "x", "InvalidTLSSecret"), ("Ingress", "x", "InvalidTLSSecret"),
                       ("Secret", "broken", "InvalidTLSSecret")]


def test_path_matches_is_element_wise():
    assert path_matches("Prefix", "/foo", "/foo/bar") and not path_matches("Prefix", "/foo", "/foobar")
