"""The lab API server under malformed input: never a 5xx, nothing stored by a refused request.

The campaign of issue 15 found 79 answers 5xx (type errors, deep JSON, bad query
values, a 70 MB body answered 500) and objects stored with values of the wrong
type (image 5, hostNetwork "yes", replicas 10^30, a Service selector [1]) that
then crashed the kubelet and the controllers. Here hypothesis mutates valid
objects of the kinds users send (wrong types, unknown fields, huge numbers,
nesting, junk bytes, bad query values) and sends them through the real aiohttp
app, in process. After each request:

- the answer is a metav1 Status or an object, never 5xx;
- a refused request (4xx) changed nothing: same resourceVersion, same objects,
  same ClusterIPs and NodePorts allocated;
- an accepted object is stored as its Go struct would hold it: every value of
  its schema's type, no unknown field.

``TRELLIS_FUZZ_EXAMPLES`` sets the number of requests (default 1,500).
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import time

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings, strategies as st

from trellis.lab.apiserver import api as api_mod, reqinput, schema
from trellis.lab.apiserver.api import Api
from trellis.lab.apiserver.server import Server, make_app
from trellis.lab.apiserver.store import Store

EXAMPLES = int(os.environ.get("TRELLIS_FUZZ_EXAMPLES", "1500"))

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"app": "a"}},
       "spec": {"terminationGracePeriodSeconds": 5, "hostNetwork": False, "nodeName": "node-1",
                "containers": [{"name": "c", "image": "agnhost", "ports": [{"containerPort": 80}],
                                "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}}]}}
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"selector": {"app": "a"}, "type": "NodePort",
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}},
                       "template": {"metadata": {"labels": {"app": "a"}}, "spec": POD["spec"]}}}
CONFIGMAP = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"k": "v"}}
NETPOL = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "np"},
          "spec": {"podSelector": {"matchLabels": {"app": "a"}}, "policyTypes": ["Ingress"],
                   "ingress": [{"from": [{"podSelector": {}}], "ports": [{"port": 80}]}]}}
JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
       "spec": {"backoffLimit": 1, "template": {"spec": dict(POD["spec"], restartPolicy="Never")}}}
NAMESPACE = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns2"}}
# path prefix (namespaced in "default"), template
KINDS = {
    "pods": ("/api/v1/namespaces/default/pods", POD),
    "services": ("/api/v1/namespaces/default/services", SERVICE),
    "deployments": ("/apis/apps/v1/namespaces/default/deployments", DEPLOYMENT),
    "configmaps": ("/api/v1/namespaces/default/configmaps", CONFIGMAP),
    "networkpolicies": ("/apis/networking.k8s.io/v1/namespaces/default/networkpolicies", NETPOL),
    "jobs": ("/apis/batch/v1/namespaces/default/jobs", JOB),
    "namespaces": ("/api/v1/namespaces", NAMESPACE),
}
SEED = {"services": SERVICE, "deployments": DEPLOYMENT, "configmaps": CONFIGMAP, "pods": POD}

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                      st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                      st.sampled_from(["yes", "abc", "", "-bad-key", "a b", "1e30", "10.96.0.1", "TCP"]))
json_value = st.recursive(json_leaf, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                            st.dictionaries(st.text(max_size=8), kids, max_size=3)),
                          max_leaves=8)


def paths(obj, prefix=()):
    """Every path to a value inside obj (dict keys and list indices)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


def put_at(obj, path, value):
    if not path:
        return value
    out = copy.deepcopy(obj)
    cur = out
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return out


@st.composite
def mutated(draw, template):
    """template with one to three values replaced, fields added (known names in wrong places, typos) or removed."""
    obj = copy.deepcopy(template)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(paths(obj))))
        action = draw(st.sampled_from(["replace", "add", "remove"]))
        if action == "replace":
            obj = put_at(obj, where, draw(json_value))
        elif action == "add":
            target = obj
            for p in where:
                target = target[p]
            if isinstance(target, dict):
                key = draw(st.sampled_from(["replica", "imagePullPolcy", "spec", "metadata", "ports",
                                            "selector", "x"]) | st.text(max_size=6))
                target[key] = draw(json_value)
        elif where and action == "remove":
            parent = obj
            for p in where[:-1]:
                parent = parent[p]
            if isinstance(parent, dict):
                parent.pop(where[-1], None)
    return obj


def deep(n: int) -> bytes:
    return b'{"metadata":{"name":"deep"},"data":' + b"[" * n + b"]" * n + b"}"


raw_bodies = st.one_of(
    st.binary(max_size=40),
    st.just(b"k8s\x00" + b"\x0a\x05junk!"),  # a protobuf envelope with garbage
    st.sampled_from([b"\xff\xfe{", b"[1,2]", b"null", b"42", b'"s"', b"{", deep(300), deep(10_000),
                     b'{"metadata": []}', b'{"metadata": {"name": 5}}', b'{"metadata": {"labels": {"a b": "x"}}}']),
)
queries = st.dictionaries(
    st.sampled_from(["limit", "fieldValidation", "gracePeriodSeconds", "labelSelector", "fieldSelector",
                     "resourceVersion", "continue", "propagationPolicy", "tailLines", "dryRun"]),
    st.one_of(st.text(max_size=8), st.sampled_from(["abc", "-1", "10", "Strict", "Warn", "Ignore",
                                                    "a b c", "x=", "!!", "eyJ4IjoxfQ==", "All"])),
    max_size=2)


@st.composite
def requests(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    base, template = KINDS[kind]
    name = template["metadata"]["name"]
    method = draw(st.sampled_from(["POST", "POST", "PUT", "PATCH", "DELETE", "GET"]))
    path = base if method in ("POST", "GET") and draw(st.booleans()) else f"{base}/{name}"
    if method == "POST":
        path = base
    ctype = {"PATCH": draw(st.sampled_from(["application/merge-patch+json", "application/json-patch+json",
                                            "application/strategic-merge-patch+json"]))}.get(
        method, draw(st.sampled_from(["application/json", "application/json", "application/yaml",
                                      "application/vnd.kubernetes.protobuf"])))
    if draw(st.integers(0, 9)) < 7 and ctype != "application/vnd.kubernetes.protobuf":
        doc = draw(mutated(template)) if method != "PATCH" or "json-patch+" not in ctype else draw(
            st.lists(st.fixed_dictionaries({"op": st.sampled_from(["add", "replace", "remove", "test", "x"]),
                                            "path": st.sampled_from(["/spec/replicas", "/spec", "/metadata/labels/a",
                                                                     "/spec/containers/0/image", "", "/x/y/z"]),
                                            "value": json_value}), max_size=2))
        body = json.dumps(doc).encode()
    else:
        body = draw(raw_bodies)
    return method, path, ctype, body, draw(queries)


def snapshot(api: Api):
    return (api.store.rv, json.dumps({b: {f"{k[0]}/{k[1]}": o for k, o in objs.items()}
                                      for b, objs in api.store.buckets.items() if objs}, sort_keys=True),
            sorted(api.alloc.ips), sorted(api.alloc.ports))


def assert_typed(api: Api) -> None:
    """Every stored built-in object decodes against its schema with nothing to drop."""
    for bucket, objs in api.store.buckets.items():
        for obj in objs.values():
            group, _, version = obj["apiVersion"].rpartition("/")
            model = schema.model_name(group, version, obj["kind"])
            if model is None:
                continue
            d = schema.decode(obj, model)  # raises TypeMismatch on a value of the wrong type
            assert not d.unknown, (bucket, obj["metadata"]["name"], d.unknown)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    # a namespace's content goes at once, within the request that deleted it: otherwise the
    # namespace controller's pass lands inside a later request's before/after snapshots
    saved, api_mod.NAMESPACE_CONTROLLER_DELAY = api_mod.NAMESPACE_CONTROLLER_DELAY, 0.0
    loop = asyncio.new_event_loop()
    d = str(tmp_path_factory.mktemp("apifuzz"))
    api = Api(Store(os.path.join(d, "api.sqlite")), max_pods=50)
    client = TestClient(TestServer(make_app(Server(api, d))), loop=loop)
    loop.run_until_complete(client.start_server())

    def send(method, path, ctype, body, query):
        async def go():
            async with client.request(method, path, data=body, params=query,
                                      headers={"Content-Type": ctype}) as r:
                return r.status, await r.read()
        return loop.run_until_complete(go())

    for kind, obj in SEED.items():  # something to update, patch and delete
        status, text = send("POST", KINDS[kind][0], "application/json", json.dumps(obj).encode(), {})
        assert status == 201, text
    yield api, send
    loop.run_until_complete(client.close())
    loop.close()
    api_mod.NAMESPACE_CONTROLLER_DELAY = saved


def test_every_malformed_request_is_refused_cleanly(served):
    api, send = served
    seen = {"2xx": 0, "4xx": 0}
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(requests())
    def one(req):
        method, path, ctype, body, query = req
        query = {k: v for k, v in query.items() if k != "watch"}
        before = snapshot(api)
        status, text = send(method, path, ctype, body, query)
        assert status < 500, (method, path, query, body[:200], text[:500])
        doc = json.loads(text) if text else {}
        if status >= 400:
            seen["4xx"] += 1
            assert doc.get("kind") == "Status" and doc.get("code") == status, text[:300]
            assert snapshot(api) == before, f"refused with {status} but the store changed: {text[:300]}"
        else:
            seen["2xx"] += 1
        assert_typed(api)

    one()
    took = time.monotonic() - started
    print(f"\n{EXAMPLES} API requests in {took:.1f}s: {seen['2xx']} accepted, {seen['4xx']} refused, 0 answered 5xx")
    assert seen["4xx"] > EXAMPLES // 4 and seen["2xx"] > 0  # the mix exercised both paths


@pytest.mark.parametrize("body, status, words", [
    (b" " * (reqinput.MAX_BODY + 1), 413, "Request entity too large: limit is 3145728"),
    (deep(10_000), 400, "nested deeper than 200"),
    (b"\xff\xfe{", 400, "not valid JSON"),
])
def test_body_limits(served, body, status, words):
    api, send = served
    before = snapshot(api)
    got, text = send("POST", "/api/v1/namespaces/default/configmaps", "application/json", body, {})
    assert got == status and words in json.loads(text)["message"], text[:300]
    assert snapshot(api) == before


@pytest.mark.parametrize("field, value, words", [
    ("image", 5, "cannot unmarshal number 5 into Go struct field Container.spec.containers[0].image of type string"),
    ("hostNetwork", "yes", "cannot unmarshal string into Go struct field PodSpec.spec.hostNetwork of type bool"),
    ("terminationGracePeriodSeconds", "abc", "PodSpec.spec.terminationGracePeriodSeconds of type int64"),
])
def test_pod_values_of_the_wrong_type_are_refused(served, field, value, words):
    api, send = served
    pod = copy.deepcopy(POD)
    pod["metadata"]["name"] = "typed"
    (pod["spec"]["containers"][0] if field == "image" else pod["spec"])[field] = value
    got, text = send("POST", "/api/v1/namespaces/default/pods", "application/json", json.dumps(pod).encode(), {})
    assert got == 400 and words in json.loads(text)["message"], text
    assert api.store.get("/pods", "default", "typed") is None


def test_replicas_beyond_int32_and_a_list_selector_are_refused(served):
    api, send = served
    dep = dict(DEPLOYMENT, metadata={"name": "huge"})
    got, _ = send("POST", "/apis/apps/v1/namespaces/default/deployments", "application/json",
                  json.dumps(dep).encode(), {})
    assert got == 201
    got, text = send("PATCH", "/apis/apps/v1/namespaces/default/deployments/huge", "application/merge-patch+json",
                     b'{"spec": {"replicas": 1000000000000000000000000000000}}', {})
    assert got == 400 and "DeploymentSpec.spec.replicas of type int32" in json.loads(text)["message"]
    assert api.store.get("apps/deployments", "default", "huge")["spec"]["replicas"] == DEPLOYMENT["spec"]["replicas"]
    svc = dict(SERVICE, metadata={"name": "s2"}, spec=dict(SERVICE["spec"], selector=[1]))
    got, text = send("POST", "/api/v1/namespaces/default/services", "application/json", json.dumps(svc).encode(), {})
    assert got == 400 and "map[string]string" in json.loads(text)["message"]
    assert api.store.get("/services", "default", "s2") is None


def test_unknown_fields_warn_by_default_are_refused_when_strict_and_are_never_stored(served):
    api, send = served
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-typo"}, "data": {"a": "b"},
          "dta": {"x": "y"}}
    got, text = send("POST", "/api/v1/namespaces/default/configmaps", "application/json", json.dumps(cm).encode(),
                     {"fieldValidation": "Strict"})
    assert got == 400 and 'strict decoding error: unknown field "dta"' in json.loads(text)["message"]
    assert api.store.get("/configmaps", "default", "cm-typo") is None
    got, text = send("POST", "/api/v1/namespaces/default/configmaps", "application/json", json.dumps(cm).encode(), {})
    assert got == 201
    assert "dta" not in api.store.get("/configmaps", "default", "cm-typo")


def test_label_keys_and_pod_quota(served):
    api, send = served
    for key in ("a b", "-bad-key", "x/" + "n" * 64, "Bad_Prefix/x"):
        cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-label", "labels": {key: "v"}}}
        got, text = send("POST", "/api/v1/namespaces/default/configmaps", "application/json",
                         json.dumps(cm).encode(), {})
        assert got == 422 and "metadata.labels" in json.loads(text)["message"], (key, text)
    n = api.store.count("/pods")
    for i in range(api.max_pods - n):
        pod = dict(POD, metadata={"name": f"q{i}"})
        assert send("POST", "/api/v1/namespaces/default/pods", "application/json", json.dumps(pod).encode(),
                    {})[0] == 201
    got, text = send("POST", "/api/v1/namespaces/default/pods", "application/json",
                     json.dumps(dict(POD, metadata={"name": "over"})).encode(), {})
    assert got == 403 and "exceeded quota: lab-max-pods" in json.loads(text)["message"]


def test_dry_run_checks_everything_and_stores_nothing(served):
    """dryRun=All on create, update, patch and delete: the answer is what would be stored (with
    its ClusterIP), errors are the same, and the store and the allocators do not change."""
    api, send = served
    svc = dict(SERVICE, metadata={"name": "dry"}, spec=dict(SERVICE["spec"], type="NodePort"))
    before = (set(api.alloc.ips), set(api.alloc.ports))
    got, text = send("POST", "/api/v1/namespaces/default/services?dryRun=All", "application/json",
                     json.dumps(svc).encode(), {})
    out = json.loads(text)
    assert got == 201 and out["spec"]["clusterIP"] and out["spec"]["ports"][0]["nodePort"], text
    assert api.store.get("/services", "default", "dry") is None
    assert (set(api.alloc.ips), set(api.alloc.ports)) == before
    # the same checks as a real create
    bad = dict(svc, metadata={"name": "dry", "labels": {"-bad": "x"}})
    got, _ = send("POST", "/api/v1/namespaces/default/services?dryRun=All", "application/json",
                  json.dumps(bad).encode(), {})
    assert got == 422
    got, text = send("POST", "/api/v1/namespaces/default/services?dryRun=Yes", "application/json",
                     json.dumps(svc).encode(), {})
    assert got == 400 and 'supported values: "All"' in json.loads(text)["message"]
    # patch and delete of a stored object: answered, not applied
    cm = dict(CONFIGMAP, metadata={"name": "dry-cm"})
    assert send("POST", "/api/v1/namespaces/default/configmaps", "application/json", json.dumps(cm).encode(), {})[0] == 201
    stored = api.store.get("/configmaps", "default", "dry-cm")
    got, text = send("PATCH", "/api/v1/namespaces/default/configmaps/dry-cm?dryRun=All", "application/merge-patch+json",
                     b'{"data": {"k": "changed"}}', {})
    assert got == 200 and json.loads(text)["data"]["k"] == "changed"
    got, text = send("DELETE", "/api/v1/namespaces/default/configmaps/dry-cm", "application/json",
                     b'{"dryRun": ["All"]}', {})
    assert got == 200
    assert api.store.get("/configmaps", "default", "dry-cm") == stored
    # and the next request on the server is a real one again
    got, _ = send("DELETE", "/api/v1/namespaces/default/configmaps/dry-cm", "application/json", b"{}", {})
    assert got == 200 and api.store.get("/configmaps", "default", "dry-cm") is None


def test_two_unnamed_service_ports_are_refused_not_a_crash(served):
    """Found by the fuzz: two ports without names made the duplicate-name check raise (500)."""
    api, send = served
    svc = dict(SERVICE, metadata={"name": "two"}, spec={"ports": [{"port": 80}, {"port": 81}]})
    got, text = send("POST", "/api/v1/namespaces/default/services", "application/json", json.dumps(svc).encode(), {})
    assert got == 422 and "spec.ports[1].name" in text.decode(), text
    assert api.store.get("/services", "default", "two") is None
