"""Policy objects, normalized. Pure: API dicts in, frozen values out, no I/O.

Three sources of policy, one vocabulary:

* ``NetPol`` from networking.k8s.io/v1 NetworkPolicy (upstream semantics:
  policyTypes defaulting, peers, ipBlock/except, named ports, endPort).
* ``Group`` from trellis.dev/v1alpha1 EndpointGroup, ``Contract`` from
  trellis.dev/v1alpha1 Contract (Contiv / ACI endpoint groups and contracts).
* ``PodInfo`` / ``NsInfo``: what a rule needs to know about a pod or namespace.

Validation (``validate_group``, ``validate_contract``) returns causes that
name the field at fault; the lab API server calls it on admission, the agent
skips objects that do not validate and logs why.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field

from trellis.kube import selectors
from trellis.kube.selectors import Selector, SelectorError

ISOLATED_ANNOTATIONS = ("trellis.dev/isolated", "opencontrail.kubernetes.isolated")
GROUP_LABEL = "io.contiv.net-group"
GROUP_ANNOTATION = "trellis.dev/endpoint-group"
# Cisco ACI's: JSON {"tenant": ..., "app-profile": ..., "name": ...} on a namespace, Deployment or pod;
# trellis has no tenants or application profiles, so ``name`` is the EndpointGroup (docs/policy.md)
ACI_GROUP_ANNOTATION = "opflex.cisco.com/endpoint-group"
MODE_IN_FORCE_ANNOTATION = "trellis.dev/isolation-mode-in-force"
PROTOCOLS = ("TCP", "UDP", "SCTP")
MODES = ("cluster", "namespace", "deployment")
# namespaces the isolation modes leave alone (cluster DNS must stay reachable)
SYSTEM_NAMESPACES = ("kube-system",)


class PolicyError(ValueError):
    """An object that cannot be compiled; the message names the field."""


@dataclass(frozen=True)
class PodInfo:
    key: str                      # namespace/name
    ns: str
    name: str
    labels: tuple[tuple[str, str], ...]
    ip: str
    node: str
    host_network: bool = False
    ports: tuple[tuple[str, str, int], ...] = ()   # (name, protocol, containerPort) of named ports
    group_hint: str = ""          # io.contiv.net-group label or trellis.dev/endpoint-group annotation
    deployment: str = ""          # owning Deployment's name, from the ReplicaSet owner

    @property
    def label_dict(self) -> dict[str, str]:
        return dict(self.labels)

    def named_port(self, name: str, proto: str) -> int | None:
        return next((p for n, pr, p in self.ports if n == name and pr == proto), None)


@dataclass(frozen=True)
class NsInfo:
    name: str
    labels: tuple[tuple[str, str], ...]
    isolated: bool = False
    group_hint: str = ""          # opflex.cisco.com/endpoint-group or trellis.dev/endpoint-group


@dataclass(frozen=True)
class PortSpec:
    protocol: str                 # TCP, UDP, SCTP
    port: int | str | None = None  # None: every port of the protocol
    end_port: int | None = None


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` entry. ``ns_selector`` None: the policy's own namespace."""
    pod_selector: Selector | None = None
    ns_selector: Selector | None = None
    cidr: str | None = None
    excepts: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetRule:
    peers: tuple[Peer, ...] | None   # None: every peer
    ports: tuple[PortSpec, ...] | None  # None: every port and protocol


@dataclass(frozen=True)
class NetPol:
    ns: str
    name: str
    pod_selector: Selector
    ingress: tuple[NetRule, ...] | None   # None: the policy does not isolate ingress
    egress: tuple[NetRule, ...] | None

    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"


@dataclass(frozen=True)
class Group:
    ns: str
    name: str
    pod_selector: Selector | None
    ns_selector: Selector | None
    intra: str = "allow"          # allow | deny

    @property
    def gid(self) -> str:
        return f"epg:{self.ns}/{self.name}"


@dataclass(frozen=True)
class ContractRule:
    action: str                   # allow | deny
    protocol: str | None          # None: any
    ports: tuple[tuple[int, int], ...] = ()   # () : any port


@dataclass(frozen=True)
class Contract:
    ns: str
    name: str
    provider: str                 # group id
    consumers: tuple[str, ...]    # group ids
    consumer_cidrs: tuple[tuple[str, tuple[str, ...]], ...]
    rules: tuple[ContractRule, ...] = field(default=(ContractRule("allow", None),))

    @property
    def key(self) -> str:
        return f"{self.ns}/{self.name}"


# ---- parsing -----------------------------------------------------------------

def _labels(obj: dict) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((obj.get("metadata", {}).get("labels") or {}).items()))


def pod_info(pod: dict) -> PodInfo:
    md, spec = pod["metadata"], pod.get("spec", {})
    ann = md.get("annotations") or {}
    ports = tuple((p["name"], p.get("protocol", "TCP"), int(p["containerPort"]))
                  for c in spec.get("containers") or [] for p in c.get("ports") or [] if p.get("name"))
    deployment = ""
    hash_ = (md.get("labels") or {}).get("pod-template-hash")
    for ref in md.get("ownerReferences") or []:
        if ref.get("kind") == "ReplicaSet" and ref.get("controller") and hash_ \
                and ref.get("name", "").endswith("-" + hash_):
            deployment = ref["name"][: -len(hash_) - 1]
    return PodInfo(f"{md['namespace']}/{md['name']}", md["namespace"], md["name"], _labels(pod),
                   pod.get("status", {}).get("podIP") or "", spec.get("nodeName") or "",
                   bool(spec.get("hostNetwork")), ports,
                   group_hint(pod) or (md.get("labels") or {}).get(GROUP_LABEL, ""), deployment)


def aci_group(value) -> str:
    """The group ``name`` of an ``opflex.cisco.com/endpoint-group`` value; PolicyError names the fault."""
    try:
        doc = json.loads(value) if isinstance(value, str) else value
    except ValueError as e:
        raise PolicyError(f"{ACI_GROUP_ANNOTATION}: not JSON ({e.msg} at character {e.pos})") from None
    if not isinstance(doc, dict):
        raise PolicyError(f"{ACI_GROUP_ANNOTATION}: must be a JSON object "
                          '{"tenant": ..., "app-profile": ..., "name": ...}')
    name = doc.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyError(f"{ACI_GROUP_ANNOTATION}: \"name\" must be a non-empty string (got {name!r})")
    for k in ("tenant", "app-profile"):
        if k in doc and not isinstance(doc[k], str):
            raise PolicyError(f"{ACI_GROUP_ANNOTATION}: {k!r} must be a string (got {doc[k]!r})")
    return name


def group_hint(obj: dict) -> str:
    """The EndpointGroup an object's annotations ask for ("" none or malformed: malformed ones are
    reported by ``policy.audit``)."""
    ann = obj.get("metadata", {}).get("annotations") or {}
    if ann.get(GROUP_ANNOTATION):
        return str(ann[GROUP_ANNOTATION])
    if ACI_GROUP_ANNOTATION in ann:
        try:
            return aci_group(ann[ACI_GROUP_ANNOTATION])
        except PolicyError:
            return ""
    return ""


def ns_info(ns: dict) -> NsInfo:
    ann = ns["metadata"].get("annotations") or {}
    labels = dict(ns["metadata"].get("labels") or {})
    labels.setdefault("kubernetes.io/metadata.name", ns["metadata"]["name"])
    return NsInfo(ns["metadata"]["name"], tuple(sorted(labels.items())),
                  any(str(ann.get(a, "")).lower() == "true" for a in ISOLATED_ANNOTATIONS), group_hint(ns))


def _selector(obj, path: str) -> Selector | None:
    try:
        return selectors.from_label_selector(obj)
    except SelectorError as e:
        raise PolicyError(f"{path}: {e}") from None


def _cidr(value, path: str, version: int | None = None) -> str:
    try:
        net = ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise PolicyError(f"{path}: invalid CIDR {value!r}") from None
    if version and net.version != version:
        raise PolicyError(f"{path}: {value!r} is not in the same address family")
    return str(net)


def _peers(items, path: str) -> tuple[Peer, ...]:
    out = []
    for i, peer in enumerate(items):
        pp = f"{path}[{i}]"
        ipb = peer.get("ipBlock")
        if ipb is not None:
            cidr = _cidr(ipb.get("cidr"), f"{pp}.ipBlock.cidr")
            version = ipaddress.ip_network(cidr).version
            ex = tuple(_cidr(e, f"{pp}.ipBlock.except[{j}]", version) for j, e in enumerate(ipb.get("except") or []))
            for j, e in enumerate(ex):
                if not ipaddress.ip_network(e).subnet_of(ipaddress.ip_network(cidr)):
                    raise PolicyError(f"{pp}.ipBlock.except[{j}]: {e} is not inside {cidr}")
            out.append(Peer(cidr=cidr, excepts=ex))
            continue
        ps = _selector(peer.get("podSelector"), f"{pp}.podSelector")
        nss = _selector(peer.get("namespaceSelector"), f"{pp}.namespaceSelector")
        if ps is None and nss is None:
            raise PolicyError(f"{pp}: a peer needs podSelector, namespaceSelector or ipBlock")
        out.append(Peer(ps if ps is not None else selectors.EVERYTHING, nss))
    return tuple(out)


def _ports(items, path: str) -> tuple[PortSpec, ...]:
    out = []
    for i, p in enumerate(items):
        proto = p.get("protocol") or "TCP"
        if proto not in PROTOCOLS:
            raise PolicyError(f"{path}[{i}].protocol: unsupported value {proto!r} (TCP, UDP, SCTP)")
        port, end = p.get("port"), p.get("endPort")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        if isinstance(port, int) and not 1 <= port <= 65535:
            raise PolicyError(f"{path}[{i}].port: {port} is not between 1 and 65535")
        if end is not None and (not isinstance(port, int) or not isinstance(end, int) or not port <= end <= 65535):
            raise PolicyError(f"{path}[{i}].endPort: {end!r} must be a number >= port and <= 65535")
        out.append(PortSpec(proto, port, end))
    return tuple(out)


def _rules(items, peer_key: str, path: str) -> tuple[NetRule, ...]:
    out = []
    for i, r in enumerate(items or []):
        peers = r.get(peer_key)
        ports = r.get("ports")
        out.append(NetRule(_peers(peers, f"{path}[{i}].{peer_key}") if peers else None,
                           _ports(ports, f"{path}[{i}].ports") if ports else None))
    return tuple(out)


def netpol(obj: dict) -> NetPol:
    md, spec = obj["metadata"], obj.get("spec") or {}
    types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if spec.get("egress") else []))
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            raise PolicyError(f"spec.policyTypes[{i}]: unsupported value {t!r} (Ingress, Egress)")
    sel = _selector(spec.get("podSelector", {}), "spec.podSelector")
    return NetPol(md["namespace"], md["name"], sel if sel is not None else selectors.EVERYTHING,
                  _rules(spec.get("ingress"), "from", "spec.ingress") if "Ingress" in types else None,
                  _rules(spec.get("egress"), "to", "spec.egress") if "Egress" in types else None)


def group(obj: dict) -> Group:
    md, spec = obj["metadata"], obj.get("spec") or {}
    intra = spec.get("intraGroup", "allow")
    if intra not in ("allow", "deny"):
        raise PolicyError(f"spec.intraGroup: unsupported value {intra!r} (allow, deny)")
    return Group(md["namespace"], md["name"], _selector(spec.get("podSelector"), "spec.podSelector"),
                 _selector(spec.get("namespaceSelector"), "spec.namespaceSelector"), intra)


def group_ref(ref, ns: str, path: str) -> str:
    """``web`` / ``other/web`` (EndpointGroup), ``namespace:x``, ``deployment:[ns/]web`` -> group id."""
    if not isinstance(ref, str) or not ref.strip():
        raise PolicyError(f"{path}: a group reference is a non-empty string, got {ref!r}")
    kind, sep, rest = ref.partition(":")
    if not sep:
        kind, rest = "epg", ref
    if kind == "namespace":
        if not rest or "/" in rest:
            raise PolicyError(f"{path}: {ref!r}: write namespace:<name>")
        return f"namespace:{rest}"
    if kind not in ("epg", "group", "deployment"):
        raise PolicyError(f"{path}: {ref!r}: unknown kind {kind!r} (a group name, namespace:NS, deployment:NAME)")
    if not rest or rest.count("/") > 1:
        raise PolicyError(f"{path}: {ref!r} is not NAME or NAMESPACE/NAME")
    full = rest if "/" in rest else f"{ns}/{rest}"
    return f"{'deployment' if kind == 'deployment' else 'epg'}:{full}"


def _port_range(value, path: str) -> tuple[int, int]:
    text = str(value)
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise PolicyError(f"{path}: {value!r} is not a port or a range like 8000-8080") from None
    if not 1 <= a <= b <= 65535:
        raise PolicyError(f"{path}: {value!r} is not within 1-65535 (low-high)")
    return a, b


def contract(obj: dict) -> Contract:
    md, spec = obj["metadata"], obj.get("spec") or {}
    ns = md["namespace"]
    if not spec.get("provider"):
        raise PolicyError("spec.provider: required (the group that offers the service)")
    provider = group_ref(spec["provider"], ns, "spec.provider")
    consumers = tuple(group_ref(c, ns, f"spec.consumers[{i}]") for i, c in enumerate(spec.get("consumers") or []))
    cidrs = []
    for i, b in enumerate(spec.get("consumerIPBlocks") or []):
        peer = _peers([{"ipBlock": b}], "spec.consumerIPBlocks")[0]
        del i
        cidrs.append((peer.cidr, peer.excepts))
    if not consumers and not cidrs:
        raise PolicyError("spec.consumers: name at least one consumer group or spec.consumerIPBlocks entry")
    rules = []
    for i, r in enumerate(spec.get("rules") or [{"action": "allow"}]):
        action = r.get("action", "allow")
        if action not in ("allow", "deny"):
            raise PolicyError(f"spec.rules[{i}].action: unsupported value {action!r} (allow, deny)")
        proto = r.get("protocol")
        if proto is not None and proto not in PROTOCOLS:
            raise PolicyError(f"spec.rules[{i}].protocol: unsupported value {proto!r} (TCP, UDP, SCTP)")
        ports = tuple(_port_range(p, f"spec.rules[{i}].ports[{j}]") for j, p in enumerate(r.get("ports") or []))
        if ports and proto is None:
            raise PolicyError(f"spec.rules[{i}].protocol: required when ports are given")
        rules.append(ContractRule(action, proto, ports))
    return Contract(ns, md["name"], provider, consumers, tuple(cidrs), tuple(rules))


def validate(kind: str, obj: dict) -> str | None:
    """The first problem with an EndpointGroup/Contract/NetworkPolicy, or None."""
    try:
        {"EndpointGroup": group, "Contract": contract, "NetworkPolicy": netpol}[kind](obj)
    except PolicyError as e:
        return str(e)
    return None


def mode_from_config(data: dict | None) -> str:
    mode = (data or {}).get("isolationMode", "cluster") or "cluster"
    if mode not in MODES:
        raise PolicyError(f"isolationMode: unsupported value {mode!r} (cluster, namespace, deployment)")
    return mode


def mode_in_force(cm: dict | None, current: str = "cluster") -> tuple[str, str | None]:
    """trellis-config -> (the isolation mode to enforce, the problem with it or None). An invalid
    value never changes the mode: the one in force stays (``current``, or at start the last valid
    mode the controller recorded on the ConfigMap)."""
    try:
        return mode_from_config((cm or {}).get("data")), None
    except PolicyError as e:
        recorded = ((cm or {}).get("metadata", {}).get("annotations") or {}).get(MODE_IN_FORCE_ANNOTATION)
        return (recorded if recorded in MODES else current), str(e)
