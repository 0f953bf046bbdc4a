"""ACI's endpoint-group annotation (pod over Deployment over namespace) and the audit that names
what trellis cannot honour: malformed annotations, missing groups, bad objects, unknown modes."""
import json

from trellis.policy import audit, model
from trellis.policy.engine import PolicyState, explain

ACI = model.ACI_GROUP_ANNOTATION


def aci(name, **extra):
    return json.dumps({"tenant": "kube", "app-profile": "kubernetes", "name": name, **extra})


def meta(ns, name, ann=None, **extra):
    md = {"namespace": ns, "name": name, "uid": f"uid-{ns}-{name}", "annotations": ann or {}, **extra}
    return {k: v for k, v in md.items() if v != ""}


def pod(ns, name, ip, ann=None, owner=None):
    md = meta(ns, name, ann, labels={"pod": name})
    if owner:
        md["labels"]["pod-template-hash"] = "h1"
        md["ownerReferences"] = [{"kind": "ReplicaSet", "name": f"{owner}-h1", "controller": True}]
    return {"metadata": md, "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}, "status": {"podIP": ip}}


def group(ns, name):
    return {"metadata": meta(ns, name), "spec": {}}


def state(ns_ann=None, deployment_ann=None, pod_ann=None):
    st = PolicyState()
    st.set_namespace(model.ns_info({"metadata": {"name": "x", "annotations": ns_ann or {}}}))
    st.set_namespace(model.ns_info({"metadata": {"name": "y"}}))
    for g in ("web", "db", "ops"):
        st.set_group(f"x/{g}", model.group(group("x", g)))
    st.set_deployment_group("x/front", model.group_hint({"metadata": {"annotations": deployment_ann or {}}}))
    st.set_pod(model.pod_info(pod("x", "f1", "10.0.1.1", pod_ann, owner="front")))
    st.set_pod(model.pod_info(pod("x", "bare", "10.0.1.2")))
    st.set_pod(model.pod_info(pod("y", "c", "10.0.2.1")))
    return st


def group_of(st, key):
    return st.group_of(st.pods[key])


def test_aci_annotation_pod_over_deployment_over_namespace():
    st = state(ns_ann={ACI: aci("ops")}, deployment_ann={ACI: aci("db")}, pod_ann={ACI: aci("web")})
    assert group_of(st, "x/f1") == "epg:x/web"
    st = state(ns_ann={ACI: aci("ops")}, deployment_ann={ACI: aci("db")})
    assert group_of(st, "x/f1") == "epg:x/db"
    assert group_of(st, "x/bare") == "epg:x/ops"       # a bare pod: its namespace's
    st = state(ns_ann={ACI: aci("ops")})
    assert group_of(st, "x/f1") == "epg:x/ops"
    assert group_of(state(), "x/f1") == ""
    # the group decides: web admits only its members, so y/c is denied into x/f1 and allowed into x/bare
    st = state(pod_ann={ACI: aci("web")})
    assert explain(st, "10.0.2.1", "10.0.1.1", "tcp", 80, False)[0] == "deny"
    assert explain(st, "10.0.2.1", "10.0.1.2", "tcp", 80, False)[0] == "allow"


def test_malformed_or_missing_group_falls_through_and_is_reported():
    bad = {ACI: "{not json"}
    st = state(ns_ann={ACI: aci("ops")}, pod_ann=bad, deployment_ann={ACI: aci("nosuch")})
    assert group_of(st, "x/f1") == "epg:x/ops"  # the next annotation in ACI's order applies
    found = audit.problems(
        namespaces=[{"metadata": {"name": "x", "uid": "u-x", "annotations": {ACI: json.dumps(["web"])}}}],
        deployments=[{"metadata": meta("x", "front", {ACI: aci("nosuch")})}],
        pods=[pod("x", "f1", "10.0.1.1", bad), pod("x", "ok", "10.0.1.3", {ACI: aci("web")}),
              pod("x", "n", "10.0.1.4", {ACI: json.dumps({"tenant": "t"})})],
        groups=[group("x", "web")], contracts=[], netpols=[], config=None)
    got = {(p.kind, p.name, p.reason): p.message for p in found}
    assert set(got) == {("Namespace", "x", "InvalidEndpointGroupAnnotation"),
                        ("Deployment", "front", "EndpointGroupNotFound"),
                        ("Pod", "f1", "InvalidEndpointGroupAnnotation"),
                        ("Pod", "n", "InvalidEndpointGroupAnnotation")}
    assert "not JSON" in got[("Pod", "f1", "InvalidEndpointGroupAnnotation")]
    assert '"name" must be a non-empty string' in got[("Pod", "n", "InvalidEndpointGroupAnnotation")]
    assert "EndpointGroup x/nosuch does not exist" in got[("Deployment", "front", "EndpointGroupNotFound")]
    assert all(p.uid for p in found)


def test_contract_naming_a_missing_group_bad_objects_and_unknown_mode():
    contract = {"metadata": meta("x", "c1"), "spec": {"provider": "web", "consumers": ["app", "namespace:y"]}}
    broken = {"metadata": meta("x", "c2"), "spec": {"provider": "web", "consumers": ["web"], "rules": [{"action": "maybe"}]}}
    netpol = {"metadata": meta("x", "np"), "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 70000}]}]}}
    cm = {"metadata": {"name": "trellis-config", "namespace": "kube-system", "uid": "u-cm",
                       "annotations": {model.MODE_IN_FORCE_ANNOTATION: "namespace"}},
          "data": {"isolationMode": "tenant"}}
    found = audit.problems(namespaces=[], deployments=[], pods=[], groups=[group("x", "web")],
                           contracts=[contract, broken], netpols=[netpol], config=cm)
    got = {(p.kind, p.name, p.reason): p.message for p in found}
    assert "spec.consumers: EndpointGroup x/app does not exist" in got[("Contract", "c1", "EndpointGroupNotFound")]
    assert "spec.rules[0].action" in got[("Contract", "c2", "NotEnforced")]
    assert "70000" in got[("NetworkPolicy", "np", "NotEnforced")]
    assert "'tenant'" in got[("ConfigMap", "trellis-config", "InvalidConfig")]
    assert "isolation mode namespace stays" in got[("ConfigMap", "trellis-config", "InvalidConfig")]
    assert len(found) == 4


def test_mode_in_force_never_changes_on_an_invalid_value():
    cm = {"metadata": {"annotations": {}}, "data": {"isolationMode": "deployment"}}
    assert model.mode_in_force(cm) == ("deployment", None)
    cm["data"]["isolationMode"] = "nope"
    assert model.mode_in_force(cm, current="namespace")[0] == "namespace"   # a running agent keeps its mode
    cm["metadata"]["annotations"][model.MODE_IN_FORCE_ANNOTATION] = "deployment"
    assert model.mode_in_force(cm)[0] == "deployment"                       # a starting one: the recorded mode
    assert model.mode_in_force(None) == ("cluster", None)
