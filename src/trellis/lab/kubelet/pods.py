"""One worker per pod: sandbox, network (CNI), containers, probes, status, teardown."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from trellis.kernel import netns as kns
from trellis.kube.client import ApiError
from trellis.kube.events import NORMAL, WARNING
from trellis.lab.images import catalog
from trellis.lab.kubelet import podspec, security
from trellis.lab.kubelet.attachpipe import StdioSpec
from trellis.lab.kubelet.cni import Attachment, CNIError, pod_ip
from trellis.lab.kubelet.probes import ProbeState, run_probe
from trellis.lab.kubelet.runtime import DEFAULT_PATH, Container, Sandbox
from trellis.lab.kubelet.volumes import PodVolumes, VolumeError

if TYPE_CHECKING:
    from trellis.lab.kubelet.kubelet import Kubelet

log = logging.getLogger("trellis.kubelet")
BACKOFF_BASE, BACKOFF_MAX, BACKOFF_RESET = 1.0, 60.0, 60.0


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_netns_name(lab: str, uid: str) -> str:
    return f"{lab}-p-{hashlib.sha1(uid.encode()).hexdigest()[:10]}"


@dataclass
class Run:
    spec: dict
    container: Container | None = None
    restarts: int = 0
    started_at: str = ""
    started_mono: float = 0.0
    last_state: dict = field(default_factory=dict)
    state: dict = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    backoff: float = 0.0
    backoff_until: float = 0.0
    done: bool = False  # terminated and will not restart
    readiness: ProbeState | None = None
    liveness: ProbeState | None = None
    startup: ProbeState | None = None


class PodWorker(threading.Thread):
    def __init__(self, kubelet: "Kubelet", pod: dict) -> None:
        super().__init__(daemon=True, name=f"pod-{pod['metadata']['name']}")
        self.k, self.pod = kubelet, pod
        md = pod["metadata"]
        self.uid, self.ns, self.name = md["uid"], md["namespace"], md["name"]
        self.dir = os.path.join(kubelet.pods_dir, self.uid)
        host_net = pod["spec"].get("hostNetwork", False)
        self.netns = None if host_net else pod_netns_name(kubelet.lab, self.uid)
        self.sandbox = Sandbox(self.dir, self.netns, pod["spec"].get("hostname") or self.name)
        self.ip: str | None = kubelet.node_ip if host_net else None
        self.runs: list[Run] = []
        self.wake = threading.Event()
        self.terminating = threading.Event()
        self.gone = False  # the API object is deleted
        self.last_status: dict | None = None
        self.phase = "Pending"
        self.message = ""
        self.attached = False
        self.adopted = False
        self.volumes = PodVolumes(pod, self.dir, kubelet.node_root, kubelet.getter(self.ns), self._token)
        self.init_status: dict[str, dict] = {}  # init container -> its status, while the pod initializes

    # -- called from the informer --
    def update(self, pod: dict) -> None:
        self.pod = pod
        if pod["metadata"].get("deletionTimestamp"):
            self.terminating.set()
        self.wake.set()

    def delete(self) -> None:
        self.gone = True
        self.terminating.set()
        self.wake.set()

    # -- lifecycle --
    def run(self) -> None:
        try:
            if not self.terminating.is_set() and not self.adopted:
                self._setup_with_retry()
            while not self.terminating.is_set():
                self._tick()
                self._report()
                self.wake.wait(0.25)
                self.wake.clear()
        except Exception:  # noqa: BLE001 - a pod worker logs and tears down; the kubelet lives on
            log.exception("pod %s/%s failed", self.ns, self.name)
        finally:
            self._teardown()

    def _setup_with_retry(self) -> None:
        delay = 0.5
        while not self.terminating.is_set():
            try:
                self.volumes.setup()  # before the sandbox, as the kubelet mounts volumes first
            except (VolumeError, ApiError, OSError) as e:
                self.message = str(e)
                self._event(WARNING, "FailedMount", str(e))
                self._report(waiting_reason="ContainerCreating")
                self.terminating.wait(delay)
                delay = min(delay * 2, 10)
                continue
            try:
                self._setup()
                return
            except (CNIError, kns.KernelError, OSError, RuntimeError) as e:
                self.message = str(e)
                log.warning("pod %s/%s: sandbox setup failed: %s", self.ns, self.name, e)
                self._event(WARNING, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}")
                self._cleanup_network()
                self._report(waiting_reason="ContainerCreating")
                self.terminating.wait(delay)
                delay = min(delay * 2, 10)

    def _save_meta(self) -> None:
        with open(os.path.join(self.dir, "pod.json"), "w") as f:
            json.dump({"uid": self.uid, "namespace": self.ns, "name": self.name, "netns": self.netns,
                       "ip": self.ip}, f)

    def _setup(self) -> None:
        os.makedirs(self.dir, exist_ok=True)
        self._save_meta()
        if self.netns:
            kns.add(self.netns)
            att = self._attachment()
            result = self.k.cni.add(att)
            self.attached = True
            self.ip = pod_ip(result)
            if not self.ip:
                raise CNIError("-", "ADD", 999, f"CNI result has no IPv4 address for eth0: {result}")
            self.k.cni.check(att)  # the attachment is what the result says, before anything runs in it
            self._save_meta()
        hosts = podspec.hosts_file(self.pod, self.ip or "")
        resolv = podspec.resolv_conf(self.pod, self.k.node_resolv)
        self.sandbox.start(hosts, resolv)
        self.pod.setdefault("status", {})["podIP"] = self.ip
        self.pod["status"]["hostIP"] = self.k.node_ip
        for init in self.pod["spec"].get("initContainers") or []:
            if not self._run_init(init):
                return
        self.runs = [Run(c) for c in self.pod["spec"]["containers"]]
        for r in self.runs:
            self._start(r)

    def _event(self, type: str, reason: str, message: str, container: str | None = None) -> None:
        self.k.events.event(self.pod, type, reason, message, kind="Pod", api_version="v1",
                            field_path=f"spec.containers{{{container}}}" if container else "")

    def adopt(self) -> bool:
        """Take over this pod as a previous kubelet left it running (``adopt.adopt``)."""
        from trellis.lab.kubelet.adopt import adopt
        return adopt(self)

    def _attachment(self) -> Attachment:
        return Attachment(container_id=self.uid, netns_path=os.path.join(kns.NETNS_DIR, self.netns),
                          ifname="eth0", args={"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": self.ns,
                                               "K8S_POD_NAME": self.name, "K8S_POD_INFRA_CONTAINER_ID": self.uid,
                                               "K8S_POD_UID": self.uid})

    def _token(self, source: dict) -> tuple[str, float]:
        """A token for the pod's ServiceAccount, bound to the pod (a projected serviceAccountToken)."""
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        spec = {"expirationSeconds": int(source.get("expirationSeconds") or 3607),
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": self.name, "uid": self.uid}}
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        from trellis.kube.client import resource_path
        out = self.k.client.request("POST", resource_path("v1", "serviceaccounts", self.ns, sa, "token"),
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec})
        exp = dt.datetime.strptime(out["status"]["expirationTimestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=dt.timezone.utc).timestamp()
        return out["status"]["token"], exp

    def _container(self, spec: dict) -> Container:
        img = catalog.resolve(spec.get("image", ""), self.k.state_dir)
        argv = catalog.argv(img, spec.get("command"), spec.get("args"))
        env = {"PATH": ":".join(img.path_dirs + [DEFAULT_PATH]), "HOSTNAME": self.sandbox.hostname, **img.env}
        env.update(podspec.container_env(self.pod, spec, self.k.services(self.ns), self.k.getter(self.ns),
                                         self.k.svcs.get("default", "kubernetes")))
        argv = [podspec.expand(a, env) for a in argv]
        cwd = spec.get("workingDir") or os.path.join(self.dir, "containers", spec["name"])
        priv = security.privileges(self.pod, spec)
        mounts = [{"source": os.path.join(self.dir, f), "target": f"/etc/{f}"} for f in ("hosts", "resolv.conf")]
        images = os.path.join(self.k.state_dir, "images")  # the images' "filesystems" (catalog)
        os.makedirs(images, exist_ok=True)
        mounts.append({"source": images, "target": images, "readOnly": True})
        mounts += [{"source": d, "target": d, "readOnly": True} for d in catalog.program_dirs()]
        mounts += self.volumes.mounts(spec)
        init = {"mounts": mounts, "privileged": priv.privileged, "setpriv": priv.setpriv_argv(),
                "hostPID": bool(self.pod["spec"].get("hostPID")),
                "hide": [os.path.dirname(self.k.state_dir)]}  # every lab's state: other pods' volumes
        if priv.uid is not None:
            os.makedirs(cwd, exist_ok=True)
            os.chown(cwd, priv.uid, priv.gid if priv.gid is not None else -1)
        return Container(self.sandbox, spec["name"], argv, env, cwd,
                         os.path.join(self.dir, f"{spec['name']}.log"), init, StdioSpec.of(spec))

    def _run_init(self, spec: dict) -> bool:
        name, restarts = spec["name"], 0
        while not self.terminating.is_set():
            c = self._container(spec)
            c.start()
            started = now()
            self.init_status[name] = {"state": {"running": {"startedAt": started}}, "restartCount": restarts}
            self._report()
            while c.poll() is None and not self.terminating.is_set():
                time.sleep(0.1)
            code = c.poll()
            done = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": started,
                    "finishedAt": now()} if code is not None else None
            if code == 0:
                self.init_status[name] = {"state": {"terminated": done}, "restartCount": restarts}
                return True
            c.stop(1)
            if done:
                self.init_status[name] = {"state": {"waiting": {"reason": "CrashLoopBackOff"}},
                                          "lastState": {"terminated": done}, "restartCount": restarts}
                self._event(WARNING, "BackOff", f"Back-off restarting failed container {name} in pod "
                            f"{self.name}_{self.ns}({self.uid})", name)
            if self.pod["spec"].get("restartPolicy") == "Never":
                self.phase = "Failed"
                return False
            restarts += 1
            self._report()
            self.terminating.wait(1)
        return False

    def _init_statuses(self) -> list[dict]:
        out = []
        for c in self.pod["spec"].get("initContainers") or []:
            st = self.init_status.get(c["name"])
            if st is None:  # not run yet; or run by a kubelet before this one (the pod has containers)
                st = {"state": {"terminated": {"exitCode": 0, "reason": "Completed"}} if self.runs else
                      {"waiting": {"reason": "PodInitializing"}}, "restartCount": 0}
            term = st["state"].get("terminated")
            out.append({"name": c["name"], "image": c.get("image", ""), "imageID": "",
                        "ready": bool(term and term.get("exitCode") == 0), "started": "running" in st["state"],
                        "lastState": st.get("lastState") or {}, **st})
        return out

    def _start(self, r: Run) -> None:
        if r.container is not None:  # a restart: the last run's log is what `logs --previous` shows
            log_path = r.container.log_path
            prev = log_path[:-len(".log")] + ".previous.log"
            for suffix in ("", ".idx"):  # the log and its timestamps (logstamps.py)
                if os.path.exists(log_path + suffix):
                    os.replace(log_path + suffix, prev + suffix)
        name = r.spec["name"]
        try:
            r.container = self._container(r.spec)
            self._event(NORMAL, "Pulled", f'Container image "{r.spec.get("image", "")}" already present on machine',
                        name)
            r.container.start()
        except security.SecurityError as e:
            r.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            r.backoff_until = time.monotonic() + max(r.backoff, BACKOFF_BASE) * 10
            self._event(WARNING, "Failed", f"Error: {e}", name)
            return
        except (OSError, VolumeError) as e:
            r.state = {"waiting": {"reason": "RunContainerError", "message": str(e)}}
            r.backoff_until = time.monotonic() + max(r.backoff, BACKOFF_BASE)
            self._event(WARNING, "Failed", f"Error: {e}", name)
            return
        self._event(NORMAL, "Created", f"Created container: {name}", name)
        self._event(NORMAL, "Started", f"Started container: {name}", name)
        with open(os.path.join(self.dir, f"{r.spec['name']}.env.json"), "w") as f:
            json.dump({"env": r.container.env, "cwd": r.container.cwd, "enter": r.container.entry()},
                      f)  # for exec (``runtime.enter_argv``)
        with open(os.path.join(self.dir, f"{r.spec['name']}.pid.json"), "w") as f:
            json.dump(r.container.record(), f)  # for a restarted kubelet to adopt it
        r.started_at, r.started_mono = now(), time.monotonic()
        r.state = {"running": {"startedAt": r.started_at}}
        for kind in ("readiness", "liveness", "startup"):
            spec = r.spec.get(f"{kind}Probe")
            setattr(r, kind, ProbeState.create(spec, initially=kind == "liveness") if spec else None)

    def _tick(self) -> None:
        try:
            self.volumes.keep_fresh()
        except (VolumeError, ApiError, OSError) as e:
            log.info("pod %s/%s: volume refresh: %s", self.ns, self.name, e)
        policy = self.pod["spec"].get("restartPolicy", "Always")
        now_m = time.monotonic()
        for r in self.runs:
            if r.container is not None and r.state.get("running"):
                code = r.container.poll()
                if code is None:
                    self._probe(r)
                    continue
                r.last_state = {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                                               "startedAt": r.started_at, "finishedAt": now()}}
                r.state = dict(r.last_state)
                if policy == "Never" or (policy == "OnFailure" and code == 0):
                    r.done = True
                    continue
                if now_m - r.started_mono > BACKOFF_RESET:
                    r.backoff = 0
                r.backoff = min(max(r.backoff * 2, BACKOFF_BASE), BACKOFF_MAX)
                r.backoff_until = now_m + r.backoff
                r.state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {r.backoff:.0f}s "
                                       f"restarting failed container={r.spec['name']} pod={self.name}"}}
                self._event(WARNING, "BackOff", f"Back-off restarting failed container {r.spec['name']} in pod "
                            f"{self.name}_{self.ns}({self.uid})", r.spec["name"])
            elif not r.done and now_m >= r.backoff_until and not r.state.get("running"):
                if r.container is not None:
                    r.restarts += 1
                self._start(r)
        # image change on the live pod: restart that container with the new image
        for r, spec in zip(self.runs, self.pod["spec"]["containers"]):
            if spec.get("image") != r.spec.get("image"):
                r.spec = spec
                if r.container is not None:
                    r.container.stop(2)
                r.restarts += 1
                self._start(r)

    def _probe(self, r: Run) -> None:
        exec_fn = lambda argv, t: self.sandbox.run(r.container.enter(argv), t, r.container.env)  # noqa: E731
        if r.startup is not None and not r.startup.ok:
            if r.startup.due():
                r.startup.record(*run_probe(r.startup.spec, r.spec, self.ip or "", exec_fn))
            return
        for kind in ("liveness", "readiness"):
            ps: ProbeState | None = getattr(r, kind)
            if ps is not None and ps.due():
                ps.record(*run_probe(ps.spec, r.spec, self.ip or "", exec_fn))
        if r.liveness is not None and not r.liveness.ok and r.liveness.failures:
            log.info("pod %s/%s: liveness probe of %s failed: %s; restarting", self.ns, self.name,
                     r.spec["name"], r.liveness.message)
            self._event(WARNING, "Unhealthy", f"Liveness probe failed: {r.liveness.message}", r.spec["name"])
            self._event(NORMAL, "Killing", f"Container {r.spec['name']} failed liveness probe, will be restarted",
                        r.spec["name"])
            r.container.stop(float(self.pod["spec"].get("terminationGracePeriodSeconds", 30)) / 10)

    # -- status --
    def _container_ready(self, r: Run) -> bool:
        if not r.state.get("running"):
            return False
        if r.startup is not None and not r.startup.ok:
            return False
        return r.readiness.ok if r.readiness is not None else True

    def _compute_phase(self) -> str:
        if not self.runs:
            return self.phase
        if all(r.done for r in self.runs):
            return "Succeeded" if all(r.last_state.get("terminated", {}).get("exitCode") == 0
                                      for r in self.runs) else "Failed"
        if any(r.state.get("running") or r.restarts or r.done for r in self.runs):
            return "Running"
        return "Pending"

    def _report(self, waiting_reason: str | None = None) -> None:
        if self.gone:
            return
        phase = self._compute_phase()
        statuses = []
        for r in self.runs:
            statuses.append({"name": r.spec["name"], "image": r.spec.get("image", ""), "imageID": "",
                             "containerID": f"trellis://{self.uid[:8]}-{r.spec['name']}",
                             "ready": self._container_ready(r), "restartCount": r.restarts,
                             "started": bool(r.state.get("running")), "state": r.state,
                             "lastState": r.last_state if r.restarts else {}})
        if not self.runs:
            waiting_reason = waiting_reason or ("PodInitializing" if self.init_status else "ContainerCreating")
            statuses = [{"name": c["name"], "image": c.get("image", ""), "ready": False, "restartCount": 0,
                         "started": False, "state": {"waiting": {"reason": waiting_reason,
                                                                 **({"message": self.message} if self.message else {})}}}
                        for c in self.pod["spec"]["containers"]]
        all_ready = bool(self.runs) and all(s["ready"] for s in statuses)
        t = "True" if all_ready else "False"
        inits = self._init_statuses()
        initialized = all(i["ready"] for i in inits)
        status = {
            "phase": phase, "hostIP": self.k.node_ip, "hostIPs": [{"ip": self.k.node_ip}],
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True" if self.sandbox.pid else "False"},
                {"type": "Initialized", "status": "True" if initialized else "False"},
                {"type": "Ready", "status": t},
                {"type": "ContainersReady", "status": t},
                {"type": "PodScheduled", "status": "True"}],
            "containerStatuses": statuses}
        if inits:
            status["initContainerStatuses"] = inits
        if self.ip:
            status["podIP"], status["podIPs"] = self.ip, [{"ip": self.ip}]
        if status == self.last_status:
            return
        old_conds = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}
        stamped = dict(status, startTime=(self.pod.get("status") or {}).get("startTime") or now())
        stamped["conditions"] = [dict(c, lastProbeTime=None, lastTransitionTime=(
            old_conds[c["type"]].get("lastTransitionTime") if old_conds.get(c["type"], {}).get("status") == c["status"]
            else now())) for c in status["conditions"]]
        try:
            self.k.client.patch("v1", "pods", self.name, {"status": stamped}, self.ns, sub="status")
            self.last_status = status
        except ApiError as e:
            if e.code == 404:
                self.delete()
            else:
                log.info("pod %s/%s: status update failed: %s", self.ns, self.name, e)

    # -- teardown --
    def _cleanup_network(self) -> None:
        if self.netns:
            try:
                self.k.cni.delete(self._attachment())
            except (CNIError, OSError) as e:
                log.warning("pod %s/%s: CNI DEL failed: %s", self.ns, self.name, e)
            self.attached = False
            try:
                kns.delete(self.netns)
            except kns.KernelError as e:
                log.warning("pod %s/%s: %s", self.ns, self.name, e)

    def _teardown(self) -> None:
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds")
        if grace is None:
            grace = self.pod["spec"].get("terminationGracePeriodSeconds", 30)
        grace = min(float(grace), self.k.max_grace)
        if not self.gone:
            for r in self.runs:
                if r.container is not None and r.state.get("running"):
                    self._event(NORMAL, "Killing", f"Stopping container {r.spec['name']}", r.spec["name"])
        stoppers = [threading.Thread(target=r.container.stop, args=(grace,)) for r in self.runs if r.container]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
        self.sandbox.stop()
        self._cleanup_network()
        shutil.rmtree(self.dir, ignore_errors=True)
        if not self.gone:
            try:
                self.k.client.delete("v1", "pods", self.name, self.ns, grace_period=0)
            except ApiError as e:
                log.info("pod %s/%s: final delete: %s", self.ns, self.name, e)
        self.k.forget(self.uid)
