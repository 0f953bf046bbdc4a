"""The lab kubelet: one per node, running in the node's network namespace.

It registers its Node (addresses, capacity, a Ready condition kept fresh by
heartbeats), watches the pods bound to it, and runs one ``PodWorker`` per pod.
On start it adopts the pods a previous kubelet of this node left running (same
sandbox, address and container processes: a kubelet restart is invisible to pods)
and removes whatever it cannot adopt or whose pod is gone, so a kubelet killed
with -9 leaks nothing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import signal
import sys
import threading

from trellis.kernel import netns as kns
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.events import EventRecorder
from trellis.kube.informer import Informer
from trellis.lab.kubelet.cni import Attachment, CNIRuntime
from trellis.lab.kubelet.pods import PodWorker, now
from trellis.lab.kubelet.runtime import kill_group, pid_alive
from trellis.lab.kubelet.logstamps import LogStamper
from trellis.lab.kubelet.stats import StatsCollector

log = logging.getLogger("trellis.kubelet")
HEARTBEAT = 5.0
LEASE_NS = "kube-node-lease"


class Kubelet:
    def __init__(self, client: KubeClient, lab: str, node: str, node_ip: str, state_dir: str,
                 cni_conf_dir: str, cni_bin_dirs: list[str], max_grace: float = 10.0) -> None:
        self.client, self.lab, self.node, self.node_ip = client, lab, node, node_ip
        self.state_dir = state_dir
        self.node_dir = os.path.join(state_dir, "nodes", node)
        self.pods_dir = os.path.join(self.node_dir, "pods")
        self.node_root = os.path.join(self.node_dir, "root")  # the node's view of the host (volumes.node_path)
        os.makedirs(self.pods_dir, exist_ok=True)
        self.cni = CNIRuntime(cni_conf_dir, cni_bin_dirs, os.path.join(self.node_dir, "cni-cache"))
        self.max_grace = max_grace
        self.events = EventRecorder(client, "kubelet", node)
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        try:
            with open("/etc/resolv.conf") as f:
                self.node_resolv = f.read()
        except OSError:
            self.node_resolv = ""
        self.pods = Informer(client, "v1", "pods", field_selector=f"spec.nodeName={node}")
        self.svcs = Informer(client, "v1", "services")

    # -- helpers for pod workers --
    def services(self, ns: str) -> list[dict]:
        return [s for s in self.svcs.items() if s["metadata"]["namespace"] == ns]

    def getter(self, ns: str):
        def get(plural: str, name: str):
            return self.client.get_or_none("v1", plural, name, ns)
        return get

    def forget(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    # -- node --
    def node_object(self) -> dict:
        mem_kib = 0
        try:
            with open("/proc/meminfo") as f:
                mem_kib = int(f.readline().split()[1])
        except (OSError, ValueError, IndexError):
            pass
        cap = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": "110",
               "ephemeral-storage": "10Gi"}
        status = dict(self.node_status(), capacity=cap, allocatable=cap)
        return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node, "labels": {
            "kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64", "trellis.dev/lab": self.lab}},
            # as upstream's kubelet registers: not-ready until the node lifecycle controller has seen it Ready
            "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}, "status": status}

    def ready_condition(self) -> dict:
        why = self.cni.not_ready()
        if why != self.network_why:  # a transition: now
            self.network_why, self.ready_since = why, now()
        if why:
            return {"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                    "message": "container runtime network not ready: NetworkReady=false "
                               f"reason:NetworkPluginNotReady message:{why}",
                    "lastHeartbeatTime": now(), "lastTransitionTime": self.ready_since}
        return {"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status", "lastHeartbeatTime": now(),
                "lastTransitionTime": self.ready_since}

    def watch_network(self) -> None:
        """Post Ready at once when the network config appears (or goes), not at the next heartbeat."""
        while not self.stop.wait(0.1):  # a stat of the config directory
            if self.cni.not_ready() != self.network_why:
                try:
                    self.client.patch("v1", "nodes", self.node, {"status": {"conditions": [self.ready_condition()]}},
                                      sub="status")
                except ApiError as e:
                    log.debug("node status: %s", e)

    def node_status(self) -> dict:
        return {
            "addresses": [{"type": "InternalIP", "address": self.node_ip}, {"type": "Hostname", "address": self.node}],
            "conditions": [self.ready_condition()],
            "nodeInfo": {"kubeletVersion": "v1.32.0-trellis", "kubeProxyVersion": "", "osImage": "trellis lab",
                         "kernelVersion": platform.release(), "operatingSystem": "linux", "architecture": "amd64",
                         "containerRuntimeVersion": "trellis-lab://0.1", "machineID": "", "systemUUID": "",
                         "bootID": ""},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}

    def register(self) -> None:
        self.started = self.ready_since = now()
        self.network_why: str | None = None
        obj = self.node_object()
        existing = self.client.get_or_none("v1", "nodes", self.node)
        if existing is None:
            try:
                self.client.create("v1", "nodes", obj)
                return
            except ApiError as e:
                if e.code != 409:
                    raise
        self.client.patch("v1", "nodes", self.node, {"metadata": {"labels": obj["metadata"]["labels"]}})
        self.client.patch("v1", "nodes", self.node, {"status": obj["status"]}, sub="status")

    def renew_lease(self) -> None:
        """The node's heartbeat proper (what the node lifecycle controller reads): the Lease
        ``kube-node-lease/<node>``, renewed every HEARTBEAT seconds."""
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": 40, "renewTime": stamp}
        try:
            self.client.patch("coordination.k8s.io/v1", "leases", self.node, {"spec": spec}, LEASE_NS)
        except ApiError as e:
            if e.code != 404:
                raise
            self.client.create("coordination.k8s.io/v1", "leases", {
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.node, "namespace": LEASE_NS}, "spec": spec}, LEASE_NS)

    def heartbeat(self) -> None:
        while not self.stop.wait(HEARTBEAT):
            try:
                self.renew_lease()
            except ApiError as e:
                log.debug("lease renewal failed: %s", e)
            try:
                self.client.patch("v1", "nodes", self.node, {"status": {"conditions": self.node_status()["conditions"]}},
                                  sub="status")
            except ApiError as e:
                if e.code == 404:
                    try:
                        self.register()
                    except ApiError:
                        pass
                log.debug("heartbeat failed: %s", e)

    # -- pods --
    def cleanup_leftovers(self, keep: set[str] = frozenset()) -> None:
        """Remove sandboxes, networks and namespaces a previous kubelet of this node left
        (all but the pods in ``keep``, which are adopted)."""
        for uid in os.listdir(self.pods_dir):
            if uid in keep:
                continue
            d = os.path.join(self.pods_dir, uid)
            try:
                with open(os.path.join(d, "pod.json")) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                shutil.rmtree(d, ignore_errors=True)
                continue
            netns = meta.get("netns")
            if netns:
                for pid in kns.pids(netns):
                    kill_group(pid, signal.SIGKILL)
            try:
                with open(os.path.join(d, "sandbox.json")) as f:
                    pid = json.load(f)["pid"]
                if pid_alive(pid):
                    kill_group(pid, signal.SIGKILL)
            except (OSError, ValueError, KeyError):
                pass
            if netns:
                try:
                    self.cni.delete(Attachment(uid, os.path.join(kns.NETNS_DIR, netns)))
                except Exception as e:  # noqa: BLE001 - best effort: the namespace goes anyway
                    log.info("leftover pod %s: CNI DEL: %s", uid, e)
                kns.delete(netns)
            shutil.rmtree(d, ignore_errors=True)

    def on_pod(self, typ: str, pod: dict, old: dict | None) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            w = self.workers.get(uid)
            if typ == "DELETED":
                if w is not None:
                    w.delete()
                return
            if w is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and not pod["metadata"].get(
                        "deletionTimestamp"):
                    return  # finished before this kubelet started
                w = PodWorker(self, pod)
                if os.path.isdir(w.dir) and not w.adopt():
                    self.cleanup_leftovers(keep=set(os.listdir(self.pods_dir)) - {uid})  # start afresh
                self.workers[uid] = w
                w.update(pod)
                w.start()
            else:
                w.update(pod)

    def run(self) -> None:
        self.register()
        try:
            self.renew_lease()
        except ApiError as e:
            log.warning("node lease: %s", e)
        threading.Thread(target=self.heartbeat, daemon=True, name="heartbeat").start()
        threading.Thread(target=self.watch_network, daemon=True, name="network-ready").start()
        StatsCollector(self).start()  # for metrics.k8s.io (kubectl top)
        LogStamper(self).start()  # for logs --timestamps
        self.svcs.start()
        self.svcs.synced.wait(10)
        self.pods.add_handler(self.on_pod)
        self.pods.start()
        # the first list has made a worker (adopted or fresh) for every pod bound here: the rest goes
        while not self.pods.synced.wait(1.0):
            if self.stop.is_set():
                return
        with self.lock:
            self.cleanup_leftovers(keep=set(self.workers))
            adopted = sum(1 for w in self.workers.values() if w.adopted)
        log.info("started: %d pods adopted from a previous kubelet, %d started afresh, leftovers removed",
                 adopted, len(self.workers) - adopted)
        self.stop.wait()

    def shutdown(self) -> None:
        """Stop every pod (used by lab down: at most 1 s grace, the lab is going away); the API objects stay."""
        self.max_grace = min(self.max_grace, 1.0)
        self.stop.set()
        with self.lock:
            workers = list(self.workers.values())
        for w in workers:
            w.gone = True
            w.terminating.set()
            w.wake.set()
        for w in workers:
            w.join(timeout=15)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trellis-kubelet", description="The lab's kubelet for one node.")
    p.add_argument("--lab", required=True)
    p.add_argument("--node", required=True)
    p.add_argument("--node-ip", required=True)
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--server", help="API server URL as seen from the node (no credentials)")
    who.add_argument("--kubeconfig", help="kubeconfig with the server and the kubelet's credentials")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--cni-conf-dir", required=True)
    p.add_argument("--cni-bin-dir", default="/usr/lib/cni", help="colon-separated plugin directories")
    p.add_argument("--max-grace", type=float, default=10.0, help="cap on a pod's termination grace (s)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s kubelet/{args.node} %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    client = KubeClient.from_kubeconfig(args.kubeconfig) if args.kubeconfig else KubeClient(args.server)
    k = Kubelet(client, args.lab, args.node, args.node_ip, args.state_dir, args.cni_conf_dir,
                args.cni_bin_dir.split(":"), args.max_grace)
    signal.signal(signal.SIGTERM, lambda *_: k.shutdown())
    signal.signal(signal.SIGINT, lambda *_: k.shutdown())
    if not client.wait_healthy(60, k.stop):  # started beside the API server, as on a booting node
        log.error("the API server did not become ready in 60 s")
        return 1
    k.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
