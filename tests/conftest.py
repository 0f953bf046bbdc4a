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


def module_lab(prefix: str, nodes: int = 3):
    """A module-scoped fixture: a lab of ``nodes`` nodes named ``<prefix>...``, removed afterwards, also
    on failure. ``TRELLIS_TEST_LAB`` reuses a running lab while developing."""
    @pytest.fixture(scope="module")
    def fixture():
        if not ROOT:
            pytest.skip("needs root")
        from trellis.lab import topology
        if os.environ.get("TRELLIS_TEST_LAB"):
            yield topology.load(os.environ["TRELLIS_TEST_LAB"])
            return
        name = unique(prefix)
        cfg = topology.up(name, nodes)
        try:
            yield cfg
        finally:
            topology.down(name, force=True)
    return fixture


lab = module_lab("tl", 3)


def kubectl_runner(kubeconfig: str, home: str):
    """The real kubectl against ``kubeconfig``, with its own discovery cache (``home``)."""
    import subprocess
    env = dict(os.environ, KUBECONFIG=kubeconfig, HOME=home)

    def run(*args, check=True, input=None, timeout=60):
        p = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, input=input,
                           timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr}")
        return p
    return run


def wait_until(what: str, check, timeout: float = 10.0, interval: float = 0.05):
    """For unit tests against an in-process API server: ``check()``'s first truthy value, or an
    AssertionError naming ``what`` after ``timeout`` seconds."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval)
