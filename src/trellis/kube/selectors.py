"""Label and field selectors, with Kubernetes semantics.

Two forms exist: the string form used in query parameters (``a=b,c in (x,y),!d``)
and the structured ``LabelSelector`` of objects (``matchLabels`` plus
``matchExpressions``). Both compile to a list of requirements so that one
matcher serves list, watch, Deployments, Services and NetworkPolicy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping


class SelectorError(ValueError):
    """A selector string or object that cannot be parsed; the message names it."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "=":
            return present and value == self.values[0]
        if self.op == "!=":
            return not present or value != self.values[0]
        if self.op == "in":
            return present and value in self.values
        if self.op == "notin":
            return not present or value not in self.values
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        raise SelectorError(f"unknown operator {self.op!r}")


Selector = tuple[Requirement, ...]
EVERYTHING: Selector = ()

_SET_RE = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")
_EQ_RE = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> Selector:
    if not text:
        return EVERYTHING
    reqs = []
    for part in _split_top(text):
        m = _EQ_RE.match(part)
        if m:
            key, op, value = m.groups()
            reqs.append(Requirement(key, "!=" if op == "!=" else "=", (value,)))
            continue
        m = _SET_RE.match(part)
        if m:
            neg, key, op, values = m.groups()
            if op:
                vals = tuple(v.strip() for v in values.split(",") if v.strip())
                reqs.append(Requirement(key, op, vals))
            else:
                reqs.append(Requirement(key, "!" if neg else "exists"))
            continue
        raise SelectorError(f"unable to parse requirement {part.strip()!r} in label selector {text!r}")
    return tuple(reqs)


def from_label_selector(obj: Mapping[str, Any] | None) -> Selector | None:
    """Compile a structured LabelSelector. ``None`` (absent) selects nothing."""
    if obj is None:
        return None
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (obj.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for i, expr in enumerate(obj.get("matchExpressions") or []):
        op = ops.get(expr.get("operator"))
        if op is None:
            raise SelectorError(f"matchExpressions[{i}].operator: unsupported {expr.get('operator')!r}")
        values = tuple(str(v) for v in expr.get("values") or ())
        if op in ("in", "notin") and not values:
            raise SelectorError(f"matchExpressions[{i}].values: must be non-empty for {expr['operator']}")
        reqs.append(Requirement(expr.get("key", ""), op, values))
    return tuple(reqs)


def matches(selector: Selector | None, labels: Mapping[str, str] | None) -> bool:
    if selector is None:
        return False
    labels = labels or {}
    return all(r.matches(labels) for r in selector)


def labels_match(selector_obj: Mapping[str, Any] | None, labels: Mapping[str, str] | None) -> bool:
    return matches(from_label_selector(selector_obj), labels)


def to_string(selector_obj: Mapping[str, Any] | None) -> str:
    """Render a structured selector in query-string form (for Scale.status.selector)."""
    out = [f"{k}={v}" for k, v in sorted((selector_obj or {}).get("matchLabels", {}).items())]
    for e in (selector_obj or {}).get("matchExpressions") or []:
        op, key, vals = e["operator"], e["key"], ",".join(e.get("values") or [])
        out.append({"In": f"{key} in ({vals})", "NotIn": f"{key} notin ({vals})",
                    "Exists": key, "DoesNotExist": f"!{key}"}[op])
    return ",".join(out)


# ---- field selectors -------------------------------------------------------

FieldSelector = tuple[tuple[str, str, str], ...]  # (path, op, value)


def parse_field_selector(text: str | None) -> FieldSelector:
    if not text:
        return ()
    out = []
    for part in text.split(","):
        m = re.match(r"^\s*([A-Za-z0-9._-]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if not m:
            raise SelectorError(f"invalid field selector {part!r}")
        path, op, value = m.groups()
        out.append((path, "!=" if op == "!=" else "=", value))
    return tuple(out)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def fields_match(selector: FieldSelector, obj: Mapping[str, Any]) -> bool:
    for path, op, value in selector:
        actual = field_value(obj, path)
        if (actual == value) != (op == "="):
            return False
    return True
