"""metrics.k8s.io/v1beta1, as metrics-server serves it, from what the lab kubelets measured.

Each kubelet writes ``nodes/<node>/stats.json`` (see ``kubelet/stats.py``); this
module turns those into PodMetrics and NodeMetrics for ``kubectl top pods|nodes``.
Samples older than ``STALE`` seconds are not served, as metrics-server drops a
node it could not scrape: a stopped kubelet's node shows ``<unknown>``.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import time

from trellis.lab.apiserver import errors
from trellis.lab.apiserver.resources import Resource

GROUP, VERSION = "metrics.k8s.io", "v1beta1"
STALE = 60.0
RESOURCES = [Resource(GROUP, VERSION, "PodMetrics", "pods", True),
             Resource(GROUP, VERSION, "NodeMetrics", "nodes", False)]


def cpu(nanocores: int) -> str:
    return f"{nanocores}n"


def memory(nbytes: int) -> str:
    return f"{nbytes // 1024}Ki"


def _stamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def samples(state_dir: str) -> dict[str, dict]:
    out = {}
    for path in glob.glob(os.path.join(state_dir, "nodes", "*", "stats.json")):
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        if time.time() - doc.get("timestamp", 0) <= STALE:
            out[os.path.basename(os.path.dirname(path))] = doc
    return out


def pod_metrics(state_dir: str, ns: str | None, name: str | None) -> list[dict]:
    items = []
    for doc in samples(state_dir).values():
        for pod in doc.get("pods", {}).values():
            if (ns is not None and pod["namespace"] != ns) or (name is not None and pod["name"] != name):
                continue
            items.append({"metadata": {"name": pod["name"], "namespace": pod["namespace"],
                                       "creationTimestamp": _stamp(time.time())},
                          "timestamp": _stamp(doc["timestamp"]), "window": f"{doc.get('window', 5):.0f}s",
                          "containers": [{"name": c, "usage": {"cpu": cpu(u["cpu"]), "memory": memory(u["memory"])}}
                                         for c, u in sorted(pod["containers"].items())]})
    return sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"]))


def node_metrics(state_dir: str, name: str | None) -> list[dict]:
    return [{"metadata": {"name": node, "creationTimestamp": _stamp(time.time())},
             "timestamp": _stamp(doc["timestamp"]), "window": f"{doc.get('window', 5):.0f}s",
             "usage": {"cpu": cpu(doc["node"]["cpu"]), "memory": memory(doc["node"]["memory"])}}
            for node, doc in sorted(samples(state_dir).items()) if name is None or node == name]


def serve(method: str, res: Resource, ns: str | None, name: str | None, state_dir: str) -> dict:
    if method != "GET":
        raise errors.ApiError(405, "MethodNotAllowed", f"{res.plural}.{GROUP} is read-only")
    if res.plural == "pods":
        items = pod_metrics(state_dir, ns, name)
        kind = "PodMetrics"
    else:
        items = node_metrics(state_dir, name)
        kind = "NodeMetrics"
    if name is not None:
        if not items:
            raise errors.not_found(res.plural, name, GROUP)
        return {"kind": kind, "apiVersion": f"{GROUP}/{VERSION}", **items[0]}
    return {"kind": f"{kind}List", "apiVersion": f"{GROUP}/{VERSION}", "metadata": {},
            "items": [{"kind": kind, "apiVersion": f"{GROUP}/{VERSION}", **i} for i in items]}
