"""The three PATCH formats the Kubernetes API accepts.

- JSON merge patch (RFC 7386): maps merge, ``null`` deletes, lists replace.
- JSON patch (RFC 6902): a list of operations on JSON pointers.
- Strategic merge patch: a merge patch where lists of the built-in types that
  carry a *merge key* (containers by ``name``, container ports by
  ``containerPort`` ...) merge element by element, plus the directives
  ``$patch``, ``$retainKeys``, ``$deleteFromPrimitiveList/<f>`` and
  ``$setElementOrder/<f>`` that kubectl sends.

The merge keys come from the Kubernetes Go types' ``patchMergeKey`` tags; only
the ones the lab's kinds use are listed. A list without a merge key is replaced.
"""
from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    pass


# field name -> merge key (for lists whose elements are maps)
MERGE_KEYS: dict[str, str] = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name",
    "env": "name", "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "hostAliases": "ip", "conditions": "type",
    "ownerReferences": "uid", "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name", "addresses": "type", "containerStatuses": "name",
    "initContainerStatuses": "name", "podIPs": "ip", "readinessGates": "conditionType",
}
# primitive lists that merge (set union) rather than replace
MERGE_PRIMITIVE_LISTS = {"finalizers"}


def json_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


# ---- RFC 6902 --------------------------------------------------------------

def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for p in parts:
        if isinstance(cur, list):
            try:
                cur = cur[int(p)]
            except (ValueError, IndexError):
                raise PatchError(f"path {path!r}: index {p!r} out of range") from None
        elif isinstance(cur, dict):
            if p not in cur:
                raise PatchError(f"path {path!r}: key {p!r} not found")
            cur = cur[p]
        else:
            raise PatchError(f"path {path!r}: cannot descend into a scalar")
    return cur


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    if isinstance(parent, list):
        idx = len(parent) if last == "-" else int(last) if last.isdigit() else -1
        if not 0 <= idx <= len(parent):
            raise PatchError(f"path {path!r}: index out of range")
        parent.insert(idx, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise PatchError(f"path {path!r}: parent is a scalar")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError("cannot remove the whole document")
    parent = _walk(doc, parts[:-1], path)
    last = parts[-1]
    try:
        removed = parent.pop(int(last) if isinstance(parent, list) else last)
    except (KeyError, IndexError, ValueError):
        raise PatchError(f"path {path!r}: nothing to remove") from None
    return doc, removed


def json_patch(doc: Any, ops: Any) -> Any:
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        if not isinstance(op, dict):
            raise PatchError(f"operation {i}: must be an object, not {op!r}")
        kind, path = op.get("op"), op.get("path", "")
        for key in ("path",) + (("from",) if kind in ("move", "copy") else ()):
            if not isinstance(op.get(key, "" if key == "path" else None), str):
                raise PatchError(f"operation {i}: {key!r} must be a string")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            doc, _ = _remove(doc, path)
            doc = _add(doc, path, copy.deepcopy(op.get("value")))
        elif kind == "move":
            doc, value = _remove(doc, op["from"])
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_walk(doc, _pointer(op["from"]), op["from"])))
        elif kind == "test":
            if _walk(doc, _pointer(path), path) != op.get("value"):
                raise PatchError(f"operation {i}: test failed at {path!r}")
        else:
            raise PatchError(f"operation {i}: unknown op {kind!r}")
    return doc


# ---- strategic merge patch -------------------------------------------------

def _merge_key_for(field: str, items: list[Any]) -> str | None:
    if field == "ports":  # container ports and service ports differ in key
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys") or key.startswith("$setElementOrder/"):
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field) or [] if v not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/"):
            field = key.split("/", 1)[1]
            if isinstance(result.get(field), list):
                result[field] = _order(field, result[field], value)
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    if field in MERGE_PRIMITIVE_LISTS:
        return current + [v for v in patch if v not in current]
    key = _merge_key_for(field, patch + current)
    if key is None or not all(isinstance(i, dict) for i in patch):
        if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
            return [i for i in patch if not (isinstance(i, dict) and "$patch" in i)]
        return copy.deepcopy(patch)
    if any(i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if "$patch" not in i]
    out = copy.deepcopy(current)
    for item in patch:
        if key not in item:
            raise PatchError(f"{field}: element without merge key {key!r}: {item}")
        idx = next((n for n, e in enumerate(out) if isinstance(e, dict) and e.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(strategic_merge_patch({}, item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def _order(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    key = _merge_key_for(field, items)
    if key is None:
        ranks = {repr(v): n for n, v in enumerate(order)}
        return sorted(items, key=lambda v: ranks.get(repr(v), len(ranks)))
    ranks = {o.get(key): n for n, o in enumerate(order) if isinstance(o, dict)}
    return sorted(items, key=lambda e: ranks.get(e.get(key) if isinstance(e, dict) else None, len(ranks)))
