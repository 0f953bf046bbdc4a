"""The lab's Job and CronJob controllers (batch/v1), after kube-controller-manager's.

Job: keeps ``min(parallelism, completions - succeeded)`` pods running from the
template; a Job is Complete once ``completions`` pods succeeded and Failed once
more than ``backoffLimit`` pods failed (reason BackoffLimitExceeded) or
``activeDeadlineSeconds`` passed (DeadlineExceeded) or a ``podFailurePolicy``
FailJob rule matched (PodFailurePolicy; Ignore rules keep a failure out of the
count, see ``jobfailure``); then its remaining pods
are deleted. A failed pod is replaced after a back-off of 10 s doubling to 6 min,
as upstream. ``suspend: true`` deletes active pods and adds a Suspended condition.
``podReplacementPolicy: Failed`` waits for a terminating pod to be gone before
replacing it; a Job whose ``managedBy`` names another controller is left alone.

CronJob: at each scheduled time (``croniter``; ``timeZone`` honoured) creates
Job ``<cronjob>-<minutes since epoch>`` from ``jobTemplate`` unless suspended,
missed by more than ``startingDeadlineSeconds``, or forbidden by
``concurrencyPolicy`` (Forbid skips while one is active, Replace deletes the
active ones); keeps ``status.active``/``lastScheduleTime``/``lastSuccessfulTime``
and deletes finished Jobs beyond the history limits.
"""
from __future__ import annotations

import copy
import datetime as dt
import logging
import zoneinfo

from croniter import croniter

from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer, Reconciler
from trellis.lab import jobfailure
from trellis.lab.workloads import owned_by, owner_ref, pod_ready

log = logging.getLogger("trellis.jobs")
BACKOFF_BASE, BACKOFF_MAX = 10.0, 360.0
MANAGER = "kubernetes.io/job-controller"
SCHEDULED_ANNOTATION = "batch.kubernetes.io/cronjob-scheduled-timestamp"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(ts: str | None) -> dt.datetime | None:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc) if ts else None


def _key(o: dict) -> str:
    return f"{o['metadata']['namespace']}/{o['metadata']['name']}"


def _owner_keys(o: dict, kind: str) -> list[str]:
    return [f"{o['metadata']['namespace']}/{r['name']}" for r in o["metadata"].get("ownerReferences") or []
            if r.get("kind") == kind]


def finished(job: dict) -> str | None:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return c["type"]
    return None


def _condition(typ: str, reason: str, message: str) -> dict:
    now = stamp(utcnow())
    return {"type": typ, "status": "True", "reason": reason, "message": message,
            "lastProbeTime": now, "lastTransitionTime": now}


class JobController(Reconciler):
    name = "job"

    def __init__(self, client: KubeClient, jobs: Informer, pods: Informer) -> None:
        super().__init__()
        self.client, self.jobs, self.pods = client, jobs, pods
        jobs.add_handler(lambda t, o, old: self.queue.add(_key(o)))
        pods.add_handler(lambda t, o, old: [self.queue.add(k) for k in _owner_keys(o, "Job")])

    def sync(self, key: str) -> bool | None:
        ns, name = key.split("/", 1)
        job = self.jobs.get(ns, name)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return True
        if job["spec"].get("managedBy", MANAGER) != MANAGER:  # another controller owns it, as upstream
            return True
        spec, status = job["spec"], copy.deepcopy(job.get("status") or {})
        uid = job["metadata"]["uid"]
        pods = [p for p in self.pods.items() if p["metadata"]["namespace"] == ns and owned_by(p, uid)]
        phase = lambda p: (p.get("status") or {}).get("phase")  # noqa: E731
        active = [p for p in pods if phase(p) not in ("Succeeded", "Failed") and not p["metadata"].get("deletionTimestamp")]
        succeeded = sum(1 for p in pods if phase(p) == "Succeeded")
        verdicts = [jobfailure.decide(spec.get("podFailurePolicy"), p) for p in pods if phase(p) == "Failed"]
        failed = sum(1 for v in verdicts if v is None or v.action != "Ignore")
        fail_job = next((v for v in verdicts if v is not None and v.action == "FailJob"), None)
        completions, parallelism = spec.get("completions") or 1, spec.get("parallelism", 1)
        now = utcnow()
        if not spec.get("suspend"):
            status.setdefault("startTime", stamp(now))
        conds = [c for c in status.get("conditions") or [] if c.get("type") != "Suspended"]
        done = finished(job)
        retry_in = None
        if done is None:
            deadline = spec.get("activeDeadlineSeconds")
            started = parse(status.get("startTime"))
            if fail_job is not None:
                done = "Failed"
                conds += [_condition("FailureTarget", "PodFailurePolicy", fail_job.message),
                          _condition("Failed", "PodFailurePolicy", fail_job.message)]
            elif succeeded >= completions:
                done = "Complete"
                conds += [_condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of "
                                     "succeeded pods"), _condition("Complete", "CompletionsReached",
                                                                   "Reached expected number of succeeded pods")]
            elif failed > spec.get("backoffLimit", 6):
                done = "Failed"
                conds += [_condition("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified "
                                     "backoff limit"), _condition("Failed", "BackoffLimitExceeded",
                                                                  "Job has reached the specified backoff limit")]
            elif deadline and started and (now - started).total_seconds() >= deadline:
                done = "Failed"
                conds += [_condition("FailureTarget", "DeadlineExceeded", "Job was active longer than "
                                     "specified deadline"), _condition("Failed", "DeadlineExceeded",
                                                                       "Job was active longer than specified deadline")]
            elif deadline and started:
                retry_in = max(0.5, deadline - (now - started).total_seconds())
        if done or spec.get("suspend"):
            for p in active:
                self._delete_pod(p)
            active = []
            if spec.get("suspend") and not done:
                conds.append(_condition("Suspended", "JobSuspended", "Job suspended"))
        else:
            want = min(parallelism, completions - succeeded) - len(active)
            if spec.get("podReplacementPolicy") == "Failed":  # replace a pod only once it is gone, not while terminating
                want -= sum(1 for p in pods if p["metadata"].get("deletionTimestamp") and phase(p) not in ("Succeeded", "Failed"))
            wait = self._backoff_left(pods, failed, now)
            if want > 0 and wait > 0:
                retry_in = min(retry_in or wait, wait)
            elif want > 0:
                for _ in range(want):
                    self._create_pod(job)
        status.update(active=len(active), succeeded=succeeded, failed=failed, conditions=conds or None,
                      ready=sum(1 for p in active if pod_ready(p)), terminating=sum(
                          1 for p in pods if p["metadata"].get("deletionTimestamp")))
        if done and not status.get("completionTime") and done == "Complete":
            status["completionTime"] = stamp(now)
        status = {k: v for k, v in status.items() if v is not None}
        if status != (job.get("status") or {}):
            self.client.patch("batch/v1", "jobs", name, {"status": status}, ns, sub="status")
        if retry_in:
            self.queue.add(key, retry_in)
        return True

    @staticmethod
    def _backoff_left(pods: list[dict], failed: int, now: dt.datetime) -> float:
        if not failed:
            return 0.0
        last = max((parse(((p.get("status") or {}).get("containerStatuses") or [{}])[0].get("state", {})
                          .get("terminated", {}).get("finishedAt")) or parse(p["metadata"].get("creationTimestamp"))
                    for p in pods if (p.get("status") or {}).get("phase") == "Failed"), default=None)
        delay = min(BACKOFF_BASE * 2 ** (failed - 1), BACKOFF_MAX)
        return max(0.0, delay - (now - last).total_seconds()) if last else 0.0

    def _create_pod(self, job: dict) -> None:
        tmpl, ns = job["spec"]["template"], job["metadata"]["namespace"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "generateName": f"{job['metadata']['name']}-", "namespace": ns,
            "labels": dict((tmpl.get("metadata") or {}).get("labels") or {}),
            "annotations": dict((tmpl.get("metadata") or {}).get("annotations") or {}),
            "ownerReferences": [owner_ref(job)]}, "spec": copy.deepcopy(tmpl.get("spec") or {})}
        self.client.create("v1", "pods", pod, ns)

    def _delete_pod(self, pod: dict) -> None:
        try:
            self.client.delete("v1", "pods", pod["metadata"]["name"], pod["metadata"]["namespace"])
        except ApiError as e:
            if e.code != 404:
                raise


class CronJobController(Reconciler):
    name = "cronjob"

    def __init__(self, client: KubeClient, cronjobs: Informer, jobs: Informer) -> None:
        super().__init__()
        self.client, self.cronjobs, self.jobs = client, cronjobs, jobs
        cronjobs.add_handler(lambda t, o, old: self.queue.add(_key(o)))
        jobs.add_handler(lambda t, o, old: [self.queue.add(k) for k in _owner_keys(o, "CronJob")])

    def sync(self, key: str) -> bool | None:
        ns, name = key.split("/", 1)
        cj = self.cronjobs.get(ns, name)
        if cj is None or cj["metadata"].get("deletionTimestamp"):
            return True
        spec, status = cj["spec"], copy.deepcopy(cj.get("status") or {})
        uid = cj["metadata"]["uid"]
        jobs = [j for j in self.jobs.items() if j["metadata"]["namespace"] == ns and owned_by(j, uid)]
        active = [j for j in jobs if not finished(j) and not j["metadata"].get("deletionTimestamp")]
        tz = zoneinfo.ZoneInfo(spec["timeZone"]) if spec.get("timeZone") else dt.timezone.utc
        now = utcnow()
        since = parse(status.get("lastScheduleTime")) or parse(cj["metadata"].get("creationTimestamp")) or now
        it = croniter(spec["schedule"], since.astimezone(tz))
        due = None
        while (t := it.get_next(dt.datetime)) <= now:
            due = t  # the most recent missed time; older ones are skipped, as upstream does after a gap
        if due is not None and not spec.get("suspend"):
            late = (now - due).total_seconds()
            deadline = spec.get("startingDeadlineSeconds")
            if deadline is not None and late > deadline:
                log.info("cronjob %s: missed %s by %.0fs (startingDeadlineSeconds %s)", key, due, late, deadline)
                status["lastScheduleTime"] = stamp(due)
            elif active and spec.get("concurrencyPolicy") == "Forbid":
                pass  # wait for the active one to finish; the time stays due
            else:
                if active and spec.get("concurrencyPolicy") == "Replace":
                    for j in active:
                        self.client.delete("batch/v1", "jobs", j["metadata"]["name"], ns,
                                           propagation="Background")
                    active = []
                job = self._create_job(cj, due)
                if job is not None:
                    active.append(job)
                status["lastScheduleTime"] = stamp(due)
        done = sorted((j for j in jobs if finished(j)), key=lambda j: j["metadata"].get("creationTimestamp", ""))
        for kind, limit in (("Complete", spec.get("successfulJobsHistoryLimit", 3)),
                            ("Failed", spec.get("failedJobsHistoryLimit", 1))):
            of_kind = [j for j in done if finished(j) == kind]
            for j in of_kind[:max(0, len(of_kind) - limit)]:
                self.client.delete("batch/v1", "jobs", j["metadata"]["name"], ns, propagation="Background")
        ok = [j for j in done if finished(j) == "Complete" and (j.get("status") or {}).get("completionTime")]
        if ok:
            status["lastSuccessfulTime"] = max(j["status"]["completionTime"] for j in ok)
        status["active"] = [{"kind": "Job", "apiVersion": "batch/v1", "namespace": ns, "name": j["metadata"]["name"],
                             "uid": j["metadata"]["uid"], "resourceVersion": j["metadata"].get("resourceVersion", "")}
                            for j in active] or None
        status = {k: v for k, v in status.items() if v is not None}
        if status != (cj.get("status") or {}):
            self.client.patch("batch/v1", "cronjobs", name, {"status": status}, ns, sub="status")
        nxt = croniter(spec["schedule"], now.astimezone(tz)).get_next(dt.datetime)
        self.queue.add(key, max(0.5, (nxt - utcnow()).total_seconds() + 0.2))
        return True

    def _create_job(self, cj: dict, when: dt.datetime) -> dict | None:
        jt, ns = cj["spec"]["jobTemplate"], cj["metadata"]["namespace"]
        name = f"{cj['metadata']['name']}-{int(when.timestamp()) // 60}"
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {
            "name": name, "namespace": ns, "labels": dict((jt.get("metadata") or {}).get("labels") or {}),
            "annotations": {**((jt.get("metadata") or {}).get("annotations") or {}),
                            SCHEDULED_ANNOTATION: stamp(when)},
            "ownerReferences": [owner_ref(cj)]}, "spec": copy.deepcopy(jt["spec"])}
        try:
            return self.client.create("batch/v1", "jobs", job, ns)
        except ApiError as e:
            if e.code == 409:
                return None  # made already (a restart between create and the status write)
            raise
