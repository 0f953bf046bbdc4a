"""The lab scheduler's choice: taints and tolerations (readiness among them), nodeSelector and required
node affinity, room (allocatable pods) and spreading, with kube-scheduler's words when nothing fits."""
import pytest

from trellis.lab.placement import (condition_taints, fits_affinity, node_taints, place, tolerates,
                                   untolerated)

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"


def node(name, pods=None, ready="True", labels=None, unschedulable=False, taints=None, conditions=None):
    conds = [] if ready is None else [{"type": "Ready", "status": ready}]
    status = {"conditions": conds + (conditions or [])}
    if pods is not None:
        status["allocatable"] = {"pods": str(pods)}
    spec = {"unschedulable": unschedulable}
    if taints is not None:
        spec["taints"] = taints
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec, "status": status}


def pod(name, node_name=None, owner=None, phase="Running", selector=None, tolerations=None, affinity=None):
    md = {"namespace": "default", "name": name}
    if owner:
        md["ownerReferences"] = [{"uid": owner, "controller": True}]
    spec = {"nodeName": node_name} if node_name else {}
    if selector:
        spec["nodeSelector"] = selector
    if tolerations is not None:
        spec["tolerations"] = tolerations
    if affinity is not None:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": affinity}}}
    return {"metadata": md, "spec": spec, "status": {"phase": phase}}


def taint(key, effect="NoSchedule", value=None):
    return {"key": key, "effect": effect, **({"value": value} if value is not None else {})}


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


def test_each_node_counts_under_the_first_filter_it_fails_sorted_as_kube_scheduler_prints():
    nodes = [node("n1", ready="Unknown"), node("n2", unschedulable=True), node("n3", labels={"zone": "a"}),
             node("n4", ready="False", labels={"zone": "b"})]
    assert place(pod("x", selector={"zone": "b"}), nodes, [], {}).message == (
        "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "
        "1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 1 node(s) were unschedulable")
    assert place(pod("x"), nodes[:1] * 3, [], {}).message == \
        "0/3 nodes are available: 3 node(s) had untolerated taint {node.kubernetes.io/unreachable: }"
    assert place(pod("x"), nodes, [], {}).node == "n3"
    assert place(pod("x"), [], [], {}).message == "no nodes available to schedule pods"


def test_a_taint_keeps_pods_off_unless_tolerated_and_its_value_is_in_the_message():
    nodes = [node("n1", taints=[taint("dedicated", value="gpu")])]
    assert place(pod("x"), nodes, [], {}).message == \
        "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}"
    ok = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert place(pod("x", tolerations=ok), nodes, [], {}).node == "n1"
    wrong_value = [{"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}]
    assert place(pod("x", tolerations=wrong_value), nodes, [], {}).node is None


def test_prefer_no_schedule_does_not_filter_and_no_execute_does():
    assert place(pod("x"), [node("n1", taints=[taint("soft", "PreferNoSchedule")])], [], {}).node == "n1"
    assert place(pod("x"), [node("n1", taints=[taint("hard", "NoExecute")])], [], {}).node is None


@pytest.mark.parametrize("toleration,tainted,expected", [
    ({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}, taint("k", value="v"), True),
    ({"key": "k", "value": "v"}, taint("k", value="v"), True),            # no operator: Equal; no effect: all
    ({"key": "k", "value": "v"}, taint("k", "NoExecute", "v"), True),
    ({"key": "k", "value": "w"}, taint("k", value="v"), False),
    ({"key": "k"}, taint("k"), True),                                   # Equal with both values empty
    ({"key": "k"}, taint("k", value="v"), False),
    ({"key": "k", "operator": "Exists"}, taint("k", value="anything"), True),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, taint("k"), False),
    ({"key": "other", "operator": "Exists"}, taint("k"), False),
    ({"operator": "Exists"}, taint("k", "NoExecute", "v"), True),       # empty key + Exists: everything
    ({"operator": "Exists", "effect": "NoSchedule"}, taint("k", "NoExecute"), False),
    ({"key": "k", "operator": "Gt", "value": "1"}, taint("k", value="2"), False),  # not a toleration operator
])
def test_toleration_semantics_are_kubernetes(toleration, tainted, expected):
    assert tolerates(toleration, tainted) is expected


def test_untolerated_returns_the_first_filtering_taint_in_node_order():
    taints = [taint("soft", "PreferNoSchedule"), taint("a"), taint("b", "NoExecute")]
    assert untolerated(taints, [])["key"] == "a"
    assert untolerated(taints, [{"key": "a", "operator": "Exists"}])["key"] == "b"
    assert untolerated(taints, [{"operator": "Exists"}]) is None


def test_not_ready_nodes_take_no_ordinary_pods_but_pods_tolerating_it():
    """A NotReady node keeps ordinary pods off through its taint, also before node lifecycle wrote it."""
    written = node("n1", ready="False", taints=[taint(NOT_READY), taint(NOT_READY, "NoExecute")])
    unwritten = node("n1", ready="False")
    for n in (written, unwritten):
        assert place(pod("x"), [n], [], {}).message == \
            "0/1 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }"
        assert place(pod("agent", tolerations=[{"operator": "Exists"}]), [n], [], {}).node == "n1"
    # the DaemonSet defaults (NoExecute only) are not enough to be placed on a NotReady node
    ds_defaults = [{"key": NOT_READY, "operator": "Exists", "effect": "NoExecute"}]
    assert place(pod("d", tolerations=ds_defaults), [unwritten], [], {}).node is None
    assert place(pod("d", tolerations=ds_defaults + [{"key": NOT_READY, "operator": "Exists",
                                                      "effect": "NoSchedule"}]), [unwritten], [], {}).node == "n1"


def test_a_new_node_without_a_ready_condition_or_still_carrying_the_kubelets_taint_gets_no_pods():
    fresh = node("n1", ready=None)
    assert node_taints(fresh) == [taint(NOT_READY)]
    assert place(pod("x"), [fresh], [], {}).node is None
    # Ready already True, but node lifecycle has not taken the registration taint off yet
    registered = node("n1", taints=[taint(NOT_READY)])
    assert place(pod("x"), [registered], [], {}).node is None
    assert place(pod("x"), [node("n1", taints=[])], [], {}).node == "n1"


def test_an_unreachable_node_implies_its_own_taints_not_not_ready():
    assert node_taints(node("n1", ready="Unknown")) == [taint(UNREACHABLE), taint(UNREACHABLE, "NoExecute")]
    written = node("n1", ready="Unknown", taints=[taint(UNREACHABLE, "NoExecute")])
    assert node_taints(written) == [taint(UNREACHABLE, "NoExecute"), taint(UNREACHABLE)]
    assert node_taints(node("n1")) == []


def test_a_cordoned_node_takes_pods_tolerating_unschedulable_only():
    cordoned = node("n1", unschedulable=True)
    assert place(pod("x"), [cordoned], [], {}).message == "0/1 nodes are available: 1 node(s) were unschedulable"
    tol = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]
    assert place(pod("x", tolerations=tol), [cordoned], [], {}).node == "n1"


def test_condition_taints_follow_taint_nodes_by_condition():
    n = node("n1", ready="False", unschedulable=True, conditions=[
        {"type": "MemoryPressure", "status": "True"}, {"type": "DiskPressure", "status": "False"},
        {"type": "PIDPressure", "status": "True"}, {"type": "NetworkUnavailable", "status": "True"}])
    assert condition_taints(n) == [
        taint(NOT_READY), taint("node.kubernetes.io/memory-pressure"), taint("node.kubernetes.io/pid-pressure"),
        taint("node.kubernetes.io/network-unavailable"), taint("node.kubernetes.io/unschedulable"),
        taint(NOT_READY, "NoExecute")]
    assert condition_taints(node("n1", ready="Unknown")) == [taint(UNREACHABLE), taint(UNREACHABLE, "NoExecute")]
    assert condition_taints(node("n1")) == []
    assert condition_taints(node("n1", ready=None)) == []  # upstream taints by conditions present only


def expr(key, op, *values):
    return {"key": key, "operator": op, **({"values": list(values)} if values else {})}


@pytest.mark.parametrize("requirement,expected", [
    (expr("zone", "In", "a", "b"), True), (expr("zone", "In", "c"), False), (expr("nope", "In", "a"), False),
    (expr("zone", "NotIn", "c"), True), (expr("zone", "NotIn", "a"), False), (expr("nope", "NotIn", "a"), True),
    (expr("zone", "Exists"), True), (expr("nope", "Exists"), False),
    (expr("zone", "DoesNotExist"), False), (expr("nope", "DoesNotExist"), True),
    (expr("cores", "Gt", "4"), True), (expr("cores", "Gt", "8"), False), (expr("cores", "Lt", "9"), True),
    (expr("cores", "Lt", "8"), False), (expr("zone", "Gt", "1"), False), (expr("nope", "Lt", "1"), False),
])
def test_node_affinity_operators_on_labels(requirement, expected):
    n = node("n1", labels={"zone": "a", "cores": "8"})
    assert fits_affinity(pod("x", affinity=[{"matchExpressions": [requirement]}])["spec"], n) is expected


def test_node_affinity_terms_or_requirements_and_fields_name_the_node():
    n1, n2 = node("n1", labels={"zone": "a", "disk": "ssd"}), node("n2", labels={"zone": "b"})
    both = [{"matchExpressions": [expr("zone", "In", "a"), expr("disk", "In", "ssd")]}]
    assert [fits_affinity(pod("x", affinity=both)["spec"], n) for n in (n1, n2)] == [True, False]
    either = [{"matchExpressions": [expr("zone", "In", "b")]}, {"matchExpressions": [expr("disk", "Exists")]}]
    assert [fits_affinity(pod("x", affinity=either)["spec"], n) for n in (n1, n2)] == [True, True]
    by_name = [{"matchFields": [expr("metadata.name", "In", "n2")]}]
    assert [fits_affinity(pod("x", affinity=by_name)["spec"], n) for n in (n1, n2)] == [False, True]
    not_name = [{"matchFields": [expr("metadata.name", "NotIn", "n2")]}]
    assert [fits_affinity(pod("x", affinity=not_name)["spec"], n) for n in (n1, n2)] == [True, False]
    other_field = [{"matchFields": [expr("metadata.uid", "In", "n1")]}]
    assert not fits_affinity(pod("x", affinity=other_field)["spec"], n1)
    assert not fits_affinity(pod("x", affinity=[{}])["spec"], n1)        # an empty term matches nothing
    assert not fits_affinity(pod("x", affinity=[])["spec"], n1)          # no terms: nothing either
    # nodeSelector and affinity must both hold
    assert not fits_affinity(pod("x", selector={"zone": "b"}, affinity=by_name)["spec"], n1)


def test_the_scheduler_honours_required_affinity():
    nodes = [node("n1"), node("n2"), node("n3")]
    only_n2 = [{"matchFields": [expr("metadata.name", "In", "n2")]}]
    assert place(pod("x", affinity=only_n2), nodes, [], {}).node == "n2"
    gone = [{"matchFields": [expr("metadata.name", "In", "n9")]}]
    assert place(pod("x", affinity=gone), nodes, [], {}).message == \
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector"


def test_siblings_spread_before_all_pods():
    nodes = [node("n1"), node("n2")]
    # n1 has fewer pods in all, but already one sibling of the same ReplicaSet
    running = [pod("s1", "n1", owner="rs"), pod("o1", "n2"), pod("o2", "n2")]
    assert place(pod("s2", owner="rs"), nodes, running, {}).node == "n2"
    assert place(pod("lone"), nodes, running, {}).node == "n1"
