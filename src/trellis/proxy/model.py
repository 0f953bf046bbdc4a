"""Services + EndpointSlices -> what one node's proxy must do, per service port. Pure, no I/O.

A ``ServicePort`` is the unit the proxy programs: one (service, port) pair with
every address it is reached on (cluster IPs, NodePort, external IPs, LoadBalancer
IPs) and the endpoints that may receive it *from this node's point of view*
(traffic policies already applied). Endpoint choice follows kube-proxy:
ready endpoints; when none are ready, serving-but-terminating ones (so a rolling
update does not black-hole connections); Local policies keep only this node's.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
DEFAULT_AFFINITY_TIMEOUT = 10800  # seconds, as Kubernetes defaults it


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    node: str = ""
    ready: bool = True
    serving: bool = True
    terminating: bool = False


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp | udp | sctp
    port: int
    cluster_ips: tuple[str, ...] = ()
    node_port: int = 0
    external_ips: tuple[str, ...] = ()  # spec.externalIPs and status.loadBalancer.ingress[].ip
    lb_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()  # loadBalancerSourceRanges
    affinity_timeout: int = 0  # 0 = no session affinity
    etp_local: bool = False
    itp_local: bool = False
    health_check_node_port: int = 0
    endpoints: tuple[Endpoint, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}/{self.protocol}/{self.port_name or self.port}"

    def usable(self, node: str | None = None) -> tuple[Endpoint, ...]:
        """Endpoints that may get new connections: ready ones, else serving+terminating ones."""
        eps = [e for e in self.endpoints if node is None or e.node == node]
        ready = [e for e in eps if e.ready]
        if ready:
            return tuple(sorted(set(ready), key=lambda e: (e.ip, e.port)))
        serving = [e for e in eps if e.serving and e.terminating]
        return tuple(sorted(set(serving), key=lambda e: (e.ip, e.port)))

    def cluster_endpoints(self, node: str) -> tuple[Endpoint, ...]:
        """What traffic to a cluster IP may reach from this node."""
        return self.usable(node if self.itp_local else None)

    def external_endpoints(self, node: str) -> tuple[Endpoint, ...]:
        """What external traffic (NodePort, LB, external IP) arriving at this node may reach."""
        return self.usable(node if self.etp_local else None)


def _ipv4(values) -> tuple[str, ...]:
    out = []
    for v in values or []:
        try:
            if ipaddress.ip_address(v).version == 4:
                out.append(v)
        except ValueError:
            continue
    return tuple(out)


def _slice_endpoints(slices: list[dict], port: dict) -> tuple[Endpoint, ...]:
    """The endpoints of one service port: slices carry ports by name, matched to the service's."""
    want_name = port.get("name") or ""
    proto = port.get("protocol") or "TCP"
    out: list[Endpoint] = []
    for sl in slices:
        if sl.get("addressType", "IPv4") != "IPv4":
            continue
        target = None
        for sp in sl.get("ports") or []:
            if (sp.get("name") or "") == want_name and (sp.get("protocol") or "TCP") == proto:
                target = sp.get("port")
                break
        if not target:
            continue
        for ep in sl.get("endpoints") or []:
            cond = ep.get("conditions") or {}
            ready = cond.get("ready")
            ready = True if ready is None else bool(ready)  # nil ready means ready (API docs)
            serving = cond.get("serving")
            serving = ready if serving is None else bool(serving)
            for addr in _ipv4(ep.get("addresses"))[:1]:  # one address per endpoint (fungible)
                out.append(Endpoint(addr, int(target), ep.get("nodeName") or "", ready, serving,
                                    bool(cond.get("terminating"))))
    return tuple(out)


def service_ports(svc: dict, slices: list[dict]) -> list[ServicePort]:
    """The service's ports as the proxy sees them; [] for services the proxy ignores
    (ExternalName, headless)."""
    spec = svc.get("spec") or {}
    md = svc["metadata"]
    typ = spec.get("type") or "ClusterIP"
    if typ == "ExternalName":
        return []
    cluster_ips = _ipv4(spec.get("clusterIPs") or [spec.get("clusterIP")])
    if not cluster_ips:  # headless or None: DNS only
        return []
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    lb_ips = ()
    if typ == "LoadBalancer":
        lb_ips = _ipv4(i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])
    external = typ in ("NodePort", "LoadBalancer")
    out = []
    for port in spec.get("ports") or []:
        proto = PROTOCOLS.get(port.get("protocol") or "TCP")
        if proto is None:
            continue
        out.append(ServicePort(
            namespace=md.get("namespace", "default"), name=md["name"], port_name=port.get("name") or "",
            protocol=proto, port=int(port["port"]), cluster_ips=cluster_ips,
            node_port=int(port.get("nodePort") or 0) if external else 0,
            external_ips=_ipv4(spec.get("externalIPs")), lb_ips=lb_ips,
            source_ranges=tuple(spec.get("loadBalancerSourceRanges") or ()) if typ == "LoadBalancer" else (),
            affinity_timeout=affinity,
            etp_local=(spec.get("externalTrafficPolicy") == "Local") and external,
            itp_local=spec.get("internalTrafficPolicy") == "Local",
            health_check_node_port=int(spec.get("healthCheckNodePort") or 0),
            endpoints=_slice_endpoints(slices, port)))
    return out


@dataclass
class Snapshot:
    """All service ports, by key, from a set of objects."""
    ports: dict[str, ServicePort] = field(default_factory=dict)

    @classmethod
    def of(cls, services: list[dict], slices_by_service: dict[str, list[dict]]) -> "Snapshot":
        snap = cls()
        for svc in services:
            k = f"{svc['metadata'].get('namespace', 'default')}/{svc['metadata']['name']}"
            for sp in service_ports(svc, slices_by_service.get(k, [])):
                snap.ports[sp.key] = sp
        return snap


def slice_endpoints(slices: list[dict], port: dict) -> tuple[Endpoint, ...]:
    """The endpoints behind one Service port (a ``spec.ports[]`` item), read from its slices;
    the ingress controller reads them the same way the proxy does."""
    return _slice_endpoints(slices, port)
