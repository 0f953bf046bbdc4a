"""Throwaway namespaces for kernel tests; everything is removed even when a test fails."""
from __future__ import annotations

import subprocess
import sys
import uuid

from trellis.kernel import netns as kns

PY = sys.executable


def sh(netns: str, *cmd: str, check: bool = True, timeout: float = 10) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", "netns", "exec", netns, *cmd], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} in {netns} failed: {p.stdout}{p.stderr}")
    return p


class Spaces:
    """Creates namespaces under a unique prefix; ``close`` kills their processes and deletes them."""

    def __init__(self) -> None:
        self.prefix = f"tk{uuid.uuid4().hex[:6]}"
        self.names: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def add(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        kns.add(name)
        self.names.append(name)
        return name

    def spawn(self, netns: str, *cmd: str) -> subprocess.Popen:
        p = subprocess.Popen(["ip", "netns", "exec", netns, *cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        self.procs.append(p)
        return p

    def close(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()
        for n in reversed(self.names):
            for pid in kns.pids(n):
                try:
                    import os
                    import signal
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            kns.delete(n)


def ping(netns: str, ip: str, source: str | None = None) -> bool:
    cmd = ["ping", "-c1", "-W1"] + (["-I", source] if source else []) + [ip]
    return sh(netns, *cmd, check=False).returncode == 0


def tcp_connect(netns: str, target: str) -> str:
    p = sh(netns, PY, "-m", "trellis.lab.images.agnhost", "connect", target, "--timeout", "2", check=False)
    return p.stdout.strip() if p.returncode == 0 else ""
