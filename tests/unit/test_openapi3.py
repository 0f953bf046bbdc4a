"""The OpenAPI v3 component schemas: types from the models table, GVKs on the kinds, and the
strategic-merge metadata of the server's own patch code."""
from trellis.lab.apiserver import openapi3

N = openapi3.component_name


def test_kinds_types_and_patch_metadata():
    comps = openapi3.components({"V1Pod": ("", "v1", "Pod"), "V1Deployment": ("apps", "v1", "Deployment"),
                                 "V1Service": ("", "v1", "Service")})
    assert comps[N("V1Pod")]["x-kubernetes-group-version-kind"] == [{"group": "", "version": "v1", "kind": "Pod"}]
    assert "x-kubernetes-group-version-kind" not in comps[N("V1PodSpec")]
    spec = comps[N("V1PodSpec")]["properties"]
    assert spec["hostNetwork"] == {"type": "boolean"}
    assert spec["terminationGracePeriodSeconds"] == {"type": "integer", "format": "int64"}
    assert spec["containers"]["x-kubernetes-patch-merge-key"] == "name"
    assert spec["containers"]["x-kubernetes-patch-strategy"] == "merge"
    assert spec["volumes"]["x-kubernetes-patch-strategy"] == "merge,retainKeys"
    assert spec["tolerations"].get("x-kubernetes-patch-merge-key") is None  # atomic, as upstream
    assert comps[N("V1Container")]["properties"]["ports"]["x-kubernetes-patch-merge-key"] == "containerPort"
    assert comps[N("V1ServiceSpec")]["properties"]["ports"]["x-kubernetes-patch-merge-key"] == "port"
    assert comps[N("V1ServicePort")]["properties"]["targetPort"] == {"x-kubernetes-int-or-string": True}
    assert comps[N("V1DeploymentSpec")]["properties"]["strategy"]["x-kubernetes-patch-strategy"] == "retainKeys"
    assert comps[N("V1ObjectMeta")]["properties"]["finalizers"]["x-kubernetes-patch-strategy"] == "merge"
    limits = comps[N("V1ResourceRequirements")]["properties"]["limits"]["additionalProperties"]
    assert limits["x-kubernetes-int-or-string"] is True
    # every $ref resolves inside the document
    import json
    refs = {r.split("/")[-1] for r in json.dumps(comps).split('"$ref": "')[1:] for r in [r.split('"')[0]]}
    assert refs <= set(comps)


def test_names_keep_the_type_kubectl_shows():
    assert N("V1PodSpec") == "io.k8s.lab.v1.PodSpec"
    assert N("V2HorizontalPodAutoscaler") == "io.k8s.lab.v2.HorizontalPodAutoscaler"
    assert N("CoreV1Event") == "io.k8s.lab.core.v1.Event"
