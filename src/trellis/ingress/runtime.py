"""The haproxy process: files, start, hitless reload, runtime API.

haproxy runs in master-worker mode (``-W``) with a master CLI socket (``-S``). A reload is
the master CLI's ``reload``: the master re-executes itself, the new worker takes the
listening sockets over from the old one through the stats socket with ``expose-fd
listeners`` (so no connection in an accept queue is lost and no port is ever unbound),
and the old worker finishes its established connections. Endpoint changes never reload:
they are ``set server`` commands on the admin socket.

Files are written next to each other in ``run_dir`` and swapped in by rename; a
configuration is checked with ``haproxy -c`` before the live one is replaced, so a
rejected config leaves the running one serving.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import replace

from trellis.ingress.compile import Cert, Plan
from trellis.ingress.haproxy import Paths, map_file, render, render_crt_list, render_maps

log = logging.getLogger("trellis.ingress")


class HAProxyError(RuntimeError):
    pass


def _atomic_write(path: str, data: bytes, mode: int = 0o600) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class HAProxy:
    def __init__(self, run_dir: str, http_port: int = 80, https_port: int = 443, bind_address: str = "",
                 binary: str = "haproxy", health_port: int = 0) -> None:
        os.makedirs(os.path.join(run_dir, "certs"), mode=0o700, exist_ok=True)
        self.run_dir, self.binary = run_dir, binary
        # NOTE: a unix socket path has at most 107 bytes (haproxy: 97); a deep run dir (a lab pod's)
        # gets its sockets in a short directory of its own, removed by stop()
        self.socket_dir = run_dir
        if len(run_dir) > 80:
            self.socket_dir = os.path.join(tempfile.gettempdir(),
                                           "trellis-ingress-" + hashlib.sha256(run_dir.encode()).hexdigest()[:12])
            os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        self.paths = Paths(run_dir, os.path.join(self.socket_dir, "admin.sock"), os.path.join(run_dir, "certs", "default.pem"),
                           os.path.join(run_dir, "crt-list"), http_port, https_port, bind_address, health_port)
        self.config = os.path.join(run_dir, "haproxy.cfg")
        self.master_socket = os.path.join(self.socket_dir, "master.sock")
        self.proc: subprocess.Popen | None = None
        self.reloads = 0
        self._live_certs: list[set[str]] = []

    def cert_path(self, cert: Cert) -> str:
        """Certificate files are named by their content: a new one never overwrites a live one."""
        digest = hashlib.sha256(cert.pem).hexdigest()[:12]
        return os.path.join(self.run_dir, "certs", f"{cert.name}-{digest}.pem")

    # -- files --
    def write(self, plan: Plan, check: bool = True) -> str:
        """Write certificates, crt-list, maps and config for ``plan``; raises HAProxyError (and
        keeps the previous files live) when haproxy rejects the result. ``check=False`` is for
        a plan of the live structure whose changes the runtime API has already applied: only
        the files are brought up to date, for the next reload."""
        default = next((c for c in plan.certs if c.name == "default"), None)
        if default is None:
            raise HAProxyError("the plan has no default certificate")
        for c in plan.certs:
            if not os.path.exists(self.cert_path(c)):
                _atomic_write(self.cert_path(c), c.pem)
        self.paths = replace(self.paths, default_cert=self.cert_path(default))
        maps = render_maps(plan)
        crt_list = render_crt_list(plan, self.cert_path).encode()
        if check:
            staged = replace(self.paths, crt_list=f"{self.paths.crt_list}.new", map_suffix=".new")
            _atomic_write(staged.crt_list, crt_list, 0o644)
            for name, entries in maps.items():
                _atomic_write(staged.map_path(name), map_file(entries).encode(), 0o644)
            staged_cfg = f"{self.config}.new"
            _atomic_write(staged_cfg, render(plan, staged).encode(), 0o644)
            result = subprocess.run([self.binary, "-c", "-f", staged_cfg], capture_output=True, text=True)
            os.unlink(staged_cfg)
            for name in maps:
                os.unlink(staged.map_path(name))
            if result.returncode != 0:
                alerts = [ln for ln in (result.stderr + result.stdout).splitlines() if "ALERT" in ln] or [result.stderr]
                raise HAProxyError(f"haproxy rejected the configuration: {' | '.join(alerts).strip()}")
            os.replace(staged.crt_list, self.paths.crt_list)
        else:
            _atomic_write(self.paths.crt_list, crt_list, 0o644)
        for name, entries in maps.items():
            _atomic_write(self.paths.map_path(name), map_file(entries).encode(), 0o644)
        text = render(plan, self.paths)
        _atomic_write(self.config, text.encode(), 0o644)
        self._live_certs.append({self.cert_path(c) for c in plan.certs})
        self._live_certs = self._live_certs[-2:]  # the running worker's and the next one's
        keep = set().union(*self._live_certs)
        for fn in os.listdir(os.path.join(self.run_dir, "certs")):
            full = os.path.join(self.run_dir, "certs", fn)
            if fn.endswith(".pem") and full not in keep:
                os.unlink(full)
        return text

    # -- process --
    def start(self, timeout: float = 10) -> None:
        os.makedirs(self.socket_dir, mode=0o700, exist_ok=True)
        for s in (self.master_socket, self.paths.admin_socket):
            if os.path.exists(s):
                os.unlink(s)
        self.proc = subprocess.Popen([self.binary, "-W", "-db", "-f", self.config, "-S", f"{self.master_socket},mode,600"],
                                     stdin=subprocess.DEVNULL)  # same process group: stops with the pod
        self._wait(lambda: self.worker_pid() is not None, timeout, "haproxy to start")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.socket_dir != self.run_dir:
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def reload(self, timeout: float = 10) -> None:
        """Hitless reload of the files last written; returns once the new worker serves."""
        old = self.worker_pid()
        out = self._send(self.master_socket, "reload")
        if "Success=0" in out:
            raise HAProxyError(f"haproxy reload failed: {out.strip()}")
        self._wait(lambda: (p := self.worker_pid()) is not None and p != old, timeout, "the reloaded haproxy worker")
        self.reloads += 1

    # -- runtime API --
    def command(self, cmd: str) -> str:
        return self._send(self.paths.admin_socket, cmd)

    def apply(self, cmds: list[str]) -> None:
        """Runtime-API commands, several per round trip; any answer but empty is an error."""
        for i in range(0, len(cmds), 50):
            batch = cmds[i:i + 50]
            out = self.command(";".join(batch))
            # `set server addr` reports what it changed; anything else it says is an error
            errors = [ln for ln in out.splitlines() if ln.strip() and "changed from" not in ln
                      and not ln.startswith("no need to change")]
            if errors:
                raise HAProxyError(f"haproxy runtime API: {' ; '.join(batch)} -> {out.strip()}")

    def worker_pid(self) -> int | None:
        try:
            for line in self.command("show info").splitlines():
                if line.startswith("Pid:"):
                    return int(line.split(":", 1)[1])
        except OSError:
            return None
        return None

    @staticmethod
    def _send(path: str, cmd: str, timeout: float = 5) -> str:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(cmd.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks).decode(errors="replace")

    def _wait(self, cond, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise HAProxyError(f"haproxy exited with {self.proc.returncode} while waiting for {what}")
            if cond():
                return
            time.sleep(0.02)
        raise HAProxyError(f"timed out waiting for {what}")
