"""networking.k8s.io/v1 Ingress semantics, as plain data. Pure, no I/O.

What the API reference says, in one place:

- **pathType Exact**: the URL path equals the rule's path, case-sensitive.
- **pathType Prefix**: the path is split into elements by ``/`` and the rule matches when
  its elements are a prefix of the request's, element by element (``/foo/bar`` matches
  ``/foo/bar`` and ``/foo/bar/baz``, never ``/foo/barbaz``); a trailing slash on either side
  is ignored (``/foo/`` and ``/foo`` are the same rule, both match ``/foo`` and ``/foo/``).
- **pathType ImplementationSpecific**: for trellis it means Prefix (documented in
  docs/ingress.md), as most controllers do.
- Several paths match: the longest wins; at equal length Exact wins over Prefix.
- **host**: exact (``foo.bar.com``), or a wildcard ``*.foo.com`` that stands for exactly one
  DNS label (``bar.foo.com``, not ``foo.com`` nor ``baz.bar.foo.com``). A rule without host
  matches every host. The request's host is the Host header without its port, lower case.
  An exact host beats a wildcard, a wildcard beats a rule without host; once a host is
  chosen, only its paths count, and when none matches the default backend answers.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

CONTROLLER_NAME = "trellis.dev/ingress-controller"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
LEGACY_CLASS_ANNOTATION = "kubernetes.io/ingress.class"
SSL_REDIRECT_ANNOTATION = "trellis.dev/ssl-redirect"
_PATH_RE = re.compile(r"^/[^\s'\"#\\]*$")
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
_HOST_RE = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class InvalidIngress(ValueError):
    """One field of an Ingress trellis cannot honour; the message names it."""


@dataclass(frozen=True)
class BackendRef:
    """A Service backend: its name in the Ingress' namespace and a port by number or name."""
    namespace: str
    service: str
    port_number: int = 0
    port_name: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port_number or self.port_name}"


@dataclass(frozen=True)
class PathRule:
    path: str
    path_type: str  # Exact | Prefix (ImplementationSpecific already mapped to Prefix)
    backend: BackendRef

    @property
    def normalized(self) -> str:
        """The path as compared: Prefix rules without their trailing slash ("/" stays "/")."""
        if self.path_type == "Prefix" and self.path != "/":
            return self.path.rstrip("/") or "/"
        return self.path

    def matches(self, request_path: str) -> bool:
        return path_matches(self.path_type, self.path, request_path)

    @property
    def precedence(self) -> tuple[int, int]:
        """Sort key, smallest first: longer paths first, Exact before Prefix at equal length."""
        return (-len(self.normalized), 0 if self.path_type == "Exact" else 1)


def path_matches(path_type: str, rule_path: str, request_path: str) -> bool:
    """The API reference's path semantics (see the module docstring)."""
    if path_type == "Exact":
        return request_path == rule_path
    # element-wise prefix: the rule without its trailing slash, then the end or a "/"
    rule = rule_path.rstrip("/")
    return not rule or request_path == rule or request_path.startswith(rule + "/")


def host_matches(rule_host: str, request_host: str) -> bool:
    if not rule_host:
        return True
    if rule_host.startswith("*."):
        label, _, rest = request_host.partition(".")
        return bool(label) and rest == rule_host[2:]
    return request_host == rule_host


@dataclass(frozen=True)
class Problem:
    """Something in an object trellis cannot honour: becomes a Warning Event on it."""
    kind: str  # Ingress | Secret
    namespace: str
    name: str
    reason: str
    message: str


@dataclass
class Rule:
    host: str  # "" for every host
    paths: list[PathRule] = field(default_factory=list)


@dataclass
class TLSEntry:
    hosts: list[str]
    secret: str  # "" when not named: the default certificate


@dataclass
class Ingress:
    namespace: str
    name: str
    created: str
    uid: str
    class_name: str  # "" when none is set
    default_backend: BackendRef | None
    rules: list[Rule]
    tls: list[TLSEntry]
    ssl_redirect: bool
    problems: list[Problem] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def order(self) -> tuple[str, str, str]:
        """Oldest first; namespace/name break ties so the order never depends on listing."""
        return (self.created, self.namespace, self.name)


def _backend(ns: str, raw: dict, where: str) -> BackendRef:
    if raw.get("resource"):
        r = raw["resource"]
        raise InvalidIngress(f"{where}.resource ({r.get('kind', '?')} {r.get('name', '?')}): resource backends "
                             f"are not supported by trellis, only service backends")
    svc = raw.get("service") or {}
    if not svc.get("name"):
        raise InvalidIngress(f"{where}.service.name: required")
    port = svc.get("port") or {}
    if port.get("number"):
        try:
            n = int(port["number"])
        except (TypeError, ValueError):
            raise InvalidIngress(f"{where}.service.port.number: {port['number']!r} is not a number") from None
        if not 1 <= n <= 65535:
            raise InvalidIngress(f"{where}.service.port.number: {n} is not between 1 and 65535")
        return BackendRef(ns, svc["name"], port_number=n)
    if port.get("name"):
        return BackendRef(ns, svc["name"], port_name=str(port["name"]))
    raise InvalidIngress(f"{where}.service.port: needs a number or a name")


def parse_ingress(obj: dict) -> Ingress:
    """An Ingress object as trellis serves it. Paths and backends it cannot honour are left
    out, each with a Problem; the rest is served."""
    md = obj["metadata"]
    ns, name = md.get("namespace") or "default", md["name"]
    spec = obj.get("spec") or {}
    ann = md.get("annotations") or {}
    problems: list[Problem] = []

    def bad(msg: str, reason: str = "InvalidIngress") -> None:
        problems.append(Problem("Ingress", ns, name, reason, msg))

    default = None
    if spec.get("defaultBackend"):
        try:
            default = _backend(ns, spec["defaultBackend"], "spec.defaultBackend")
        except InvalidIngress as e:
            bad(str(e), "UnsupportedBackend" if "resource" in str(e) else "InvalidBackend")
    rules: list[Rule] = []
    for i, raw in enumerate(spec.get("rules") or []):
        host = (raw.get("host") or "").lower()
        if host and not _HOST_RE.match(host):
            bad(f"spec.rules[{i}].host: {host!r} is not a DNS name or a '*.' wildcard of one")
            continue
        rule = Rule(host)
        for j, p in enumerate(((raw.get("http") or {}).get("paths")) or []):
            where = f"spec.rules[{i}].http.paths[{j}]"
            path, ptype = p.get("path") or "/", p.get("pathType") or ""
            if ptype not in PATH_TYPES:
                bad(f"{where}.pathType: {ptype!r} must be one of {', '.join(PATH_TYPES)}")
                continue
            if not _PATH_RE.match(path):
                bad(f"{where}.path: {path!r} must start with '/' and hold no spaces, quotes, '#' or '\\'")
                continue
            try:
                be = _backend(ns, p.get("backend") or {}, f"{where}.backend")
            except InvalidIngress as e:
                bad(str(e), "UnsupportedBackend" if "resource" in str(e) else "InvalidBackend")
                continue
            rule.paths.append(PathRule(path, "Exact" if ptype == "Exact" else "Prefix", be))
        rules.append(rule)
    tls = [TLSEntry([h.lower() for h in t.get("hosts") or []], t.get("secretName") or "")
           for t in spec.get("tls") or []]
    return Ingress(ns, name, md.get("creationTimestamp") or "", md.get("uid") or "",
                   spec.get("ingressClassName") or ann.get(LEGACY_CLASS_ANNOTATION) or "",
                   default, rules, tls,
                   str(ann.get(SSL_REDIRECT_ANNOTATION, "true")).lower() != "false", problems)


def our_classes(classes: list[dict], controller: str = CONTROLLER_NAME) -> tuple[set[str], str | None]:
    """The IngressClasses this controller serves, and the default class if it is one of them.

    Several default classes: Kubernetes' admission refuses new class-less Ingresses then;
    trellis takes the oldest default, and serves class-less Ingresses only if it is ours."""
    ours = {c["metadata"]["name"] for c in classes if (c.get("spec") or {}).get("controller") == controller}
    defaults = sorted((c["metadata"].get("creationTimestamp") or "", c["metadata"]["name"]) for c in classes
                      if str(((c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION))).lower()
                      == "true")
    default = defaults[0][1] if defaults else None
    return ours, default if default in ours else None


def is_ours(ing: Ingress, ours: set[str], default: str | None) -> bool:
    """An Ingress of one of our classes, or without a class while ours is the default."""
    if ing.class_name:
        return ing.class_name in ours
    return default is not None
