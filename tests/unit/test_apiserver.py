"""The lab API server over real HTTP: verbs, errors, watch semantics, GC, persistence."""
import shutil
import tempfile
import threading
import time

import pytest

from conftest import ApiServer
from trellis.kube.client import ApiError, KubeClient, WatchExpired


def pod(name, labels=None, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], **spec}}


def deployment(name, replicas=1):
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


def test_discovery(client):
    assert client.request("GET", "/api")["versions"] == ["v1"]
    groups = {g["name"] for g in client.request("GET", "/apis")["groups"]}
    assert {"apps", "discovery.k8s.io", "networking.k8s.io", "apiextensions.k8s.io"} <= groups
    core = {r["name"] for r in client.request("GET", "/api/v1")["resources"]}
    assert {"pods", "pods/status", "pods/log", "services", "namespaces", "nodes", "secrets", "configmaps",
            "events"} <= core
    assert client.request("GET", "/version")["major"] == "1"


def test_create_defaults_generate_name_and_conflicts(client):
    p = client.create("v1", "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "web-"},
                                     "spec": {"containers": [{"name": "c", "image": "x",
                                                              "ports": [{"containerPort": 80}]}]}}, "default")
    md = p["metadata"]
    assert md["name"].startswith("web-") and len(md["name"]) == 9
    assert md["uid"] and md["creationTimestamp"] and md["resourceVersion"]
    assert p["spec"]["restartPolicy"] == "Always" and p["status"]["phase"] == "Pending"
    assert p["spec"]["containers"][0]["ports"][0]["protocol"] == "TCP"
    client.create("v1", "pods", pod("a"), "default")
    with pytest.raises(ApiError) as e:
        client.create("v1", "pods", pod("a"), "default")
    assert (e.value.code, e.value.reason) == (409, "AlreadyExists")
    with pytest.raises(ApiError) as e:
        client.create("v1", "pods", pod("a"), "nosuchns")
    assert e.value.code == 404 and "nosuchns" in e.value.message


def test_validation_names_the_field(client):
    bad = pod("b")
    bad["spec"]["containers"][0].pop("image")
    with pytest.raises(ApiError) as e:
        client.create("v1", "pods", bad, "default")
    assert e.value.code == 422 and e.value.reason == "Invalid"
    assert e.value.status["details"]["causes"][0]["field"] == "spec.containers[0].image"
    with pytest.raises(ApiError) as e:
        client.create("v1", "pods", pod("Bad_Name"), "default")
    assert e.value.status["details"]["causes"][0]["field"] == "metadata.name"
    d = deployment("d")
    d["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    with pytest.raises(ApiError) as e:
        client.create("apps/v1", "deployments", d, "default")
    assert "spec.template.metadata.labels" in e.value.message
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
           "spec": {"ports": [{"port": 80, "protocol": "ICMP"}]}}
    with pytest.raises(ApiError) as e:
        client.create("v1", "services", svc, "default")
    assert e.value.status["details"]["causes"][0]["field"] == "spec.ports[0].protocol"


def test_update_optimistic_concurrency_and_noop(client):
    p = client.create("v1", "pods", pod("u"), "default")
    p2 = dict(p, metadata=dict(p["metadata"], labels={"x": "1"}))
    updated = client.update("v1", "pods", p2)
    assert int(updated["metadata"]["resourceVersion"]) > int(p["metadata"]["resourceVersion"])
    with pytest.raises(ApiError) as e:
        client.update("v1", "pods", p2)  # stale resourceVersion
    assert (e.value.code, e.value.reason) == (409, "Conflict")
    same = client.update("v1", "pods", updated)
    assert same["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]
    changed = dict(updated, spec=dict(updated["spec"], restartPolicy="Never"))
    with pytest.raises(ApiError) as e:
        client.update("v1", "pods", changed)
    assert e.value.code == 422  # pod spec is immutable but for images


def test_status_subresource_separates_spec_and_status(client):
    d = client.create("apps/v1", "deployments", deployment("s"), "default")
    assert d["metadata"]["generation"] == 1
    d["status"] = {"replicas": 5}
    d["spec"]["replicas"] = 3
    d = client.update("apps/v1", "deployments", d)
    assert d["spec"]["replicas"] == 3 and d.get("status", {}).get("replicas") is None
    assert d["metadata"]["generation"] == 2
    d = client.patch("apps/v1", "deployments", "s", {"status": {"replicas": 7}, "spec": {"replicas": 9}},
                     "default", sub="status")
    assert d["status"]["replicas"] == 7 and d["spec"]["replicas"] == 3


def test_patch_formats(client):
    client.create("v1", "pods", pod("p", {"a": "1"}), "default")
    out = client.patch("v1", "pods", "p", {"metadata": {"labels": {"b": "2", "a": None}}}, "default")
    assert out["metadata"]["labels"] == {"b": "2"}
    out = client.patch("v1", "pods", "p", [{"op": "add", "path": "/metadata/annotations", "value": {"k": "v"}}],
                       "default", kind="json")
    assert out["metadata"]["annotations"] == {"k": "v"}
    out = client.patch("v1", "pods", "p", {"spec": {"containers": [{"name": "c", "image": "busybox:2"}]}},
                       "default", kind="strategic")
    assert out["spec"]["containers"][0]["image"] == "busybox:2"
    assert out["spec"]["containers"][0]["terminationMessagePath"]  # merged, not replaced
    with pytest.raises(ApiError) as e:
        client.patch("v1", "pods", "p", [{"op": "test", "path": "/metadata/name", "value": "q"}], "default", kind="json")
    assert e.value.code == 422


def test_list_selectors(client):
    client.create("v1", "pods", pod("l1", {"app": "web"}), "default")
    client.create("v1", "pods", pod("l2", {"app": "db"}, nodeName="node-1"), "default")
    names = lambda items: sorted(i["metadata"]["name"] for i in items)  # noqa: E731
    assert names(client.list("v1", "pods", "default", label_selector="app=web")[0]) == ["l1"]
    assert names(client.list("v1", "pods", "default", label_selector="app in (web,db)")[0]) == ["l1", "l2"]
    assert names(client.list("v1", "pods", None, field_selector="spec.nodeName=node-1")[0]) == ["l2"]
    assert names(client.list("v1", "pods", None, field_selector="metadata.name=l1,status.phase=Pending")[0]) == ["l1"]
    assert names(client.list("v1", "pods", "kube-system")[0]) == []
    page = client.request("GET", "/api/v1/pods", params={"limit": "1"})
    assert len(page["items"]) == 1 and page["metadata"]["continue"]
    rest = client.request("GET", "/api/v1/pods", params={"limit": "5", "continue": page["metadata"]["continue"]})
    assert [i["metadata"]["name"] for i in rest["items"]] == ["l2"]
    with pytest.raises(ApiError) as e:
        client.list("v1", "pods", label_selector="a b")
    assert e.value.code == 400


def collect(client, n, **kw):
    out = []
    for typ, obj in client.watch("v1", "pods", "default", timeout_seconds=5, **kw):
        out.append((typ, obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))
        if len([e for e in out if e[0] != "BOOKMARK"]) >= n:
            break
    return out


def test_watch_resumes_from_resource_version_and_filters(client):
    _, rv = client.list("v1", "pods", "default")
    client.create("v1", "pods", pod("w1", {"app": "web"}), "default")
    client.patch("v1", "pods", "w1", {"metadata": {"labels": {"app": "db"}}}, "default")
    client.delete("v1", "pods", "w1", "default")
    events = collect(client, 3, resource_version=rv)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    rvs = [int(r) for _, _, r in events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    # a label-filtered watch sees the object leave its selector as DELETED
    events = collect(client, 2, resource_version=rv, label_selector="app=web")
    assert [(t, n) for t, n, _ in events] == [("ADDED", "w1"), ("DELETED", "w1")]


def test_watch_from_zero_starts_with_state_then_streams(client):
    client.create("v1", "pods", pod("s1"), "default")
    got = []

    def watch():
        got.extend(collect(client, 2, resource_version="0"))
    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    client.create("v1", "pods", pod("s2"), "default")
    t.join(10)
    assert [(t_, n) for t_, n, _ in got] == [("ADDED", "s1"), ("ADDED", "s2")]


def test_watch_bookmarks_and_410_gone():
    d = tempfile.mkdtemp()
    srv = ApiServer(d, "--watch-window", "5").start()
    try:
        c = KubeClient(srv.url)
        _, rv = c.list("v1", "pods", "default")
        for i in range(8):
            c.create("v1", "pods", pod(f"g{i}"), "default")
        with pytest.raises(WatchExpired) as e:
            list(c.watch("v1", "pods", "default", resource_version=rv, timeout_seconds=2))
        assert e.value.code == 410
        _, rv = c.list("v1", "pods", "default")
        events = [(t, o) for t, o in c.watch("v1", "pods", "default", resource_version=rv, timeout_seconds=7)]
        assert events and all(t == "BOOKMARK" for t, _ in events)
        assert int(events[0][1]["metadata"]["resourceVersion"]) >= int(rv)
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def test_garbage_collection_and_propagation(client):
    d = client.create("apps/v1", "deployments", deployment("gc"), "default")
    ref = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "gc", "uid": d["metadata"]["uid"], "controller": True}
    p = pod("gc-pod")
    p["metadata"]["ownerReferences"] = [ref]
    client.create("v1", "pods", p, "default")
    o = pod("gc-orphan")
    o["metadata"]["ownerReferences"] = [ref]
    client.create("v1", "pods", o, "default")
    client.delete("apps/v1", "deployments", "gc", "default")
    assert client.get_or_none("v1", "pods", "gc-pod", "default") is None
    d = client.create("apps/v1", "deployments", deployment("gc2"), "default")
    o = pod("gc-orphan2")
    o["metadata"]["ownerReferences"] = [dict(ref, name="gc2", uid=d["metadata"]["uid"])]
    client.create("v1", "pods", o, "default")
    client.delete("apps/v1", "deployments", "gc2", "default", propagation="Orphan")
    left = client.get("v1", "pods", "gc-orphan2", "default")
    assert left["metadata"].get("ownerReferences") == []


def test_namespace_deletion_empties_it_first(client):
    client.create("v1", "namespaces", {"metadata": {"name": "gone"}})
    client.create("v1", "pods", pod("x"), "gone")
    client.create("v1", "configmaps", {"metadata": {"name": "cm"}, "data": {"a": "b"}}, "gone")
    ns = client.delete("v1", "namespaces", "gone")
    assert ns["status"]["phase"] == "Terminating"
    with pytest.raises(ApiError) as e:
        client.create("v1", "pods", pod("y"), "gone")
    assert e.value.code == 403
    deadline = time.monotonic() + 5
    while client.get_or_none("v1", "namespaces", "gone") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get_or_none("v1", "namespaces", "gone") is None
    assert client.get_or_none("v1", "configmaps", "cm", "gone") is None


def test_pod_graceful_deletion_waits_for_the_kubelet(client):
    client.create("v1", "pods", pod("g", nodeName="node-1"), "default")
    p = client.delete("v1", "pods", "g", "default")
    assert p["metadata"]["deletionTimestamp"] and p["metadata"]["deletionGracePeriodSeconds"] == 30
    assert client.get("v1", "pods", "g", "default")["metadata"]["deletionTimestamp"]
    client.delete("v1", "pods", "g", "default", grace_period=0)
    assert client.get_or_none("v1", "pods", "g", "default") is None


def test_scale_and_binding(client):
    client.create("apps/v1", "deployments", deployment("sc", 2), "default")
    scale = client.request("GET", "/apis/apps/v1/namespaces/default/deployments/sc/scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2 and scale["status"]["selector"] == "app=sc"
    client.patch("apps/v1", "deployments", "sc", {"spec": {"replicas": 4}}, "default", sub="scale")
    assert client.get("apps/v1", "deployments", "sc", "default")["spec"]["replicas"] == 4
    client.create("v1", "pods", pod("b"), "default")
    client.request("POST", "/api/v1/namespaces/default/pods/b/binding",
                   {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"}, "target": {"name": "node-2"}})
    assert client.get("v1", "pods", "b", "default")["spec"]["nodeName"] == "node-2"
    with pytest.raises(ApiError) as e:
        client.request("POST", "/api/v1/namespaces/default/pods/b/binding",
                       {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "b"}, "target": {"name": "node-3"}})
    assert e.value.code == 409


def test_service_allocation(client):
    def svc(name, **spec):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"ports": [{"port": 80}], **spec}}
    a = client.create("v1", "services", svc("a", type="NodePort"), "default")
    ip, np = a["spec"]["clusterIP"], a["spec"]["ports"][0]["nodePort"]
    assert ip.startswith("10.96.") and 30000 <= np <= 32767
    with pytest.raises(ApiError) as e:
        client.create("v1", "services", svc("b", type="NodePort", ports=[{"port": 80, "nodePort": np}]), "default")
    assert e.value.code == 422 and "spec.ports[0].nodePort" in e.value.message and "already allocated" in e.value.message
    with pytest.raises(ApiError) as e:
        client.create("v1", "services", svc("c", type="NodePort", ports=[{"port": 80, "nodePort": 80}]), "default")
    assert "not in the valid range" in e.value.message
    with pytest.raises(ApiError) as e:
        client.create("v1", "services", svc("d", clusterIP=ip), "default")
    assert "spec.clusterIPs" in e.value.message
    assert client.get_or_none("v1", "services", "b", "default") is None  # nothing half-created
    client.delete("v1", "services", "a", "default")
    again = client.create("v1", "services", svc("e", clusterIP=ip, type="NodePort",
                                               ports=[{"port": 80, "nodePort": np}]), "default")
    assert again["spec"]["clusterIP"] == ip  # released on delete
    headless = client.create("v1", "services", svc("h", clusterIP="None"), "default")
    assert headless["spec"]["clusterIP"] == "None"
    ext = client.create("v1", "services", {"metadata": {"name": "x"}, "spec": {"type": "ExternalName",
                                                                              "externalName": "example.org"}}, "default")
    assert "clusterIP" not in ext["spec"]


def test_legacy_extensions_deployment(client):
    d = deployment("old")
    d["apiVersion"] = "extensions/v1beta1"
    d["spec"].pop("selector")
    out = client.create("extensions/v1beta1", "deployments", d, "default")
    assert out["apiVersion"] == "apps/v1" and out["spec"]["selector"] == {"matchLabels": {"app": "old"}}
    assert client.get("apps/v1", "deployments", "old", "default")["metadata"]["uid"] == out["metadata"]["uid"]


def test_custom_resources(client):
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "ippools.trellis.dev"},
           "spec": {"group": "trellis.dev", "scope": "Cluster",
                    "names": {"kind": "IPPool", "plural": "ippools"},
                    "versions": [{"name": "v1alpha1", "served": True, "storage": True,
                                  "subresources": {"status": {}}}]}}
    client.create("apiextensions.k8s.io/v1", "customresourcedefinitions", crd)
    pool = client.create("trellis.dev/v1alpha1", "ippools", {"apiVersion": "trellis.dev/v1alpha1", "kind": "IPPool",
                                                              "metadata": {"name": "lb"}, "spec": {"cidr": "172.31.0.200/29"}})
    assert pool["metadata"]["generation"] == 1
    with pytest.raises(ApiError) as e:
        client.patch("trellis.dev/v1alpha1", "ippools", "lb", {"spec": {}}, kind="strategic")
    assert e.value.code == 415
    client.delete("apiextensions.k8s.io/v1", "customresourcedefinitions", "ippools.trellis.dev")
    with pytest.raises(ApiError) as e:
        client.list("trellis.dev/v1alpha1", "ippools")
    assert e.value.code == 404


def test_objects_survive_a_restart(apiserver):
    c = KubeClient(apiserver.url)
    c.create("v1", "pods", pod("keep"), "default")
    c.create("v1", "services", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}, "default")
    _, rv = c.list("v1", "pods")
    apiserver.stop(kill=True)
    apiserver.start()
    c2 = KubeClient(apiserver.url)
    assert c2.get("v1", "pods", "keep", "default")["metadata"]["name"] == "keep"
    new = c2.create("v1", "pods", pod("after"), "default")
    assert int(new["metadata"]["resourceVersion"]) > int(rv)
    ip = c2.get("v1", "services", "s", "default")["spec"]["clusterIP"]
    with pytest.raises(ApiError):  # the allocator remembers across restarts
        c2.create("v1", "services", {"metadata": {"name": "t"}, "spec": {"clusterIP": ip, "ports": [{"port": 80}]}},
                  "default")


def test_official_python_client_list_and_watch(apiserver):
    from kubernetes import client as kclient, config as kconfig, watch as kwatch
    kconfig.load_kube_config(apiserver.kubeconfig())
    v1 = kclient.CoreV1Api()
    v1.create_namespaced_pod("default", kclient.V1Pod(
        metadata=kclient.V1ObjectMeta(name="official", labels={"via": "python"}),
        spec=kclient.V1PodSpec(containers=[kclient.V1Container(name="c", image="busybox")])))
    pods = v1.list_namespaced_pod("default", label_selector="via=python")
    assert [p.metadata.name for p in pods.items] == ["official"]
    assert pods.items[0].spec.restart_policy == "Always"
    rv = pods.metadata.resource_version
    KubeClient(apiserver.url).patch("v1", "pods", "official", {"metadata": {"labels": {"x": "y"}}}, "default")
    w = kwatch.Watch()
    seen = []
    for ev in w.stream(v1.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=3):
        seen.append((ev["type"], ev["object"].metadata.name, ev["object"].metadata.labels.get("x")))
        w.stop()
    assert seen == [("MODIFIED", "official", "y")]
    apps = kclient.AppsV1Api()
    apps.create_namespaced_deployment("default", deployment("pyd"))
    assert apps.read_namespaced_deployment_scale("pyd", "default").spec.replicas == 1
