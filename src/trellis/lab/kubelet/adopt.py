"""A restarted lab kubelet adopting the pods a previous one (killed, say with -9) left running."""
from __future__ import annotations

import json
import os
import time

from trellis.lab.kubelet.cni import CNIError
from trellis.lab.kubelet.pods import PodWorker, Run, log, now  # pods imports this module only when adopting
from trellis.lab.kubelet.probes import ProbeState
from trellis.lab.kubelet.runtime import AdoptedContainer


def adopt(self: PodWorker) -> bool:
    """A restarted kubelet takes over this pod as a previous one left it running: the same
    sandbox, network (CNI CHECK passes) and address, the container processes that still
    run, restart counts from the pod's status. False: nothing is taken over (the caller
    cleans up and the pod starts afresh)."""
    try:
        with open(os.path.join(self.dir, "pod.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return False
    if meta.get("uid") != self.uid or meta.get("netns") != self.netns or not self.sandbox.adopt():
        return False
    if self.netns:
        if not meta.get("ip"):
            return False
        try:
            self.k.cni.check(self._attachment())
        except (CNIError, OSError, ValueError) as e:
            log.info("pod %s/%s: not adopted, its network does not check: %s", self.ns, self.name, e)
            return False
        self.ip, self.attached = meta["ip"], True
    statuses = {c["name"]: c for c in (self.pod.get("status") or {}).get("containerStatuses") or []}
    self.runs = []
    for spec in self.pod["spec"]["containers"]:
        r, st = Run(spec), statuses.get(spec["name"], {})
        r.restarts = int(st.get("restartCount") or 0)
        r.last_state = st.get("lastState") or {}
        try:
            with open(os.path.join(self.dir, f"{spec['name']}.pid.json")) as f:
                rec = json.load(f)
            with open(os.path.join(self.dir, f"{spec['name']}.env.json")) as f:
                saved = json.load(f)
            c = AdoptedContainer(self.sandbox, spec["name"], saved["env"], saved["cwd"],
                                 os.path.join(self.dir, f"{spec['name']}.log"), int(rec["pid"]), rec.get("starttime"),
                                 saved.get("enter"))
        except (OSError, ValueError, KeyError, TypeError):
            c = None
        if c is not None and c.alive():
            r.container = c
            r.started_at = (st.get("state") or {}).get("running", {}).get("startedAt") or now()
            r.started_mono = time.monotonic()
            r.state = {"running": {"startedAt": r.started_at}}
            for kind in ("readiness", "liveness", "startup"):
                probe = spec.get(f"{kind}Probe")
                setattr(r, kind, ProbeState.create(probe, initially=kind == "liveness") if probe else None)
        elif c is not None:
            r.container = c  # it died while no kubelet watched: the next tick restarts it (+1)
            r.state = {"running": {"startedAt": now()}}
        self.runs.append(r)
    self.pod.setdefault("status", {})["podIP"] = self.ip
    self.adopted = True
    log.info("pod %s/%s: adopted (sandbox %s, %s, %d containers running)", self.ns, self.name, self.sandbox.pid,
             self.ip, sum(1 for r in self.runs if isinstance(r.container, AdoptedContainer) and r.container.alive()))
    return True

