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
