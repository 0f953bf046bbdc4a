"""Defaulting and validation of the built-in kinds, as the Kubernetes API does them.

Each validator returns a list of ``(field path, reason, message)``; a non-empty
list becomes a 422 whose causes name the field at fault.
"""
from __future__ import annotations

import copy
import ipaddress
import re
from typing import Any, Callable

from trellis.kube import selectors
from trellis.lab.apiserver import saadmission

Causes = list[tuple[str, str, str]]

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PROTOCOLS = ("TCP", "UDP", "SCTP")
LABEL_NAME_KINDS = {"Namespace", "Service"}


def invalid(field: str, value: Any, msg: str) -> tuple[str, str, str]:
    return (field, "FieldValueInvalid", f"Invalid value: {value!r}: {msg}")


def required(field: str) -> tuple[str, str, str]:
    return (field, "FieldValueRequired", "Required value")


def unsupported(field: str, value: Any, allowed: tuple[str, ...]) -> tuple[str, str, str]:
    quoted = ", ".join(f'"{a}"' for a in allowed)
    return (field, "FieldValueNotSupported", f"Unsupported value: {value!r}: supported values: {quoted}")


PATH_SEGMENT_NAME_KINDS = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")  # "system:..." names


def validate_name(kind: str, name: str) -> Causes:
    if not name:
        return [required("metadata.name")]
    if kind in PATH_SEGMENT_NAME_KINDS:  # ValidatePathSegmentName, as RBAC objects are validated
        if name in (".", "..") or "/" in name or "%" in name:
            return [invalid("metadata.name", name, "may not be '.' or '..' and may not contain '/' or '%'")]
        return []
    rx, limit = (DNS_LABEL, 63) if kind in LABEL_NAME_KINDS else (DNS_SUBDOMAIN, 253)
    if not rx.match(name) or len(name) > limit:
        what = "RFC 1123 label" if rx is DNS_LABEL else "RFC 1123 subdomain"
        return [invalid("metadata.name", name, f"a lowercase {what} must consist of lower case "
                        "alphanumeric characters or '-', and must start and end with an alphanumeric "
                        "character")]
    return []


QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ANNOTATIONS_MAX = 256 * 1024  # TotalAnnotationSizeLimitB


def qualified_name(path: str, key: Any) -> Causes:
    """A label or annotation key: an optional DNS subdomain prefix and '/', then a name of <= 63 characters."""
    if not isinstance(key, str):
        return [invalid(path, key, "keys must be strings")]
    prefix, _, name = key.rpartition("/")
    out = []
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS_SUBDOMAIN.match(prefix)):
        out.append(invalid(path, key, "prefix part a lowercase RFC 1123 subdomain must consist of lower case "
                           "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric "
                           "character"))
    if not name:
        out.append(invalid(path, key, "name part must be non-empty"))
    elif len(name) > 63:
        out.append(invalid(path, key, "name part must be no more than 63 characters"))
    elif not QUALIFIED_NAME.match(name):
        out.append(invalid(path, key, "name part must consist of alphanumeric characters, '-', '_' or '.', "
                           "and must start and end with an alphanumeric character (e.g. 'MyName',  or "
                           "'my.name',  or '123-abc', regex used for validation is "
                           "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"))
    return out


def _valid_labels(path: str, labels: Any) -> Causes:
    out: Causes = []
    if labels is None:
        return out
    if not isinstance(labels, dict):
        return [invalid(path, labels, "must be a map of strings")]
    for k, v in labels.items():
        out += qualified_name(path, k)
        if not isinstance(v, str):
            out.append(invalid(f"{path}.{k}", v, "label values must be strings"))
        elif len(v) > 63 or not LABEL_VALUE.match(v):
            out.append(invalid(f"{path}.{k}", v, "a valid label must be an empty string or consist "
                               "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
                               "alphanumeric character, and be at most 63 characters"))
    return out


def _valid_annotations(path: str, annotations: Any) -> Causes:
    if not annotations:
        return []
    if not isinstance(annotations, dict):
        return [invalid(path, annotations, "must be a map of strings")]
    out: Causes = []
    for k in annotations:
        out += qualified_name(path, k)
    size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in annotations.items())
    if size > ANNOTATIONS_MAX:
        out.append((path, "FieldValueTooLong", f"Too long: must have at most {ANNOTATIONS_MAX} bytes"))
    return out


def validate_metadata(kind: str, md: dict) -> Causes:
    """ObjectMeta as ValidateObjectMeta checks it: name, generateName, labels, annotations, finalizers."""
    out = validate_name(kind, md.get("name", ""))
    out += _valid_labels("metadata.labels", md.get("labels"))
    out += _valid_annotations("metadata.annotations", md.get("annotations"))
    for i, f in enumerate(md.get("finalizers") or []):
        out += qualified_name(f"metadata.finalizers[{i}]", f)
    return out


# ---- Pod ------------------------------------------------------------------

def default_pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for c in spec.get("containers") or []:
        if not isinstance(c, dict):
            continue
        c.setdefault("imagePullPolicy", "Always" if str(c.get("image", "")).endswith(":latest")
                     or ":" not in str(c.get("image", "")) else "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        c.setdefault("resources", {})
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def validate_pod_spec(spec: Any, path: str = "spec") -> Causes:
    if not isinstance(spec, dict):
        return [required(path)]
    out: Causes = []
    containers = spec.get("containers")
    if not containers:
        out.append(required(f"{path}.containers"))
    names = set()
    for i, c in enumerate(containers or []):
        cp = f"{path}.containers[{i}]"
        if not isinstance(c, dict):
            out.append(invalid(cp, c, "must be an object"))
            continue
        name = c.get("name")
        if not name:
            out.append(required(f"{cp}.name"))
        elif not DNS_LABEL.match(name):
            out.append(invalid(f"{cp}.name", name, "must be a lowercase RFC 1123 label"))
        elif name in names:
            out.append((f"{cp}.name", "FieldValueDuplicate", f"Duplicate value: {name!r}"))
        names.add(name)
        if not c.get("image"):
            out.append(required(f"{cp}.image"))
        for j, p in enumerate(c.get("ports") or []):
            pp = f"{cp}.ports[{j}]"
            port = p.get("containerPort")
            if not isinstance(port, int) or not 1 <= port <= 65535:
                out.append(invalid(f"{pp}.containerPort", port, "must be between 1 and 65535, inclusive"))
            if p.get("protocol", "TCP") not in PROTOCOLS:
                out.append(unsupported(f"{pp}.protocol", p.get("protocol"), PROTOCOLS))
    rp = spec.get("restartPolicy", "Always")
    if rp not in ("Always", "OnFailure", "Never"):
        out.append(unsupported(f"{path}.restartPolicy", rp, ("Always", "OnFailure", "Never")))
    return out + validate_tolerations(spec.get("tolerations"), f"{path}.tolerations")


TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
BAD_LABEL_VALUE = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                   "'.', and must start and end with an alphanumeric character")


def _label_value_ok(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 63 and bool(LABEL_VALUE.match(v))


def validate_tolerations(tolerations: Any, path: str) -> Causes:
    """ValidateTolerations: an empty key needs Exists; Exists has no value; effects as taints'."""
    out: Causes = []
    for i, t in enumerate(tolerations or []):
        tp = f"{path}[{i}]"
        if not isinstance(t, dict):
            out.append(invalid(tp, t, "must be an object"))
            continue
        key, op, value, effect = t.get("key") or "", t.get("operator") or "", t.get("value") or "", t.get("effect")
        if key:
            out += qualified_name(f"{tp}.key", key)
        elif op != "Exists":
            out.append(invalid(f"{tp}.operator", op, 'operator must be Exists when `key` is empty, which means '
                               '"match all values and all keys"'))
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            out.append(invalid(f"{tp}.effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` is set"))
        if op in ("", "Equal"):
            if not _label_value_ok(value):
                out.append(invalid(f"{tp}.operator", value, BAD_LABEL_VALUE))
        elif op == "Exists":
            if value:
                out.append(invalid(f"{tp}.operator", t, "value must be empty when `operator` is 'Exists'"))
        else:
            out.append(unsupported(f"{tp}.operator", op, ("Equal", "Exists")))
        if effect and effect not in TAINT_EFFECTS:
            out.append(unsupported(f"{tp}.effect", effect, TAINT_EFFECTS))
    return out


def validate_taints(taints: Any, path: str = "spec.taints") -> Causes:
    """validateNodeTaints: key a label name, value a label value, an effect, unique by key and effect."""
    out: Causes = []
    seen = set()
    for i, t in enumerate(taints or []):
        tp = f"{path}[{i}]"
        if not isinstance(t, dict):
            out.append(invalid(tp, t, "must be an object"))
            continue
        out += qualified_name(f"{tp}.key", t.get("key") or "")
        if not _label_value_ok(t.get("value") or ""):
            out.append(invalid(f"{tp}.value", t.get("value"), BAD_LABEL_VALUE))
        if not t.get("effect"):
            out.append(required(f"{tp}.effect"))
        elif t["effect"] not in TAINT_EFFECTS:
            out.append(unsupported(f"{tp}.effect", t["effect"], TAINT_EFFECTS))
        if (t.get("key"), t.get("effect")) in seen:
            out.append((tp, "FieldValueDuplicate", "Duplicate value: taints must be unique by key and effect pair"))
        seen.add((t.get("key"), t.get("effect")))
    return out


def pod_spec_mutable_view(spec: dict) -> dict:
    """The parts of a pod spec that may not change after creation (images may)."""
    view = copy.deepcopy(spec)
    for c in view.get("containers") or []:
        c.pop("image", None)
    for k in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "nodeName"):
        view.pop(k, None)
    return view


def admit_pod(obj: dict, old: dict | None) -> Causes:
    spec = obj.setdefault("spec", {})
    default_pod_spec(spec)
    # the ServiceAccount admission plugin: a pod runs as "default" unless it names another
    # (serviceAccount is the deprecated spelling, kept equal); an update that leaves it out keeps it
    if old is None:
        spec["serviceAccountName"] = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        saadmission.mount_token(spec)
    else:
        for key in ("serviceAccountName", "serviceAccount"):
            if not spec.get(key) and (old.get("spec") or {}).get(key):
                spec[key] = old["spec"][key]
    if spec.get("serviceAccountName"):
        spec["serviceAccount"] = spec["serviceAccountName"]
    obj.setdefault("status", {}).setdefault("phase", "Pending")
    if old is None:
        obj["status"].setdefault("qosClass", "BestEffort")
    out = validate_pod_spec(spec)
    if old is not None and not out:
        if pod_spec_mutable_view(spec) != pod_spec_mutable_view(old.get("spec", {})):
            out.append(("spec", "FieldValueForbidden", "Forbidden: pod updates may not change fields "
                        "other than `spec.containers[*].image`, `spec.activeDeadlineSeconds`, "
                        "`spec.tolerations` or `spec.terminationGracePeriodSeconds`"))
        if old["spec"].get("nodeName") and spec.get("nodeName") != old["spec"].get("nodeName"):
            out.append(invalid("spec.nodeName", spec.get("nodeName"), "field is immutable once set"))
    return out


# ---- Deployment -----------------------------------------------------------

def admit_deployment(obj: dict, old: dict | None, legacy: bool = False) -> Causes:
    spec = obj.setdefault("spec", {})
    tmpl = spec.setdefault("template", {})
    tmpl_labels = tmpl.setdefault("metadata", {}).get("labels") or {}
    if legacy and not spec.get("selector"):
        spec["selector"] = {"matchLabels": dict(tmpl_labels)}
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy.setdefault("type", "RollingUpdate")
        strategy.setdefault("rollingUpdate", {"maxUnavailable": "25%", "maxSurge": "25%"})
    default_pod_spec(tmpl.setdefault("spec", {}))
    out: Causes = []
    replicas = spec.get("replicas")
    if not isinstance(replicas, int) or replicas < 0:
        out.append(invalid("spec.replicas", replicas, "must be greater than or equal to 0"))
    sel = spec.get("selector")
    if not sel:
        out.append(required("spec.selector"))
    else:
        try:
            compiled = selectors.from_label_selector(sel)
            if not compiled:
                out.append(invalid("spec.selector", sel, "empty selector is invalid for deployment"))
            elif not selectors.matches(compiled, tmpl_labels):
                out.append(invalid("spec.template.metadata.labels", tmpl_labels,
                                   "`selector` does not match template `labels`"))
        except selectors.SelectorError as e:
            out.append(invalid("spec.selector", sel, str(e)))
    out += _valid_labels("spec.template.metadata.labels", tmpl_labels)
    out += validate_pod_spec(tmpl.get("spec"), "spec.template.spec")
    if old is not None and sel and old["spec"].get("selector") != sel:
        out.append(invalid("spec.selector", sel, "field is immutable"))
    return out


# ---- NetworkPolicy ----------------------------------------------------------

def _validate_peers(path: str, peers: Any) -> Causes:
    out: Causes = []
    for i, peer in enumerate(peers or []):
        pp = f"{path}[{i}]"
        ipb = peer.get("ipBlock")
        if ipb is not None:
            if peer.get("podSelector") is not None or peer.get("namespaceSelector") is not None:
                out.append(("%s" % pp, "FieldValueForbidden",
                            "Forbidden: may not specify both ipBlock and another peer"))
            try:
                net = ipaddress.ip_network(ipb.get("cidr", ""), strict=False)
            except ValueError:
                out.append(invalid(f"{pp}.ipBlock.cidr", ipb.get("cidr"), "must be a valid CIDR"))
                continue
            for j, ex in enumerate(ipb.get("except") or []):
                try:
                    exn = ipaddress.ip_network(ex, strict=False)
                    if exn.version != net.version or not exn.subnet_of(net):
                        out.append(invalid(f"{pp}.ipBlock.except[{j}]", ex, "must be a strict subset of `cidr`"))
                except ValueError:
                    out.append(invalid(f"{pp}.ipBlock.except[{j}]", ex, "must be a valid CIDR"))
        for key in ("podSelector", "namespaceSelector"):
            if peer.get(key) is not None:
                try:
                    selectors.from_label_selector(peer[key])
                except selectors.SelectorError as e:
                    out.append(invalid(f"{pp}.{key}", peer[key], str(e)))
    return out


def _validate_np_ports(path: str, ports: Any) -> Causes:
    out: Causes = []
    for i, p in enumerate(ports or []):
        pp = f"{path}[{i}]"
        proto = p.get("protocol", "TCP")
        if proto not in PROTOCOLS:
            out.append(unsupported(f"{pp}.protocol", proto, PROTOCOLS))
        port, end = p.get("port"), p.get("endPort")
        if isinstance(port, int) and not 1 <= port <= 65535:
            out.append(invalid(f"{pp}.port", port, "must be between 1 and 65535, inclusive"))
        if end is not None:
            if not isinstance(port, int):
                out.append(invalid(f"{pp}.endPort", end, "may not be specified when `port` is non-numeric"))
            elif not isinstance(end, int) or end < port or end > 65535:
                out.append(invalid(f"{pp}.endPort", end, "must be greater than or equal to `port`"))
    return out


def admit_networkpolicy(obj: dict, old: dict | None) -> Causes:
    spec = obj.setdefault("spec", {})
    out: Causes = []
    if "podSelector" not in spec:
        out.append(required("spec.podSelector"))
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])
    for i, t in enumerate(spec["policyTypes"]):
        if t not in ("Ingress", "Egress"):
            out.append(unsupported(f"spec.policyTypes[{i}]", t, ("Ingress", "Egress")))
    for i, rule in enumerate(spec.get("ingress") or []):
        for p in rule.get("ports") or []:
            p.setdefault("protocol", "TCP")
        out += _validate_np_ports(f"spec.ingress[{i}].ports", rule.get("ports"))
        out += _validate_peers(f"spec.ingress[{i}].from", rule.get("from"))
    for i, rule in enumerate(spec.get("egress") or []):
        for p in rule.get("ports") or []:
            p.setdefault("protocol", "TCP")
        out += _validate_np_ports(f"spec.egress[{i}].ports", rule.get("ports"))
        out += _validate_peers(f"spec.egress[{i}].to", rule.get("to"))
    return out


def admit_namespace(obj: dict, old: dict | None) -> Causes:
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")
    labels = obj["metadata"].setdefault("labels", {})
    labels["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    return []


def admit_node(obj: dict, old: dict | None) -> Causes:
    spec = obj.setdefault("spec", {})
    return validate_taints(spec.get("taints")) if isinstance(spec, dict) else []


def _policy_admitter(kind: str) -> Callable[[dict, dict | None], Causes]:
    """EndpointGroup / Contract: the agent's own parser is the validator (one definition of valid)."""
    def admit_(obj: dict, old: dict | None) -> Causes:
        from trellis.policy.model import validate
        problem = validate(kind, obj)
        if problem is None:
            return []
        field, _, msg = problem.partition(": ")
        return [(field, "FieldValueInvalid", f"Invalid value: {msg}")]
    return admit_


ADMITTERS: dict[str, Callable[[dict, dict | None], Causes]] = {
    "trellis.dev/endpointgroups": _policy_admitter("EndpointGroup"),
    "trellis.dev/contracts": _policy_admitter("Contract"),
    "/pods": admit_pod,
    "apps/deployments": admit_deployment,
    "networking.k8s.io/networkpolicies": admit_networkpolicy,
    "/namespaces": admit_namespace,
    "/nodes": admit_node,
}


SELECTOR_BUCKETS = ("apps/replicasets", "apps/daemonsets", "apps/statefulsets", "policy/poddisruptionbudgets")


def _valid_selector(path: str, sel: Any) -> Causes:
    """A metav1.LabelSelector the controllers can compile (operators, values), or the reason why not."""
    if sel is None:
        return []
    try:
        selectors.from_label_selector(sel)
    except (selectors.SelectorError, TypeError, AttributeError) as e:
        return [invalid(path, sel, str(e) or "not a valid label selector")]
    return []


def admit(bucket: str, obj: dict, old: dict | None, legacy: bool = False) -> Causes:
    md = obj["metadata"]
    kind = obj.get("kind", "")
    causes = validate_metadata(kind, md)
    if validate_name(kind, md.get("name", "")):
        return causes  # the kinds' own checks name the object: none without a valid name
    if bucket in SELECTOR_BUCKETS:
        causes += _valid_selector("spec.selector", (obj.get("spec") or {}).get("selector"))
    if bucket == "apps/deployments":
        return causes + admit_deployment(obj, old, legacy)
    fn = ADMITTERS.get(bucket)
    return causes + (fn(obj, old) if fn else [])
