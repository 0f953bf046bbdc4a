"""Service defaulting, validation and allocation (ClusterIPs and NodePorts).

As in Kubernetes, the API server allocates: a ClusterIP from the service CIDR
and a NodePort from 30000-32767 for each port of a NodePort/LoadBalancer
service. A requested value that is taken or out of range is a 422 that names
the field; everything is released when the Service is deleted.
"""
from __future__ import annotations

import ipaddress
import random

from trellis.lab.apiserver.admission import PROTOCOLS, Causes, invalid, required, unsupported

TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
NODEPORT_RANGE = (30000, 32767)


class Allocators:
    def __init__(self, service_cidr: str = "10.96.0.0/16") -> None:
        self.net = ipaddress.ip_network(service_cidr)
        self.ips: set[str] = set()
        self.ports: set[int] = set()  # NodePorts, shared by TCP/UDP as in Kubernetes' allocator

    def load(self, services) -> None:
        for svc in services:
            self.reserve(svc)

    def reserve(self, svc: dict) -> None:
        spec = svc.get("spec", {})
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip != "None":
                self.ips.add(ip)
        for p in spec.get("ports") or []:
            if p.get("nodePort"):
                self.ports.add(p["nodePort"])
        if spec.get("healthCheckNodePort"):
            self.ports.add(spec["healthCheckNodePort"])

    def release(self, svc: dict) -> None:
        spec = svc.get("spec", {})
        for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
            self.ips.discard(ip)
        for p in spec.get("ports") or []:
            self.ports.discard(p.get("nodePort"))
        self.ports.discard(spec.get("healthCheckNodePort"))

    def _free_ip(self) -> str:
        size = self.net.num_addresses
        if len(self.ips) >= size - 2:
            raise RuntimeError("service CIDR exhausted")
        # As Kubernetes (KEP-3070): dynamic addresses come from above the first 1/16 of the
        # range, which stays for addresses users and installers pick (10.96.0.10 for DNS).
        low = max(1, size // 16) if size >= 256 and len(self.ips) < size - size // 16 - 2 else 1
        while True:
            ip = str(self.net[random.randrange(low, size - 1)])
            if ip not in self.ips:
                return ip

    def _free_port(self, taken: set[int]) -> int:
        lo, hi = NODEPORT_RANGE
        free = hi - lo + 1 - len(self.ports | taken)
        if free <= 0:
            raise RuntimeError("NodePort range exhausted")
        while True:
            p = random.randint(lo, hi)
            if p not in self.ports and p not in taken:
                return p

    def admit(self, svc: dict, old: dict | None) -> Causes:
        """Default, validate and allocate; allocations are committed only if valid."""
        spec = svc.setdefault("spec", {})
        svc.setdefault("status", {}).setdefault("loadBalancer", {})
        stype = spec.setdefault("type", "ClusterIP")
        out: Causes = []
        if stype not in TYPES:
            return [unsupported("spec.type", stype, TYPES)]
        if stype == "ExternalName":
            if not spec.get("externalName"):
                out.append(required("spec.externalName"))
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
            return out
        spec.setdefault("sessionAffinity", "None")
        spec.setdefault("internalTrafficPolicy", "Cluster")
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
        if spec["sessionAffinity"] == "ClientIP":
            spec.setdefault("sessionAffinityConfig", {"clientIP": {"timeoutSeconds": 10800}})
        if stype in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        ports = spec.get("ports") or []
        if not ports and spec.get("clusterIP") != "None":
            out.append(required("spec.ports"))
        names, seen = set(), set()
        for i, p in enumerate(ports):
            pp = f"spec.ports[{i}]"
            p.setdefault("protocol", "TCP")
            if p["protocol"] not in PROTOCOLS:
                out.append(unsupported(f"{pp}.protocol", p["protocol"], PROTOCOLS))
            port = p.get("port")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                out.append(invalid(f"{pp}.port", port, "must be between 1 and 65535, inclusive"))
            p.setdefault("targetPort", port)
            if len(ports) > 1 and not p.get("name"):
                out.append(required(f"{pp}.name"))
            if p.get("name") and p["name"] in names:
                out.append((f"{pp}.name", "FieldValueDuplicate", f"Duplicate value: {p['name']!r}"))
            names.add(p.get("name"))
            if (port, p["protocol"]) in seen:
                out.append((pp, "FieldValueDuplicate", f"Duplicate value: {port}/{p['protocol']}"))
            seen.add((port, p["protocol"]))
        if out:
            return out
        return self._allocate(svc, old)

    def _allocate(self, svc: dict, old: dict | None) -> Causes:
        spec, out = svc["spec"], []
        old_spec = (old or {}).get("spec", {})
        # ClusterIP: immutable once set, except that a change of type may keep it.
        want = spec.get("clusterIP") or (spec.get("clusterIPs") or [None])[0]
        old_ip = old_spec.get("clusterIP")
        new_ips: list[str] = []
        if old_ip and want and want != old_ip:
            out.append(invalid("spec.clusterIPs[0]", want, "may not change once set"))
        elif old_ip:
            want = old_ip
        elif want and want != "None":
            try:
                if ipaddress.ip_address(want) not in self.net:
                    out.append(invalid("spec.clusterIPs", [want], f"failed to allocate IP {want}: the "
                                       f"provided IP ({want}) is not in the valid range. The range of "
                                       f"valid IPs is {self.net}"))
                elif want in self.ips:
                    out.append(invalid("spec.clusterIPs", [want], f"failed to allocate IP {want}: "
                                       "provided IP is already allocated"))
                else:
                    new_ips.append(want)
            except ValueError:
                out.append(invalid("spec.clusterIP", want, "must be a valid IP address or `None`"))
        elif not want:
            want = self._free_ip()
            new_ips.append(want)
        spec["clusterIP"], spec["clusterIPs"] = want, [want]
        # NodePorts
        old_ports = {(p.get("port"), p.get("protocol")): p.get("nodePort") for p in old_spec.get("ports") or []}
        old_all = {p for p in old_ports.values() if p}
        new_ports: set[int] = set()
        needs = spec["type"] in ("NodePort", "LoadBalancer")
        for i, p in enumerate(spec.get("ports") or []):
            np = p.get("nodePort")
            if not needs:
                if np:
                    out.append(invalid(f"spec.ports[{i}].nodePort", np,
                                       "may not be used when `type` is 'ClusterIP'"))
                continue
            if np is None:
                np = old_ports.get((p.get("port"), p.get("protocol"))) or self._free_port(new_ports)
            elif not NODEPORT_RANGE[0] <= np <= NODEPORT_RANGE[1]:
                out.append(invalid(f"spec.ports[{i}].nodePort", np, "provided port is not in the valid "
                                   "range. The range of valid ports is 30000-32767"))
                continue
            elif (np in self.ports and np not in old_all) or np in new_ports:
                out.append(invalid(f"spec.ports[{i}].nodePort", np, "provided port is already allocated"))
                continue
            p["nodePort"] = np
            if np not in old_all:
                new_ports.add(np)
        if (spec["type"] == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"
                and not spec.get("healthCheckNodePort")):
            spec["healthCheckNodePort"] = old_spec.get("healthCheckNodePort") or self._free_port(new_ports)
            new_ports.add(spec["healthCheckNodePort"])
        if out:
            return out
        self.ips.update(new_ips)
        self.ports.update(new_ports)
        if old is not None:  # release what the update dropped
            kept = {p.get("nodePort") for p in spec.get("ports") or []} | {spec.get("healthCheckNodePort")}
            self.ports.difference_update((old_all | {old_spec.get("healthCheckNodePort")}) - kept)
        return []
