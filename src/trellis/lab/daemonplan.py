"""What the DaemonSet controller decides, as pure functions over a DaemonSet, the nodes and its pods
(kube-controller-manager's pkg/controller/daemon, the parts without I/O). See ``daemonsets``.

Every decision about a node goes through placement's own functions (``fits_affinity``,
``node_taints``, ``untolerated``), so the controller never creates a pod the scheduler would not
bind, or leaves one the scheduler would not have placed.
"""
from __future__ import annotations

import copy
import datetime as dt
from dataclasses import dataclass, field

from trellis.lab import placement
from trellis.lab.workloads import owner_ref, pod_ready

HASH_LABEL, GENERATION_LABEL = "controller-revision-hash", "pod-template-generation"
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
# AddOrUpdateDaemonPodTolerations (pkg/controller/daemon/util)
DEFAULT_TOLERATIONS = [
    {"key": placement.NOT_READY, "operator": "Exists", "effect": "NoExecute"},
    {"key": placement.UNREACHABLE, "operator": "Exists", "effect": "NoExecute"},
    {"key": placement.DISK_PRESSURE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": placement.MEMORY_PRESSURE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": placement.PID_PRESSURE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": placement.UNSCHEDULABLE, "operator": "Exists", "effect": "NoSchedule"},
]
HOST_NETWORK_TOLERATION = {"key": placement.NETWORK_UNAVAILABLE, "operator": "Exists", "effect": "NoSchedule"}
BACKOFF_START, BACKOFF_MAX = 1.0, 900.0


# ---- pure decisions --------------------------------------------------------------

def daemon_pod_spec(ds: dict) -> dict:
    """The template's pod spec with the tolerations every daemon pod gets (none twice)."""
    spec = copy.deepcopy(ds["spec"]["template"].get("spec") or {})
    tolerations = spec.setdefault("tolerations", [])
    extra = DEFAULT_TOLERATIONS + ([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])
    for t in extra:
        if not any(all((have.get(k) or "") == (t.get(k) or "") for k in ("key", "operator", "value", "effect"))
                   for have in tolerations):
            tolerations.append(dict(t))
    return spec


def pinned_to(spec: dict, node: str) -> dict:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: the required node affinity becomes the one node."""
    spec = copy.deepcopy(spec)
    affinity = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
    affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}
    return spec


def template_generation(ds: dict) -> str | None:
    return (ds["metadata"].get("annotations") or {}).get(TEMPLATE_GENERATION)


def new_pod(ds: dict, node: str, hash_: str) -> dict:
    tmpl = ds["spec"]["template"]
    md = tmpl.get("metadata") or {}
    labels = {**(md.get("labels") or {}), HASH_LABEL: hash_}
    if template_generation(ds) is not None:
        labels[GENERATION_LABEL] = template_generation(ds)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "generateName": f"{ds['metadata']['name']}-", "namespace": ds["metadata"]["namespace"], "labels": labels,
        "annotations": dict(md.get("annotations") or {}), "ownerReferences": [owner_ref(ds)],
        **({"finalizers": list(md["finalizers"])} if md.get("finalizers") else {})},
        "spec": pinned_to(daemon_pod_spec(ds), node)}


def should_run(ds: dict, node: dict) -> tuple[bool, bool]:
    """(should a daemon pod be created here, may one already here keep running)."""
    spec = daemon_pod_spec(ds)
    if spec.get("nodeName") and spec["nodeName"] != node["metadata"]["name"]:
        return False, False
    if not placement.fits_affinity(spec, node):
        return False, False
    taints = placement.node_taints(node)
    if placement.untolerated(taints, spec["tolerations"]) is None:
        return True, True
    return False, placement.untolerated(taints, spec["tolerations"], (placement.NO_EXECUTE,)) is None


def target_node(pod: dict) -> str | None:
    """spec.nodeName, or the one node its required affinity names (GetTargetNodeName)."""
    if pod["spec"].get("nodeName"):
        return pod["spec"]["nodeName"]
    for term in placement.required_terms(pod["spec"]) or []:
        for req in term.get("matchFields") or []:
            if req.get("key") == "metadata.name" and req.get("operator") == "In" and len(req.get("values") or []) == 1:
                return req["values"][0]
    return None


def terminal(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def deleting(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def by_node(pods: list[dict], finished_deleting: bool = True) -> dict[str, list[dict]]:
    """Pods per target node; ``finished_deleting=False`` leaves out terminal pods being deleted."""
    out: dict[str, list[dict]] = {}
    for p in pods:
        node = target_node(p)
        if node is not None and (finished_deleting or not (terminal(p) and deleting(p))):
            out.setdefault(node, []).append(p)
    return out


def oldest_first(pods: list[dict]) -> list[dict]:
    """podByCreationTimestampAndPhase: bound pods first, then by creation time and name."""
    return sorted(pods, key=lambda p: (not p["spec"].get("nodeName"), p["metadata"].get("creationTimestamp", ""),
                                       p["metadata"]["name"]))


def is_updated(pod: dict, hash_: str, generation: str | None) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return (bool(hash_) and labels.get(HASH_LABEL) == hash_) or (
        generation is not None and labels.get(GENERATION_LABEL) == generation)


def pod_available(pod: dict, min_ready: int, now: dt.datetime) -> bool:
    if not pod_ready(pod):
        return False
    if not min_ready:
        return True
    cond = next(c for c in pod["status"]["conditions"] if c.get("type") == "Ready")
    since = parse_time(cond.get("lastTransitionTime"))
    return since is not None and since + dt.timedelta(seconds=min_ready) < now


def parse_time(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def scaled(value: int | str | None, total: int) -> int:
    """GetScaledValueFromIntOrPercent, rounding up."""
    if isinstance(value, str) and value.endswith("%"):
        return -(-int(value[:-1]) * total // 100)
    return int(value or 0)


def max_unavailable(ds: dict, desired: int) -> int:
    rolling = (ds["spec"].get("updateStrategy") or {}).get("rollingUpdate") or {}
    n = scaled(rolling.get("maxUnavailable", 1), desired)
    # upstream's default for 0 and 0; and with maxSurge, which the lab does not do, one at a time
    return 1 if desired > 0 and n == 0 else n


@dataclass
class NodesPlan:
    create: list[str] = field(default_factory=list)                 # nodes needing a daemon pod
    delete: list[str] = field(default_factory=list)                 # pods to delete
    failed: list[tuple[str, str]] = field(default_factory=list)     # (node, pod): failed, to replace


def plan_nodes(ds: dict, nodes: list[dict], pods_on: dict[str, list[dict]]) -> NodesPlan:
    """manage's podsShouldBeOnNode over every node, with ``pods_on`` from by_node(pods)."""
    plan = NodesPlan()
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        run, keep = should_run(ds, node)
        pods = pods_on.get(name) or []
        if run and not pods:
            plan.create.append(name)
        elif keep:
            running = []
            for p in pods:
                if deleting(p):
                    continue
                phase = (p.get("status") or {}).get("phase")
                if phase == "Failed":
                    plan.failed.append((name, p["metadata"]["name"]))
                elif phase == "Succeeded":
                    plan.delete.append(p["metadata"]["name"])
                else:
                    running.append(p)
            plan.delete += [p["metadata"]["name"] for p in oldest_first(running)[1:]]
        else:
            plan.delete += [p["metadata"]["name"] for p in pods if not deleting(p)]
    # pods the scheduler could never bind: their node is gone
    known = {n["metadata"]["name"] for n in nodes}
    plan.delete += [p["metadata"]["name"] for n, pods in sorted(pods_on.items()) if n not in known
                    for p in pods if not p["spec"].get("nodeName") and not deleting(p)]
    return plan


def plan_rollout(ds: dict, nodes: list[dict], pods_on: dict[str, list[dict]], hash_: str,
                 now: dt.datetime) -> list[str]:
    """rollingUpdate without surge: the old pods to delete now, with ``pods_on`` from
    by_node(pods, finished_deleting=False)."""
    generation, min_ready = template_generation(ds), ds["spec"].get("minReadySeconds", 0)
    per_node = {n: list(p) for n, p in pods_on.items()}
    for node in nodes:
        if should_run(ds, node)[0]:
            per_node.setdefault(node["metadata"]["name"], [])
    limit = max_unavailable(ds, sum(1 for n in nodes if should_run(ds, n)[0]))
    unavailable, replace, candidates = 0, [], []
    for name in sorted(per_node):
        live = [p for p in per_node[name] if not deleting(p)]
        new = [p for p in live if is_updated(p, hash_, generation)]
        old = [p for p in live if not is_updated(p, hash_, generation)]
        if len(new) > 1 or len(old) > 1 or (new and old) or (not new and not old):
            unavailable += 1  # the manage loop sorts this node out first
        elif new:
            unavailable += 0 if pod_available(new[0], min_ready, now) else 1
        elif not pod_available(old[0], min_ready, now):
            replace.append(old[0]["metadata"]["name"])  # not serving anyway: replace it at once
            unavailable += 1
        elif unavailable < limit:
            candidates.append(old[0]["metadata"]["name"])
    room = max(0, min(limit - unavailable, len(candidates)))
    return replace + candidates[:room]


def daemon_status(ds: dict, nodes: list[dict], pods_on: dict[str, list[dict]], hash_: str,
                  now: dt.datetime) -> dict:
    """updateDaemonSetStatus's counts, with ``pods_on`` from by_node(pods, finished_deleting=False)."""
    generation, min_ready = template_generation(ds), ds["spec"].get("minReadySeconds", 0)
    desired = current = ready = available = updated = misscheduled = 0
    for node in nodes:
        pods = pods_on.get(node["metadata"]["name"]) or []
        if not should_run(ds, node)[0]:
            misscheduled += 1 if pods else 0
            continue
        desired += 1
        if not pods:
            continue
        current += 1
        pod = oldest_first(pods)[0]
        if pod_ready(pod):
            ready += 1
            available += 1 if pod_available(pod, min_ready, now) else 0
        updated += 1 if is_updated(pod, hash_, generation) else 0
    return {"currentNumberScheduled": current, "numberMisscheduled": misscheduled,
            "desiredNumberScheduled": desired, "numberReady": ready, "updatedNumberScheduled": updated,
            "numberAvailable": available, "numberUnavailable": desired - available}


def revision_body(ds: dict, hash_: str, number: int) -> dict:
    """The ControllerRevision of the DaemonSet's template: its data is the patch `rollout undo` applies."""
    tmpl = dict(copy.deepcopy(ds["spec"]["template"]), **{"$patch": "replace"})
    return {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {
        "name": f"{ds['metadata']['name']}-{hash_}", "namespace": ds["metadata"]["namespace"],
        "labels": {**((ds["spec"]["template"].get("metadata") or {}).get("labels") or {}), HASH_LABEL: hash_},
        "annotations": dict(ds["metadata"].get("annotations") or {}), "ownerReferences": [owner_ref(ds)]},
        "data": {"spec": {"template": tmpl}}, "revision": number}


def stale_revisions(revisions: list[dict], limit: int, live_hashes: set[str]) -> list[dict]:
    """cleanupHistory: beyond ``limit`` old revisions, the oldest no live pod still runs."""
    extra = len(revisions) - limit
    out = []
    for r in sorted(revisions, key=lambda r: r.get("revision", 0)):
        if len(out) >= extra:
            break
        if (r["metadata"].get("labels") or {}).get(HASH_LABEL) not in live_hashes:
            out.append(r)
    return out


class Backoff:
    """flowcontrol.Backoff as the DaemonSet controller keeps it for failed pods, per key."""

    def __init__(self, start: float = BACKOFF_START, cap: float = BACKOFF_MAX) -> None:
        self.start, self.cap = start, cap
        self.entries: dict[str, tuple[float, float]] = {}  # key -> (delay, last update)

    def wait(self, key: str, now: float) -> float:
        """Seconds still to wait before the next try (0: go ahead)."""
        delay, last = self.entries.get(key, (0.0, 0.0))
        return max(0.0, last + delay - now) if key in self.entries else 0.0

    def next(self, key: str, now: float) -> None:
        delay, last = self.entries.get(key, (0.0, 0.0))
        fresh = key not in self.entries or now - last > 2 * self.cap
        self.entries[key] = (self.start if fresh else min(delay * 2, self.cap), now)
