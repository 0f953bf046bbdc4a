"""Node lifecycle's condition taints (TaintNodesByCondition): the decision for one node, and the
controller against the lab API server keeping them in step with the node's Ready condition."""
import datetime as dt
import threading

from conftest import wait_until
from trellis.kube.client import KubeClient
from trellis.kube.informer import Informer
from trellis.lab.nodelifecycle import NodeLifecycleController, reconciled_taints

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.timezone.utc)
STAMP = "2026-01-01T12:00:00Z"
NOT_READY, UNREACHABLE = "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"


def node(ready="True", taints=None, unschedulable=False, **conds):
    conditions = ([{"type": "Ready", "status": ready}] if ready else []) + [
        {"type": t, "status": s} for t, s in conds.items()]
    spec = {"unschedulable": True} if unschedulable else {}
    if taints is not None:
        spec["taints"] = taints
    return {"metadata": {"name": "n1"}, "spec": spec, "status": {"conditions": conditions}}


def test_a_not_ready_node_gets_not_ready_no_schedule_and_no_execute_stamped():
    assert reconciled_taints(node("False"), NOW) == [
        {"key": NOT_READY, "effect": "NoSchedule", "timeAdded": STAMP},
        {"key": NOT_READY, "effect": "NoExecute", "timeAdded": STAMP}]


def test_unknown_swaps_not_ready_for_unreachable_and_keeps_what_is_right_with_its_time():
    had = [{"key": NOT_READY, "effect": "NoSchedule", "timeAdded": "2026-01-01T11:00:00Z"},
           {"key": NOT_READY, "effect": "NoExecute", "timeAdded": "2026-01-01T11:00:00Z"}]
    assert reconciled_taints(node("Unknown", had), NOW) == [
        {"key": UNREACHABLE, "effect": "NoSchedule", "timeAdded": STAMP},
        {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": STAMP}]
    assert reconciled_taints(node("False", had), NOW) is None  # already right: nothing to write


def test_ready_takes_the_managed_taints_off_and_leaves_the_others():
    mine = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    registered = [{"key": NOT_READY, "effect": "NoSchedule"}, mine,
                  {"key": NOT_READY, "effect": "NoExecute", "timeAdded": "2026-01-01T11:00:00Z"}]
    assert reconciled_taints(node("True", registered), NOW) == [mine]
    assert reconciled_taints(node("True", [mine]), NOW) is None
    assert reconciled_taints(node("True"), NOW) is None
    # a not-ready key with an effect it does not manage is not its business either
    other = {"key": NOT_READY, "effect": "PreferNoSchedule"}
    assert reconciled_taints(node("True", [other]), NOW) is None


def test_pressure_network_and_cordon_taints():
    got = reconciled_taints(node("True", unschedulable=True, MemoryPressure="True", DiskPressure="True",
                                 PIDPressure="False", NetworkUnavailable="True"), NOW)
    assert [(t["key"], t["effect"]) for t in got] == [
        ("node.kubernetes.io/memory-pressure", "NoSchedule"), ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/network-unavailable", "NoSchedule"), ("node.kubernetes.io/unschedulable", "NoSchedule")]


def wait_for(what, check, timeout=10.0):
    return wait_until(what, check, timeout)


def taint_keys(client, name):
    return [(t["key"], t["effect"]) for t in client.get("v1", "nodes", name)["spec"].get("taints") or []]


def test_the_controller_follows_ready_at_once(apiserver, client):
    """Registered NotReady with the kubelet's taint -> NoExecute added; Ready -> both gone well
    before the 60 s period (a node event wakes the pass); a user's taint stays throughout."""
    mine = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    client.create("v1", "nodes", {"metadata": {"name": "n1"}, "spec": {"taints": [
        {"key": NOT_READY, "effect": "NoSchedule"}, mine]},
        "status": {"conditions": [{"type": "Ready", "status": "False"}]}})
    cm = KubeClient(apiserver.url)
    nodes = Informer(cm, "v1", "nodes")
    nlc = NodeLifecycleController(cm, nodes, period=60.0)
    stop = threading.Event()
    nodes.start()
    t = threading.Thread(target=nlc.run, args=(stop,), daemon=True)
    t.start()
    try:
        wait_for("not-ready:NoExecute", lambda: taint_keys(client, "n1") == [
            (NOT_READY, "NoSchedule"), ("dedicated", "NoSchedule"), (NOT_READY, "NoExecute")])
        client.patch("v1", "nodes", "n1", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
                     sub="status")
        wait_for("the not-ready taints gone", lambda: taint_keys(client, "n1") == [("dedicated", "NoSchedule")])
        client.patch("v1", "nodes", "n1", {"spec": {"unschedulable": True}})
        wait_for("the cordon taint", lambda: ("node.kubernetes.io/unschedulable", "NoSchedule")
                 in taint_keys(client, "n1"))
    finally:
        stop.set()
        nlc.wake.set()
        nodes.stop()
        t.join(5)
        cm.close()
