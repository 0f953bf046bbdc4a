"""DaemonSets: the controller's pure decisions (which nodes run a pod, what to create, delete and roll
next, the status), the API's defaults, validation and columns, and the controller with the scheduler
against a real lab API server over fake nodes (the test plays the kubelets), with kubectl on top."""
import datetime as dt
import os
import subprocess
import threading
import time

import pytest

from conftest import KUBECTL, wait_until
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer
from trellis.lab.daemonplan import (HASH_LABEL, Backoff, by_node, daemon_pod_spec, daemon_status, max_unavailable,
                                    new_pod, plan_nodes, plan_rollout, should_run, stale_revisions, target_node)

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
NOT_READY = "node.kubernetes.io/not-ready"


def ds(name="agent", selector=None, tolerations=None, strategy=None, min_ready=0, generation="1", **pod_spec):
    spec = {"containers": [{"name": "c", "image": "busybox"}], **pod_spec}
    if tolerations is not None:
        spec["tolerations"] = tolerations
    if selector:
        spec["nodeSelector"] = selector
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {
        "name": name, "namespace": "kube-system", "uid": "ds-uid", "generation": 1,
        "annotations": {"deprecated.daemonset.template.generation": generation}},
        "spec": {"selector": {"matchLabels": {"app": name}}, "minReadySeconds": min_ready,
                 "updateStrategy": strategy or {"type": "RollingUpdate",
                                                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def node(name, ready="True", labels=None, taints=None):
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"taints": taints or []},
            "status": {"conditions": [{"type": "Ready", "status": ready}]}}


def pod(name, node_name, hash_="h1", ready=True, phase="Running", deleting=False, created="2026-01-01T10:00:00Z",
        since="2026-01-01T11:00:00Z", bound=True):
    md = {"name": name, "namespace": "kube-system", "labels": {"app": "agent", HASH_LABEL: hash_},
          "creationTimestamp": created}
    if deleting:
        md["deletionTimestamp"] = "2026-01-01T11:59:00Z"
    spec = {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]}}}}
    if bound:
        spec["nodeName"] = node_name
    return {"metadata": md, "spec": spec, "status": {"phase": phase, "conditions": [
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": since}]}}


NODES = [node("n1"), node("n2"), node("n3")]


# ---- pure decisions ------------------------------------------------------------------

def test_daemon_pods_get_the_upstream_tolerations_once_and_network_unavailable_for_host_network():
    keys = [(t["key"], t["effect"]) for t in daemon_pod_spec(ds())["tolerations"]]
    assert keys == [(NOT_READY, "NoExecute"), ("node.kubernetes.io/unreachable", "NoExecute"),
                    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
                    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
                    ("node.kubernetes.io/unschedulable", "NoSchedule")]
    assert all(t["operator"] == "Exists" for t in daemon_pod_spec(ds())["tolerations"])
    mine = [{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"}, {"operator": "Exists"}]
    got = daemon_pod_spec(ds(tolerations=mine))["tolerations"]
    assert got[:2] == mine and len(got) == 7  # the same toleration is not added twice
    host = daemon_pod_spec(ds(hostNetwork=True))["tolerations"]
    assert host[-1] == {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}


def test_a_new_pod_is_pinned_to_its_node_by_required_affinity_and_labelled_with_the_revision():
    d = ds(affinity={"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}]}})
    p = new_pod(d, "n2", "abc")
    md = p["metadata"]
    assert md["generateName"] == "agent-" and "name" not in md and md["namespace"] == "kube-system"
    assert md["labels"] == {"app": "agent", HASH_LABEL: "abc", "pod-template-generation": "1"}
    assert md["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent", "uid": "ds-uid",
                                      "controller": True, "blockOwnerDeletion": True}]
    na = p["spec"]["affinity"]["nodeAffinity"]
    assert na["requiredDuringSchedulingIgnoredDuringExecution"] == {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}
    assert na["preferredDuringSchedulingIgnoredDuringExecution"]  # the rest of the affinity stays
    assert "nodeName" not in p["spec"] and target_node(p) == "n2"
    assert len(p["spec"]["tolerations"]) == 6
    assert "affinity" not in d["spec"]["template"]["spec"] or \
        d["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"][0].get("matchExpressions")  # the DaemonSet itself is not changed


def test_which_nodes_should_run_a_daemon_pod():
    assert should_run(ds(), node("n1")) == (True, True)
    assert should_run(ds(selector={"disk": "ssd"}), node("n1")) == (False, False)
    assert should_run(ds(selector={"disk": "ssd"}), node("n1", labels={"disk": "ssd"})) == (True, True)
    # an untolerated NoSchedule taint: no new pod, but one there keeps running; NoExecute: it goes
    assert should_run(ds(), node("n1", taints=[{"key": "k", "effect": "NoSchedule"}])) == (False, True)
    assert should_run(ds(), node("n1", taints=[{"key": "k", "effect": "NoExecute"}])) == (False, False)
    tol = [{"key": "k", "operator": "Exists"}]
    assert should_run(ds(tolerations=tol), node("n1", taints=[{"key": "k", "effect": "NoExecute"}])) == (True, True)
    assert should_run(ds(), node("n1", taints=[{"key": "k", "effect": "PreferNoSchedule"}])) == (True, True)
    # a NotReady node: the defaults tolerate its NoExecute taint, not the NoSchedule one
    assert should_run(ds(), node("n1", ready="False")) == (False, True)
    assert should_run(ds(tolerations=[{"operator": "Exists"}]), node("n1", ready="False")) == (True, True)
    # a template's own required affinity and nodeName count
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]}]}}}
    assert should_run(ds(affinity=aff), node("n1")) == (False, False)
    assert should_run(ds(affinity=aff), node("n2")) == (True, True)
    assert should_run(ds(nodeName="n2"), node("n1")) == (False, False)


def test_plan_creates_where_missing_and_deletes_where_not_wanted():
    nodes = NODES + [node("n4", taints=[{"key": "k", "effect": "NoExecute"}])]
    pods = [pod("a1", "n1"), pod("a4", "n4")]
    plan = plan_nodes(ds(), nodes, by_node(pods))
    assert plan.create == ["n2", "n3"] and plan.delete == ["a4"] and plan.failed == []


def test_plan_replaces_failed_and_finished_pods_and_keeps_the_oldest_of_two():
    pods = [pod("f", "n1", phase="Failed", ready=False), pod("s", "n2", phase="Succeeded", ready=False),
            pod("old", "n3", created="2026-01-01T09:00:00Z"), pod("young", "n3", created="2026-01-01T10:00:00Z"),
            pod("unbound", "n3", created="2026-01-01T08:00:00Z", bound=False)]
    plan = plan_nodes(ds(), NODES, by_node(pods))
    assert plan.failed == [("n1", "f")] and plan.create == []
    assert plan.delete == ["s", "young", "unbound"]  # bound pods count as older than unbound ones


def test_a_terminating_pod_holds_its_node_until_it_is_gone():
    plan = plan_nodes(ds(), NODES, by_node([pod("bye", "n1", deleting=True), pod("b", "n2"), pod("c", "n3")]))
    assert plan.create == [] and plan.delete == []
    # unless it is a finished one: those no longer count
    assert by_node([pod("x", "n1", phase="Failed", deleting=True)], finished_deleting=False) == {}


def test_an_unbound_pod_for_a_vanished_node_is_deleted():
    plan = plan_nodes(ds(), NODES[:2], by_node([pod("a", "n1"), pod("b", "n2"), pod("lost", "n9", bound=False)]))
    assert plan.delete == ["lost"]


def test_rollout_replaces_one_available_old_pod_at_a_time():
    old = [pod("a", "n1"), pod("b", "n2"), pod("c", "n3")]
    assert plan_rollout(ds(), NODES, by_node(old, False), "h2", NOW) == ["a"]
    # a's replacement is not ready yet: it is the one unavailable, nothing more goes
    step = [pod("a2", "n1", hash_="h2", ready=False), pod("b", "n2"), pod("c", "n3")]
    assert plan_rollout(ds(), NODES, by_node(step, False), "h2", NOW) == []
    # a is still terminating (its node has no pod to count on): nothing either
    gone = [pod("a", "n1", deleting=True), pod("b", "n2"), pod("c", "n3")]
    assert plan_rollout(ds(), NODES, by_node(gone, False), "h2", NOW) == []
    ready = [pod("a2", "n1", hash_="h2"), pod("b", "n2"), pod("c", "n3")]
    assert plan_rollout(ds(), NODES, by_node(ready, False), "h2", NOW) == ["b"]
    done = [pod(x, n, hash_="h2") for x, n in (("a", "n1"), ("b", "n2"), ("c", "n3"))]
    assert plan_rollout(ds(), NODES, by_node(done, False), "h2", NOW) == []


def test_rollout_replaces_unavailable_old_pods_at_once_and_honours_percent():
    broken = [pod("a", "n1", ready=False), pod("b", "n2", ready=False), pod("c", "n3")]
    assert plan_rollout(ds(), NODES, by_node(broken, False), "h2", NOW) == ["a", "b"]
    half = ds(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%", "maxSurge": 0}})
    old = [pod("a", "n1"), pod("b", "n2"), pod("c", "n3")]
    assert plan_rollout(half, NODES, by_node(old, False), "h2", NOW) == ["a", "b"]  # 50% of 3 is 2, rounded up
    # a node wanting a pod but having none counts as unavailable
    assert plan_rollout(half, NODES, by_node(old[1:], False), "h2", NOW) == ["b"]


def test_rollout_counts_min_ready_seconds():
    d = ds(min_ready=30)
    fresh = [pod("a2", "n1", hash_="h2", since="2026-01-01T11:59:50Z"), pod("b", "n2"), pod("c", "n3")]
    assert plan_rollout(d, NODES, by_node(fresh, False), "h2", NOW) == []
    settled = [pod("a2", "n1", hash_="h2", since="2026-01-01T11:59:00Z"), pod("b", "n2"), pod("c", "n3")]
    assert plan_rollout(d, NODES, by_node(settled, False), "h2", NOW) == ["b"]


@pytest.mark.parametrize("value,desired,expected", [
    (1, 3, 1), (2, 3, 2), ("34%", 3, 2), ("10%", 3, 1), ("100%", 3, 3), (0, 3, 1), ("0%", 3, 1), (0, 0, 0)])
def test_max_unavailable(value, desired, expected):
    d = ds(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": value, "maxSurge": 0}})
    assert max_unavailable(d, desired) == expected


def test_status_counts_as_the_daemonset_controller_does():
    nodes = NODES + [node("n4", labels={"x": "y"}, taints=[{"key": "k", "effect": "NoExecute"}])]
    pods = [pod("a", "n1"), pod("b", "n2", hash_="h0", ready=False), pod("x", "n4"),
            pod("gone", "n3", phase="Failed", deleting=True)]
    assert daemon_status(ds(), nodes, by_node(pods, False), "h1", NOW) == {
        "currentNumberScheduled": 2, "numberMisscheduled": 1, "desiredNumberScheduled": 3, "numberReady": 1,
        "updatedNumberScheduled": 1, "numberAvailable": 1, "numberUnavailable": 2}
    # a pod of an older hash is still updated when its template generation is the current one
    b = pod("b", "n2", hash_="h0")
    b["metadata"]["labels"]["pod-template-generation"] = "1"
    assert daemon_status(ds(), NODES, by_node([b], False), "h1", NOW)["updatedNumberScheduled"] == 1
    # ready but not yet for minReadySeconds: ready, not available
    young = [pod("a", "n1", since="2026-01-01T11:59:50Z")]
    got = daemon_status(ds(min_ready=30), NODES[:1], by_node(young, False), "h1", NOW)
    assert (got["numberReady"], got["numberAvailable"], got["numberUnavailable"]) == (1, 0, 1)


def test_history_keeps_the_limit_and_revisions_pods_still_run():
    revs = [{"metadata": {"name": f"r{i}", "labels": {HASH_LABEL: f"h{i}"}}, "revision": i} for i in (3, 1, 2, 4)]
    assert [r["metadata"]["name"] for r in stale_revisions(revs, 2, set())] == ["r1", "r2"]
    assert [r["metadata"]["name"] for r in stale_revisions(revs, 2, {"h1"})] == ["r2", "r3"]
    assert stale_revisions(revs, 10, set()) == []


def test_failed_pod_backoff_doubles_to_its_cap():
    b = Backoff(start=1.0, cap=4.0)
    assert b.wait("k", 100.0) == 0
    b.next("k", 100.0)
    assert b.wait("k", 100.5) == 0.5 and b.wait("k", 101.0) == 0
    b.next("k", 101.0)
    assert b.wait("k", 101.0) == 2.0
    b.next("k", 103.0), b.next("k", 107.0)
    assert b.entries["k"][0] == 4.0
    b.next("k", 200.0)  # quiet for more than twice the cap: starts over
    assert b.entries["k"][0] == 1.0


# ---- the API ---------------------------------------------------------------------------

def api_ds(name="agent", **spec):
    body = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    body["spec"].update(spec)
    return body


def causes(client, body, plural="daemonsets", api_version="apps/v1"):
    with pytest.raises(ApiError) as e:
        client.create(api_version, plural, body, "default")
    assert e.value.code == 422, e.value
    return [(c["field"], c["message"]) for c in e.value.status["details"]["causes"]]


def test_api_defaults_and_template_generation(client):
    made = client.create("apps/v1", "daemonsets", api_ds(), "default")
    spec = made["spec"]
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert spec["revisionHistoryLimit"] == 10 and made["metadata"]["generation"] == 1
    assert spec["template"]["spec"]["restartPolicy"] == "Always"
    assert spec["template"]["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    gen = "deprecated.daemonset.template.generation"
    assert made["metadata"]["annotations"][gen] == "1" and "status" not in made
    same = client.patch("apps/v1", "daemonsets", "agent", {"metadata": {"labels": {"x": "y"}}}, "default")
    assert same["metadata"]["annotations"][gen] == "1" and same["metadata"]["generation"] == 1
    restarted = client.patch("apps/v1", "daemonsets", "agent", {"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}}}}}, "default", kind="strategic")
    assert restarted["metadata"]["annotations"][gen] == "2" and restarted["metadata"]["generation"] == 2
    assert restarted["spec"]["template"]["metadata"]["annotations"] == {
        "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"}
    # a client cannot set the template generation; OnDelete gets no rollingUpdate
    forged = api_ds("other", updateStrategy={"type": "OnDelete"})
    forged["metadata"]["annotations"] = {gen: "7"}
    other = client.create("apps/v1", "daemonsets", forged, "default")
    assert other["metadata"]["annotations"][gen] == "1" and other["spec"]["updateStrategy"] == {"type": "OnDelete"}
    st = client.patch("apps/v1", "daemonsets", "other", {"status": {"desiredNumberScheduled": 3, "numberReady": 0,
                                                                      "currentNumberScheduled": 0,
                                                                      "numberMisscheduled": 0}},
                      "default", sub="status")
    assert st["status"]["desiredNumberScheduled"] == 3 and st["metadata"]["generation"] == 1


def test_api_validation_names_the_field(client):
    wrong = api_ds()
    wrong["spec"]["selector"] = {"matchLabels": {"app": "other"}}
    assert causes(client, wrong) == [("spec.template.metadata.labels", "Invalid value: {'app': 'agent'}: "
                                      "`selector` does not match template `labels`")]
    missing = api_ds()
    del missing["spec"]["selector"]
    assert [f for f, _ in causes(client, missing)] == ["spec.template.metadata.labels"]
    empty = api_ds(selector={})
    assert ("spec.selector", "Invalid value: {}: empty selector is invalid for daemonset") in causes(client, empty)
    never = api_ds()
    never["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert causes(client, never) == [("spec.template.spec.restartPolicy",
                                      "Unsupported value: 'Never': supported values: \"Always\"")]
    zero = api_ds(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0}})
    assert causes(client, zero) == [("spec.updateStrategy.rollingUpdate.maxUnavailable",
                                     "Required value: cannot be 0 when maxSurge is 0")]
    both = api_ds(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}})
    assert [f for f, _ in causes(client, both)] == ["spec.updateStrategy.rollingUpdate.maxSurge"]
    pct = api_ds(updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "150%"}})
    assert causes(client, pct) == [("spec.updateStrategy.rollingUpdate.maxUnavailable",
                                    "Invalid value: '150%': must not be greater than 100%")]
    kind = api_ds(updateStrategy={"type": "Recreate"})
    assert [f for f, _ in causes(client, kind)] == ["spec.updateStrategy"]
    client.create("apps/v1", "daemonsets", api_ds("keep"), "default")
    with pytest.raises(ApiError) as e:
        client.patch("apps/v1", "daemonsets", "keep", {"spec": {"selector": {"matchLabels": {"app": "keep", "x": "y"}},
                                                              "template": {"metadata": {"labels": {"x": "y"}}}}},
                     "default")
    assert e.value.code == 422 and "spec.selector: Invalid value" in e.value.message and "immutable" in e.value.message


def test_tolerations_and_taints_are_validated(client):
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {
        "containers": [{"name": "c", "image": "busybox"}],
        "tolerations": [{"operator": "Equal", "value": "x"}, {"key": "k", "operator": "Exists", "value": "v"},
                        {"key": "k", "operator": "exists"}, {"key": "k", "effect": "NoSchedule",
                                                              "tolerationSeconds": 5},
                        {"key": "k", "operator": "Exists", "effect": "Sometimes"}]}}
    assert [f for f, _ in causes(client, bad, "pods", "v1")] == [
        "spec.tolerations[0].operator", "spec.tolerations[1].operator", "spec.tolerations[2].operator",
        "spec.tolerations[3].effect", "spec.tolerations[4].effect"]
    node_ = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "spec": {"taints": [
        {"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule", "value": "v"},
        {"key": "b"}, {"key": "", "effect": "NoExecute"}]}}
    with pytest.raises(ApiError) as e:
        client.create("v1", "nodes", node_)
    assert [c["field"] for c in e.value.status["details"]["causes"]] == [
        "spec.taints[1]", "spec.taints[2].effect", "spec.taints[3].key"]


def as_table(client, plural):
    r = client.http.get(f"/apis/apps/v1/namespaces/default/{plural}",
                        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert r.status_code == 200, r.text
    return r.json()


def test_discovery_columns_and_controller_revisions(client):
    apps = {r["name"]: r for r in client.request("GET", "/apis/apps/v1")["resources"]}
    assert apps["daemonsets"]["shortNames"] == ["ds"] and "daemonsets/status" in apps
    assert apps["daemonsets"]["categories"] == ["all"] and "controllerrevisions" in apps
    client.create("apps/v1", "daemonsets", api_ds(), "default")
    client.patch("apps/v1", "daemonsets", "agent", {"spec": {"template": {"spec": {"nodeSelector": {
        "kubernetes.io/os": "linux", "disk": "ssd"}}}}}, "default")
    client.patch("apps/v1", "daemonsets", "agent", {"status": {
        "desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 1,
        "numberAvailable": 2, "numberMisscheduled": 0}}, "default", sub="status")
    table = as_table(client, "daemonsets")
    cols = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert cols == [("Name", 0), ("Desired", 0), ("Current", 0), ("Ready", 0), ("Up-to-date", 0), ("Available", 0),
                    ("Node Selector", 0), ("Age", 0), ("Containers", 1), ("Images", 1), ("Selector", 1)]
    cells = table["rows"][0]["cells"]
    assert cells[:7] == ["agent", 3, 3, 2, 1, 2, "disk=ssd,kubernetes.io/os=linux"]
    assert cells[8:] == ["c", "busybox", "app=agent"]
    made = client.get("apps/v1", "daemonsets", "agent", "default")
    rev = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {
        "name": "agent-abc", "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                                                  "uid": made["metadata"]["uid"], "controller": True}]},
        "data": {"spec": {"template": {"$patch": "replace"}}}, "revision": 1}
    client.create("apps/v1", "controllerrevisions", rev, "default")
    table = as_table(client, "controllerrevisions")
    assert table["rows"][0]["cells"][:3] == ["agent-abc", "daemonset.apps/agent", 1]
    with pytest.raises(ApiError) as e:
        client.patch("apps/v1", "controllerrevisions", "agent-abc", {"data": {"other": 1}}, "default")
    assert e.value.code == 422 and "data" in e.value.message
    assert client.patch("apps/v1", "controllerrevisions", "agent-abc", {"revision": 4}, "default")["revision"] == 4
    no_data = dict(rev, metadata={"name": "agent-x"})
    del no_data["data"]
    assert causes(client, no_data, "controllerrevisions") == [("data", "Required value: data is mandatory")]


# ---- the controller against the API server -----------------------------------------------

NS = "kube-system"


def api_node(name):
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"pods": "110"}}}


def stamp():
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Lab:
    """The scheduler and the DaemonSet controller in this process, over fake nodes; the test plays
    the kubelets: a bound pod turns Running and Ready after ``ready_after`` seconds, a deleted one
    goes at once. ``max_unavailable`` is the most nodes seen without a Ready pod of a DaemonSet at
    once, judged after every pod event while ``watching`` names it."""

    def __init__(self, url, ready_after=0.3):
        from trellis.lab.daemonsets import DaemonSetController
        from trellis.lab.workloads import Scheduler
        self.client, self.ready_after = KubeClient(url), ready_after
        c = self.client
        self.informers = [Informer(c, "v1", "pods"), Informer(c, "v1", "nodes"), Informer(c, "apps/v1", "daemonsets"),
                          Informer(c, "apps/v1", "controllerrevisions")]
        pods, nodes, dsets, revs = self.informers
        self.controllers = [Scheduler(c, pods, nodes), DaemonSetController(c, dsets, pods, nodes, revs)]
        self.watch = Informer(c, "v1", "pods", ns=NS)
        self.watch.add_handler(self._judge)
        self.watching, self.max_unavailable = None, 0
        self.stop = threading.Event()
        self.threads = []

    def _judge(self, typ, obj, old):
        if self.watching is None:
            return
        name, nodes = self.watching
        ok = {target_node(p) for p in self.watch.items() if p["metadata"]["name"].startswith(name + "-")
              and not p["metadata"].get("deletionTimestamp") and any(
                  c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])}
        self.max_unavailable = max(self.max_unavailable, len(set(nodes) - ok))

    def kubelets(self):
        first_seen, started = {}, set()
        while not self.stop.wait(0.05):
            try:
                for p in self.client.list("v1", "pods", NS)[0]:
                    md, uid = p["metadata"], p["metadata"]["uid"]
                    if md.get("deletionTimestamp"):
                        try:
                            self.client.delete("v1", "pods", md["name"], NS, grace_period=0)
                        except ApiError:
                            pass
                    elif p["spec"].get("nodeName") and uid not in started:
                        if time.monotonic() - first_seen.setdefault(uid, time.monotonic()) >= self.ready_after:
                            started.add(uid)
                            self.client.patch("v1", "pods", md["name"], {"status": {"phase": "Running", "conditions": [
                                {"type": "Ready", "status": "True", "lastTransitionTime": stamp()}]}}, NS, sub="status")
            except ApiError:
                pass

    def __enter__(self):
        for inf in self.informers + [self.watch]:
            inf.start()
        for inf in self.informers + [self.watch]:
            inf.synced.wait(10)
        self.threads = [threading.Thread(target=c.run, args=(self.stop,), daemon=True) for c in self.controllers]
        self.threads.append(threading.Thread(target=self.kubelets, daemon=True))
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for inf in self.informers + [self.watch]:
            inf.stop()
        for t in self.threads:
            t.join(5)
        self.client.close()


def wait_for(what, check, timeout=20.0):
    return wait_until(what, check, timeout)


def daemon_pods(client, name):
    return sorted((p for p in client.list("v1", "pods", NS)[0] if p["metadata"]["name"].startswith(name + "-")),
                  key=lambda p: p["spec"].get("nodeName") or "")


def settled(client, name, nodes):
    """The DaemonSet's status says every one of ``nodes`` runs a Ready, up-to-date pod."""
    d = client.get("apps/v1", "daemonsets", name, NS)
    st, pods = d.get("status") or {}, daemon_pods(client, name)
    want = len(nodes)
    return (st.get("observedGeneration") == d["metadata"]["generation"] and st.get("desiredNumberScheduled") == want
            and st.get("numberReady") == want and st.get("numberAvailable") == want
            and st.get("updatedNumberScheduled") == want and [p["spec"].get("nodeName") for p in pods] == nodes
            and not any(p["metadata"].get("deletionTimestamp") for p in pods) and pods)


def daemonset(name, tolerations=None):
    body = api_ds(name)
    if tolerations:
        body["spec"]["template"]["spec"]["tolerations"] = tolerations
    return body


def test_one_pod_per_node_taints_and_a_rolling_update_one_node_at_a_time(apiserver, client):
    for n in ("n1", "n2", "n3"):
        client.create("v1", "nodes", api_node(n))
    with Lab(apiserver.url) as lab:
        client.create("apps/v1", "daemonsets", daemonset("plain"), NS)
        client.create("apps/v1", "daemonsets", daemonset("tolerant", [{"key": "maint", "operator": "Exists"}]), NS)
        pods = wait_for("3 pods of each, Ready", lambda: settled(client, "plain", ["n1", "n2", "n3"])
                        and settled(client, "tolerant", ["n1", "n2", "n3"]) and daemon_pods(client, "plain"))
        for p in pods:
            assert p["metadata"]["labels"]["pod-template-generation"] == "1"
            assert p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
                "nodeSelectorTerms"] == [{"matchFields": [{"key": "metadata.name", "operator": "In",
                                                           "values": [p["spec"]["nodeName"]]}]}]
            assert [r["kind"] for r in p["metadata"]["ownerReferences"] if r["controller"]] == ["DaemonSet"]
        assert len({p["metadata"]["labels"][HASH_LABEL] for p in pods}) == 1

        # NoSchedule, untolerated: the pod there stays (it is misscheduled now); NoExecute: it goes
        client.patch("v1", "nodes", "n3", {"spec": {"taints": [{"key": "maint", "effect": "NoSchedule"}]}})
        wait_for("n3 not desired", lambda: (client.get("apps/v1", "daemonsets", "plain", NS)["status"]
                                            .get("numberMisscheduled") == 1))
        assert [p["spec"]["nodeName"] for p in daemon_pods(client, "plain")] == ["n1", "n2", "n3"]
        client.patch("v1", "nodes", "n3", {"spec": {"taints": [{"key": "maint", "effect": "NoExecute"}]}})
        wait_for("plain's pod off n3", lambda: [p["spec"]["nodeName"] for p in daemon_pods(client, "plain")]
                 == ["n1", "n2"])
        st = client.get("apps/v1", "daemonsets", "plain", NS)["status"]
        assert (st["desiredNumberScheduled"], st["numberMisscheduled"]) == (2, 0)
        assert settled(client, "tolerant", ["n1", "n2", "n3"])  # tolerated: still there
        client.patch("v1", "nodes", "n3", {"spec": {"taints": None}})
        wait_for("plain back on n3", lambda: settled(client, "plain", ["n1", "n2", "n3"]))

        # a template change rolls node by node: never two nodes without a Ready pod
        before = {p["metadata"]["name"] for p in daemon_pods(client, "plain")}
        lab.watching, lab.max_unavailable = ("plain", ["n1", "n2", "n3"]), 0
        client.patch("apps/v1", "daemonsets", "plain", {"spec": {"template": {"metadata": {"annotations": {
            "kubectl.kubernetes.io/restartedAt": stamp()}}}}}, NS, kind="strategic")
        after = wait_for("the roll", lambda: settled(client, "plain", ["n1", "n2", "n3"])
                         and daemon_pods(client, "plain"))
        lab.watching = None
        assert lab.max_unavailable == 1  # the monitor saw the roll, and never more than one node down
        assert not before & {p["metadata"]["name"] for p in after}
        assert {p["metadata"]["labels"]["pod-template-generation"] for p in after} == {"2"}
        new_hash = after[0]["metadata"]["labels"][HASH_LABEL]
        assert {p["metadata"]["labels"][HASH_LABEL] for p in after} == {new_hash}
        assert new_hash != pods[0]["metadata"]["labels"][HASH_LABEL]
        revs = sorted((r for r in client.list("apps/v1", "controllerrevisions", NS)[0]
                       if r["metadata"]["name"].startswith("plain-")), key=lambda r: r["revision"])
        assert [r["revision"] for r in revs] == [1, 2]
        assert revs[1]["metadata"]["name"] == "plain-" + new_hash
        events = [e for e in client.list("v1", "events", NS)[0] if e["involvedObject"]["name"] == "plain"]
        assert {"SuccessfulCreate", "SuccessfulDelete"} <= {e["reason"] for e in events}
        assert all(e["source"]["component"] == "daemonset-controller" for e in events)


def test_failed_pods_are_replaced_and_on_delete_waits_for_a_deletion(apiserver, client):
    for n in ("n1", "n2"):
        client.create("v1", "nodes", api_node(n))
    with Lab(apiserver.url, ready_after=0.1):
        client.create("apps/v1", "daemonsets", daemonset("keeper"), NS)
        on_delete = daemonset("manual")
        on_delete["spec"]["updateStrategy"] = {"type": "OnDelete"}
        client.create("apps/v1", "daemonsets", on_delete, NS)
        wait_for("both settled", lambda: settled(client, "keeper", ["n1", "n2"]) and settled(client, "manual", ["n1", "n2"]))

        victim = daemon_pods(client, "keeper")[0]
        client.patch("v1", "pods", victim["metadata"]["name"], {"status": {"phase": "Failed", "conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": stamp()}]}}, NS, sub="status")
        gone = victim["metadata"]["name"]
        fresh = wait_for("a new pod on n1", lambda: gone not in {p["metadata"]["name"] for p in daemon_pods(
            client, "keeper")} and settled(client, "keeper", ["n1", "n2"]) and daemon_pods(client, "keeper"))
        assert fresh[0]["spec"]["nodeName"] == "n1" and fresh[0]["metadata"]["name"] != victim["metadata"]["name"]
        reasons = [e["reason"] for e in client.list("v1", "events", NS)[0] if e["involvedObject"]["name"] == "keeper"]
        assert "FailedDaemonPod" in reasons

        old = {p["metadata"]["name"]: p for p in daemon_pods(client, "manual")}
        client.patch("apps/v1", "daemonsets", "manual", {"spec": {"template": {"metadata": {"annotations": {
            "v": "2"}}}}}, NS, kind="strategic")
        st = wait_for("generation 2 observed", lambda: (lambda d: d["status"] if d["status"].get(
            "observedGeneration") == 2 else None)(client.get("apps/v1", "daemonsets", "manual", NS)))
        assert st.get("updatedNumberScheduled", 0) == 0 and st["numberAvailable"] == 2
        assert set(old) == {p["metadata"]["name"] for p in daemon_pods(client, "manual")}  # nothing replaced
        first = daemon_pods(client, "manual")[0]
        client.delete("v1", "pods", first["metadata"]["name"], NS)
        got = wait_for("n1 replaced", lambda: (lambda ps: ps if len(ps) == 2 and ps[0]["metadata"]["name"] not in old
                                               and ps[0]["status"].get("phase") == "Running" else None)(
            daemon_pods(client, "manual")))
        assert got[0]["metadata"]["labels"]["pod-template-generation"] == "2"
        assert got[1]["metadata"]["name"] in old  # the other node keeps its old pod
        wait_for("one updated", lambda: client.get("apps/v1", "daemonsets", "manual", NS)["status"].get(
            "updatedNumberScheduled") == 1)


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_get_rollout_status_restart_history_and_undo(apiserver, client, tmp_path):
    env = dict(os.environ, KUBECONFIG=apiserver.kubeconfig(), HOME=str(tmp_path))

    def kubectl(*args):
        p = subprocess.run(["kubectl", "-n", NS, *args], capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, f"kubectl {' '.join(args)}: {p.stderr}"
        return p.stdout

    for n in ("n1", "n2", "n3"):
        client.create("v1", "nodes", api_node(n))
    manifest = tmp_path / "ds.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n"
        "  selector: {matchLabels: {app: agent}}\n  template:\n    metadata: {labels: {app: agent}}\n"
        "    spec:\n      nodeSelector: {kubernetes.io/os: linux}\n"
        "      containers: [{name: agent, image: trellis/agent:1}]\n")
    for n in ("n1", "n2", "n3"):
        client.patch("v1", "nodes", n, {"metadata": {"labels": {"kubernetes.io/os": "linux"}}})
    with Lab(apiserver.url, ready_after=0.1):
        kubectl("apply", "-f", str(manifest))
        out = kubectl("rollout", "status", "ds/agent", "--timeout=30s")
        assert out.strip().endswith('daemon set "agent" successfully rolled out')
        lines = kubectl("get", "ds", "-o", "wide").splitlines()
        assert lines[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE",
                                    "SELECTOR", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"]
        assert lines[1].split()[:7] == ["agent", "3", "3", "3", "3", "3", "kubernetes.io/os=linux"]
        assert lines[1].split()[8:] == ["agent", "trellis/agent:1", "app=agent"]
        before = {p["metadata"]["name"] for p in daemon_pods(client, "agent")}
        assert "daemonset.apps/agent restarted" in kubectl("rollout", "restart", "ds/agent")
        kubectl("rollout", "status", "ds/agent", "--timeout=30s")
        assert not before & {p["metadata"]["name"] for p in daemon_pods(client, "agent")}
        assert kubectl("get", "ds", "agent", "-o", "jsonpath={.spec.template.metadata.annotations}").count(
            "kubectl.kubernetes.io/restartedAt") == 1
        history = kubectl("rollout", "history", "ds/agent").split()
        assert history[:4] == ["daemonset.apps/agent", "REVISION", "CHANGE-CAUSE", "1"] and history[5:7] == ["2", "<none>"]
        assert "restartedAt" not in kubectl("rollout", "history", "ds/agent", "--revision=1")
        assert "kubectl.kubernetes.io/restartedAt" in kubectl("rollout", "history", "ds/agent", "--revision=2")
        assert "rolled back" in kubectl("rollout", "undo", "ds/agent")
        kubectl("rollout", "status", "ds/agent", "--timeout=30s")
        tmpl = client.get("apps/v1", "daemonsets", "agent", NS)["spec"]["template"]
        assert not (tmpl["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/restartedAt")
        revs = wait_for("revision 1 renumbered 3", lambda: sorted(
            r["revision"] for r in client.list("apps/v1", "controllerrevisions", NS)[0]) == [2, 3])
        assert revs
