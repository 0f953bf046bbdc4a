"""Field sets of objects as managedFields record them (FieldsV1), and the merge of an applied
configuration by the same schema. Pure: no I/O.

A path is a tuple of elements, each a pair:
  ("f", name)               a struct field or a map key            -> ``f:name``
  ("k", '{"name":"web"}')   an item of an associative list by its keys (JSON, keys sorted)
                                                                    -> ``k:{"name":"web"}``
  ("v", '"x"')              an item of a set by its JSON value     -> ``v:"x"``
A FieldsV1 document is the trie of a set of paths; ``"."`` marks a path that is itself a member
and has members below it.

The types come from the official client's models (``schema``). What those models do not say is
written down here, from the Go types' ``+listType``/``+listMapKey``/``+structType`` tags (the
``x-kubernetes-list-type``, ``x-kubernetes-list-map-keys`` and ``x-kubernetes-map-type`` of the
OpenAPI document): which lists are maps and by which keys, which are sets, which structs are
atomic. A list not named here is atomic (owned and replaced as a whole), as upstream treats a
list without a list type; an untyped value (a custom resource) is a granular map with atomic lists.
"""
from __future__ import annotations

import copy
import json
from typing import Any

from trellis.lab.apiserver import schema

Path = tuple[tuple[str, str], ...]
MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()

# what kind of node a path is: members of an apply's set (LEAF, ITEM, VALUE, EMPTY) or only
# containers of members (STRUCT, MAP: a map, set or associative list holding members)
LEAF, ITEM, VALUE, EMPTY, STRUCT, MAP = "leaf", "item", "value", "empty", "struct", "map"
MEMBERS = frozenset({LEAF, ITEM, VALUE, EMPTY})

_CONTAINER_LISTS = {"env": ("name",), "ports": ("containerPort", "protocol"), "volumeMounts": ("mountPath",),
                    "volumeDevices": ("devicePath",), "resizePolicy": ("resourceName",)}
LIST_MAP_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    **{(m, f): k for m in ("V1Container", "V1EphemeralContainer") for f, k in _CONTAINER_LISTS.items()},
    **{("V1PodSpec", f): ("name",) for f in ("containers", "initContainers", "ephemeralContainers", "volumes",
                                             "resourceClaims", "schedulingGates")},
    ("V1PodSpec", "hostAliases"): ("ip",),
    ("V1PodSpec", "topologySpreadConstraints"): ("topologyKey", "whenUnsatisfiable"),
    ("V1ServiceSpec", "ports"): ("port", "protocol"),
    ("V1ObjectMeta", "ownerReferences"): ("uid",),
}
SETS = frozenset({("V1ObjectMeta", "finalizers")})
ATOMIC_STRUCTS = frozenset({"V1LabelSelector", "V1NodeSelector", "V1NodeSelectorTerm", "V1LocalObjectReference",
                            "V1ObjectReference", "V1ConfigMapKeySelector", "V1SecretKeySelector"})
KEY_DEFAULTS = {"protocol": "TCP"}  # a list-map key the server defaults: an item without it has the default


class FieldPathError(ValueError):
    """An associative list item without its key, or two items with the same key."""


def list_keys(owner: str | None, name: str) -> tuple[str, ...] | None:
    if owner and name == "conditions" and owner.endswith("Status"):
        return ("type",)
    return LIST_MAP_KEYS.get((owner or "", name))


def _struct_fields(t: str | None) -> dict[str, tuple[str, str]] | None:
    return schema.fields(t) if t and not t.startswith(("List[", "Dict[")) else None


def _child(t: str | None, key: str) -> str | None:
    """The type of a map's value or a struct's field (None: untyped)."""
    if t and t.startswith("Dict["):
        return t[t.index(",") + 1:-1].strip()
    fields = _struct_fields(t)
    return fields[key][1] if fields and key in fields else None


def _is_map(t: str | None, v: Any) -> bool:
    """v is merged and owned key by key (not a scalar, an atomic struct or a list)."""
    if not isinstance(v, dict):
        return False
    return t is None or t.startswith("Dict[") or (_struct_fields(t) is not None and t not in ATOMIC_STRUCTS)


def item_key(item: Any, keys: tuple[str, ...], where: str = "") -> str:
    if not isinstance(item, dict):
        raise FieldPathError(f"{where}: an element of an associative list must be an object")
    found = {}
    for k in sorted(keys):
        if k in item:
            found[k] = item[k]
        elif k in KEY_DEFAULTS:
            found[k] = KEY_DEFAULTS[k]
        else:
            raise FieldPathError(f"{where}: element {json.dumps(item, sort_keys=True)[:80]} has no key field {k!r}")
    return json.dumps(found, separators=(",", ":"))


def _list_kind(owner: str | None, name: str) -> tuple[str, tuple[str, ...] | None]:
    if (owner or "", name) in SETS:
        return "set", None
    keys = list_keys(owner, name)
    return ("map", keys) if keys else ("atomic", None)


def walk(obj: dict, model: str | None) -> dict[Path, str]:
    """Every path of obj with its kind (LEAF, ITEM, ...), by the schema of ``model``."""
    out: dict[Path, str] = {}
    _children(obj, model, (), out)
    return out


def _children(v: dict, t: str | None, path: Path, out: dict[Path, str]) -> None:
    for k, x in v.items():
        if x is not None:
            _node(x, _child(t, k), t, k, path + (("f", k),), out)


def _node(v: Any, t: str | None, owner: str | None, name: str, path: Path, out: dict[Path, str]) -> None:
    if isinstance(v, list):
        kind, keys = _list_kind(owner, name)
        if kind == "atomic":
            out[path] = LEAF
            return
        out[path] = MAP
        inner = t[5:-1] if t and t.startswith("List[") else None
        seen = set()
        for item in v:
            el = ("v", json.dumps(item, sort_keys=True, separators=(",", ":"))) if kind == "set" else \
                ("k", item_key(item, keys, path_string(path)))
            if el in seen:
                raise FieldPathError(f"{path_string(path)}: duplicate entries for key {el[1]}")
            seen.add(el)
            out[path + (el,)] = VALUE if kind == "set" else ITEM
            if kind == "map":
                _children(item, inner, path + (el,), out)
    elif _is_map(t, v):
        if not v:
            out[path] = EMPTY
            return
        out[path] = MAP if t is None or t.startswith("Dict[") else STRUCT
        _children(v, t, path, out)
    else:
        out[path] = LEAF


def walk_changes(old: dict, new: dict, model: str | None) -> tuple[dict[Path, str], dict[Path, str]]:
    """``walk`` of old and of new where they differ: an equal subtree is skipped whole (a write
    usually changes a few fields of a large object), a map or struct non-empty on both sides is
    entered key by key; what differs is walked as ``walk`` would. A path absent from both results
    has the same kind (and value) in old and new."""
    before: dict[Path, str] = {}
    after: dict[Path, str] = {}
    _changes(old or {}, new or {}, model, (), before, after)
    return before, after


def _changes(o: dict, n: dict, t: str | None, path: Path, before: dict, after: dict) -> None:
    for k in o.keys() | n.keys():
        x, y = o.get(k), n.get(k)
        if x == y:
            continue
        ct, p = _child(t, k), path + (("f", k),)
        if isinstance(x, dict) and isinstance(y, dict) and x and y and _is_map(ct, x) and _is_map(ct, y):
            before[p] = after[p] = MAP if ct is None or ct.startswith("Dict[") else STRUCT
            _changes(x, y, ct, p, before, after)
            continue
        if x is not None:
            _node(x, ct, t, k, p, before)
        if y is not None:
            _node(y, ct, t, k, p, after)


def members(obj: dict, model: str | None) -> set[Path]:
    """The fields an apply of obj owns: its leaves, list items and set values."""
    return {p for p, kind in walk(obj, model).items() if kind in MEMBERS}


def _find(items: list, el: tuple[str, str]) -> int | None:
    kind, ref = el
    for i, item in enumerate(items):
        if kind == "v" and json.dumps(item, sort_keys=True, separators=(",", ":")) == ref:
            return i
        if kind == "k" and isinstance(item, dict):
            try:
                if item_key(item, tuple(json.loads(ref))) == ref:
                    return i
            except FieldPathError:
                continue
    return None


def get(obj: Any, path: Path) -> Any:
    """The value at path, or MISSING."""
    cur = obj
    for kind, ref in path:
        if kind == "f":
            if not isinstance(cur, dict) or cur.get(ref) is None:
                return MISSING
            cur = cur[ref]
        else:
            i = _find(cur, (kind, ref)) if isinstance(cur, list) else None
            if i is None:
                return MISSING
            cur = cur[i]
    return cur


def remove(obj: dict, path: Path) -> None:
    parent = get(obj, path[:-1])
    kind, ref = path[-1]
    if kind == "f" and isinstance(parent, dict):
        parent.pop(ref, None)
    elif isinstance(parent, list):
        i = _find(parent, (kind, ref))
        if i is not None:
            parent.pop(i)


def merge(live: dict, applied: dict, model: str | None) -> dict:
    """live with the applied configuration merged in by the schema: maps and structs field by
    field, associative lists item by item (live order, new items appended), sets by union,
    everything else (scalars, atomic lists and structs) replaced."""
    return _merge_map(live, applied, model)


def _merge_map(live: Any, applied: dict, t: str | None) -> dict:
    out = copy.deepcopy(live) if isinstance(live, dict) else {}
    for k, x in applied.items():
        out[k] = _merge(out.get(k), x, _child(t, k), t, k)
    return out


def _merge(live: Any, applied: Any, t: str | None, owner: str | None, name: str) -> Any:
    if isinstance(applied, list):
        kind, keys = _list_kind(owner, name)
        if kind == "atomic" or not isinstance(live, list):
            return copy.deepcopy(applied)
        out = copy.deepcopy(live)
        if kind == "set":
            return out + [copy.deepcopy(x) for x in applied if x not in out]
        inner = t[5:-1] if t and t.startswith("List[") else None
        for item in applied:
            i = _find(out, ("k", item_key(item, keys, name)))
            if i is None:
                out.append(copy.deepcopy(item))
            else:
                out[i] = _merge_map(out[i], item, inner)
        return out
    if _is_map(t, applied):
        return _merge_map(live, applied, t)
    return copy.deepcopy(applied)


# -- FieldsV1 --------------------------------------------------------------------------------

def _el_text(el: tuple[str, str]) -> str:
    return f"{el[0]}:{el[1]}"


def encode(paths: set[Path]) -> dict:
    """The FieldsV1 trie of a set of paths (keys sorted, ``.`` first)."""
    root: dict = {}
    marked: set[int] = set()
    for p in paths:
        node = root
        for el in p:
            node = node.setdefault(_el_text(el), {})
        marked.add(id(node))

    def emit(node: dict) -> dict:
        out = {".": {}} if id(node) in marked and node else {}
        for k in sorted(node):
            out[k] = emit(node[k])
        return out
    return emit(root)


def decode(fields: Any) -> set[Path]:
    out: set[Path] = set()

    def visit(node: Any, path: Path) -> None:
        if not isinstance(node, dict):
            return
        if path and (not node or "." in node):
            out.add(path)
        for k, sub in node.items():
            if k != "." and len(k) > 2 and k[1] == ":" and k[0] in "fkvi":
                visit(sub, path + ((k[0], k[2:]),))
    visit(fields, ())
    return out


def path_string(path: Path) -> str:
    """As upstream prints a path in a conflict: ``.spec.template.spec.containers[name="web"].image``."""
    out = []
    for kind, ref in path:
        if kind == "f":
            out.append("." + ref)
        elif kind == "k":
            out.append("[" + ",".join(f"{k}={json.dumps(v)}" for k, v in json.loads(ref).items()) + "]")
        elif kind == "v":
            out.append(f"[={ref}]")
        else:
            out.append(f"[{ref}]")
    return "".join(out)
