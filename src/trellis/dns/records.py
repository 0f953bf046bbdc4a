"""Cluster DNS records from Services, EndpointSlices and Pods. Pure, no I/O.

The names follow the Kubernetes DNS specification (the one CoreDNS's
``kubernetes`` plugin implements):

* ``dns-version.<zone>``: TXT with the schema version implemented (1.1.0).
* ``<svc>.<ns>.svc.<zone>``: A for the cluster IP; for a headless service, A for
  every ready endpoint (no ready endpoint: the name does not exist, NXDOMAIN for
  A and SRV alike); CNAME for an ExternalName service, followed inside the zone
  (the answer carries the target's records too, so a stub resolver needs nothing more).
* ``<hostname>.<svc>.<ns>.svc.<zone>`` for headless endpoints that have a
  hostname, ``<a-b-c-d>.<svc>.<ns>.svc.<zone>`` for those that do not.
* ``_<port>._<proto>.<svc>.<ns>.svc.<zone>``: SRV per named port (the service
  name as target, or each endpoint's name when headless).
* ``<a-b-c-d>.<ns>.pod.<zone>``: A for pod IPs.
* PTR for cluster IPs (-> service name), headless endpoints (-> their name)
  and other pod IPs (-> the pod name above).

``Index.lookup`` answers (rcode, records) from dicts built once per change, so
a query costs a few dictionary lookups whatever the cluster's size.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

TTL = 5
SCHEMA_VERSION = "1.1.0"
MAX_CHAIN = 8  # CNAMEs followed inside the zone before giving up (a loop ends there too)


@dataclass(frozen=True)
class Record:
    name: str
    rtype: str  # A AAAA CNAME SRV PTR TXT
    data: str | tuple  # address, target name, or (priority, weight, port, target) for SRV


def dashed(ip: str) -> str:
    return ip.replace(".", "-").replace(":", "-")


def reverse_name(ip: str) -> str:
    return ipaddress.ip_address(ip).reverse_pointer


@dataclass
class Index:
    zone: str = "cluster.local"
    records: dict[tuple[str, str], list[Record]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)  # every name that exists (incl. empty non-terminals)

    def add(self, name: str, rtype: str, data) -> None:
        name = name.lower()
        lst = self.records.setdefault((name, rtype), [])
        rec = Record(name, rtype, data)
        if rec not in lst:
            lst.append(rec)
        while name and name not in self.names:
            self.names.add(name)
            name = name.partition(".")[2]

    def lookup(self, qname: str, qtype: str) -> tuple[str, list[Record]]:
        """('NOERROR'|'NXDOMAIN', answers). A CNAME answers any type, as in DNS; one that
        points into the zone is followed, and the rcode is then the target's."""
        name = qname.lower().rstrip(".")
        chain: list[Record] = []
        while qtype != "CNAME" and (name, "CNAME") in self.records and len(chain) < MAX_CHAIN:
            cname = self.records[(name, "CNAME")][0]
            chain.append(cname)
            name = str(cname.data)
            if not self.authoritative_for(name):
                return "NOERROR", chain  # outside the zone: the client's resolver goes on
        if chain:
            if (name, "CNAME") in self.records and qtype != "CNAME":
                return "NOERROR", chain  # a loop, or too long: what we have
            rcode, recs = self.lookup(name, qtype)
            return rcode, chain + recs
        if qtype == "ANY":
            recs = [r for (n, _), lst in self.records.items() if n == name for r in lst]
            return ("NOERROR" if name in self.names else "NXDOMAIN"), recs
        if (name, qtype) in self.records:
            return "NOERROR", list(self.records[(name, qtype)])
        return ("NOERROR" if name in self.names else "NXDOMAIN"), []

    def authoritative_for(self, qname: str) -> bool:
        name = qname.lower().rstrip(".")
        return name == self.zone or name.endswith("." + self.zone)


def _ipv(ip: str) -> int:
    try:
        return ipaddress.ip_address(ip).version
    except ValueError:
        return 0


def build(services: list[dict], slices: list[dict], pods: list[dict], zone: str = "cluster.local") -> Index:
    idx = Index(zone)
    idx.names.add(zone)
    idx.add(f"dns-version.{zone}", "TXT", SCHEMA_VERSION)
    by_service: dict[str, list[dict]] = {}
    for sl in slices:
        svc_name = (sl["metadata"].get("labels") or {}).get("kubernetes.io/service-name")
        if svc_name:
            by_service.setdefault(f"{sl['metadata']['namespace']}/{svc_name}", []).append(sl)
    named_ips: set[str] = set()
    for svc in services:
        md, spec = svc["metadata"], svc.get("spec") or {}
        ns, name = md.get("namespace", "default"), md["name"]
        base = f"{name}.{ns}.svc.{zone}"
        if spec.get("type") == "ExternalName":
            if spec.get("externalName"):
                idx.add(base, "CNAME", spec["externalName"].rstrip(".").lower())
            continue
        ips = [ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"]
        ports = [p for p in spec.get("ports") or [] if p.get("name")]
        if ips:
            for ip in ips:
                idx.add(base, "A" if _ipv(ip) == 4 else "AAAA", ip)
                idx.add(reverse_name(ip), "PTR", base)
                named_ips.add(ip)
            for p in ports:
                idx.add(f"_{p['name']}._{(p.get('protocol') or 'TCP').lower()}.{base}", "SRV",
                        (0, 100, int(p["port"]), base))
            continue
        # headless: the name exists only with ready endpoints (schema 1.1.0, 2.4.1)
        for sl in by_service.get(f"{ns}/{name}", []):
            for ep in sl.get("endpoints") or []:
                cond = ep.get("conditions") or {}
                if cond.get("ready") is False and not spec.get("publishNotReadyAddresses"):
                    continue
                for ip in ep.get("addresses") or []:
                    rtype = "A" if _ipv(ip) == 4 else "AAAA"
                    ep_name = f"{(ep.get('hostname') or dashed(ip)).lower()}.{base}"
                    idx.add(base, rtype, ip)
                    idx.add(ep_name, rtype, ip)
                    idx.add(reverse_name(ip), "PTR", ep_name)
                    named_ips.add(ip)
                    for sp in sl.get("ports") or []:
                        if sp.get("name"):
                            idx.add(f"_{sp['name']}._{(sp.get('protocol') or 'TCP').lower()}.{base}", "SRV",
                                    (0, 100, int(sp["port"]), ep_name))
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip or (pod.get("spec") or {}).get("hostNetwork"):
            continue
        name = f"{dashed(ip)}.{pod['metadata']['namespace']}.pod.{zone}"
        idx.add(name, "A" if _ipv(ip) == 4 else "AAAA", ip)
        if ip not in named_ips:
            idx.add(reverse_name(ip), "PTR", name)
    return idx
