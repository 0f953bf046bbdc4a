"""Pure pieces of the API: selectors and the three patch formats."""
import pytest

from trellis.kube import selectors
from trellis.lab.apiserver import patch


@pytest.mark.parametrize("text,labels,expected", [
    ("app=web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("app==web,tier!=db", {"app": "web", "tier": "fe"}, True),
    ("app!=web", {}, True),
    ("env in (prod, staging)", {"env": "staging"}, True),
    ("env notin (prod)", {"env": "prod"}, False),
    ("env notin (prod)", {}, True),
    ("app", {"app": ""}, True),
    ("!app", {"app": "x"}, False),
    ("app,env in (a,b),!legacy", {"app": "1", "env": "b"}, True),
    ("", {"anything": "x"}, True),
])
def test_label_selector_strings(text, labels, expected):
    assert selectors.matches(selectors.parse_label_selector(text), labels) is expected


def test_structured_selector_and_empty_vs_absent():
    sel = {"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In",
                                                               "values": ["fe", "be"]}]}
    assert selectors.labels_match(sel, {"app": "web", "tier": "be"})
    assert not selectors.labels_match(sel, {"app": "web"})
    assert selectors.labels_match({}, {"x": "y"})  # empty selector: everything
    assert not selectors.labels_match(None, {"x": "y"})  # absent: nothing
    assert selectors.to_string(sel) == "app=web,tier in (fe,be)"


def test_bad_selector_names_the_part():
    with pytest.raises(selectors.SelectorError, match="a b c"):
        selectors.parse_label_selector("app=web,a b c")
    with pytest.raises(selectors.SelectorError, match=r"matchExpressions\[0\].operator"):
        selectors.from_label_selector({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})


def test_field_selector():
    pod = {"metadata": {"name": "a", "namespace": "x"}, "spec": {"nodeName": "node-1"}, "status": {"phase": "Running"}}
    assert selectors.fields_match(selectors.parse_field_selector("spec.nodeName=node-1,status.phase!=Failed"), pod)
    assert not selectors.fields_match(selectors.parse_field_selector("spec.nodeName=node-2"), pod)
    assert selectors.fields_match(selectors.parse_field_selector("spec.nodeName="), {"metadata": {}, "spec": {}})


def test_json_merge_patch_rfc7386():
    assert patch.json_merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == \
        {"a": "z", "c": {"d": "e"}}
    assert patch.json_merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_json_patch_rfc6902():
    doc = {"metadata": {"labels": {"a": "1"}}, "list": [1, 2, 3]}
    out = patch.json_patch(doc, [
        {"op": "add", "path": "/metadata/labels/b~1c", "value": "2"},
        {"op": "remove", "path": "/list/0"},
        {"op": "replace", "path": "/list/0", "value": 9},
        {"op": "add", "path": "/list/-", "value": 4},
        {"op": "copy", "from": "/list/0", "path": "/first"},
        {"op": "test", "path": "/first", "value": 9}])
    assert out == {"metadata": {"labels": {"a": "1", "b/c": "2"}}, "list": [9, 3, 4], "first": 9}
    assert doc["list"] == [1, 2, 3]  # input untouched
    with pytest.raises(patch.PatchError, match="test failed"):
        patch.json_patch(doc, [{"op": "test", "path": "/list/0", "value": 7}])


def test_strategic_merge_patch_merges_keyed_lists_as_kubectl_sends_them():
    live = {"spec": {"containers": [
        {"name": "web", "image": "nginx", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
         "ports": [{"containerPort": 80, "protocol": "TCP"}]},
        {"name": "side", "image": "busybox"}]}}
    p = {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}],
                  "containers": [{"name": "web", "$setElementOrder/env": [{"name": "A"}],
                                  "env": [{"name": "A", "value": "9"}, {"name": "B", "$patch": "delete"}]}]}}
    out = patch.strategic_merge_patch(live, p)
    web = next(c for c in out["spec"]["containers"] if c["name"] == "web")
    assert web["image"] == "nginx" and web["env"] == [{"name": "A", "value": "9"}]
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "web"]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP"}]


def test_strategic_merge_patch_directives():
    live = {"metadata": {"finalizers": ["a", "b"]}, "spec": {"tolerations": [{"key": "x"}], "x": 1, "y": 2}}
    out = patch.strategic_merge_patch(live, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
                                             "spec": {"tolerations": [{"key": "y"}], "$retainKeys": ["x", "tolerations"]}})
    assert out["metadata"]["finalizers"] == ["b"]
    assert out["spec"] == {"tolerations": [{"key": "y"}], "x": 1}  # unkeyed list replaced; y dropped
    out = patch.strategic_merge_patch(live, {"spec": {"$patch": "replace", "z": 3}})
    assert out["spec"] == {"z": 3}
