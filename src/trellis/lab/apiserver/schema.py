"""Decoding a built-in object against its Kubernetes schema, as kube-apiserver's JSON decoder does.

kube-apiserver decodes a request body into Go structs: a value of the wrong JSON
type fails the request with 400 ("cannot unmarshal string into Go struct field
PodSpec.spec.hostNetwork of type bool"), a number out of range for an int32 field
fails the same way, and a field the struct does not have is dropped, reported as
a warning (fieldValidation=Warn, the default) or refused (Strict).

The schemas are the official Python client's generated models (``openapi_types``
and ``attribute_map`` of every kind, taken from the same OpenAPI document as
the Go structs), so no schema is written by hand here. They are read once from
``models.json.gz`` (24 KB), made from the installed ``kubernetes`` package by
``python -m trellis.lab.apiserver.schema --regenerate`` and checked against it by
``tests/unit/test_schema_table.py``: importing the client's 845 model classes at
run time cost the API server 0.26 s and about 20 MiB. What those models do not
carry is written down below: which integers are int64 (the rest are int32),
which fields are resource quantities (a number or a string), and which
``object`` fields are IntOrString. Pure: no I/O.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import gzip
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any


INT32 = (-(2 ** 31), 2 ** 31 - 1)
INT64 = (-(2 ** 63), 2 ** 63 - 1)
# snake_case attribute names whose Go type is int64 (every other integer is int32)
INT64_FIELDS = frozenset({
    "active_deadline_seconds", "termination_grace_period_seconds", "run_as_user", "run_as_group",
    "fs_group", "supplemental_groups", "deletion_grace_period_seconds", "generation",
    "observed_generation", "starting_deadline_seconds", "expiration_seconds", "grace_period_seconds",
    "remaining_item_count", "seconds_after_finished", "ttl_seconds_after_finished",
})
# resource.Quantity fields: Go accepts a JSON number or a string for them
QUANTITY_FIELDS = frozenset({
    "limits", "requests", "capacity", "allocatable", "hard", "used", "default", "default_request",
    "max", "min", "max_limit_request_ratio", "size_limit", "divisor", "pod_fixed", "overhead",
    "allocated_resources",
})
QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+|[KMGTPE]i|[kMGTPE]|[mun]|)$")
# ``object`` fields that are intstr.IntOrString
INT_OR_STRING = frozenset({
    ("V1ServicePort", "target_port"), ("V1HTTPGetAction", "port"), ("V1TCPSocketAction", "port"),
    ("V1NetworkPolicyPort", "port"), ("V1PodDisruptionBudgetSpec", "max_unavailable"),
    ("V1PodDisruptionBudgetSpec", "min_available"), ("V1RollingUpdateDeployment", "max_surge"),
    ("V1RollingUpdateDeployment", "max_unavailable"), ("V1RollingUpdateDaemonSet", "max_surge"),
    ("V1RollingUpdateDaemonSet", "max_unavailable"), ("V1RollingUpdateStatefulSetStrategy", "max_unavailable"),
})
# kinds whose generated model has a group prefix (two kinds share the name)
PREFIXED = {("", "Event"): "CoreV1Event", ("events.k8s.io", "Event"): "EventsV1Event"}


class TypeMismatch(Exception):
    """A value of the wrong JSON type: the request cannot be decoded (400)."""


@dataclass
class Decoded:
    obj: dict
    unknown: list[str] = field(default_factory=list)  # JSON paths of dropped fields, in order


TABLE_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models.json.gz")


@functools.lru_cache(maxsize=1)
def _table() -> dict[str, dict[str, list[str]]]:
    """Model name -> snake name -> [JSON name, type], as the generated models declare them."""
    with gzip.open(TABLE_FILE, "rt") as f:
        return json.load(f)


def build_table() -> dict[str, dict[str, list[str]]]:
    """The table from the installed official client (for --regenerate and its test)."""
    from kubernetes.client import models
    out = {}
    for name in dir(models):
        cls = getattr(models, name)
        if hasattr(cls, "openapi_types") and hasattr(cls, "attribute_map"):
            out[name] = {a: [cls.attribute_map[a], t] for a, t in cls.openapi_types.items()}
    return out


def _model(name: str):
    return _table().get(name)


@functools.lru_cache(maxsize=None)
def _fields(name: str) -> dict[str, tuple[str, str]]:
    """JSON name -> (snake name, type) for one model."""
    return {json_name: (snake, t) for snake, (json_name, t) in _model(name).items()}


def fields(name: str) -> dict[str, tuple[str, str]] | None:
    """JSON name -> (snake name, type) of a model's fields; None when ``name`` is not a model."""
    return _fields(name) if _model(name) is not None else None


def model_name(group: str, version: str, kind: str) -> str | None:
    """The generated model of a kind (``V1Pod``, ``CoreV1Event``), or None when there is none."""
    name = PREFIXED.get((group, kind)) or f"{version[:1].upper()}{version[1:]}{kind}"
    return name if _model(name) is not None else None


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _go_type(t: str, snake: str) -> str:
    if t == "int":
        return "int64" if snake in INT64_FIELDS else "int32"
    if t.startswith("List["):
        return "[]" + _go_type(t[5:-1], snake)
    if t.startswith("Dict["):
        return "map[string]" + _go_type(t[t.index(",") + 1:-1].strip(), snake)
    return {"str": "string", "bool": "bool", "float": "float64", "datetime": "v1.Time", "bytes": "[]uint8",
            "object": "intstr.IntOrString"}.get(t, "v1." + re.sub(r"^(Core|Events)?V\d+(alpha\d+|beta\d+)?", "", t))


def _zero(t: str) -> Any:
    """Go's zero value of a type: what a null list element or map value decodes to."""
    if t.startswith("List["):
        return []
    if t.startswith("Dict[") or _model(t) is not None:
        return {}
    return {"str": "", "int": 0, "float": 0.0, "bool": False}.get(t)


class _Walk:
    def __init__(self) -> None:
        self.unknown: list[str] = []

    def fail(self, value: Any, struct: str, path: str, t: str, snake: str) -> TypeMismatch:
        shown = value if isinstance(value, (int, float)) and not isinstance(value, bool) else _json_type(value)
        what = f"number {shown}" if _json_type(value) == "number" else _json_type(value)
        return TypeMismatch(f"json: cannot unmarshal {what} into Go struct field {struct}.{path} "
                            f"of type {_go_type(t, snake)}")

    def value(self, v: Any, t: str, struct: str, path: str, snake: str, model: str) -> Any:
        if v is None:
            return None
        if t.startswith("List["):
            if not isinstance(v, list):
                raise self.fail(v, struct, path, t, snake)
            inner = t[5:-1]
            return [self.value(_zero(inner) if x is None else x, inner, struct, f"{path}[{i}]", snake, model)
                    for i, x in enumerate(v)]
        if t.startswith("Dict["):
            if not isinstance(v, dict):
                raise self.fail(v, struct, path, t, snake)
            inner = t[t.index(",") + 1:-1].strip()
            return {k: self.value(_zero(inner) if x is None else x, inner, struct, f"{path}.{k}", snake, model)
                    for k, x in v.items()}
        if t == "str":
            if snake in QUANTITY_FIELDS and isinstance(v, (int, float)) and not isinstance(v, bool):
                return v
            if not isinstance(v, str):
                raise self.fail(v, struct, path, t, snake)
            if snake in QUANTITY_FIELDS and not QUANTITY.match(v):
                raise TypeMismatch(f"quantities must match the regular expression "
                                   f"'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$' ({path}: {v!r})")
            return v
        if t == "int":
            lo, hi = INT64 if snake in INT64_FIELDS else INT32
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise self.fail(v, struct, path, t, snake)
            return v
        if t == "float":
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise self.fail(v, struct, path, t, snake)
            return v
        if t == "bool":
            if not isinstance(v, bool):
                raise self.fail(v, struct, path, t, snake)
            return v
        if t == "datetime":
            if not isinstance(v, str):
                raise self.fail(v, struct, path, t, snake)
            try:
                dt.datetime.fromisoformat(v)
            except ValueError:
                raise TypeMismatch(f"parsing time {v!r} ({path}): not an RFC 3339 time") from None
            return v
        if t == "bytes":
            if not isinstance(v, str):
                raise self.fail(v, struct, path, t, snake)
            try:
                base64.b64decode(v, validate=True)
            except (binascii.Error, ValueError):
                raise TypeMismatch(f"illegal base64 data in {path}") from None
            return v
        if t == "object":
            if (model, snake) in INT_OR_STRING and (isinstance(v, bool) or not isinstance(v, (int, str))):
                raise self.fail(v, struct, path, t, snake)
            return v
        if _model(t) is None:
            return v  # a type the client does not model: taken as it is
        return self.struct(v, t, path)

    def struct(self, v: Any, model: str, path: str) -> dict:
        struct = _go_type(model, "")[3:]
        if not isinstance(v, dict):
            raise TypeMismatch(f"json: cannot unmarshal {_json_type(v)} into Go value of type v1.{struct}"
                               if not path else
                               f"json: cannot unmarshal {_json_type(v)} into Go struct field "
                               f"{struct}.{path} of type v1.{struct}")
        fields = _fields(model)
        out = {}
        for k, x in v.items():
            sub = f"{path}.{k}" if path else k
            if k not in fields:
                self.unknown.append(sub)
                continue
            if x is None:
                continue  # null is "not set": the field keeps its default
            snake, t = fields[k]
            out[k] = self.value(x, t, struct, sub, snake, model)
        return out


def decode(obj: dict, model: str) -> Decoded:
    """The object as the Go struct holds it: unknown fields dropped (and listed); TypeMismatch on a bad type."""
    w = _Walk()
    out = w.struct(obj, model, "")
    return Decoded(out, w.unknown)


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit("usage: python -m trellis.lab.apiserver.schema --regenerate   (rewrites models.json.gz)")
    table = build_table()
    with open(TABLE_FILE, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(json.dumps(table, separators=(",", ":"), sort_keys=True).encode())
    print(f"wrote {TABLE_FILE}: {len(table)} models")
