"""Where the lab scheduler puts a pod: a pure choice over nodes and the pods already placed.

The filters are kube-scheduler's that matter in the lab, in its order, and the first one a
node fails is that node's reason in "0/N nodes are available: ...":
NodeUnschedulable (a cordoned node, unless the pod tolerates node.kubernetes.io/unschedulable),
TaintToleration (every NoSchedule and NoExecute taint tolerated), NodeAffinity (nodeSelector
and the required node affinity) and room (allocatable ``pods``, kubelet's --max-pods, 110 by
default; pods that have finished do not count, pods bound but not yet seen bound do).
Among the nodes left, siblings (same controller) are spread first, then all pods.

Readiness is a taint, as upstream: the node lifecycle controller taints a node whose Ready
condition is False ``node.kubernetes.io/not-ready`` and one whose Ready is Unknown
``node.kubernetes.io/unreachable`` (TaintNodesByCondition), and the kubelet registers its node
with ``not-ready:NoSchedule`` already set. ``node_taints`` adds those taints to what a node
carries as long as its Ready condition says so and they are not written yet (and
``not-ready:NoSchedule`` while a node has no Ready condition at all), so no ordinary pod lands on
a NotReady node in the moment before the taint is written, and a DaemonSet pod that tolerates
them still does (an agent that makes its node Ready in the first place).
The DaemonSet controller decides with the same functions (``fits_affinity``, ``untolerated``).
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

DEFAULT_MAX_PODS = 110
NOT_READY, UNREACHABLE = "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
MEMORY_PRESSURE, DISK_PRESSURE = "node.kubernetes.io/memory-pressure", "node.kubernetes.io/disk-pressure"
PID_PRESSURE, NETWORK_UNAVAILABLE = "node.kubernetes.io/pid-pressure", "node.kubernetes.io/network-unavailable"
NO_SCHEDULE, NO_EXECUTE, PREFER_NO_SCHEDULE = "NoSchedule", "NoExecute", "PreferNoSchedule"
FILTERING = (NO_SCHEDULE, NO_EXECUTE)  # PreferNoSchedule only scores, never filters
# kube-controller-manager's nodeConditionToTaintKeyStatusMap: (condition, status) -> NoSchedule taint
CONDITION_TAINTS = {("Ready", "False"): NOT_READY, ("Ready", "Unknown"): UNREACHABLE,
                    ("MemoryPressure", "True"): MEMORY_PRESSURE, ("DiskPressure", "True"): DISK_PRESSURE,
                    ("PIDPressure", "True"): PID_PRESSURE, ("NetworkUnavailable", "True"): NETWORK_UNAVAILABLE}
# the reasons kube-scheduler's filter plugins give
UNSCHEDULABLE_REASON = "node(s) were unschedulable"
AFFINITY_REASON = "node(s) didn't match Pod's node affinity/selector"
ROOM_REASON = "Too many pods"


@dataclass(frozen=True)
class Placement:
    node: str | None          # None: unschedulable
    message: str = ""         # kube-scheduler's "0/N nodes are available: ..." when node is None


def conditions(node: dict) -> dict[str, str]:
    return {c.get("type"): c.get("status") for c in (node.get("status") or {}).get("conditions") or []}


def node_ready(node: dict) -> bool:
    return conditions(node).get("Ready") == "True"


def max_pods(node: dict) -> int:
    try:
        return int((node.get("status", {}).get("allocatable") or {}).get("pods", DEFAULT_MAX_PODS))
    except (TypeError, ValueError):
        return DEFAULT_MAX_PODS


def controller_uid(pod: dict) -> str | None:
    return next((r.get("uid") for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")),
                None)


# ---- taints and tolerations ---------------------------------------------------

def condition_taints(node: dict) -> list[dict]:
    """The taints node lifecycle keeps on a node for its conditions and spec.unschedulable
    (doNoScheduleTaintingPass), and the NoExecute ones for a Ready that is not True
    (doNoExecuteTaintingPass), without timeAdded."""
    conds = conditions(node)
    out = [{"key": key, "effect": NO_SCHEDULE} for (typ, status), key in CONDITION_TAINTS.items()
           if conds.get(typ) == status]
    if (node.get("spec") or {}).get("unschedulable"):
        out.append({"key": UNSCHEDULABLE, "effect": NO_SCHEDULE})
    ready = conds.get("Ready")
    if ready in ("False", "Unknown"):
        out.append({"key": NOT_READY if ready == "False" else UNREACHABLE, "effect": NO_EXECUTE})
    return out


def node_taints(node: dict) -> list[dict]:
    """The node's taints, plus those its Ready condition implies and node lifecycle (or, for a
    node without a Ready condition, its kubelet) has not written yet."""
    taints = list((node.get("spec") or {}).get("taints") or [])
    have = {(t.get("key"), t.get("effect")) for t in taints}
    ready = conditions(node).get("Ready")
    implied = ([{"key": NOT_READY, "effect": NO_SCHEDULE}] if ready is None else
               [t for t in condition_taints(node) if t["key"] in (NOT_READY, UNREACHABLE)])
    return taints + [t for t in implied if (t["key"], t["effect"]) not in have]


def tolerates(toleration: dict, taint: dict) -> bool:
    """Toleration.ToleratesTaint: an empty effect matches every effect, an empty key (with
    Exists) every key; Equal (or no operator) compares values, Exists does not."""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    if toleration.get("key") and toleration["key"] != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    return op == "Equal" and (toleration.get("value") or "") == (taint.get("value") or "")


def untolerated(taints: list[dict], tolerations: list[dict] | None,
                effects: tuple[str, ...] = FILTERING) -> dict | None:
    """The first taint with one of ``effects`` that no toleration tolerates (FindMatchingUntoleratedTaint)."""
    for taint in taints:
        if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tolerations or []):
            return taint
    return None


# ---- node affinity --------------------------------------------------------------

def _int(text: object) -> int | None:
    try:
        return int(str(text))
    except ValueError:
        return None


def requirement_matches(req: dict, value: str | None) -> bool:
    """A NodeSelectorRequirement against one label (or field) value, None when the node has none."""
    op, values = req.get("operator"), req.get("values") or []
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        have, bound = _int(value), _int(values[0])
        if have is None or bound is None:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def term_matches(term: dict, node: dict) -> bool:
    """A NodeSelectorTerm: all its requirements hold; matchFields knows metadata.name only.
    A term without requirements matches no node."""
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = node["metadata"].get("labels") or {}
    fields_of = {"metadata.name": node["metadata"]["name"]}
    return (all(requirement_matches(r, labels.get(r.get("key"))) for r in exprs)
            and all(r.get("key") in fields_of and r.get("operator") in ("In", "NotIn")
                    and requirement_matches(r, fields_of[r["key"]]) for r in fields))


def required_terms(spec: dict) -> list[dict] | None:
    """spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution's terms (None: unset)."""
    req = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
           .get("requiredDuringSchedulingIgnoredDuringExecution"))
    return None if req is None else req.get("nodeSelectorTerms") or []


def fits_affinity(spec: dict, node: dict) -> bool:
    """The pod's nodeSelector and required node affinity (terms ORed) both hold on the node."""
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    terms = required_terms(spec)
    return terms is None or any(term_matches(t, node) for t in terms)


def filter_reason(pod: dict, node: dict) -> str | None:
    """Why the node cannot take the pod, in the words of the first kube-scheduler filter it fails
    (room aside, which depends on the other pods); None when it can."""
    spec = pod["spec"]
    tolerations = spec.get("tolerations") or []
    if (node.get("spec") or {}).get("unschedulable") and not any(
            tolerates(t, {"key": UNSCHEDULABLE, "effect": NO_SCHEDULE}) for t in tolerations):
        return UNSCHEDULABLE_REASON
    taint = untolerated(node_taints(node), tolerations)
    if taint is not None:
        return f"node(s) had untolerated taint {{{taint.get('key', '')}: {taint.get('value', '')}}}"
    if not fits_affinity(spec, node):
        return AFFINITY_REASON
    return None


def unavailable_message(total: int, reasons: list[str]) -> str:
    """FitError's text: the reasons counted, "<count> <reason>" sorted as strings (without the
    final period, which the scheduler's event adds)."""
    counted = collections.Counter(reasons)
    return f"0/{total} nodes are available: " + ", ".join(sorted(f"{n} {r}" for r, n in counted.items()))


def place(pod: dict, nodes: list[dict], pods: list[dict], assumed: dict[str, str]) -> Placement:
    """Choose a node for ``pod``; ``assumed`` maps "ns/name" of pods bound but not yet seen bound."""
    placed = {f"{p['metadata']['namespace']}/{p['metadata']['name']}":
              (p["spec"].get("nodeName"), controller_uid(p)) for p in pods
              if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")}
    for key, node in assumed.items():
        placed[key] = (node, placed.get(key, (None, None))[1])
    on_node = collections.Counter(node for node, _ in placed.values())
    roomy, reasons = [], []
    for n in nodes:
        why = filter_reason(pod, n)
        if why is None and on_node[n["metadata"]["name"]] >= max_pods(n):
            why = ROOM_REASON
        if why is None:
            roomy.append(n)
        else:
            reasons.append(why)
    if not nodes:
        return Placement(None, "no nodes available to schedule pods")  # ErrNoNodesAvailable
    if not roomy:
        return Placement(None, unavailable_message(len(nodes), reasons))
    owner = controller_uid(pod)
    counts = {n["metadata"]["name"]: [0, 0] for n in roomy}
    for node, uid in placed.values():
        if node in counts:
            counts[node][1] += 1
            if owner and uid == owner:
                counts[node][0] += 1
    return Placement(min(counts, key=lambda n: (counts[n], n)))
