"""``pods/exec`` over WebSocket, the remotecommand protocol kubectl 1.32 speaks first.

Subprotocols ``v5.channel.k8s.io`` (preferred) and ``v4.channel.k8s.io``. Every
binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 error
(the final metav1.Status: Success, or NonZeroExitCode with the exit code as a
cause, which kubectl turns into its own exit code), 4 resize (JSON
``{"Width": w, "Height": h}``). v5 adds 255 CLOSE: ``[255, 0]`` means the client's
stdin ended, so ``kubectl exec -i ... < file`` lets ``cat`` see EOF; v4 has no
such signal. With ``tty=true`` the command gets a pseudo-terminal as its
controlling terminal (``setsid -c``), resized on every resize message, and
stderr is merged into it as on a real terminal.

SPDY (kubectl's fallback) is not served: kubectl 1.32 only falls back when the
WebSocket upgrade itself fails, and this server always accepts it.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import signal
import struct
import subprocess
import termios

from aiohttp import WSMsgType, web

from trellis.lab.apiserver import errors
from trellis.lab.apiserver.podtarget import PodTarget, container_name, locate

log = logging.getLogger("trellis.apiserver.exec")
PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
DRAIN_AFTER_EXIT = 2.0
SANDBOX_POLL = 1.0  # output a background child still writes after the command exited


def query_flag(q, name: str) -> bool:
    return q.get(name, "").lower() in ("1", "true")


def exit_status(code: int, argv: list[str]) -> dict:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command {argv}, "
                       f"exit code {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def upgrade_required(what: str) -> errors.ApiError:
    return errors.ApiError(400, "BadRequest", f"{what} needs a WebSocket upgrade with subprotocol "
                           f"{' or '.join(PROTOCOLS)}; SPDY is not served by the lab API server")


async def exec_pod(request: web.Request, pod: dict, state_dir: str) -> web.StreamResponse:
    q = request.query
    argv = q.getall("command", [])
    if not argv:
        raise errors.bad_request("you must specify at least one command for the container")
    container = container_name(pod, q.get("container"))
    tty, want_in = query_flag(q, "tty"), query_flag(q, "stdin")
    want_out, want_err = query_flag(q, "stdout"), query_flag(q, "stderr") and not tty
    if not (want_in or want_out or want_err):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    target = locate(pod, container, state_dir)
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0, autoping=True)
    if not ws.can_prepare(request).ok:
        raise upgrade_required("exec")
    await ws.prepare(request)
    session = ExecSession(ws, target, argv, tty, want_in, want_out, want_err)
    try:
        await session.run()
    except (ConnectionResetError, OSError) as e:
        log.info("exec %s in %s/%s ended: %s", argv, pod["metadata"]["namespace"], pod["metadata"]["name"], e)
    finally:
        session.kill()
    return ws


class ExecSession:
    def __init__(self, ws: web.WebSocketResponse, target: PodTarget, argv: list[str], tty: bool,
                 want_in: bool, want_out: bool, want_err: bool) -> None:
        self.ws, self.target, self.argv, self.tty = ws, target, argv, tty
        self.want_in, self.want_out, self.want_err = want_in, want_out, want_err
        self.v5 = ws.ws_protocol == PROTOCOLS[0]
        self.proc: subprocess.Popen | asyncio.subprocess.Process | None = None
        self.master: int | None = None

    async def send(self, channel: int, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(bytes([channel]) + data)

    # -- process --
    async def _spawn(self) -> list[asyncio.Task]:
        loop = asyncio.get_running_loop()
        argv = self.target.enter_argv(self.argv, self.tty)
        if self.tty:
            self.master, slave = os.openpty()
            try:
                # setsid -c: a new session whose controlling terminal is the pty, so job
                # control, ^C and SIGWINCH reach the command as in a real terminal.
                self.proc = subprocess.Popen(["setsid", "-c", *argv], stdin=slave, stdout=slave, stderr=slave,
                                             env=self.target.env, close_fds=True)
            finally:
                os.close(slave)
            os.set_blocking(self.master, False)
            return [loop.create_task(self._pump_pty())]
        pipe, null = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        self.proc = await asyncio.create_subprocess_exec(
            *argv, env=self.target.env, stdin=pipe if self.want_in else null,
            stdout=pipe if self.want_out else null, stderr=pipe if self.want_err else null,
            start_new_session=True)
        tasks = []
        if self.want_out:
            tasks.append(loop.create_task(self._pump_stream(self.proc.stdout, STDOUT)))
        if self.want_err:
            tasks.append(loop.create_task(self._pump_stream(self.proc.stderr, STDERR)))
        return tasks

    async def _pump_stream(self, reader: asyncio.StreamReader, channel: int) -> None:
        while data := await reader.read(65536):
            await self.send(channel, data)

    async def _pump_pty(self) -> None:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.master, readable.set)
        try:
            while True:
                await readable.wait()
                readable.clear()
                try:
                    data = os.read(self.master, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: every holder of the terminal's other side is gone
                    return
                if not data:
                    return
                await self.send(STDOUT, data)
        finally:
            loop.remove_reader(self.master)

    async def _wait(self) -> int:
        if isinstance(self.proc, subprocess.Popen):
            return await asyncio.get_running_loop().run_in_executor(None, self.proc.wait)
        return await self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # a session leader in both modes
            except (ProcessLookupError, PermissionError):
                pass
        if self.master is not None:
            os.close(self.master)
            self.master = None

    async def _sandbox_gone(self) -> None:
        """The pod was torn down: its exec'd processes go with it, as a runtime kills a container's cgroup."""
        while os.path.exists(f"/proc/{self.target.pid}/ns/net"):
            await asyncio.sleep(SANDBOX_POLL)
        self.kill()

    # -- client input --
    async def _write_stdin(self, data: bytes) -> None:
        if self.tty:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(self.master, view)
                    view = view[n:]
                except BlockingIOError:
                    await asyncio.sleep(0.01)  # the terminal's input queue is full; the command reads it
        elif self.proc.stdin is not None:
            self.proc.stdin.write(data)
            await self.proc.stdin.drain()

    def _close_stdin(self) -> None:
        if self.tty:
            os.write(self.master, b"\x04")  # end of file at the terminal (the line discipline's EOF)
        elif self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()

    def _resize(self, data: bytes) -> None:
        try:
            size = json.loads(data)
            cols, rows = int(size.get("Width", 0)), int(size.get("Height", 0))
        except (ValueError, AttributeError, TypeError):
            return
        if self.master is not None and cols > 0 and rows > 0:
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    async def _read_client(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            try:
                if channel == STDIN and self.want_in and data:
                    await self._write_stdin(data)
                elif channel == RESIZE:
                    self._resize(data)
                elif channel == CLOSE and data[:1] == bytes([STDIN]):
                    self._close_stdin()
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass  # the command stopped reading; its exit status still goes back

    async def run(self) -> None:
        pumps = await self._spawn()
        reader = asyncio.get_running_loop().create_task(self._read_client())
        waiter = asyncio.ensure_future(self._wait())
        watch = asyncio.get_running_loop().create_task(self._sandbox_gone())
        try:
            done, _ = await asyncio.wait({reader, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watch.cancel()
        if waiter not in done:  # the client went away first
            return
        code = waiter.result()
        if pumps:
            _, late = await asyncio.wait(pumps, timeout=DRAIN_AFTER_EXIT)
            for t in late:
                t.cancel()
        await self.send(ERROR, json.dumps(exit_status(code, self.argv)).encode())
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await self.ws.close()
