"""A Job's ``podFailurePolicy`` (batch/v1), after kube-controller-manager's.

Pure: given the policy and a failed pod, which rule decides and what it says.
Rules are tried in order and the first that matches decides:
- ``onExitCodes`` matches a terminated container (app containers first, then
  init containers; optionally only ``containerName``) whose exit code is not 0
  and is ``In``/``NotIn`` the values;
- ``onPodConditions`` matches a pod condition of that type and status
  (status defaults to True).
``FailJob`` fails the Job at once (reason PodFailurePolicy), ``Ignore`` does not
count the failure against ``backoffLimit``, ``Count`` counts it as usual. A pod
that matches no rule is counted. ``FailIndex`` needs Indexed Jobs, which the
lab's API server refuses, so it never reaches here.
"""
from __future__ import annotations

from dataclasses import dataclass

ACTIONS = ("FailJob", "Ignore", "Count", "FailIndex")
OPERATORS = ("In", "NotIn")


@dataclass(frozen=True)
class Match:
    action: str
    message: str


def _terminated(statuses: list[dict] | None, name: str | None):
    for cs in statuses or []:
        term = (cs.get("state") or {}).get("terminated")
        if term is None or (name is not None and cs.get("name") != name):
            continue
        code = term.get("exitCode", 0)
        if code != 0:
            yield cs.get("name", ""), code


def _exit_code_match(pod: dict, req: dict) -> tuple[str, int] | None:
    status = pod.get("status") or {}
    values = set(req.get("values") or [])
    want_in = req.get("operator") == "In"
    for statuses in (status.get("containerStatuses"), status.get("initContainerStatuses")):
        for name, code in _terminated(statuses, req.get("containerName")):
            if (code in values) == want_in:
                return name, code
    return None


def _condition_match(pod: dict, patterns: list[dict]) -> str | None:
    conds = (pod.get("status") or {}).get("conditions") or []
    for pat in patterns:
        want = pat.get("status") or "True"
        for c in conds:
            if c.get("type") == pat.get("type") and c.get("status") == want:
                return c["type"]
    return None


def decide(policy: dict | None, pod: dict) -> Match | None:
    """The rule of ``policy`` that decides for the failed ``pod``, or None when no rule matches."""
    who = f"{pod['metadata'].get('namespace', '')}/{pod['metadata'].get('name', '')}"
    for i, rule in enumerate((policy or {}).get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes"):
            hit = _exit_code_match(pod, rule["onExitCodes"])
            if hit:
                return Match(action, f"Container {hit[0]} for pod {who} failed with exit code {hit[1]} "
                                     f"matching {action} rule at index {i}")
        elif rule.get("onPodConditions"):
            typ = _condition_match(pod, rule["onPodConditions"])
            if typ:
                return Match(action, f"Pod {who} has condition {typ} matching {action} rule at index {i}")
    return None


def validate(policy: object, restart_policy: str | None, path: str) -> list[tuple[str, str, str]]:
    """Causes (field, reason, message) for a podFailurePolicy kube-apiserver would refuse."""
    if policy is None:
        return []
    if not isinstance(policy, dict) or not isinstance(policy.get("rules", []), list):
        return [(path, "FieldValueInvalid", "Invalid value: must be an object with a list of rules")]
    out = []
    if restart_policy != "Never":
        out.append((f"{path}", "FieldValueInvalid", f"Invalid value: \"{restart_policy}\": only \"Never\" "
                    "is supported when podFailurePolicy is specified"))
    for i, rule in enumerate(policy.get("rules") or []):
        at = f"{path}.rules[{i}]"
        if not isinstance(rule, dict):
            out.append((at, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        action = rule.get("action")
        if action not in ACTIONS:
            out.append((f"{at}.action", "FieldValueNotSupported",
                        f"Unsupported value: \"{action}\": supported values: " + ", ".join(f'"{a}"' for a in ACTIONS)))
        elif action == "FailIndex":
            out.append((f"{at}.action", "FieldValueInvalid",
                        "Invalid value: \"FailIndex\": valid only with backoffLimitPerIndex (Indexed Jobs)"))
        codes, conds = rule.get("onExitCodes"), rule.get("onPodConditions")
        if bool(codes) == bool(conds):
            out.append((at, "FieldValueInvalid", "Invalid value: specify one of onExitCodes and onPodConditions, "
                        "but not both"))
        if codes:
            out += _validate_codes(codes, f"{at}.onExitCodes")
        for j, c in enumerate(conds or []):
            if not isinstance(c, dict) or not c.get("type"):
                out.append((f"{at}.onPodConditions[{j}].type", "FieldValueRequired", "Required value"))
            elif c.get("status", "True") not in ("True", "False", "Unknown"):
                out.append((f"{at}.onPodConditions[{j}].status", "FieldValueNotSupported",
                            f"Unsupported value: \"{c.get('status')}\": supported values: \"True\", \"False\", \"Unknown\""))
    return out


def _validate_codes(codes: object, at: str) -> list[tuple[str, str, str]]:
    if not isinstance(codes, dict):
        return [(at, "FieldValueInvalid", "Invalid value: must be an object")]
    out = []
    op, values = codes.get("operator"), codes.get("values")
    if op not in OPERATORS:
        out.append((f"{at}.operator", "FieldValueNotSupported",
                    f"Unsupported value: \"{op}\": supported values: \"In\", \"NotIn\""))
    if not isinstance(values, list) or not values or len(values) > 255:
        return out + [(f"{at}.values", "FieldValueInvalid", "Invalid value: must hold 1 to 255 exit codes")]
    if any(not isinstance(v, int) or isinstance(v, bool) for v in values):
        return out + [(f"{at}.values", "FieldValueInvalid", "Invalid value: exit codes must be integers")]
    if len(set(values)) != len(values):
        out.append((f"{at}.values", "FieldValueDuplicate", "Duplicate value: exit codes must be unique"))
    if values != sorted(values):
        out.append((f"{at}.values", "FieldValueInvalid", "Invalid value: must be ordered"))
    if op == "In" and 0 in values:
        out.append((f"{at}.values", "FieldValueInvalid", "Invalid value: 0: must not be 0 for the In operator"))
    return out
