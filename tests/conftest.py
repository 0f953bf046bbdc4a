"""Shared fixtures: a standalone API server on loopback, and throwaway labs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from trellis.kube.client import KubeClient

ROOT = os.getuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="needs root to create network namespaces")
KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


class ApiServer:
    """The lab API server as its own process on 127.0.0.1 (a free port)."""

    def __init__(self, state_dir: str, *extra: str) -> None:
        self.state_dir, self.extra = state_dir, list(extra)
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> "ApiServer":
        ready = os.path.join(self.state_dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        port = self.url.rsplit(":", 1)[1] if self.url else "0"
        self.proc = subprocess.Popen([sys.executable, "-m", "trellis.lab.apiserver.server", "--state-dir",
                                      self.state_dir, "--listen", f"127.0.0.1:{port}", "--ready-file", ready,
                                      *self.extra],
                                     stdout=open(os.path.join(self.state_dir, "api.log"), "ab"),
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while not os.path.exists(ready) or not open(ready).read():
            assert self.proc.poll() is None, open(os.path.join(self.state_dir, "api.log")).read()
            assert time.monotonic() < deadline, "API server did not start"
            time.sleep(0.05)
        self.url = "http://" + open(ready).read().split()[0]
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(10)

    def kubeconfig(self) -> str:
        path = os.path.join(self.state_dir, "kubeconfig")
        with open(path, "w") as f:
            f.write(f"apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {self.url}\n"
                    "contexts:\n- name: t\n  context:\n    cluster: t\n    user: t\n    namespace: default\n"
                    "current-context: t\nusers:\n- name: t\n  user: {}\n")
        return path


@pytest.fixture
def apiserver():
    d = tempfile.mkdtemp(prefix="trellis-api-")
    srv = ApiServer(d).start()
    yield srv
    srv.stop()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def client(apiserver):
    c = KubeClient(apiserver.url)
    yield c
    c.close()


@pytest.fixture(scope="module")
def lab():
    """A 3-node lab for a test module; removed afterwards, also on failure."""
    if not ROOT:
        pytest.skip("needs root")
    from trellis.lab import topology
    name = unique("tl")
    cfg = topology.up(name, 3)
    try:
        yield cfg
    finally:
        topology.down(name, force=True)
