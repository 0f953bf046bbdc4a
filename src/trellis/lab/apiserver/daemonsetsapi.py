"""apps/v1 DaemonSet and ControllerRevision in the API server: defaults, validation and
`kubectl get` columns, as kube-apiserver has them.

A DaemonSet gets ``updateStrategy: RollingUpdate`` with ``maxUnavailable: 1`` and
``maxSurge: 0``, ``revisionHistoryLimit: 10`` and the pod defaults a Deployment's template
gets. Its template generation (``spec.templateGeneration`` inside kube-apiserver) is served as
the annotation ``deprecated.daemonset.template.generation``: 1 on create, one more with every
template change, whatever the request said; the DaemonSet controller labels its pods with it.
A ControllerRevision (what `kubectl rollout history|undo ds` read) needs ``data``, which
never changes. Importing this module registers it with ``admission`` and ``tables``.
"""
from __future__ import annotations

import re
from typing import Any

from trellis.kube import selectors
from trellis.lab.apiserver import admission, tables
from trellis.lab.apiserver.admission import Causes, invalid, required, unsupported

TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
STRATEGIES = ("RollingUpdate", "OnDelete")
PERCENT = re.compile(r"^[0-9]+%$")
BAD_PERCENT = ("a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  "
               "or '93%', regex used for validation is '[0-9]+%')")


def default_daemonset(spec: dict) -> None:
    """SetDefaults_DaemonSet, and the pod template's defaults."""
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        if isinstance(rolling, dict):
            rolling.setdefault("maxUnavailable", 1)
            rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    tmpl = spec.setdefault("template", {})
    tmpl.setdefault("metadata", {})
    admission.default_pod_spec(tmpl.setdefault("spec", {}))


def _nonnegative(path: str, value: Any) -> Causes:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        return [invalid(path, value, "must be greater than or equal to 0")]
    return []


def _int_or_percent(path: str, value: Any) -> tuple[Causes, int]:
    """ValidatePositiveIntOrPercent and IsNotMoreThan100Percent; also the value, for the
    "exactly one of them non-zero" rule (0 when it is not valid)."""
    if isinstance(value, str):
        if not PERCENT.match(value):
            return [invalid(path, value, BAD_PERCENT)], 0
        n = int(value[:-1])
        return ([invalid(path, value, "must not be greater than 100%")] if n > 100 else []), n
    if isinstance(value, int) and not isinstance(value, bool):
        return _nonnegative(path, value), value
    return [invalid(path, value, "must be an integer or percentage (e.g '5%')")], 0


def validate_update_strategy(strategy: Any, path: str) -> Causes:
    if not isinstance(strategy, dict) or strategy.get("type") not in STRATEGIES:
        return [unsupported(path, strategy, STRATEGIES)]
    if strategy["type"] == "OnDelete":
        return []
    rolling = strategy.get("rollingUpdate")
    if not isinstance(rolling, dict):
        return [required(f"{path}.rollingUpdate")]
    rp = f"{path}.rollingUpdate"
    out, unavailable = _int_or_percent(f"{rp}.maxUnavailable", rolling.get("maxUnavailable", 0))
    surge_causes, surge = _int_or_percent(f"{rp}.maxSurge", rolling.get("maxSurge", 0))
    out += surge_causes
    if unavailable and surge:
        out.append(invalid(f"{rp}.maxSurge", rolling.get("maxSurge"), "may not be set when maxUnavailable is non-zero"))
    elif not unavailable and not surge:
        out.append((f"{rp}.maxUnavailable", "FieldValueRequired", "Required value: cannot be 0 when maxSurge is 0"))
    return out


def validate_daemonset_spec(spec: dict, path: str = "spec") -> Causes:
    """ValidateDaemonSetSpec. A missing selector selects nothing, so, as upstream, it is the
    template's labels that do not match it."""
    out: Causes = []
    tmpl = spec.get("template") if isinstance(spec.get("template"), dict) else {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    sel = spec.get("selector")
    try:
        compiled = selectors.from_label_selector(sel) if sel is not None else None
        fits = sel is not None and selectors.matches(compiled, labels)
    except (selectors.SelectorError, TypeError, AttributeError):
        fits = True  # admit() already named the selector; no second complaint about it
    if not fits:
        out.append(invalid(f"{path}.template.metadata.labels", labels, "`selector` does not match template `labels`"))
    if isinstance(sel, dict) and not sel.get("matchLabels") and not sel.get("matchExpressions"):
        out.append(invalid(f"{path}.selector", sel, "empty selector is invalid for daemonset"))
    out += admission._valid_labels(f"{path}.template.metadata.labels", labels)
    out += admission.validate_pod_spec(tmpl.get("spec"), f"{path}.template.spec")
    pod_spec = tmpl.get("spec") if isinstance(tmpl.get("spec"), dict) else {}
    if pod_spec.get("restartPolicy", "Always") != "Always":
        out.append(unsupported(f"{path}.template.spec.restartPolicy", pod_spec.get("restartPolicy"), ("Always",)))
    if pod_spec.get("activeDeadlineSeconds") is not None:
        out.append((f"{path}.template.spec.activeDeadlineSeconds", "FieldValueForbidden",
                    "Forbidden: activeDeadlineSeconds in DaemonSet is not Supported"))
    out += _nonnegative(f"{path}.minReadySeconds", spec.get("minReadySeconds"))
    out += _nonnegative(f"{path}.revisionHistoryLimit", spec.get("revisionHistoryLimit"))
    out += validate_update_strategy(spec.get("updateStrategy"), f"{path}.updateStrategy")
    return out


def template_generation(obj: dict | None) -> int:
    try:
        return int(((obj or {}).get("metadata", {}).get("annotations") or {}).get(TEMPLATE_GENERATION, 0))
    except (TypeError, ValueError):
        return 0


def admit_daemonset(obj: dict, old: dict | None) -> Causes:
    spec = obj.setdefault("spec", {})
    if not isinstance(spec, dict):
        return [invalid("spec", spec, "must be an object")]
    default_daemonset(spec)
    # kube-apiserver's PrepareForCreate/PrepareForUpdate own the template generation
    if old is None:
        generation = 1
    else:
        generation = max(template_generation(old), 1)
        if spec.get("template") != old["spec"].get("template"):
            generation += 1
    obj["metadata"].setdefault("annotations", {})[TEMPLATE_GENERATION] = str(generation)
    out = validate_daemonset_spec(spec)
    if old is not None and spec.get("selector") != old["spec"].get("selector"):
        out.append(invalid("spec.selector", spec.get("selector"), "field is immutable"))
    return out


def admit_controllerrevision(obj: dict, old: dict | None) -> Causes:
    out: Causes = []
    if obj.get("data") is None:
        out.append(("data", "FieldValueRequired", "Required value: data is mandatory"))
    out += _nonnegative("revision", obj.get("revision", 0))
    if old is not None and obj.get("data") != old.get("data"):
        out.append(invalid("data", "...", "field is immutable"))
    return out


# ---- kubectl get columns ----------------------------------------------------

def _daemonset_row(d: dict) -> list:
    st, spec = d.get("status") or {}, d.get("spec") or {}
    pod_spec = (spec.get("template") or {}).get("spec") or {}
    containers = pod_spec.get("containers") or []
    node_sel = ",".join(f"{k}={v}" for k, v in sorted((pod_spec.get("nodeSelector") or {}).items())) or "<none>"
    return [d["metadata"]["name"], st.get("desiredNumberScheduled", 0), st.get("currentNumberScheduled", 0),
            st.get("numberReady", 0), st.get("updatedNumberScheduled", 0), st.get("numberAvailable", 0),
            node_sel, tables.human_age(d["metadata"].get("creationTimestamp")),
            ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
            selectors.to_string(spec.get("selector")) or "<none>"]


def _controllerrevision_row(r: dict) -> list:
    ref = next((o for o in r["metadata"].get("ownerReferences") or [] if o.get("controller")), None)
    owner = "<none>"
    if ref is not None:
        group = ref.get("apiVersion", "").rpartition("/")[0]
        owner = f"{ref.get('kind', '').lower()}{'.' + group if group else ''}/{ref.get('name', '')}"
    return [r["metadata"]["name"], owner, r.get("revision", 0), tables.human_age(r["metadata"].get("creationTimestamp"))]


admission.ADMITTERS["apps/daemonsets"] = admit_daemonset
admission.ADMITTERS["apps/controllerrevisions"] = admit_controllerrevision
tables.PRINTERS["apps/daemonsets"] = (
    [("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0), ("Ready", "integer", 0),
     ("Up-to-date", "integer", 0), ("Available", "integer", 0), ("Node Selector", "string", 0),
     ("Age", "string", 0), ("Containers", "string", 1), ("Images", "string", 1), ("Selector", "string", 1)],
    _daemonset_row)
tables.PRINTERS["apps/controllerrevisions"] = (
    [("Name", "string", 0), ("Controller", "string", 0), ("Revision", "string", 0), ("Age", "string", 0)],
    _controllerrevision_row)
