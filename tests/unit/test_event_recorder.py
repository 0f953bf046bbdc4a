"""Events: the recorder's aggregation, both API shapes over one store, field selectors, TTL, kubectl."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import ApiServer, needs_kubectl
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.events import COMBINED, WARNING, EventRecorder


def pod(client, name="p1"):
    return client.create("v1", "pods", {"metadata": {"name": name}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}]}}, "default")


def events_of(client, name, api="v1"):
    sel = f"involvedObject.name={name}" if api == "v1" else f"regarding.name={name}"
    return client.list(api, "events", "default", field_selector=sel)[0]


def test_repeats_are_counted_on_one_event(client):
    p = pod(client)
    rec = EventRecorder(client, "kubelet", "node-1")
    for _ in range(3):
        rec.event(p, WARNING, "BackOff", "Back-off restarting failed container c", field_path="spec.containers{c}")
    rec.event(p, "Normal", "Pulled", 'Container image "busybox" already present on machine')
    assert rec.flush()
    evs = {e["reason"]: e for e in events_of(client, "p1")}
    assert set(evs) == {"BackOff", "Pulled"}
    b = evs["BackOff"]
    assert b["count"] == 3 and b["type"] == "Warning"
    assert b["source"] == {"component": "kubelet", "host": "node-1"}
    assert b["involvedObject"]["uid"] == p["metadata"]["uid"]
    assert b["involvedObject"]["fieldPath"] == "spec.containers{c}"
    assert b["firstTimestamp"] <= b["lastTimestamp"]
    assert evs["Pulled"]["count"] == 1


def test_many_messages_for_one_reason_are_combined(client):
    p = pod(client)
    rec = EventRecorder(client, "trellis-agent", "node-1")
    for i in range(14):
        rec.event(p, WARNING, "FailedCreatePodSandBox", f"attempt {i} failed")
    assert rec.flush()
    evs = events_of(client, "p1")
    combined = [e for e in evs if e["message"].startswith(COMBINED)]
    assert len(evs) == 11 and len(combined) == 1
    assert combined[0]["count"] == 4 and combined[0]["message"] == COMBINED + "attempt 13 failed"


def test_an_expired_event_is_created_again(client):
    p = pod(client)
    rec = EventRecorder(client, "default-scheduler")
    rec.event(p, "Normal", "Scheduled", "Successfully assigned default/p1 to node-1")
    assert rec.flush()
    first = events_of(client, "p1")[0]
    client.delete("v1", "events", first["metadata"]["name"], "default")
    rec.event(p, "Normal", "Scheduled", "Successfully assigned default/p1 to node-1")
    assert rec.flush()
    again = events_of(client, "p1")
    assert len(again) == 1 and again[0]["count"] == 1 and again[0]["metadata"]["name"] != first["metadata"]["name"]


def test_recorder_never_raises_on_api_trouble():
    c = KubeClient("http://127.0.0.1:9", timeout=0.5)  # nothing listens on the discard port
    rec = EventRecorder(c, "trellis-controller")
    rec.event({"kind": "Service", "name": "s", "namespace": "default"}, WARNING, "AllocationFailed", "x")
    assert rec.flush()
    with pytest.raises(ValueError):
        rec.event({"kind": "Service", "name": "s"}, "Error", "R", "m")  # not Normal/Warning


def test_both_api_shapes_share_one_store(client):
    p = pod(client)
    body = {"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
            "eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "trellis.dev/controller",
            "reportingInstance": "c-1", "action": "Allocate", "reason": "AllocationFailed", "type": "Warning",
            "note": "address 1.2.3.4 is in no IPPool",
            "regarding": {"kind": "Pod", "name": "p1", "namespace": "default", "uid": p["metadata"]["uid"]},
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:01:00.000000Z"}}
    created = client.create("events.k8s.io/v1", "events", body, "default")
    assert created["apiVersion"] == "events.k8s.io/v1" and created["note"] == body["note"]
    core = client.get("v1", "events", "e1", "default")
    assert core["apiVersion"] == "v1" and core["message"] == body["note"]
    assert core["involvedObject"]["name"] == "p1" and core["reportingComponent"] == "trellis.dev/controller"
    assert core["series"]["count"] == 2
    # and the other way: a core event read as events.k8s.io/v1, patched in that shape
    client.create("v1", "events", {"metadata": {"name": "e2"}, "involvedObject": {"kind": "Pod", "name": "p1",
                  "namespace": "default"}, "reason": "Started", "message": "Started container c", "type": "Normal",
                  "count": 3, "source": {"component": "kubelet", "host": "node-1"}}, "default")
    v1 = client.get("events.k8s.io/v1", "events", "e2", "default")
    assert v1["deprecatedCount"] == 3 and v1["deprecatedSource"]["host"] == "node-1" and v1["note"].startswith("Started")
    client.patch("events.k8s.io/v1", "events", "e2", {"note": "changed"}, "default")
    assert client.get("v1", "events", "e2", "default")["message"] == "changed"
    lst = client.request("GET", "/apis/events.k8s.io/v1/namespaces/default/events")
    assert lst["apiVersion"] == "events.k8s.io/v1" and {e["metadata"]["name"] for e in lst["items"]} == {"e1", "e2"}
    assert all("regarding" in e for e in lst["items"])


def test_field_selectors_as_kube_apiserver(client):
    for name, obj, reason in (("a", "p1", "Scheduled"), ("b", "p2", "Scheduled"), ("c", "p1", "Started")):
        client.create("v1", "events", {"metadata": {"name": name}, "reason": reason, "type": "Normal",
                      "involvedObject": {"kind": "Pod", "name": obj, "namespace": "default", "uid": f"u-{obj}"},
                      "source": {"component": "kubelet"}}, "default")
    names = lambda items: sorted(e["metadata"]["name"] for e in items)  # noqa: E731
    sel = "involvedObject.kind=Pod,involvedObject.name=p1,involvedObject.namespace=default,involvedObject.uid=u-p1"
    assert names(client.list("v1", "events", "default", field_selector=sel)[0]) == ["a", "c"]
    assert names(client.list("v1", "events", "default", field_selector="reason!=Started,source=kubelet")[0]) == ["a", "b"]
    assert names(client.list("events.k8s.io/v1", "events", "default", field_selector="regarding.name=p2")[0]) == ["b"]
    for api, bad in (("v1", "message=x"), ("v1", "regarding.name=p1"), ("events.k8s.io/v1", "involvedObject.name=p1")):
        with pytest.raises(ApiError) as e:
            client.list(api, "events", "default", field_selector=bad)
        assert e.value.code == 400 and "field label not supported" in e.value.message


def test_events_expire_a_ttl_after_their_last_write():
    d = tempfile.mkdtemp(prefix="trellis-api-")
    srv = ApiServer(d, "--event-ttl", "3").start()
    c = KubeClient(srv.url)
    try:
        for name in ("quiet", "busy"):
            c.create("v1", "events", {"metadata": {"name": name}, "reason": "R", "type": "Normal", "count": 1,
                     "involvedObject": {"kind": "Pod", "name": "p"}}, "default")
        t0 = time.monotonic()
        count = 1
        while c.get_or_none("v1", "events", "quiet", "default") is not None:
            assert time.monotonic() - t0 < 6, "an event past its TTL was not removed"
            count += 1  # the busy one is written to (as a recorder counts a repeat)
            c.patch("v1", "events", "busy", {"count": count}, "default")
            time.sleep(0.2)
        assert time.monotonic() - t0 > 2.5  # not before its TTL
        assert c.get("v1", "events", "busy", "default")["count"] == count  # lives on while written to
        t1 = time.monotonic()
        while c.get_or_none("v1", "events", "busy", "default") is not None:
            assert time.monotonic() - t1 < 6, "an event no longer written to did not expire"
            time.sleep(0.2)
        assert time.monotonic() - t1 > 2.5
    finally:
        c.close()
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def kubectl(apiserver, tmp_path):
    env = dict(os.environ, KUBECONFIG=apiserver.kubeconfig(), HOME=str(tmp_path))

    def run(*args, input=None):
        p = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, input=input, timeout=60)
        assert p.returncode == 0, f"kubectl {' '.join(args)} failed: {p.stderr}"
        return p.stdout
    return run


@needs_kubectl
def test_kubectl_describe_and_get_events(client, kubectl):
    p = pod(client, "web")
    rec = EventRecorder(client, "kubelet", "node-2")
    for _ in range(2):
        rec.event(p, WARNING, "FailedCreatePodSandBox", "Failed to create pod sandbox: CNI ADD failed: no free address")
    rec.event(pod(client, "other"), "Normal", "Scheduled", "Successfully assigned default/other to node-1")
    assert rec.flush()
    out = kubectl("describe", "pod", "web")
    events = out[out.index("Events:"):]
    assert "FailedCreatePodSandBox" in events and "no free address" in events and "kubelet" in events
    assert "(x2 over" in events and "Scheduled" not in events  # only this pod's events
    table = kubectl("get", "events")
    assert "FailedCreatePodSandBox" in table and "pod/web" in table and "Scheduled" in table
    doc = json.loads(kubectl("get", "events", "--field-selector", "involvedObject.name=web", "-o", "json"))
    assert [e["reason"] for e in doc["items"]] == ["FailedCreatePodSandBox"]
    doc = json.loads(kubectl("get", "events.events.k8s.io", "-o", "json"))
    assert {e["note"] for e in doc["items"]} >= {"Successfully assigned default/other to node-1"}


@needs_kubectl
def test_kubectl_apply_a_list(client, kubectl):
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1"}, "data": {"a": "1"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d1"}, "spec": {
            "selector": {"matchLabels": {"app": "d1"}}, "template": {"metadata": {"labels": {"app": "d1"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s1"}, "spec": {
            "selector": {"app": "d1"}, "ports": [{"port": 80}]}}]})
    out = kubectl("apply", "-f", "-", input=manifest)
    assert "configmap/cm1 created" in out and "deployment.apps/d1 created" in out and "service/s1 created" in out
    out = kubectl("apply", "-f", "-", input=manifest.replace('"a": "1"', '"a": "2"'))
    assert "configmap/cm1 configured" in out and "service/s1 unchanged" in out
    assert client.get("v1", "configmaps", "cm1", "default")["data"] == {"a": "2"}
    # a YAML List of one kind (what `kubectl get -o yaml` writes) too
    kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMapList\nitems:\n"
            "- {apiVersion: v1, kind: ConfigMap, metadata: {name: cm2}, data: {b: '1'}}\n")
    assert client.get("v1", "configmaps", "cm2", "default")["data"] == {"b": "1"}


def test_a_full_pod_block_is_an_event_on_the_pod(client):
    """The agent's real CNI path (PodNetwork, Allocator) on a full /30: CNI says 11 and the pod gets a Warning."""
    from trellis.agent.cniserver import CNIServer, pod_event
    from trellis.agent.dataplane import IP_POOL_EXHAUSTED, PodNetwork
    from trellis.agent.ipam import Allocator, MemoryStore
    p = pod(client, "late")
    alloc = Allocator("10.9.0.0/30", MemoryStore())
    for i in range(2):
        alloc.allocate(f"c{i}", "eth0")
    net = PodNetwork(alloc, 1450, "10.9.0.0/16")
    rec = EventRecorder(client, "trellis-agent", "node-1")
    srv = CNIServer("/nonexistent", lambda: net, lambda: None, on_failure=pod_event(rec))
    args = {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "late", "K8S_POD_UID": p["metadata"]["uid"]}
    reply = srv.handle({"command": "ADD", "containerID": "c9", "netns": "/proc/self/ns/net", "ifName": "eth0",
                        "args": args, "config": {}})
    assert reply["error"]["code"] == 11 and "no free address in 10.9.0.0/30" in reply["error"]["msg"]
    assert rec.flush()
    (ev,) = events_of(client, "late")
    assert ev["reason"] == IP_POOL_EXHAUSTED and ev["type"] == "Warning"
    assert ev["message"] == reply["error"]["msg"] and ev["involvedObject"]["uid"] == p["metadata"]["uid"]
    assert ev["source"] == {"component": "trellis-agent", "host": "node-1"}


def test_trellis_config_problems_name_the_key():
    from trellis.agent.configcheck import problems
    assert problems({"isolationMode": "namespace", "routingMode": "vxlan", "clusterCIDR": "10.244.0.0/16"}) == []
    out = problems({"isolationMod": "namespace", "routingMode": "bgp"})
    assert len(out) == 2
    assert "unknown key 'isolationMod'" in out[0] and "isolationMode" in out[0]
    assert "routingMode: unsupported value 'bgp'" in out[1]


def test_lab_controllers_record_upstream_reasons(apiserver, client):
    """The real controller-manager (scheduler, Deployment and ReplicaSet controllers) against the API."""
    import threading
    from trellis.lab import controllermanager
    client.create("v1", "nodes", {"metadata": {"name": "node-1", "labels": {"kubernetes.io/hostname": "node-1"}},
                                  "status": {"conditions": [{"type": "Ready", "status": "True"}]}})
    stop = threading.Event()
    cm = KubeClient(apiserver.url)
    t = threading.Thread(target=controllermanager.run, args=(cm, stop), daemon=True)
    t.start()
    try:
        client.create("apps/v1", "deployments", {"metadata": {"name": "web"}, "spec": {
            "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
                "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}},
            "default")
        client.create("v1", "pods", {"metadata": {"name": "nowhere"}, "spec": {
            "nodeSelector": {"disk": "ssd"}, "containers": [{"name": "c", "image": "x"}]}}, "default")

        def by_reason():
            evs = client.list("v1", "events", "default")[0]
            return {e["reason"]: [x for x in evs if x["reason"] == e["reason"]] for e in evs}
        deadline = time.monotonic() + 20
        want = {"ScalingReplicaSet", "SuccessfulCreate", "Scheduled", "FailedScheduling"}
        while not want <= set(got := by_reason()):
            assert time.monotonic() < deadline, f"missing {want - set(got)}"
            time.sleep(0.1)
        (scaled,) = got["ScalingReplicaSet"]
        assert scaled["involvedObject"]["kind"] == "Deployment" and scaled["message"].endswith("from 0 to 2")
        assert scaled["source"]["component"] == "deployment-controller"
        rs = scaled["message"].split()[4]
        deadline = time.monotonic() + 20
        while len(by_reason().get("Scheduled", [])) < 2 or len(by_reason()["SuccessfulCreate"]) < 2:
            assert time.monotonic() < deadline, by_reason()
            time.sleep(0.1)
        got = by_reason()
        assert {e["involvedObject"]["name"] for e in got["SuccessfulCreate"]} == {rs}
        assert all(e["message"].startswith(f"Created pod: {rs}-") for e in got["SuccessfulCreate"])
        assert {e["message"] for e in got["Scheduled"]} == {
            f"Successfully assigned default/{p['metadata']['name']} to node-1"
            for p in client.list("v1", "pods", "default", label_selector="app=web")[0]}
        (fs,) = got["FailedScheduling"]
        assert fs["type"] == "Warning" and fs["involvedObject"]["name"] == "nowhere"
        assert fs["message"] == "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector."
        assert fs["source"]["component"] == "default-scheduler"
    finally:
        stop.set()
        t.join(5)
        cm.close()


class _Cache:
    """An informer's read side over fixed objects (a real cluster without trellis' admission stores these)."""

    def __init__(self, objs=()):
        self.objs = list(objs)

    def items(self):
        return list(self.objs)


def test_policy_trellis_cannot_honour_is_a_counted_event(client):
    """The controller's policy audit writes through the recorder: one Event per problem, repeats counted."""
    from trellis.controller.policyaudit import PolicyAudit
    bad = {"apiVersion": "trellis.dev/v1alpha1", "kind": "EndpointGroup", "metadata": {
        "name": "db", "namespace": "default", "uid": "u1", "resourceVersion": "7"},
        "spec": {"podSelector": {}, "intraGroup": "maybe"}}
    rec = EventRecorder(client, "trellis-controller", "ctl-1")
    audit = PolicyAudit(client, rec)
    audit.informers = {k: _Cache() for k in audit.informers}
    audit.informers["groups"] = _Cache([bad])
    audit.sync("all")
    audit.sync("all")  # the same problem still there: not reported again
    assert rec.flush()
    evs = client.list("v1", "events", "default")[0]
    assert [(e["reason"], e["involvedObject"]["kind"], e["involvedObject"]["name"], e["count"]) for e in evs] == [
        ("NotEnforced", "EndpointGroup", "db", 1)]
    assert "spec.intraGroup: unsupported value 'maybe'" in evs[0]["message"] and evs[0]["type"] == "Warning"
    assert evs[0]["involvedObject"]["apiVersion"] == "trellis.dev/v1alpha1" and evs[0]["involvedObject"]["uid"] == "u1"
    assert evs[0]["source"] == {"component": "trellis-controller", "host": "ctl-1"}
    audit.informers["groups"] = _Cache([])
    audit.sync("all")
    audit.informers["groups"] = _Cache([bad])
    audit.sync("all")  # it came back: reported again, counted on the same Event
    assert rec.flush()
    assert [e["count"] for e in client.list("v1", "events", "default")[0]] == [2]
