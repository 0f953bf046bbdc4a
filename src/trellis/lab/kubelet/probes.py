"""Readiness, liveness and startup probes: tcpSocket, httpGet, exec.

As the kubelet does, network probes run from the node's namespace to the pod
IP; exec probes run inside the pod's namespaces. A probe is due every
``periodSeconds`` after ``initialDelaySeconds``; ``failureThreshold``
consecutive failures flip it to failed, ``successThreshold`` successes back.
"""
from __future__ import annotations

import http.client
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import Callable


def resolve_port(port, container: dict) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p["containerPort"]
    raise ValueError(f"named port {port!r} not found in container {container.get('name')}")


def run_probe(spec: dict, container: dict, pod_ip: str, exec_fn: Callable[[list[str], float], int]) -> tuple[bool, str]:
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "tcpSocket" in spec:
            port = resolve_port(spec["tcpSocket"]["port"], container)
            host = spec["tcpSocket"].get("host") or pod_ip
            with socket.create_connection((host, port), timeout=timeout):
                return True, ""
        if "httpGet" in spec:
            hg = spec["httpGet"]
            port = resolve_port(hg["port"], container)
            cls = http.client.HTTPSConnection if hg.get("scheme") == "HTTPS" else http.client.HTTPConnection
            conn = cls(hg.get("host") or pod_ip, port, timeout=timeout)
            headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
            conn.request("GET", hg.get("path", "/"), headers=headers)
            code = conn.getresponse().status
            conn.close()
            return 200 <= code < 400, f"HTTP probe failed with statuscode: {code}"
        if "exec" in spec:
            rc = exec_fn(spec["exec"]["command"], timeout)
            return rc == 0, f"command exited with {rc}"
        if "grpc" in spec:
            return False, "grpc probes are not supported in the lab"
    except (OSError, ValueError, http.client.HTTPException, subprocess.TimeoutExpired) as e:
        return False, str(e)
    return True, ""


@dataclass
class ProbeState:
    spec: dict
    started: float
    next_due: float = 0.0
    ok: bool = False
    successes: int = 0
    failures: int = 0
    message: str = ""

    @classmethod
    def create(cls, spec: dict, initially: bool) -> "ProbeState":
        now = time.monotonic()
        return cls(spec, now, now + float(spec.get("initialDelaySeconds", 0)), initially)

    def due(self) -> bool:
        return time.monotonic() >= self.next_due

    def record(self, success: bool, message: str) -> None:
        self.next_due = time.monotonic() + float(self.spec.get("periodSeconds", 10))
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= int(self.spec.get("successThreshold", 1)):
                self.ok = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            self.message = message
            if self.failures >= int(self.spec.get("failureThreshold", 3)):
                self.ok = False
