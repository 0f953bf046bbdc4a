"""Server-side printing: meta.k8s.io/v1 Table, which ``kubectl get`` asks for.

kubectl prints whatever columns the server sends (priority 1 columns only with
``-o wide``). The columns follow the Kubernetes API server's printers.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

from trellis.kube import selectors


def parse_time(ts: str | None) -> dt.datetime | None:
    if not ts:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S.%fZ"):  # Time and MicroTime
        try:
            return dt.datetime.strptime(ts, fmt).replace(tzinfo=dt.timezone.utc)
        except (TypeError, ValueError):
            continue
    return None


def human_age(ts: str | None, now: dt.datetime | None = None) -> str:
    t = parse_time(ts)
    if t is None:
        return "<unknown>"
    s = int(((now or dt.datetime.now(dt.timezone.utc)) - t).total_seconds())
    s = max(s, 0)
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    return f"{d}d" if d < 730 else f"{d // 365}y"


def _age(o: dict) -> str:
    return human_age(o["metadata"].get("creationTimestamp"))


def pod_status_text(pod: dict) -> str:
    st = pod.get("status", {})
    reason = st.get("reason") or st.get("phase", "Pending")
    for cs in st.get("containerStatuses") or []:
        state = cs.get("state", {})
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif state.get("terminated") and st.get("phase") not in ("Succeeded", "Failed"):
            reason = state["terminated"].get("reason") or "Error"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return reason


def _pod_row(p: dict) -> list:
    st = p.get("status", {})
    css = st.get("containerStatuses") or []
    total = len(p.get("spec", {}).get("containers") or [])
    ready = sum(1 for c in css if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in css)
    return [p["metadata"]["name"], f"{ready}/{total}", pod_status_text(p), restarts, _age(p),
            st.get("podIP") or "<none>", p.get("spec", {}).get("nodeName") or "<none>", "<none>", "<none>"]


def _node_row(n: dict) -> list:
    conds = {c["type"]: c["status"] for c in n.get("status", {}).get("conditions") or []}
    status = "Ready" if conds.get("Ready") == "True" else "NotReady"
    if n.get("spec", {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    addrs = {a["type"]: a["address"] for a in n.get("status", {}).get("addresses") or []}
    info = n.get("status", {}).get("nodeInfo", {})
    roles = ",".join(sorted(k.split("/", 1)[1] for k in n["metadata"].get("labels", {})
                            if k.startswith("node-role.kubernetes.io/"))) or "<none>"
    return [n["metadata"]["name"], status, roles, _age(n), info.get("kubeletVersion", ""),
            addrs.get("InternalIP", "<none>"), addrs.get("ExternalIP", "<none>"),
            info.get("osImage", ""), info.get("kernelVersion", ""), info.get("containerRuntimeVersion", "")]


def _svc_ports(s: dict) -> str:
    out = []
    for p in s.get("spec", {}).get("ports") or []:
        np = f":{p['nodePort']}" if p.get("nodePort") else ""
        out.append(f"{p.get('port')}{np}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _svc_row(s: dict) -> list:
    spec = s.get("spec", {})
    stype = spec.get("type", "ClusterIP")
    ext = [i.get("ip") or i.get("hostname") for i in s.get("status", {}).get("loadBalancer", {}).get("ingress") or []]
    ext += spec.get("externalIPs") or []
    if stype == "ExternalName":
        external = spec.get("externalName", "<none>")
    elif stype == "LoadBalancer" and not ext:
        external = "<pending>"
    else:
        external = ",".join(ext) or "<none>"
    sel = ",".join(f"{k}={v}" for k, v in (spec.get("selector") or {}).items()) or "<none>"
    return [s["metadata"]["name"], stype, spec.get("clusterIP") or "<none>", external,
            _svc_ports(s), _age(s), sel]


def _deploy_row(d: dict) -> list:
    st, spec = d.get("status", {}), d.get("spec", {})
    containers = spec.get("template", {}).get("spec", {}).get("containers") or []
    return [d["metadata"]["name"], f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
            st.get("updatedReplicas", 0), st.get("availableReplicas", 0), _age(d),
            ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
            selectors.to_string(spec.get("selector"))]


def _rs_row(r: dict) -> list:
    st, spec = r.get("status", {}), r.get("spec", {})
    return [r["metadata"]["name"], spec.get("replicas", 0), st.get("replicas", 0),
            st.get("readyReplicas", 0), _age(r)]


def _netpol_row(n: dict) -> list:
    sel = selectors.to_string(n.get("spec", {}).get("podSelector")) or "<none>"
    return [n["metadata"]["name"], sel, _age(n)]


def _ns_row(n: dict) -> list:
    return [n["metadata"]["name"], n.get("status", {}).get("phase", "Active"), _age(n)]


def _eps_row(e: dict) -> list:
    addrs = [a for ep in e.get("endpoints") or [] for a in ep.get("addresses") or []]
    shown = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    ports = ",".join(str(p.get("port")) for p in e.get("ports") or []) or "<unset>"
    return [e["metadata"]["name"], e.get("addressType", ""), ports, shown or "<unset>", _age(e)]


def _ing_row(i: dict) -> list:
    spec = i.get("spec", {})
    hosts = ",".join(r.get("host", "*") for r in spec.get("rules") or []) or "*"
    addrs = ",".join(x.get("ip") or x.get("hostname", "") for x in
                     i.get("status", {}).get("loadBalancer", {}).get("ingress") or [])
    ports = "80, 443" if spec.get("tls") else "80"
    return [i["metadata"]["name"], spec.get("ingressClassName") or "<none>", hosts, addrs, ports, _age(i)]


def _event_row(e: dict) -> list:
    inv = e.get("involvedObject", {})
    series = e.get("series") or {}
    last = (series.get("lastObservedTime") or e.get("lastTimestamp") or e.get("eventTime")
            or e["metadata"].get("creationTimestamp"))
    count = series.get("count") or e.get("count") or 1
    seen = human_age(last)
    if count > 1:  # as kubectl prints a repeated event
        seen += f" (x{count} over {human_age(e.get('firstTimestamp') or e.get('eventTime') or last)})"
    return [seen, e.get("type", ""), e.get("reason", ""), f"{inv.get('kind', '').lower()}/{inv.get('name', '')}",
            e.get("message", "")]


def _data_row(o: dict) -> list:
    return [o["metadata"]["name"], len(o.get("data") or {}) + len(o.get("binaryData") or {}), _age(o)]


def _default_row(o: dict) -> list:
    return [o["metadata"]["name"], _age(o)]


Col = tuple[str, str, int]  # name, type, priority
PRINTERS: dict[str, tuple[list[Col], Callable[[dict], list]]] = {
    "/pods": ([("Name", "string", 0), ("Ready", "string", 0), ("Status", "string", 0),
               ("Restarts", "integer", 0), ("Age", "string", 0), ("IP", "string", 1),
               ("Node", "string", 1), ("Nominated Node", "string", 1), ("Readiness Gates", "string", 1)],
              _pod_row),
    "/nodes": ([("Name", "string", 0), ("Status", "string", 0), ("Roles", "string", 0), ("Age", "string", 0),
                ("Version", "string", 0), ("Internal-IP", "string", 1), ("External-IP", "string", 1),
                ("OS-Image", "string", 1), ("Kernel-Version", "string", 1),
                ("Container-Runtime", "string", 1)], _node_row),
    "/services": ([("Name", "string", 0), ("Type", "string", 0), ("Cluster-IP", "string", 0),
                   ("External-IP", "string", 0), ("Port(s)", "string", 0), ("Age", "string", 0),
                   ("Selector", "string", 1)], _svc_row),
    "apps/deployments": ([("Name", "string", 0), ("Ready", "string", 0), ("Up-to-date", "integer", 0),
                          ("Available", "integer", 0), ("Age", "string", 0), ("Containers", "string", 1),
                          ("Images", "string", 1), ("Selector", "string", 1)], _deploy_row),
    "apps/replicasets": ([("Name", "string", 0), ("Desired", "integer", 0), ("Current", "integer", 0),
                          ("Ready", "integer", 0), ("Age", "string", 0)], _rs_row),
    "networking.k8s.io/networkpolicies": ([("Name", "string", 0), ("Pod-Selector", "string", 0),
                                           ("Age", "string", 0)], _netpol_row),
    "/namespaces": ([("Name", "string", 0), ("Status", "string", 0), ("Age", "string", 0)], _ns_row),
    "discovery.k8s.io/endpointslices": ([("Name", "string", 0), ("AddressType", "string", 0),
                                         ("Ports", "string", 0), ("Endpoints", "string", 0),
                                         ("Age", "string", 0)], _eps_row),
    "networking.k8s.io/ingresses": ([("Name", "string", 0), ("Class", "string", 0), ("Hosts", "string", 0),
                                     ("Address", "string", 0), ("Ports", "string", 0),
                                     ("Age", "string", 0)], _ing_row),
    "/events": ([("Last Seen", "string", 0), ("Type", "string", 0), ("Reason", "string", 0),
                 ("Object", "string", 0), ("Message", "string", 0)], _event_row),
    "/configmaps": ([("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)], _data_row),
    "/secrets": ([("Name", "string", 0), ("Data", "integer", 0), ("Age", "string", 0)], _data_row),
}


def table(bucket: str, objs: list[dict], list_meta: dict, include_object: str = "Metadata") -> dict:
    cols, row_fn = PRINTERS.get(bucket, ([("Name", "string", 0), ("Age", "string", 0)], _default_row))
    rows = []
    for o in objs:
        if include_object == "None":
            embedded = None
        elif include_object == "Object":
            embedded = o
        else:
            embedded = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"]}
        rows.append({"cells": row_fn(o), "object": embedded})
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta,
            "columnDefinitions": [{"name": n, "type": t, "format": "name" if n == "Name" else "",
                                   "description": n, "priority": p} for n, t, p in cols],
            "rows": rows}
