"""What trellis cannot honour as written, object by object. Pure, no I/O.

The agents compile what they can and leave the rest out; this names what was left
out and why, so that it reaches the user where they look: the controller turns each
problem into an Event on the object (``kubectl describe``), and the CLI prints it as
a warning (``trellis explain``, ``probe``, ``group ls``). Reasons:

- ``NotEnforced``: a NetworkPolicy, EndpointGroup or Contract that does not compile.
- ``InvalidEndpointGroupAnnotation``: a malformed ``opflex.cisco.com/endpoint-group``.
- ``EndpointGroupNotFound``: an annotation or a Contract names a group that does not exist
  (the pods stay where they were: in no group, or the one a selector gives them).
- ``InvalidConfig``: an unknown ``isolationMode`` in ``kube-system/trellis-config``; the mode
  in force stays.
"""
from __future__ import annotations

from dataclasses import dataclass

from trellis.policy import model

GV = "trellis.dev/v1alpha1"


@dataclass(frozen=True)
class Problem:
    api_version: str
    kind: str
    namespace: str        # "" for cluster-scoped objects
    name: str
    reason: str
    message: str
    uid: str = ""

    @property
    def where(self) -> str:
        return f"{self.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


def _problem(obj: dict, api_version: str, kind: str, reason: str, message: str) -> Problem:
    md = obj["metadata"]
    return Problem(api_version, kind, md.get("namespace", ""), md["name"], reason, message, md.get("uid", ""))


def _annotation(obj: dict, api_version: str, kind: str, ns: str, groups: set[str]) -> Problem | None:
    ann = obj["metadata"].get("annotations") or {}
    if model.GROUP_ANNOTATION in ann:
        name, key = str(ann[model.GROUP_ANNOTATION]), model.GROUP_ANNOTATION
    elif model.ACI_GROUP_ANNOTATION in ann:
        key = model.ACI_GROUP_ANNOTATION
        try:
            name = model.aci_group(ann[key])
        except model.PolicyError as e:
            return _problem(obj, api_version, kind, "InvalidEndpointGroupAnnotation", f"{e}; not in any group by it")
    else:
        return None
    if f"{ns}/{name}" not in groups:
        return _problem(obj, api_version, kind, "EndpointGroupNotFound",
                        f"{key}: EndpointGroup {ns}/{name} does not exist; not in any group by it")
    return None


def problems(*, namespaces: list[dict], deployments: list[dict], pods: list[dict], groups: list[dict],
             contracts: list[dict], netpols: list[dict], config: dict | None) -> list[Problem]:
    out: list[Problem] = []
    group_keys = set()
    for g in groups:
        try:
            model.group(g)
        except model.PolicyError as e:
            out.append(_problem(g, GV, "EndpointGroup", "NotEnforced", str(e)))
            continue
        group_keys.add(f"{g['metadata']['namespace']}/{g['metadata']['name']}")
    for ns in namespaces:
        out.append(_annotation(ns, "v1", "Namespace", ns["metadata"]["name"], group_keys))
    for d in deployments:
        out.append(_annotation(d, "apps/v1", "Deployment", d["metadata"]["namespace"], group_keys))
    for p in pods:
        out.append(_annotation(p, "v1", "Pod", p["metadata"]["namespace"], group_keys))
    for c in contracts:
        try:
            parsed = model.contract(c)
        except model.PolicyError as e:
            out.append(_problem(c, GV, "Contract", "NotEnforced", str(e)))
            continue
        for role, gid in (("provider", parsed.provider), *(("consumers", g) for g in parsed.consumers)):
            kind, _, key = gid.partition(":")
            if kind == "epg" and key not in group_keys:
                out.append(_problem(c, GV, "Contract", "EndpointGroupNotFound",
                                    f"spec.{role}: EndpointGroup {key} does not exist; the contract is in place "
                                    "but selects no pods on that side"))
    for np in netpols:
        try:
            model.netpol(np)
        except model.PolicyError as e:
            out.append(_problem(np, "networking.k8s.io/v1", "NetworkPolicy", "NotEnforced", str(e)))
    if config is not None:
        mode, err = model.mode_in_force(config)
        if err:
            out.append(_problem(config, "v1", "ConfigMap", "InvalidConfig", f"{err}; isolation mode {mode} stays"))
    return [p for p in out if p is not None]
