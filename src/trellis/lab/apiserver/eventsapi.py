"""Events: one store, two shapes (core/v1 and events.k8s.io/v1), field selectors and a TTL.

As in kube-apiserver, events.k8s.io/v1 Events are the core/v1 Events under
other field names (``regarding`` for ``involvedObject``, ``note`` for
``message``, ``deprecatedCount`` for ``count``...); they are stored once, in
the core shape, and converted on the way in and out. Field selectors accept
the fields kube-apiserver accepts for Events (others are a 400), in either
shape's names. Events expire ``ttl`` seconds after their last update
(kube-apiserver's ``--event-ttl``, 1h by default), so they do not pile up.
"""
from __future__ import annotations

import datetime as dt

from trellis.kube import selectors

GROUP = "events.k8s.io"
DEFAULT_TTL = 3600.0

# events.k8s.io/v1 field -> core/v1 field (top level)
RENAMED = {"regarding": "involvedObject", "note": "message", "deprecatedSource": "source",
           "deprecatedFirstTimestamp": "firstTimestamp", "deprecatedLastTimestamp": "lastTimestamp",
           "deprecatedCount": "count", "reportingController": "reportingComponent"}
SHARED = ("metadata", "eventTime", "series", "reason", "action", "type", "related", "reportingInstance")

# the field selectors kube-apiserver accepts on core/v1 Events (pkg/registry/core/event/strategy.go),
# and what they read in the stored object
CORE_FIELDS = {f: f for f in (
    "metadata.name", "metadata.namespace", "involvedObject.kind", "involvedObject.namespace",
    "involvedObject.name", "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
    "involvedObject.fieldPath", "reason", "reportingComponent", "type")}
CORE_FIELDS["source"] = "source.component"
# events.k8s.io/v1's names for them (its field label conversion)
V1_FIELDS = {("regarding." + f.split(".", 1)[1] if f.startswith("involvedObject.") else f): f
             for f in CORE_FIELDS if f != "source"}
V1_FIELDS["reportingController"] = V1_FIELDS.pop("reportingComponent")


def to_events_v1(core: dict) -> dict:
    """A stored (core/v1) Event in the events.k8s.io/v1 shape."""
    out = {"apiVersion": f"{GROUP}/v1", "kind": "Event"}
    for new, old in RENAMED.items():
        if core.get(old) not in (None, "", {}):
            out[new] = core[old]
    for f in SHARED:
        if f in core:
            out[f] = core[f]
    if not out.get("eventTime"):
        out["eventTime"] = None
    return out


def to_core(ev: dict) -> dict:
    """An events.k8s.io/v1 body as the core/v1 Event it is stored as."""
    out = {"apiVersion": "v1", "kind": "Event"}
    for new, old in RENAMED.items():
        if new in ev:
            out[old] = ev[new]
    for f in SHARED:
        if f in ev:
            out[f] = ev[f]
    return out


def field_selector(text: str | None, group: str) -> str | None:
    """Check a field selector against the selectable Event fields; -> the selector over stored fields."""
    if not text:
        return text
    known = V1_FIELDS if group == GROUP else CORE_FIELDS
    parts = []
    for path, op, value in selectors.parse_field_selector(text):
        if path not in known:
            raise selectors.SelectorError(f'field label not supported: {path} (Events can be selected by '
                                          f'{", ".join(sorted(known))})')
        stored = CORE_FIELDS[known[path]] if group == GROUP else known[path]
        parts.append(f"{stored}{op}{value}")
    return ",".join(parts)


def _parse(ts) -> float | None:
    if not ts or not isinstance(ts, str):
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(ts, fmt).replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            continue
    return None


def last_activity(ev: dict) -> float:
    """When a stored Event was last written to, as far as its timestamps tell (after a restart)."""
    times = [_parse(ev.get("lastTimestamp")), _parse(ev.get("eventTime")),
             _parse((ev.get("series") or {}).get("lastObservedTime")),
             _parse(ev.get("metadata", {}).get("creationTimestamp"))]
    return max([t for t in times if t is not None], default=0.0)
