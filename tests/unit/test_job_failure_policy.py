"""A Job's podFailurePolicy: which rule decides for a failed pod, and what the API server refuses."""
import pytest

from trellis.lab import jobfailure
from trellis.lab.apiserver import batch


def pod(codes=(), init_codes=(), conditions=()):
    term = lambda name, code: {"name": name, "state": {"terminated": {"exitCode": code}}}  # noqa: E731
    return {"metadata": {"namespace": "ns", "name": "p"}, "status": {
        "phase": "Failed",
        "containerStatuses": [term(n, c) for n, c in codes],
        "initContainerStatuses": [term(n, c) for n, c in init_codes],
        "conditions": [{"type": t, "status": s} for t, s in conditions]}}


POLICY = {"rules": [
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
    {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
    {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
    {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [1]}},
]}


@pytest.mark.parametrize("failed,action,index", [
    (pod([("main", 42)]), "FailJob", 1),
    (pod([("side", 42)]), "Count", 2),                        # containerName limits the FailJob rule
    (pod([("main", 42)], conditions=[("DisruptionTarget", "True")]), "Ignore", 0),  # first rule wins
    (pod([("main", 42)], conditions=[("DisruptionTarget", "False")]), "FailJob", 1),
    (pod([("main", 1)]), "Ignore", 3),
    (pod([("main", 2)]), None, None),                         # no rule: counted by the caller
    (pod([("main", 0)]), None, None),                         # exit code 0 never matches, even NotIn
    (pod(init_codes=[("main", 42)]), "FailJob", 1),           # init containers are looked at too
    (pod([("ok", 0), ("main", 42)]), "FailJob", 1),
])
def test_first_matching_rule_decides(failed, action, index):
    got = jobfailure.decide(POLICY, failed)
    if action is None:
        assert got is None
    else:
        assert got.action == action and got.message.endswith(f"matching {action} rule at index {index}")


def test_fail_job_message_names_container_pod_and_code():
    got = jobfailure.decide(POLICY, pod([("main", 42)]))
    assert got.message == "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"


def job(spec_extra, restart="Never"):
    spec = {"template": {"spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "busybox"}]}}}
    spec.update(spec_extra)
    return {"metadata": {"name": "j", "namespace": "default", "uid": "u1"}, "spec": spec}


@pytest.mark.parametrize("extra,restart,field", [
    ({"podFailurePolicy": POLICY}, "OnFailure", "spec.podFailurePolicy"),
    ({"podFailurePolicy": {"rules": [{"action": "Explode", "onPodConditions": [{"type": "X"}]}]}}, "Never",
     "spec.podFailurePolicy.rules[0].action"),
    ({"podFailurePolicy": {"rules": [{"action": "FailIndex", "onPodConditions": [{"type": "X"}]}]}}, "Never",
     "spec.podFailurePolicy.rules[0].action"),
    ({"podFailurePolicy": {"rules": [{"action": "Count"}]}}, "Never", "spec.podFailurePolicy.rules[0]"),
    ({"podFailurePolicy": {"rules": [{"action": "Count", "onExitCodes": {"operator": "In", "values": [0]}}]}},
     "Never", "spec.podFailurePolicy.rules[0].onExitCodes.values"),
    ({"podFailurePolicy": {"rules": [{"action": "Count", "onExitCodes": {"operator": "Is", "values": [3]}}]}},
     "Never", "spec.podFailurePolicy.rules[0].onExitCodes.operator"),
    ({"podFailurePolicy": {"rules": [{"action": "Count", "onExitCodes": {"operator": "In", "values": [3, 2]}}]}},
     "Never", "spec.podFailurePolicy.rules[0].onExitCodes.values"),
    ({"podFailurePolicy": POLICY, "podReplacementPolicy": "TerminatingOrFailed"}, "Never", "spec.podReplacementPolicy"),
    ({"successPolicy": {"rules": [{"succeededCount": 1}]}}, "Never", "spec.successPolicy"),
    ({"backoffLimitPerIndex": 1}, "Never", "spec.backoffLimitPerIndex"),
])
def test_invalid_policies_are_refused_naming_the_field(extra, restart, field):
    causes = batch.admit_job(job(extra, restart), None)
    assert field in [c[0] for c in causes], causes


def test_valid_policy_is_admitted_and_defaults_replacement_to_failed():
    obj = job({"podFailurePolicy": POLICY})
    assert batch.admit_job(obj, None) == []
    assert obj["spec"]["podReplacementPolicy"] == "Failed"
    plain = job({})
    assert batch.admit_job(plain, None) == [] and plain["spec"]["podReplacementPolicy"] == "TerminatingOrFailed"
