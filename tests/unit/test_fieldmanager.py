"""managedFields bookkeeping and server-side apply, as pure functions (fieldpaths, fieldmanager)."""
import copy

import pytest

from trellis.lab.apiserver import fieldmanager as fm, fieldpaths as fp

DEPLOY = {"metadata": {"labels": {"app": "web"}}, "spec": {
    "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
        "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
            "name": "web", "image": "nginx", "args": ["-g", "daemon off;"],
            "ports": [{"containerPort": 80}], "env": [{"name": "COLOR", "value": "blue"}]}]}}}}
SERVICE = {"spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [
    {"port": 80, "targetPort": "http"}, {"port": 53, "protocol": "UDP"}]}}
WEB = ("k", '{"name":"web"}')
CONTAINER = (("f", "spec"), ("f", "template"), ("f", "spec"), ("f", "containers"), WEB)


def paths(*texts):
    """Paths written as upstream prints them in FieldsV1, one element per dotted part."""
    return {tuple((t[0], t[2:]) for t in text.split("|")) for text in texts}


@pytest.mark.parametrize("obj,model,expected", [
    (DEPLOY, "V1Deployment", paths(
        "f:metadata|f:labels|f:app", "f:spec|f:replicas", "f:spec|f:selector",  # LabelSelector is atomic
        "f:spec|f:template|f:metadata|f:labels|f:app",
        'f:spec|f:template|f:spec|f:containers|k:{"name":"web"}',
        *(f'f:spec|f:template|f:spec|f:containers|k:{{"name":"web"}}|f:{f}' for f in ("name", "image", "args")),
        'f:spec|f:template|f:spec|f:containers|k:{"name":"web"}|f:ports|k:{"containerPort":80,"protocol":"TCP"}',
        'f:spec|f:template|f:spec|f:containers|k:{"name":"web"}|f:ports|k:{"containerPort":80,"protocol":"TCP"}'
        '|f:containerPort',
        'f:spec|f:template|f:spec|f:containers|k:{"name":"web"}|f:env|k:{"name":"COLOR"}',
        'f:spec|f:template|f:spec|f:containers|k:{"name":"web"}|f:env|k:{"name":"COLOR"}|f:name',
        'f:spec|f:template|f:spec|f:containers|k:{"name":"web"}|f:env|k:{"name":"COLOR"}|f:value')),
    (SERVICE, "V1Service", paths(
        "f:spec|f:type", "f:spec|f:selector|f:app",
        'f:spec|f:ports|k:{"port":80,"protocol":"TCP"}', 'f:spec|f:ports|k:{"port":80,"protocol":"TCP"}|f:port',
        'f:spec|f:ports|k:{"port":80,"protocol":"TCP"}|f:targetPort',
        'f:spec|f:ports|k:{"port":53,"protocol":"UDP"}', 'f:spec|f:ports|k:{"port":53,"protocol":"UDP"}|f:port',
        'f:spec|f:ports|k:{"port":53,"protocol":"UDP"}|f:protocol')),
    ({"metadata": {"finalizers": ["a/b"]}, "data": {"k": "v"}}, "V1ConfigMap",
     paths('f:metadata|f:finalizers|v:"a/b"', "f:data|f:k")),
    ({"spec": {"x": [1, 2], "m": {"n": 1}}}, None, paths("f:spec|f:x", "f:spec|f:m|f:n")),  # untyped: lists atomic
])
def test_members_of_an_applied_configuration(obj, model, expected):
    got = fp.members(obj, model)
    assert got == expected
    assert fp.decode(fp.encode(got)) == got


def test_fieldsv1_encoding_marks_items_and_maps_with_a_dot():
    entry = fm.record_update([], {}, {"metadata": {"labels": {"app": "web"}}}, "m", "v1", "V1ConfigMap", "T")
    assert fm.managed_of(entry)[0]["fieldsV1"] == {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}}
    applied = fp.encode(fp.members(DEPLOY, "V1Deployment"))
    assert applied["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']["."] == {}
    assert applied["f:spec"]["f:selector"] == {} and "." not in applied["f:metadata"]["f:labels"]


def test_path_strings_as_upstream_prints_them():
    assert fp.path_string(CONTAINER + (("f", "image"),)) == '.spec.template.spec.containers[name="web"].image'
    assert fp.path_string((("f", "spec"), ("f", "ports"), ("k", '{"port":80,"protocol":"TCP"}'))) == \
        '.spec.ports[port=80,protocol="TCP"]'
    assert fp.path_string((("f", "metadata"), ("f", "finalizers"), ("v", '"x"'))) == '.metadata.finalizers[="x"]'


def created_by(manager, obj, model="V1Deployment"):
    return fm.record_update([], {}, obj, manager, "apps/v1", model, "T0")


def with_change(obj, path, value):
    out = copy.deepcopy(obj)
    parent = fp.get(out, path[:-1])
    parent[path[-1][1]] = value
    return out


REPLICAS = (("f", "spec"), ("f", "replicas"))
IMAGE = CONTAINER + (("f", "image"),)


@pytest.mark.parametrize("change,conflicting", [
    ((REPLICAS, 3), [".spec.replicas"]),
    ((IMAGE, "nginx:2"), ['.spec.template.spec.containers[name="web"].image']),
    ((REPLICAS, 2), []),  # the same value: no conflict, the field becomes shared
])
def test_a_change_to_another_managers_field_conflicts(change, conflicting):
    entries = created_by("kubectl-client-side-apply", DEPLOY)
    applied = with_change(DEPLOY, *change)
    if conflicting:
        with pytest.raises(fm.Conflicts) as e:
            fm.apply(entries, DEPLOY, applied, "kubectl", "apps/v1", "V1Deployment", "T1")
        assert [fp.path_string(c.path) for c in e.value.found] == conflicting
        assert str(e.value) == (f'Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" '
                                f"using apps/v1: {conflicting[0]}")
    else:
        _, after = fm.apply(entries, DEPLOY, applied, "kubectl", "apps/v1", "V1Deployment", "T1")
        assert all(REPLICAS in e.fields for e in after)


def test_conflicts_with_several_managers_are_listed_by_manager():
    entries = created_by("a", DEPLOY) + fm.record_update([], {}, {"spec": {"paused": True}}, "b", "apps/v1",
                                                         "V1Deployment", "T0")
    applied = with_change(with_change(DEPLOY, REPLICAS, 5), (("f", "spec"), ("f", "paused")), False)
    with pytest.raises(fm.Conflicts) as e:
        fm.apply(entries, dict(DEPLOY, spec=dict(DEPLOY["spec"], paused=True)), applied, "kubectl", "apps/v1",
                 "V1Deployment", "T1")
    assert str(e.value) == ('Apply failed with 2 conflicts: conflicts with "a" using apps/v1:\n- .spec.replicas\n'
                            'conflicts with "b" using apps/v1:\n- .spec.paused')


def test_force_takes_the_field_over():
    entries = created_by("kubectl-client-side-apply", DEPLOY)
    merged, after = fm.apply(entries, DEPLOY, {"spec": {"replicas": 3}}, "kubectl", "apps/v1", "V1Deployment",
                             "T1", force=True)
    assert merged["spec"]["replicas"] == 3
    owners = {e.manager: e.fields for e in after}
    assert owners["kubectl"] == {REPLICAS}
    assert REPLICAS not in owners["kubectl-client-side-apply"] and IMAGE in owners["kubectl-client-side-apply"]


def test_fields_an_apply_omits_are_removed_unless_another_manager_owns_them():
    merged, entries = fm.apply([], {}, DEPLOY, "kubectl", "apps/v1", "V1Deployment", "T1")
    less = copy.deepcopy(DEPLOY)
    del less["spec"]["template"]["spec"]["containers"][0]["env"]
    del less["metadata"]["labels"]
    merged2, entries2 = fm.apply(entries, merged, less, "kubectl", "apps/v1", "V1Deployment", "T2")
    assert "env" not in merged2["spec"]["template"]["spec"]["containers"][0]
    assert "labels" not in merged2["metadata"]  # emptied and owned by no one: gone too
    assert entries2[-1].fields == fp.members(less, "V1Deployment")
    # the same omission while another manager owns the label and the env item: both stay
    other = fm.record_update([], {}, {"metadata": {"labels": {"app": "web"}}, "spec": {"template": {"spec": {
        "containers": [{"name": "web", "env": [{"name": "COLOR", "value": "blue"}]}]}}}}, "other", "apps/v1",
        "V1Deployment", "T0")
    merged3, _ = fm.apply(entries + other, merged, less, "kubectl", "apps/v1", "V1Deployment", "T2")
    assert merged3["metadata"]["labels"] == {"app": "web"}
    assert merged3["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "COLOR", "value": "blue"}]


def test_two_appliers_on_disjoint_fields_keep_each_others_fields():
    cm = {"data": {"a": "1"}}
    merged, entries = fm.apply([], {}, cm, "one", "v1", "V1ConfigMap", "T1")
    merged, entries = fm.apply(entries, merged, {"data": {"b": "2"}}, "two", "v1", "V1ConfigMap", "T2")
    assert merged == {"data": {"a": "1", "b": "2"}}
    merged, entries = fm.apply(entries, merged, {"data": {}}, "one", "v1", "V1ConfigMap", "T3")
    assert merged == {"data": {"b": "2"}}
    assert {e.manager: e.fields for e in fm.entries_of(fm.managed_of(entries))} == {
        "one": paths("f:data"), "two": paths("f:data|f:b")}


def test_list_items_merge_by_key_and_atomic_lists_replace():
    live = DEPLOY
    applied = {"spec": {"template": {"spec": {"containers": [
        {"name": "web", "args": ["-v"], "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"}]},
        {"name": "side", "image": "busybox"}]}}}}
    merged = fp.merge(live, applied, "V1Deployment")
    web, side = merged["spec"]["template"]["spec"]["containers"]
    assert web["args"] == ["-v"] and web["image"] == "nginx" and side["name"] == "side"
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP", "name": "http"}]


def test_an_update_takes_what_it_changed_and_forgets_what_it_removed():
    entries = created_by("kubectl-client-side-apply", DEPLOY)
    new = with_change(DEPLOY, REPLICAS, 4)
    del new["spec"]["template"]["spec"]["containers"][0]["env"]
    after = {e.manager: e.fields for e in fm.record_update(entries, DEPLOY, new, "kubectl-edit", "apps/v1",
                                                           "V1Deployment", "T1")}
    assert after["kubectl-edit"] == {REPLICAS}
    assert REPLICAS not in after["kubectl-client-side-apply"]
    assert not any(p[:6] == CONTAINER + (("f", "env"),) for p in after["kubectl-client-side-apply"])
    # nothing changed: the entries (and their times) stay as they were
    assert fm.record_update(entries, DEPLOY, DEPLOY, "kubectl-client-side-apply", "apps/v1", "V1Deployment",
                            "T9") == entries


def test_an_item_without_its_key_is_refused():
    with pytest.raises(fp.FieldPathError, match="no key field 'name'"):
        fp.members({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}, "V1Deployment")


def _classify(before, after, old, new):
    changed = {p for p, kind in after.items() if (kind in (fp.ITEM, fp.VALUE, fp.MAP) and p not in before)
               or (kind in (fp.LEAF, fp.EMPTY) and fp.get(old, p) != fp.get(new, p))}
    return changed, set(before) - set(after)


@pytest.mark.parametrize("edit", [
    lambda o: o["metadata"]["labels"].update(tier="front"),
    lambda o: o["metadata"].pop("labels"),
    lambda o: o["spec"].update(replicas=5),
    lambda o: o["spec"]["template"]["spec"]["containers"][0].update(image="nginx:2"),
    lambda o: o["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "b"}),
    lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("ports", None),
    lambda o: o["spec"].update(template={}),
    lambda o: o.update(spec={"replicas": 1}),
], ids=["label", "labels-gone", "leaf", "item-leaf", "item-added", "list-gone", "emptied", "replaced"])
def test_walking_only_what_changed_finds_what_walking_everything_finds(edit):
    """record_update walks the differing subtrees only; its changed and removed fields are those
    of walking both whole objects."""
    old = copy.deepcopy(DEPLOY)
    new = copy.deepcopy(DEPLOY)
    edit(new)
    model = "V1Deployment"
    full = _classify(fp.walk(old, model), fp.walk(new, model), old, new)
    assert full != (set(), set())
    assert _classify(*fp.walk_changes(old, new, model), old, new) == full
