"""Who owns which field of an object: managedFields, server-side apply and its conflicts. Pure.

Each write records the writer's fields under its manager name (``fieldManager``):
- an *Update* (create, update, patch) owns what it changed, taking it from every other manager
  without a conflict; fields it removed are no longer owned by anyone;
- an *Apply* owns exactly the fields of its configuration. A field another manager owns and the
  apply would change is a conflict (409) unless forced, which takes it over; a field an apply
  owned before and now omits is removed from the object unless another manager owns it (or
  something under it); a field two managers set to the same value is owned by both.

Only what a user sets is owned: ``apiVersion``, ``kind`` and the server's metadata (name, uid,
resourceVersion ...) are not; metadata's labels, annotations, finalizers and ownerReferences
are. ``status`` is owned through the status subresource only, where a kind has one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from trellis.lab.apiserver import fieldpaths as fp
from trellis.lab.apiserver.fieldpaths import FieldPathError, Path, path_string  # noqa: F401 - for callers

OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


@dataclass
class Entry:
    """One managedFields entry, its field set decoded."""
    manager: str
    operation: str  # Apply | Update
    api_version: str
    time: str
    fields: set[Path] = field(default_factory=set)
    subresource: str = ""

    def ident(self) -> str:
        """How a conflict names the manager (upstream's wording, without the time)."""
        who = json.dumps(self.manager)
        if self.subresource:
            who += f" with subresource {json.dumps(self.subresource)}"
        return f"{who} using {self.api_version}"


@dataclass
class Conflict:
    entry: Entry
    path: Path


class Conflicts(Exception):
    def __init__(self, found: list[Conflict]) -> None:
        super().__init__(message(found))
        self.found = found


def message(found: list[Conflict]) -> str:
    if len(found) == 1:
        return f"Apply failed with 1 conflict: conflict with {found[0].entry.ident()}: {fp.path_string(found[0].path)}"
    by_manager: dict[str, list[str]] = {}
    for c in found:
        by_manager.setdefault(c.entry.ident(), []).append(fp.path_string(c.path))
    lines = []
    for who in sorted(by_manager):
        lines.append(f"conflicts with {who}:")
        lines.extend(f"- {p}" for p in by_manager[who])
    return f"Apply failed with {len(found)} conflicts: " + "\n".join(lines)


def entries_of(managed: list | None) -> list[Entry]:
    out = []
    for m in managed or []:
        if isinstance(m, dict) and m.get("manager"):
            out.append(Entry(m["manager"], m.get("operation", "Update"), m.get("apiVersion", ""), m.get("time", ""),
                             fp.decode(m.get("fieldsV1")), m.get("subresource", "")))
    return out


def managed_of(entries: list[Entry]) -> list[dict]:
    out = []
    for e in entries:
        if not e.fields:
            continue  # a manager that owns nothing is forgotten
        d = {"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version, "time": e.time,
             "fieldsType": "FieldsV1", "fieldsV1": fp.encode(e.fields)}
        if e.subresource:
            d["subresource"] = e.subresource
        out.append(d)
    return out


def owned_view(obj: dict | None, subresource: str, has_status: bool) -> dict:
    """The part of obj that managers own (see the module docstring)."""
    if not obj:
        return {}
    if subresource == "status":
        return {"status": obj["status"]} if obj.get("status") else {}
    out = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")
           and not (k == "status" and has_status)}
    md = {k: obj["metadata"][k] for k in OWNED_METADATA if (obj.get("metadata") or {}).get(k) is not None}
    if md:
        out["metadata"] = md
    return out


def with_view(obj: dict, view: dict, has_status: bool) -> dict:
    """obj with its owned part replaced by view (the inverse of ``owned_view`` for the main resource)."""
    out = {k: v for k, v in obj.items() if k in ("apiVersion", "kind") or (k == "status" and has_status)}
    md = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in OWNED_METADATA}
    md.update(view.get("metadata") or {})
    out["metadata"] = md
    out.update({k: v for k, v in view.items() if k != "metadata"})
    return out


def _same(e: Entry, manager: str, operation: str, subresource: str) -> bool:
    return e.manager == manager and e.operation == operation and e.subresource == subresource


def record_update(entries: list[Entry], old: dict, new: dict, manager: str, api_version: str,
                  model: str | None, now: str, subresource: str = "") -> list[Entry]:
    """entries after an Update by ``manager`` from old to new (both owned views)."""
    before, after = fp.walk_changes(old, new, model)  # equal subtrees neither change nor go
    changed = set()
    for p, kind in after.items():
        if kind in (fp.ITEM, fp.VALUE, fp.MAP) and p not in before:
            changed.add(p)  # a new item, set value or map (a map appearing is owned itself: ".")
        elif kind in (fp.LEAF, fp.EMPTY) and fp.get(old, p) != fp.get(new, p):
            changed.add(p)
    removed = set(before) - set(after)
    out, mine = [], None
    for e in entries:
        if _same(e, manager, "Update", subresource):
            mine = e
            continue
        out.append(Entry(e.manager, e.operation, e.api_version, e.time, e.fields - changed - removed, e.subresource))
    if mine is None:
        mine = Entry(manager, "Update", api_version, now, set(), subresource)
    fields = (mine.fields | changed) - removed
    if changed or fields != mine.fields:
        mine = Entry(manager, "Update", api_version, now, fields, subresource)
    return out + [mine]


def apply(entries: list[Entry], live: dict, applied: dict, manager: str, api_version: str,
          model: str | None, now: str, force: bool = False) -> tuple[dict, list[Entry]]:
    """(live with the configuration applied, the entries after it); Conflicts unless forced.

    ``live`` and ``applied`` are owned views; the merge result is one too."""
    walked = fp.walk(applied, model)
    mine = {p for p, kind in walked.items() if kind in fp.MEMBERS}
    merged = fp.merge(live, applied, model)
    others = [e for e in entries if not _same(e, manager, "Apply", "")]
    found = [Conflict(e, p) for e in others if not e.subresource for p in sorted(mine & e.fields)
             if walked[p] == fp.LEAF and fp.get(live, p) != fp.get(applied, p)]
    if found and not force:
        raise Conflicts(found)
    taken = {c.path for c in found}
    others = [Entry(e.manager, e.operation, e.api_version, e.time, e.fields - taken if not e.subresource
                    else e.fields, e.subresource) for e in others]
    before = next((e.fields for e in entries if _same(e, manager, "Apply", "")), set())
    kept = set()  # every path something still owned lies under
    for p in mine.union(*(e.fields for e in others)):
        kept.update(p[:n] for n in range(1, len(p) + 1))
    owned = mine.union(*(e.fields for e in others))
    for p in sorted(before - mine, key=len):
        if p not in kept:
            fp.remove(merged, p)
            for n in range(len(p) - 1, 0, -1):  # and the maps and lists it leaves empty, owned by no one
                if fp.get(merged, p[:n]) not in ({}, []) or p[:n] in owned:
                    break
                fp.remove(merged, p[:n])
    return merged, others + [Entry(manager, "Apply", api_version, now, mine)]
