"""Ingresses, IngressClasses, Services, EndpointSlices, Secrets -> what haproxy serves. Pure, no I/O.

The result (``Plan``) is the whole routing decision: virtual hosts in the order haproxy
tries them (exact hosts, then wildcards, then the rules without a host), each with its
routes in precedence order (longest path first, Exact before Prefix at equal length),
backends whose servers are the Service's ready endpoints (pod IPs: no second hop through
the ClusterIP), the certificates per SNI name, and every Problem to report as an Event.

Ingresses are merged oldest first (creationTimestamp, then namespace/name): when two
define the same host + path + pathType, or a default backend, or a certificate for the
same host, the oldest one's wins and the younger one gets a Problem saying so.

Backends have a fixed number of server slots (a power of two, at least 4), so that
endpoint changes are runtime-API updates of a slot's address and state, not reloads;
``prev_slots`` keeps each endpoint in the slot it had.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trellis.ingress.model import (BackendRef, Ingress, PathRule, Problem, host_matches, is_ours, our_classes,
                                   parse_ingress)
from trellis.ingress.tlscerts import BadSecret, bundle_from_secret
from trellis.proxy.model import slice_endpoints

MIN_SLOTS = 4
Addr = tuple[str, int]


@dataclass
class Backend:
    name: str  # haproxy backend name
    ref: BackendRef
    slots: list[Addr | None]  # (pod IP, port) per server slot; None = slot in maintenance

    @property
    def endpoints(self) -> set[Addr]:
        return {s for s in self.slots if s}


@dataclass(frozen=True)
class Route:
    rule: PathRule
    backend: str
    ingress: str  # ns/name that defined it
    redirect: bool  # HTTP -> HTTPS for this route


@dataclass
class VHost:
    host: str  # exact, "*.wildcard", or "" for every host
    routes: list[Route] = field(default_factory=list)

    @property
    def kind(self) -> int:
        return 2 if not self.host else (1 if self.host.startswith("*.") else 0)


@dataclass(frozen=True)
class Cert:
    name: str  # file name stem: ns_secret, or "default"
    pem: bytes
    hosts: tuple[str, ...]


@dataclass
class Plan:
    vhosts: list[VHost]
    backends: dict[str, Backend]
    default_backend: str | None  # None: 404 from the controller
    certs: list[Cert]
    served: list[str]  # ns/name of every Ingress this controller serves
    problems: list[Problem]

    def structure(self) -> tuple:
        """What only a reload can change: the backends and their slot counts, the default
        backend, the certificates. Endpoint addresses, hosts and paths (haproxy maps) are
        runtime-API changes."""
        return (tuple((b.name, len(b.slots)) for b in sorted(self.backends.values(), key=lambda b: b.name)),
                self.default_backend, tuple(self.certs))


def backend_name(ref: BackendRef) -> str:
    return f"b.{ref.namespace}.{ref.service}.{ref.port_number or ref.port_name}"


def assign_slots(prev: list[Addr | None] | None, want: set[Addr]) -> list[Addr | None]:
    """Endpoints keep their slots; new ones take free slots; the table grows (x2) only when full."""
    slots = list(prev or [None] * MIN_SLOTS)
    slots = [s if s in want else None for s in slots]
    new = sorted(want - set(slots))
    size = len(slots)
    while size < len(want):
        size *= 2
    slots += [None] * (size - len(slots))
    free = [i for i, s in enumerate(slots) if s is None]
    for i, addr in zip(free, new):
        slots[i] = addr
    return slots


def _resolve(ref: BackendRef, services: dict[str, dict], slices: dict[str, list[dict]],
             owner: Ingress) -> tuple[set[Addr], Problem | None]:
    svc = services.get(f"{ref.namespace}/{ref.service}")

    def problem(reason: str, msg: str) -> Problem:
        return Problem("Ingress", owner.namespace, owner.name, reason, msg)
    if svc is None:
        return set(), problem("ServiceNotFound", f"backend service {ref.namespace}/{ref.service} does not exist "
                                                 f"(answering 503 until it does)")
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return set(), problem("UnsupportedBackend", f"backend service {ref.service} is of type ExternalName")
    for port in spec.get("ports") or []:
        if (port.get("protocol") or "TCP") != "TCP":
            continue
        if (ref.port_number and int(port.get("port") or 0) == ref.port_number) or (
                ref.port_name and port.get("name") == ref.port_name):
            eps = slice_endpoints(slices.get(f"{ref.namespace}/{ref.service}", []), port)
            return {(e.ip, e.port) for e in eps if e.ready}, None
    return set(), problem("ServicePortNotFound", f"service {ref.namespace}/{ref.service} has no TCP port "
                                                 f"{ref.port_number or repr(ref.port_name)}")


def compile_plan(ingresses: list[dict], classes: list[dict], services: dict[str, dict],
                 slices: dict[str, list[dict]], secrets: dict[str, dict],
                 prev_slots: dict[str, list[Addr | None]] | None = None, default_cert: bytes = b"") -> Plan:
    """``services``/``secrets`` keyed ns/name; ``slices`` keyed by their Service's ns/name."""
    ours, default_class = our_classes(classes)
    parsed = sorted((parse_ingress(o) for o in ingresses), key=lambda i: i.order)
    served = [i for i in parsed if is_ours(i, ours, default_class)]
    problems: list[Problem] = [p for i in served for p in i.problems]
    backends: dict[str, Backend] = {}
    prev_slots = prev_slots or {}

    def backend(ref: BackendRef, owner: Ingress) -> str:
        name = backend_name(ref)
        if name not in backends:
            eps, prob = _resolve(ref, services, slices, owner)
            if prob:
                problems.append(prob)
            backends[name] = Backend(name, ref, assign_slots(prev_slots.get(name), eps))
        return name

    certs, tls_hosts = _certs(served, secrets, problems, default_cert)
    vhosts: dict[str, VHost] = {}
    taken: dict[tuple[str, str, str], str] = {}
    default_backend = None
    for ing in served:
        if ing.default_backend:
            if default_backend is None:
                default_backend = backend(ing.default_backend, ing)
            else:
                problems.append(Problem("Ingress", ing.namespace, ing.name, "DefaultBackendIgnored",
                                        "an older Ingress already sets the default backend"))
        for rule in ing.rules:
            vh = vhosts.setdefault(rule.host, VHost(rule.host))
            for p in rule.paths:
                k = (rule.host, p.path_type, p.normalized)
                if k in taken:
                    if taken[k] != ing.key:
                        problems.append(Problem("Ingress", ing.namespace, ing.name, "PathConflict",
                                                f"host {rule.host or '*'} {p.path_type} {p.path} is already "
                                                f"served by the older Ingress {taken[k]}"))
                    continue
                taken[k] = ing.key
                redirect = bool(rule.host) and ing.ssl_redirect and rule.host in tls_hosts
                vh.routes.append(Route(p, backend(p.backend, ing), ing.key, redirect))
    for vh in vhosts.values():
        vh.routes.sort(key=lambda r: r.rule.precedence)  # stable: equal keys keep oldest first
    ordered = sorted(vhosts.values(), key=lambda v: (v.kind, v.host))
    return Plan(ordered, backends, default_backend, certs, [i.key for i in served], problems)


def _certs(served: list[Ingress], secrets: dict[str, dict], problems: list[Problem],
           default_cert: bytes) -> tuple[list[Cert], set[str]]:
    """One certificate per SNI name (oldest Ingress first); the hosts that are served over TLS.
    A host whose Secret is missing or malformed is not a TLS host: it keeps plain HTTP."""
    by_secret: dict[str, tuple[bytes, list[str]]] = {}
    tls_hosts: set[str] = set()
    bad: dict[str, str] = {}
    for ing in served:
        for t in ing.tls:
            hosts = [h for h in t.hosts if h not in tls_hosts]
            if not hosts:
                continue
            if not t.secret:  # TLS with the default certificate
                tls_hosts.update(hosts)
                continue
            key = f"{ing.namespace}/{t.secret}"
            if key not in by_secret and key not in bad:
                sec = secrets.get(key)
                try:
                    if sec is None:
                        raise BadSecret("does not exist")
                    by_secret[key] = (bundle_from_secret(sec), [])
                except BadSecret as e:
                    bad[key] = str(e)
                    if sec is not None:
                        problems.append(Problem("Secret", ing.namespace, t.secret, "InvalidTLSSecret", str(e)))
            if key in bad:
                problems.append(Problem("Ingress", ing.namespace, ing.name, "InvalidTLSSecret",
                                        f"spec.tls secret {t.secret}: {bad[key]}; serving "
                                        f"{', '.join(hosts)} over plain HTTP only"))
                continue
            by_secret[key][1].extend(hosts)
            tls_hosts.update(hosts)
    certs = [Cert("default", default_cert, ())] if default_cert else []
    certs += [Cert(k.replace("/", "_"), pem, tuple(hosts)) for k, (pem, hosts) in sorted(by_secret.items()) if hosts]
    return certs, tls_hosts


def select(plan: Plan, host: str, path: str) -> Route | None:
    """The route a request takes, decided as the rendered haproxy decides (for tests and
    explain): the first matching virtual host, then its first matching route."""
    host = host.split(":", 1)[0].lower()
    for vh in plan.vhosts:
        if host_matches(vh.host, host):
            return next((r for r in vh.routes if r.rule.matches(path)), None)
    return None
