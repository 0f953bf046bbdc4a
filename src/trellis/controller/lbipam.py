"""LoadBalancer IPAM: addresses for Services of type LoadBalancer from trellis IPPools.

An ``IPPool`` (trellis.dev/v1alpha1, cluster-scoped) lists addresses as CIDRs or
``first-last`` ranges in ``spec.addresses``; ``spec.autoAssign: false`` keeps it
for explicit requests only. A Service asks for particular addresses with
``spec.loadBalancerIP`` (deprecated upstream, still common) or the annotation
``trellis.dev/load-balancer-ips: "a,b"``; otherwise it gets the first free
address of an auto-assign pool (or of the pool named in annotation
``trellis.dev/ip-pool``). The result is written to
``status.loadBalancer.ingress``; a Service that stops being a LoadBalancer, or
is deleted, frees its address. A request that cannot be met is reported as a
Warning Event on the Service (reason ``AllocationFailed``, as MetalLB names it)
and a status condition, and the Service keeps no address rather than a wrong one.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import logging

from trellis.kube.client import ApiError, KubeClient
from trellis.kube.events import NORMAL, WARNING, EventRecorder
from trellis.kube.informer import Informer, Reconciler, obj_key

log = logging.getLogger("trellis.controller.lbipam")
REQUEST_ANNOTATION = "trellis.dev/load-balancer-ips"
POOL_ANNOTATION = "trellis.dev/ip-pool"
CONDITION = "trellis.dev/AddressAllocated"


def pool_addresses(pool: dict) -> list[str]:
    out = []
    for item in (pool.get("spec") or {}).get("addresses") or []:
        item = str(item).strip()
        if "-" in item:
            a, b = (ipaddress.ip_address(x.strip()) for x in item.split("-", 1))
            out += [str(ipaddress.ip_address(i)) for i in range(int(a), int(b) + 1)]
        else:
            net = ipaddress.ip_network(item, strict=False)
            out += [str(h) for h in (net.hosts() if net.num_addresses > 2 else net)]
    return out


def requested(svc: dict) -> list[str]:
    ann = (svc["metadata"].get("annotations") or {}).get(REQUEST_ANNOTATION)
    if ann:
        return [a.strip() for a in ann.split(",") if a.strip()]
    ip = (svc.get("spec") or {}).get("loadBalancerIP")
    return [ip] if ip else []


def current(svc: dict) -> list[str]:
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [] if i.get("ip")]


class LoadBalancerIPs(Reconciler):
    name = "lb-ipam"

    def __init__(self, client: KubeClient, services: Informer, pools: Informer,
                 events: EventRecorder | None = None) -> None:
        super().__init__()
        self.client, self.services, self.pools = client, services, pools
        self.events = events or EventRecorder(client, "trellis-controller")
        services.add_handler(lambda t, o, old: self.queue.add(obj_key(o)))
        pools.add_handler(lambda t, o, old: [self.queue.add(obj_key(s)) for s in services.items()])
        self.claimed: dict[str, str] = {}  # ip -> service key, including writes not yet in the cache

    def _in_use(self, except_key: str) -> dict[str, str]:
        used = {}
        for s in self.services.items():
            if (s.get("spec") or {}).get("type") == "LoadBalancer":
                for ip in current(s):
                    used[ip] = obj_key(s)
        used.update({ip: k for ip, k in self.claimed.items()})
        return {ip: k for ip, k in used.items() if k != except_key}

    def _pick(self, svc: dict, key: str) -> tuple[list[str], str]:
        pools = sorted(self.pools.items(), key=lambda p: p["metadata"]["name"])
        used = self._in_use(key)
        want = requested(svc)
        if want:
            known = {ip for p in pools for ip in pool_addresses(p)}
            for ip in want:
                if ip in used:
                    return [], f"requested address {ip} is in use by {used[ip]}"
                if ip not in known:
                    return [], f"requested address {ip} is in no IPPool"
            return want, ""
        have = [ip for ip in current(svc) if ip not in used]
        named = (svc["metadata"].get("annotations") or {}).get(POOL_ANNOTATION)
        eligible = [p for p in pools if (p["metadata"]["name"] == named if named
                                         else (p.get("spec") or {}).get("autoAssign", True))]
        valid = {ip for p in eligible for ip in pool_addresses(p)}
        if have and all(ip in valid for ip in have):
            return have, ""
        for p in eligible:
            for ip in pool_addresses(p):
                if ip not in used:
                    return [ip], ""
        return [], f"no free address in IPPool {named}" if named else "no free address in any auto-assign IPPool"

    def sync(self, key: str) -> None:
        ns, name = key.split("/", 1)
        svc = self.services.get(ns, name)
        if svc is None or (svc.get("spec") or {}).get("type") != "LoadBalancer":
            self.claimed = {ip: k for ip, k in self.claimed.items() if k != key}
            if svc is not None and current(svc):
                self._write(svc, [], "")
            return
        ips, problem = self._pick(svc, key)
        self.claimed = {ip: k for ip, k in self.claimed.items() if k != key}
        self.claimed.update({ip: key for ip in ips})
        if problem:
            log.warning("service %s: %s", key, problem)
        conds = {c.get("type"): c.get("message", "") for c in (svc.get("status") or {}).get("conditions") or []}
        if sorted(ips) != sorted(current(svc)) or conds.get(CONDITION, None) != problem:
            self._write(svc, ips, problem)
            if problem:
                self.events.event(svc, WARNING, "AllocationFailed", f"Failed to allocate IP for {key}: {problem}",
                                  kind="Service", api_version="v1")
            elif ips and sorted(ips) != sorted(current(svc)):
                self.events.event(svc, NORMAL, "IPAllocated", f"Assigned IP {', '.join(ips)}",
                                  kind="Service", api_version="v1")

    def _write(self, svc: dict, ips: list[str], problem: str) -> None:
        md = svc["metadata"]
        status = {"loadBalancer": {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in ips]}}
        cond = {"type": CONDITION, "status": "False" if problem else "True",
                "reason": "AllocationFailed" if problem else "Allocated", "message": problem or "",
                "lastTransitionTime": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
        status["conditions"] = [cond]
        try:
            self.client.patch("v1", "services", md["name"], {"status": status}, md["namespace"], sub="status")
        except ApiError as e:
            if e.code != 404:
                raise
