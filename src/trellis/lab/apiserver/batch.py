"""batch/v1 Job and CronJob in the API server: defaults, validation and `kubectl get` columns.

Defaults are kube-apiserver's: a Job gets ``completions``/``parallelism`` 1,
``backoffLimit`` 6, ``completionMode: NonIndexed``, ``suspend: false``, and (unless
``manualSelector``) a selector on ``batch.kubernetes.io/controller-uid`` with the
matching labels put on its pod template. A CronJob gets ``concurrencyPolicy:
Allow``, history limits 3 and 1. Importing this module registers it with
``admission`` and ``tables``.
"""
from __future__ import annotations

import copy
import zoneinfo

from croniter import croniter

from trellis.lab import jobfailure
from trellis.lab.apiserver import admission, tables
from trellis.lab.apiserver.admission import Causes, invalid, required, unsupported

UID_LABEL, NAME_LABEL = "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name"
RESTART_POLICIES = ("OnFailure", "Never")
REPLACEMENT_POLICIES = ("TerminatingOrFailed", "Failed")
INDEXED_ONLY = ("successPolicy", "backoffLimitPerIndex", "maxFailedIndexes")
CONCURRENCY = ("Allow", "Forbid", "Replace")


def default_job_spec(spec: dict, name: str, uid: str) -> None:
    spec.setdefault("parallelism", 1)
    if spec.get("completions") is None and "completions" not in spec:
        spec["completions"] = 1
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    tmpl = spec.setdefault("template", {})
    labels = tmpl.setdefault("metadata", {}).setdefault("labels", {})
    if not spec.get("manualSelector") and uid:
        labels.update({UID_LABEL: uid, NAME_LABEL: name, "controller-uid": uid, "job-name": name})
        spec.setdefault("selector", {"matchLabels": {UID_LABEL: uid}})
    admission.default_pod_spec(tmpl.setdefault("spec", {}))


def validate_job_spec(spec: dict, path: str) -> Causes:
    out: Causes = []
    for f in ("parallelism", "completions", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished"):
        v = spec.get(f)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (1 if f == "activeDeadlineSeconds" else 0)):
            out.append(invalid(f"{path}.{f}", v, "must be greater than or equal to "
                               f"{1 if f == 'activeDeadlineSeconds' else 0}"))
    if spec.get("completionMode", "NonIndexed") not in ("NonIndexed", "Indexed"):
        out.append(unsupported(f"{path}.completionMode", spec.get("completionMode"), ("NonIndexed", "Indexed")))
    if spec.get("completionMode") == "Indexed":
        out.append((f"{path}.completionMode", "FieldValueNotSupported",
                    "Unsupported value: \"Indexed\": the lab's Job controller runs NonIndexed Jobs only"))
    for f in INDEXED_ONLY:  # upstream allows these only with completionMode Indexed, which the lab refuses
        if spec.get(f) is not None:
            out.append((f"{path}.{f}", "FieldValueInvalid", "Invalid value: requires completionMode Indexed"))
    replacement = spec.get("podReplacementPolicy", "TerminatingOrFailed")
    if replacement not in REPLACEMENT_POLICIES:
        out.append(unsupported(f"{path}.podReplacementPolicy", replacement, REPLACEMENT_POLICIES))
    elif spec.get("podFailurePolicy") and replacement != "Failed":
        out.append(unsupported(f"{path}.podReplacementPolicy", replacement, ("Failed",)))
    tmpl = spec.get("template")
    if not isinstance(tmpl, dict) or not tmpl.get("spec"):
        return out + [required(f"{path}.template.spec")]
    policy = tmpl["spec"].get("restartPolicy")
    if policy not in RESTART_POLICIES:
        out.append(unsupported(f"{path}.template.spec.restartPolicy", policy, RESTART_POLICIES))
    out += jobfailure.validate(spec.get("podFailurePolicy"), policy, f"{path}.podFailurePolicy")
    out += admission.validate_pod_spec(tmpl["spec"], f"{path}.template.spec")
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = (tmpl.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in sel.items()):
        out.append(invalid(f"{path}.template.metadata.labels", labels, "`selector` does not match template `labels`"))
    return out


def admit_job(obj: dict, old: dict | None) -> Causes:
    md, spec = obj["metadata"], obj.setdefault("spec", {})
    if old is not None:
        # selector and template are immutable; keep what create defaulted if the update left them out
        spec.setdefault("selector", copy.deepcopy(old["spec"].get("selector")))
        default_job_spec(spec, md["name"], old["metadata"].get("uid", ""))
        for f in ("selector", "template", "completionMode"):
            if spec.get(f) != old["spec"].get(f):
                return [invalid(f"spec.{f}", "...", "field is immutable")]
    else:
        default_job_spec(spec, md["name"], md.get("uid", ""))
    return validate_job_spec(spec, "spec")


def admit_cronjob(obj: dict, old: dict | None) -> Causes:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    out: Causes = []
    sched = spec.get("schedule")
    if not sched:
        out.append(required("spec.schedule"))
    elif not isinstance(sched, str) or not croniter.is_valid(sched) or "TZ" in sched:
        out.append(invalid("spec.schedule", sched, "unparseable cron expression (5 fields: minute hour "
                           "day-of-month month day-of-week)"))
    tz = spec.get("timeZone")
    if tz is not None:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
            out.append(invalid("spec.timeZone", tz, "unknown time zone"))
    if spec.get("concurrencyPolicy") not in CONCURRENCY:
        out.append(unsupported("spec.concurrencyPolicy", spec.get("concurrencyPolicy"), CONCURRENCY))
    jt = spec.get("jobTemplate")
    if not isinstance(jt, dict) or not isinstance(jt.get("spec"), dict):
        return out + [required("spec.jobTemplate.spec")]
    tmpl = jt["spec"].get("template") or {}
    if tmpl.get("spec"):
        admission.default_pod_spec(tmpl["spec"])
    return out + validate_job_spec(jt["spec"], "spec.jobTemplate.spec")


# ---- kubectl get columns ----------------------------------------------------

def job_status_text(job: dict) -> str:
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in ("Complete", "Failed", "Suspended"):
            return c["type"]
    return "Running"


def _duration(job: dict) -> str:
    st = job.get("status") or {}
    start = tables.parse_time(st.get("startTime"))
    if start is None:
        return ""
    end = tables.parse_time(st.get("completionTime"))
    if end is None:
        return tables.human_age(st.get("startTime"))
    return tables.human_age(st.get("startTime"), end)


def _job_row(j: dict) -> list:
    st = j.get("status") or {}
    return [j["metadata"]["name"], job_status_text(j), f"{st.get('succeeded', 0)}/{j['spec'].get('completions', 1)}",
            _duration(j), tables.human_age(j["metadata"].get("creationTimestamp"))]


def _cronjob_row(c: dict) -> list:
    st, spec = c.get("status") or {}, c["spec"]
    last = st.get("lastScheduleTime")
    return [c["metadata"]["name"], spec.get("schedule", ""), spec.get("timeZone") or "<none>",
            str(spec.get("suspend", False)), len(st.get("active") or []),
            tables.human_age(last) if last else "<none>", tables.human_age(c["metadata"].get("creationTimestamp"))]


admission.ADMITTERS["batch/jobs"] = admit_job
admission.ADMITTERS["batch/cronjobs"] = admit_cronjob
tables.PRINTERS["batch/jobs"] = ([("Name", "string", 0), ("Status", "string", 0), ("Completions", "string", 0),
                                  ("Duration", "string", 0), ("Age", "string", 0)], _job_row)
tables.PRINTERS["batch/cronjobs"] = ([("Name", "string", 0), ("Schedule", "string", 0), ("Timezone", "string", 0),
                                      ("Suspend", "boolean", 0), ("Active", "integer", 0),
                                      ("Last Schedule", "string", 0), ("Age", "string", 0)], _cronjob_row)
