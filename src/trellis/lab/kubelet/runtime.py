"""The lab's container runtime: pod sandboxes and container processes.

A pod sandbox is what the pause container is in Kubernetes: a process that
holds the pod's namespaces. Here it runs inside the pod's network namespace,
in its own UTS namespace (hostname = pod name) and mount namespace (the pod's
/etc/hosts and /etc/resolv.conf bind-mounted over the machine's), and sleeps.
Containers are started with ``nsenter`` into the sandbox's network and UTS namespaces,
so they share network and hostname, exactly as a pod's containers do; each then gets
its own mount and PID namespaces and its own root from ``containerinit`` (volumes, the
pod's /etc/hosts and resolv.conf, the machine read-only) and the privileges its
securityContext gives (``security``). ``enter_argv`` is how exec, probes and
``trellis exec`` get into a running container: its namespaces and the same privileges.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

from trellis.kernel.netns import NETNS_DIR
from trellis.lab.kubelet import containerinit
from trellis.lab.kubelet.attachpipe import StdinRelay, StdioSpec

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


def proc_starttime(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the
    pid, an identity that a recycled pid does not share."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


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
            json.dump({"pid": self.pid, "netns": self.netns, "hostname": self.hostname,
                       "starttime": proc_starttime(self.pid)}, f)

    def adopt(self) -> bool:
        """Take over the sandbox a previous kubelet started (after it was killed): only the same
        process (pid and start time), still the pause ``sleep``, still in the pod's netns."""
        try:
            with open(os.path.join(self.pod_dir, "sandbox.json")) as f:
                saved = json.load(f)
            pid = int(saved["pid"])
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "sleep":
                    return False
            if saved.get("starttime") is not None and proc_starttime(pid) != saved["starttime"]:
                return False
            if self.netns and os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat(self.netns_path).st_ino:
                return False
        except (OSError, ValueError, KeyError, TypeError):
            return False
        self.pid, self.proc = pid, None
        return True

    def run(self, argv: list[str], timeout: float, env: dict | None = None) -> int:
        """Run ``argv`` (already entering where it must run) quietly; -> its exit code."""
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
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


def enter_argv(entry: dict, argv: list[str], tty: bool = False) -> list[str]:
    """A command run inside a running container: its namespaces (``entry["pid"]``, the container's
    first process), its root and working directory (``-r -w``: the target's; a ``--wd=DIR`` would be
    opened before entering, in the machine's view), and its privileges (``entry["setpriv"]``).
    ``tty``: the command gets a terminal of the container's own /dev/pts (``script`` relays it to
    the caller's, window size changes included), as a runtime allocates it inside the container."""
    if tty:
        argv = ["script", "-q", "-e", "-c", shlex.join(argv), "/dev/null"]
    return ["nsenter", "-t", str(entry["pid"]), "-n", "-u", "-m", "-p", "-r", "-w", "--",
            *(entry.get("setpriv") or []), *argv]


def first_child(pid: int, timeout: float = 5.0) -> int | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
            if kids:
                return int(kids[0])
        except OSError:
            return None
        time.sleep(0.005)
    return None


class Container:
    """``init``: what containerinit needs besides argv, env and cwd: ``mounts``, ``hide``,
    ``privileged``, ``setpriv`` (``security.Privileges.setpriv_argv``) and ``scratch``.
    ``stdio``: the container keeps stdin open (a pipe or a terminal) for attach (``attachpipe``)."""

    def __init__(self, sandbox: Sandbox, name: str, argv: list[str], env: dict[str, str], cwd: str,
                 log_path: str, init: dict | None = None, stdio: StdioSpec | None = None) -> None:
        self.sandbox, self.name, self.argv, self.env, self.cwd, self.log_path = sandbox, name, argv, env, cwd, log_path
        self.init = init or {}
        self.stdio = stdio
        self.relay: StdinRelay | None = None
        self.proc: subprocess.Popen | None = None
        self.inner: int | None = None  # the container's first process (PID 1 of its PID namespace)

    def start(self) -> None:
        os.makedirs(self.cwd, exist_ok=True)
        spec_path = self.log_path[:-len(".log")] + ".init.json"
        spec = dict(self.init, argv=self.argv, env=self.env, workdir=self.cwd,
                    mounts=list(self.init.get("mounts") or []) + [{"source": self.cwd, "target": self.cwd}])
        spec.setdefault("scratch", self.log_path[:-len(".log")] + ".rootfs")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        ns = ["-n"] if self.sandbox.netns else []
        argv = ["nsenter", "-t", str(self.sandbox.pid), *ns, "-u", "--",
                "unshare", "--mount", *([] if self.init.get("hostPID") else ["--pid", "--fork", "--kill-child"]),
                "--propagation", "slave", "--",
                sys.executable, "-I", containerinit.__file__, spec_path]
        tty = bool(self.stdio and self.stdio.tty)
        if tty:  # a new session whose controlling terminal is the relay's, as a runtime gives a tty: true container
            argv = ["setsid", "-c", *argv]
        self.relay = StdinRelay(self.stdio, self.log_path) if self.stdio else None
        out = self.relay.child_stdout if self.relay and self.relay.child_stdout is not None else None
        logf = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(argv, env={"PATH": DEFAULT_PATH}, stdout=out if tty else logf,
                                         stderr=out if tty else subprocess.STDOUT,
                                         stdin=self.relay.child_stdin if self.relay else subprocess.DEVNULL,
                                         start_new_session=not tty)
        except OSError as e:
            logf.write(f"failed to start {self.argv}: {e}\n".encode())
            if self.relay:
                os.close(self.relay.child_stdin)
                self.relay.close()
            raise
        finally:
            logf.close()
        if self.relay:
            self.relay.started()
        # the container's first process: unshare's child in its own PID namespace, else unshare itself
        # (it execs containerinit, which execs the command)
        self.inner = self.proc.pid if self.init.get("hostPID") else first_child(self.proc.pid)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def entry(self) -> dict:
        """How to enter this container (``enter_argv``)."""
        return {"pid": self.inner, "setpriv": self.init.get("setpriv") or []}

    def enter(self, argv: list[str]) -> list[str]:
        return enter_argv(self.entry(), argv)

    def record(self) -> dict:
        return {"pid": self.pid, "starttime": proc_starttime(self.pid) if self.pid else None, "inner": self.inner}

    def poll(self) -> int | None:
        code = self.proc.poll() if self.proc else None
        if code is not None and self.relay:
            self.relay.close()
        return code

    def stop(self, grace: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.poll()
            return
        kill_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_group(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.poll()


class AdoptedContainer(Container):
    """A container process a previous kubelet started. It is not our child, so its exit
    status cannot be read: it is reported as 255 (Unknown) when it is gone."""

    def __init__(self, sandbox: Sandbox, name: str, env: dict[str, str], cwd: str, log_path: str,
                 pid: int, starttime: int | None, entry: dict | None = None) -> None:
        super().__init__(sandbox, name, [], env, cwd, log_path, {"setpriv": (entry or {}).get("setpriv")})
        self._pid, self._starttime = pid, starttime
        self.inner = (entry or {}).get("pid")

    @property
    def pid(self) -> int | None:
        return self._pid

    def alive(self) -> bool:
        return pid_alive(self._pid) and (self._starttime is None or proc_starttime(self._pid) == self._starttime)

    def poll(self) -> int | None:
        return None if self.alive() else 255

    def stop(self, grace: float) -> None:
        if not self.alive():
            return
        kill_group(self._pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.alive():
            kill_group(self._pid, signal.SIGKILL)
