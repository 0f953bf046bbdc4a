"""The lab scheduler's choice: readiness, nodeSelector, room (allocatable pods) and spreading."""
from trellis.lab.placement import place


def node(name, pods=None, ready=True, labels=None, unschedulable=False):
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "Unknown"}]}
    if pods is not None:
        status["allocatable"] = {"pods": str(pods)}
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"unschedulable": unschedulable},
            "status": status}


def pod(name, node_name=None, owner=None, phase="Running", selector=None):
    md = {"namespace": "default", "name": name}
    if owner:
        md["ownerReferences"] = [{"uid": owner, "controller": True}]
    spec = {"nodeName": node_name} if node_name else {}
    if selector:
        spec["nodeSelector"] = selector
    return {"metadata": md, "spec": spec, "status": {"phase": phase}}


def test_a_full_node_takes_no_more_pods():
    nodes = [node("n1", pods=2)]
    running = [pod("a", "n1"), pod("b", "n1")]
    got = place(pod("c"), nodes, running + [pod("c")], {})
    assert got.node is None and got.message == "0/1 nodes are available: 1 Too many pods"


def test_finished_pods_free_their_place_and_assumed_ones_hold_it():
    nodes = [node("n1", pods=2)]
    assert place(pod("c"), nodes, [pod("a", "n1"), pod("b", "n1", phase="Succeeded")], {}).node == "n1"
    # "b" was bound a moment ago; the informer has not seen it bound yet
    assert place(pod("c"), nodes, [pod("a", "n1"), pod("b")], {"default/b": "n1"}).node is None


def test_the_default_room_is_110_pods():
    running = [pod(f"p{i}", "n1") for i in range(110)]
    assert place(pod("x"), [node("n1")], running, {}).node is None
    assert place(pod("x"), [node("n1")], running[:109], {}).node == "n1"


def test_full_nodes_are_skipped_not_only_refused():
    nodes = [node("n1", pods=1), node("n2", pods=5)]
    running = [pod("a", "n1"), pod("b", "n2"), pod("c", "n2")]
    assert place(pod("d"), nodes, running, {}).node == "n2"


def test_not_ready_cordoned_and_unmatched_nodes_are_filtered():
    nodes = [node("n1", ready=False), node("n2", unschedulable=True), node("n3", labels={"zone": "a"})]
    assert place(pod("x", selector={"zone": "b"}), nodes, [], {}).message == \
        "0/3 nodes are available: didn't match Pod's node affinity/selector"
    assert place(pod("x"), nodes[:2], [], {}).message == "0/2 nodes are available: no Ready node"
    assert place(pod("x"), nodes, [], {}).node == "n3"


def test_siblings_spread_before_all_pods():
    nodes = [node("n1"), node("n2")]
    # n1 has fewer pods in all, but already one sibling of the same ReplicaSet
    running = [pod("s1", "n1", owner="rs"), pod("o1", "n2"), pod("o2", "n2")]
    assert place(pod("s2", owner="rs"), nodes, running, {}).node == "n2"
    assert place(pod("lone"), nodes, running, {}).node == "n1"
