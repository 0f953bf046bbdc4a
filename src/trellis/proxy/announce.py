"""Which node answers ARP for a LoadBalancer IP (MetalLB's layer-2 mode). Pure, no I/O.

Every agent computes the same answer from the same API data, without talking to
the others: the announcer of an IP is the Ready node with the lowest
sha256(node + "#" + ip), among the nodes with a local endpoint when the service
has externalTrafficPolicy Local (the traffic must land there). ``trellis
explain`` uses the same function to name the node a LoadBalancer IP enters by.
"""
from __future__ import annotations

import hashlib
from typing import Callable, Iterable


def announcer_for(ip: str, candidates: Iterable[str]) -> str | None:
    candidates = list(candidates)
    if not candidates:
        return None
    return min(candidates, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest())


def node_ready(node: dict) -> bool:
    if node["metadata"].get("deletionTimestamp"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (node.get("status") or {}).get("conditions") or [])


def lb_ips(svc: dict) -> list[str]:
    if (svc.get("spec") or {}).get("type") != "LoadBalancer":
        return []
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ingress if i.get("ip") and ":" not in i["ip"]]


def announcers(services: list[dict], nodes: list[dict],
               endpoint_nodes: Callable[[str, str], set[str]]) -> dict[str, str]:
    """LB IP -> the node that announces it. ``endpoint_nodes(ns, name)``: the nodes with a
    usable endpoint of the service."""
    ready = sorted(n["metadata"]["name"] for n in nodes if node_ready(n))
    out: dict[str, str] = {}
    for svc in services:
        ips = lb_ips(svc)
        if not ips:
            continue
        cands = ready
        if svc["spec"].get("externalTrafficPolicy") == "Local":
            local = endpoint_nodes(svc["metadata"]["namespace"], svc["metadata"]["name"])
            cands = [n for n in ready if n in local]
        for ip in ips:
            who = announcer_for(ip, cands)
            if who is not None:
                out[ip] = who
    return out
