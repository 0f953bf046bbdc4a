"""OpenAPI v3 component schemas for the built-in kinds and the CRDs (``kubectl explain``). Pure.

Built from the same table the decoder uses (``schema``: the official client's models), so
what ``explain`` lists is what the server accepts. Lists carry the strategic-merge metadata of
this server's own patch code (``patch.MERGE_KEYS``: ``x-kubernetes-patch-merge-key`` and
``x-kubernetes-patch-strategy``, plus ``retainKeys`` where kubectl's compiled-in types have it):
kubectl computes its apply patches from these schemas once they are served, and then sends
exactly what ``patch.strategic_merge_patch`` merges. Resource quantities and IntOrString fields
are typed as kube-openapi types them. Descriptions are not carried (the table has none).
"""
from __future__ import annotations

import re

from trellis.lab.apiserver import patch, schema

PREFIX = "io.k8s.lab."
_VERSION = re.compile(r"^(?P<group>[A-Z][a-z]+)?(?P<version>V\d+(?:alpha\d+|beta\d+)?)(?P<kind>[A-Z]\w*)$")
RETAIN_KEYS = {("V1PodSpec", "volumes"): "merge,retainKeys", ("V1DeploymentSpec", "strategy"): "retainKeys",
               ("V1DaemonSetSpec", "update_strategy"): "retainKeys"}
SCALARS = {"str": {"type": "string"}, "bool": {"type": "boolean"}, "float": {"type": "number", "format": "double"},
           "datetime": {"type": "string", "format": "date-time"}, "date": {"type": "string", "format": "date"},
           "bytes": {"type": "string", "format": "byte"}}


def component_name(model: str) -> str:
    """``V1PodSpec`` -> ``io.k8s.lab.v1.PodSpec`` (kubectl shows the last segment as the type)."""
    m = _VERSION.match(model)
    if not m:
        return PREFIX + model
    group = f"{m['group'].lower()}." if m["group"] else ""
    return f"{PREFIX}{group}{m['version'].lower()}.{m['kind']}"


def _type(model: str, snake: str, t: str, need: set[str]) -> dict:
    if t in SCALARS:
        return dict(SCALARS[t])
    if t == "int":
        return {"type": "integer", "format": "int64" if snake in schema.INT64_FIELDS else "int32"}
    if t == "object":
        if (model, snake) in schema.INT_OR_STRING:
            return {"x-kubernetes-int-or-string": True}
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    if t.startswith("List["):
        return {"type": "array", "items": _type(model, snake, t[5:-1], need)}
    if t.startswith("Dict["):
        inner = t[5:-1].split(",", 1)[1].strip()
        if snake in schema.QUANTITY_FIELDS and inner == "str":
            return {"type": "object", "additionalProperties": {"x-kubernetes-int-or-string": True,
                                                               "pattern": schema.QUANTITY.pattern}}
        return {"type": "object", "additionalProperties": _type(model, snake, inner, need)}
    if schema._model(t) is not None:
        need.add(t)
        return {"allOf": [{"$ref": f"#/components/schemas/{component_name(t)}"}]}
    return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _list_meta(model: str, snake: str, json_name: str, t: str) -> dict:
    out = {}
    if (model, snake) in RETAIN_KEYS:
        out["x-kubernetes-patch-strategy"] = RETAIN_KEYS[(model, snake)]
    if not t.startswith("List["):
        return out
    key = patch.MERGE_KEYS.get(json_name)
    if json_name == "ports":
        key = "containerPort" if model == "V1Container" else "port"
    if key:
        out["x-kubernetes-patch-merge-key"] = key
        out.setdefault("x-kubernetes-patch-strategy", "merge")
    elif json_name in patch.MERGE_PRIMITIVE_LISTS:
        out["x-kubernetes-patch-strategy"] = "merge"
    return out


def model_schema(model: str, need: set[str]) -> dict:
    props = {}
    for snake, (json_name, t) in sorted(schema._model(model).items()):
        props[json_name] = {**_type(model, snake, t, need), **_list_meta(model, snake, json_name, t)}
    return {"type": "object", "properties": props}


def components(roots: dict[str, tuple[str, str, str]], extra: tuple[str, ...] = ()) -> dict:
    """{model: (group, version, kind)} of the kinds served (and ``extra`` models) -> every
    schema they reach."""
    out, need, done = {}, set(roots) | set(extra), set()
    while need:
        model = need.pop()
        if model in done or schema._model(model) is None:
            continue
        done.add(model)
        more: set[str] = set()
        s = model_schema(model, more)
        if model in roots:
            g, v, k = roots[model]
            s["x-kubernetes-group-version-kind"] = [{"group": g, "version": v, "kind": k}]
        out[component_name(model)] = s
        need |= more - done
    return out


def crd_component(group: str, version: str, kind: str, openapi_schema: dict | None) -> tuple[str, dict]:
    body = dict(openapi_schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
    props = dict(body.get("properties") or {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props["metadata"] = {"allOf": [{"$ref": f"#/components/schemas/{component_name('V1ObjectMeta')}"}]}
    body["properties"] = props
    body["x-kubernetes-group-version-kind"] = [{"group": group, "version": version, "kind": kind}]
    return f"{'.'.join(reversed(group.split('.')))}.{version}.{kind}", body
