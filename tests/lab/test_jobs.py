"""batch/v1 through the real kubectl: Jobs run to completion or failure, CronJobs fire on schedule."""
import json

import pytest

from conftest import kubectl_runner, module_lab, needs_kubectl, needs_root
from helpers import wait_for
from trellis.kube.client import KubeClient

pytestmark = [needs_root, needs_kubectl, pytest.mark.lab]


jlab = module_lab("kvj", 2)


@pytest.fixture(scope="module")
def kc(jlab):
    c = jlab.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def kubectl(jlab, tmp_path_factory):
    return kubectl_runner(jlab.kubeconfig, str(tmp_path_factory.mktemp("home")))


def condition(kc, name, typ):
    job = kc.get("batch/v1", "jobs", name, "default")
    return next((c for c in (job.get("status") or {}).get("conditions") or []
                 if c["type"] == typ and c["status"] == "True"), None)


def test_job_runs_to_completion_and_keeps_its_logs(kubectl, kc):
    kubectl("create", "job", "hello", "--image=busybox", "--", "sh", "-c", "echo hello from $HOSTNAME")
    kubectl("wait", "--for=condition=complete", "job/hello", "--timeout=60s", timeout=70)
    job = kc.get("batch/v1", "jobs", "hello", "default")
    assert job["status"]["succeeded"] == 1 and job["status"]["completionTime"]
    uid = job["metadata"]["uid"]
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    pods, _ = kc.list("v1", "pods", "default", label_selector="job-name=hello")
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Succeeded"
    assert kubectl("logs", "job/hello").stdout.strip() == f"hello from {pods[0]['metadata']['name']}"
    row = kubectl("get", "job", "hello").stdout.splitlines()[1].split()
    assert row[:3] == ["hello", "Complete", "1/1"]


def test_parallel_job_runs_every_completion(kubectl, kc):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "par"}, "spec": {
        "completions": 4, "parallelism": 2, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox", "command": ["sh", "-c", "sleep 0.5"]}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(job))
    kubectl("wait", "--for=condition=complete", "job/par", "--timeout=90s", timeout=100)
    pods, _ = kc.list("v1", "pods", "default", label_selector="job-name=par")
    assert sorted(p["status"]["phase"] for p in pods) == ["Succeeded"] * 4


def test_failing_job_stops_at_the_backoff_limit(kubectl, kc):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "boom"}, "spec": {
        "backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox", "command": ["sh", "-c", "exit 4"]}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(job))
    cond = wait_for(lambda: condition(kc, "boom", "Failed"), 60, "job boom Failed")
    assert cond["reason"] == "BackoffLimitExceeded"
    pods, _ = kc.list("v1", "pods", "default", label_selector="job-name=boom")
    assert len(pods) == 1 and pods[0]["status"]["phase"] == "Failed"  # not replaced past the limit


def test_pod_failure_policy_fails_the_job_on_a_matching_exit_code(kubectl, kc):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "fatal"}, "spec": {
        "backoffLimit": 6, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"containerName": "c", "operator": "In", "values": [42]}}]},
        "template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox", "command": ["sh", "-c", "exit 42"]}]}}}}
    kubectl("apply", "-f", "-", input=json.dumps(job))
    cond = wait_for(lambda: condition(kc, "fatal", "Failed"), 60, "job fatal Failed")
    assert cond["reason"] == "PodFailurePolicy" and "exit code 42 matching FailJob rule at index 0" in cond["message"]
    pods, _ = kc.list("v1", "pods", "default", label_selector="job-name=fatal")
    assert len(pods) == 1  # failed at once, not retried up to the backoff limit


def test_job_with_restart_always_is_rejected(kubectl):
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "bad"}, "spec": {
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    p = kubectl("apply", "-f", "-", input=json.dumps(job), check=False)
    assert p.returncode != 0 and "spec.template.spec.restartPolicy" in p.stderr and "Always" in p.stderr


def test_cronjob_creates_jobs_on_schedule(kubectl, kc):
    kubectl("create", "cronjob", "tick", "--image=busybox", "--schedule=* * * * *", "--", "echo", "tick")
    p = kubectl("create", "cronjob", "bad", "--image=busybox", "--schedule=61 * * * *", check=False)
    assert p.returncode != 0 and "spec.schedule" in p.stderr
    kubectl("create", "job", "manual", "--from=cronjob/tick")  # a Job from the CronJob's template, now
    kubectl("wait", "--for=condition=complete", "job/manual", "--timeout=60s", timeout=70)

    def scheduled():
        cj = kc.get("batch/v1", "cronjobs", "tick", "default")
        jobs, _ = kc.list("batch/v1", "jobs", "default")
        mine = [j for j in jobs if j["metadata"]["name"] != "manual" and any(
            r.get("uid") == cj["metadata"]["uid"] for r in j["metadata"].get("ownerReferences") or [])]
        return (cj, mine) if mine and cj.get("status", {}).get("lastScheduleTime") else None
    cj, jobs = wait_for(scheduled, 75, "the CronJob's first scheduled Job")  # at the next minute
    name = jobs[0]["metadata"]["name"]
    assert name.startswith("tick-") and jobs[0]["metadata"]["annotations"][
        "batch.kubernetes.io/cronjob-scheduled-timestamp"] == cj["status"]["lastScheduleTime"]
    kubectl("wait", "--for=condition=complete", f"job/{name}", "--timeout=60s", timeout=70)
    assert kubectl("logs", f"job/{name}").stdout.strip() == "tick"
    wait_for(lambda: kc.get("batch/v1", "cronjobs", "tick", "default")["status"].get("lastSuccessfulTime"),
             30, "lastSuccessfulTime")
