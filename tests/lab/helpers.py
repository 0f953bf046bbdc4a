"""Helpers for end-to-end lab tests."""
from __future__ import annotations

import subprocess
import sys
import time

from trellis.kube.client import KubeClient

PY = sys.executable
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.40"


def wait_for(cond, timeout: float = 30, what: str = "condition", interval: float = 0.2):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])


def running_pods(client: KubeClient, ns: str, selector: str, n: int, timeout: float = 40) -> list[dict]:
    def check():
        pods, _ = client.list("v1", "pods", ns, label_selector=selector)
        ok = [p for p in pods if p["status"].get("phase") == "Running" and ready(p)
              and not p["metadata"].get("deletionTimestamp")]
        return ok if len(ok) == n and len(pods) == n else None
    return wait_for(check, timeout, f"{n} Ready pods matching {selector}")


def trellis(lab: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "trellis.cli.main", *args[:1], "--lab", lab, *args[1:]],
                          capture_output=True, text=True, timeout=timeout)


def pod_exec(lab: str, pod: str, *cmd: str, ns: str = "default", timeout: float = 30) -> subprocess.CompletedProcess:
    return trellis(lab, "exec", "-n", ns, pod, "--", *cmd, timeout=timeout)


def connect(lab: str, pod: str, target: str, protocol: str = "tcp", ns: str = "default") -> subprocess.CompletedProcess:
    return pod_exec(lab, pod, PY, "-m", "trellis.lab.images.agnhost", "connect", target, "--protocol", protocol,
                    "--timeout", "2", ns=ns)


def deployment(name: str, replicas: int, image: str = AGNHOST, ports=((80, "TCP"), (81, "UDP")), **spec) -> dict:
    container = {"name": "c", "image": image,
                 "ports": [{"containerPort": p, "protocol": proto} for p, proto in ports]}
    container.update(spec.pop("container", {}))
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [container], **spec}}}}


def agent_pod(client: KubeClient, node: str) -> dict:
    """The trellis-agent pod (deploy/trellis.yaml's DaemonSet) running on ``node``."""
    items, _ = client.list("v1", "pods", "trellis-system", label_selector="app.kubernetes.io/name=trellis-agent",
                           field_selector=f"spec.nodeName={node}")
    return next(p for p in items if not p["metadata"].get("deletionTimestamp"))


def agent_restarts(client: KubeClient, node: str) -> int:
    st = agent_pod(client, node)["status"].get("containerStatuses") or [{}]
    return int(st[0].get("restartCount") or 0)


def kill_agent(lab, client: KubeClient, node: str) -> int:
    """kill -9 the agent container's processes on ``node``; -> its restart count before. Its kubelet
    restarts it (with back-off), as a crashed DaemonSet pod is restarted on a cluster."""
    import json
    import os
    import signal
    pod = agent_pod(client, node)
    before = agent_restarts(client, node)
    with open(os.path.join(lab.dir, "nodes", node, "pods", pod["metadata"]["uid"], "agent.pid.json")) as f:
        rec = json.load(f)
    for pid in (rec.get("inner"), rec["pid"]):  # the agent, then its runtime wrapper
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return before


def agent_back(client: KubeClient, node: str, before: int, timeout: float = 30) -> None:
    """Wait until the agent on ``node`` was restarted and is Ready again."""
    wait_for(lambda: agent_restarts(client, node) > before and ready(agent_pod(client, node)), timeout,
             f"the kubelet to restart the agent on {node}")
