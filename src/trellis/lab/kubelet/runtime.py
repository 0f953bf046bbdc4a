"""The lab's container runtime: pod sandboxes and container processes.

A pod sandbox is what the pause container is in Kubernetes: a process that
holds the pod's namespaces. Here it runs inside the pod's network namespace,
in its own UTS namespace (hostname = pod name) and mount namespace (the pod's
/etc/hosts and /etc/resolv.conf bind-mounted over the machine's), and sleeps.
Containers are started with ``nsenter`` into the sandbox's namespaces, so
they share network, hostname and those files, exactly as a pod's containers do.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from trellis.kernel.netns import NETNS_DIR

PAUSE_SCRIPT = ('hostname "$1" && mount --bind "$2" /etc/hosts && mount --bind "$3" /etc/resolv.conf '
                '&& exec sleep infinity')
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class RuntimeError_(RuntimeError):
    pass


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Sandbox:
    def __init__(self, pod_dir: str, netns: str | None, hostname: str) -> None:
        self.pod_dir, self.netns, self.hostname = pod_dir, netns, hostname
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None

    @property
    def netns_path(self) -> str | None:
        return os.path.join(NETNS_DIR, self.netns) if self.netns else None

    def start(self, hosts: str, resolv: str) -> None:
        os.makedirs(self.pod_dir, exist_ok=True)
        hp, rp = os.path.join(self.pod_dir, "hosts"), os.path.join(self.pod_dir, "resolv.conf")
        for path, text in ((hp, hosts), (rp, resolv)):
            with open(path, "w") as f:
                f.write(text)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        cmd = prefix + ["unshare", "--uts", "--mount", "--propagation", "private", "--",
                        "/bin/sh", "-c", PAUSE_SCRIPT, "pause", self.hostname, hp, rp]
        errf = open(os.path.join(self.pod_dir, "sandbox.err"), "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf,
                                     start_new_session=True)
        errf.close()
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # ready once the script has exec'd sleep
            if self.proc.poll() is not None:
                with open(os.path.join(self.pod_dir, "sandbox.err")) as f:
                    raise RuntimeError_(f"pod sandbox for {self.hostname} exited: {f.read().strip()}")
            try:
                with open(f"/proc/{self.pid}/comm") as f:
                    if f.read().strip() == "sleep":
                        break
            except OSError:
                pass
            time.sleep(0.01)
        else:
            raise RuntimeError_(f"pod sandbox for {self.hostname} did not start within 10s")
        self.save()

    def save(self) -> None:
        with open(os.path.join(self.pod_dir, "sandbox.json"), "w") as f:
            json.dump({"pid": self.pid, "netns": self.netns, "hostname": self.hostname}, f)

    def enter_argv(self, argv: list[str], cwd: str | None = None) -> list[str]:
        ns = ["-n"] if self.netns else []
        wd = [f"--wd={cwd}"] if cwd else []
        return ["nsenter", "-t", str(self.pid), *ns, "-u", "-m", *wd, "--", *argv]

    def exec(self, argv: list[str], timeout: float, env: dict | None = None) -> int:
        p = subprocess.run(self.enter_argv(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=timeout,
                           env=env or {"PATH": DEFAULT_PATH})
        return p.returncode

    def stop(self) -> None:
        if self.pid and pid_alive(self.pid):
            kill_group(self.pid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


class Container:
    def __init__(self, sandbox: Sandbox, name: str, argv: list[str], env: dict[str, str], cwd: str,
                 log_path: str) -> None:
        self.sandbox, self.name, self.argv, self.env, self.cwd, self.log_path = sandbox, name, argv, env, cwd, log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        os.makedirs(self.cwd, exist_ok=True)
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.sandbox.enter_argv(self.argv, self.cwd), env=self.env, stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        except OSError as e:
            logf.write(f"failed to start {self.argv}: {e}\n".encode())
            raise
        finally:
            logf.close()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def poll(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def stop(self, grace: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        kill_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
