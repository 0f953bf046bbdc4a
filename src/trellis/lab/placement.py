"""Where the lab scheduler puts a pod: a pure choice over nodes and the pods already placed.

The filters are kube-scheduler's that matter in the lab: the node is Ready and schedulable,
matches the pod's nodeSelector and has room (allocatable ``pods``, kubelet's --max-pods,
110 by default; pods that have finished do not count, pods bound but not yet seen bound do).
Among the nodes left, siblings (same controller) are spread first, then all pods.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass

DEFAULT_MAX_PODS = 110


@dataclass(frozen=True)
class Placement:
    node: str | None          # None: unschedulable
    message: str = ""         # kube-scheduler's "0/N nodes are available: ..." when node is None


def node_ready(node: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in node.get("status", {}).get("conditions") or [])


def max_pods(node: dict) -> int:
    try:
        return int((node.get("status", {}).get("allocatable") or {}).get("pods", DEFAULT_MAX_PODS))
    except (TypeError, ValueError):
        return DEFAULT_MAX_PODS


def controller_uid(pod: dict) -> str | None:
    return next((r.get("uid") for r in pod["metadata"].get("ownerReferences") or [] if r.get("controller")),
                None)


def place(pod: dict, nodes: list[dict], pods: list[dict], assumed: dict[str, str]) -> Placement:
    """Choose a node for ``pod``; ``assumed`` maps "ns/name" of pods bound but not yet seen bound."""
    sel = pod["spec"].get("nodeSelector") or {}
    fit = [n for n in nodes if node_ready(n) and not n["spec"].get("unschedulable")
           and all(n["metadata"].get("labels", {}).get(k) == v for k, v in sel.items())]
    placed = {f"{p['metadata']['namespace']}/{p['metadata']['name']}":
              (p["spec"].get("nodeName"), controller_uid(p)) for p in pods
              if p.get("status", {}).get("phase") not in ("Succeeded", "Failed")}
    for key, node in assumed.items():
        placed[key] = (node, placed.get(key, (None, None))[1])
    on_node = collections.Counter(node for node, _ in placed.values())
    roomy = [n for n in fit if on_node[n["metadata"]["name"]] < max_pods(n)]
    if not roomy:
        if not fit:
            why = "didn't match Pod's node affinity/selector" if sel else "no Ready node"
        else:
            why = f"{len(fit)} Too many pods"
        return Placement(None, f"0/{len(nodes)} nodes are available: {why}")
    owner = controller_uid(pod)
    counts = {n["metadata"]["name"]: [0, 0] for n in roomy}
    for node, uid in placed.values():
        if node in counts:
            counts[node][1] += 1
            if owner and uid == owner:
                counts[node][0] += 1
    return Placement(min(counts, key=lambda n: (counts[n], n)))
