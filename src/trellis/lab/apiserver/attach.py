"""``pods/attach``: a session with a container's first process, over the protocols of exec.

Nothing new is started: output is the container's log from the moment of attaching (with
``tty: true`` the terminal's output, which the kubelet copies there), on the stdout channel, or
stderr when only that was asked for (the lab's log does not keep the two apart); stdin and
terminal resizes go to the kubelet's relay through the container's FIFO (``attachpipe``). The
session ends with the container's first process, with a Success status on the error channel
whatever its exit code: the kubelet's attach does so upstream (kubernetes#63694), so ``kubectl
attach`` exits 0 and the code is in the pod's status. A client that goes away leaves the
container running; any number of sessions may follow it at once. A container without ``stdin:
true`` has no stdin to write to: what a session sends is dropped, as a runtime does.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os

from aiohttp import WSMsgType, web

from trellis.lab.apiserver import errors
from trellis.lab.apiserver.podtarget import PodTarget, container_name, locate
from trellis.lab.apiserver.streams import (CLOSE, ERROR, PROTOCOLS, RESIZE, STDERR, STDIN, STDOUT, query_flag,
                                           upgrade_required)
from trellis.lab.kubelet import attachpipe
from trellis.lab.kubelet.runtime import pid_alive

log = logging.getLogger("trellis.apiserver.attach")
FOLLOW_POLL = 0.05  # how often the log is looked at for new output
SETTLE = 0.3  # after the exit: the relay's last copy of the terminal's output


def _spec(pod: dict, name: str) -> dict:
    return next(c for c in pod["spec"].get("containers") or [] if c["name"] == name)


async def attach_pod(request: web.Request, pod: dict, state_dir: str) -> web.StreamResponse:
    q = request.query
    container = container_name(pod, q.get("container"))
    spec = _spec(pod, container)
    tty = query_flag(q, "tty") and bool(spec.get("tty"))
    want_in, want_out, want_err = query_flag(q, "stdin"), query_flag(q, "stdout"), query_flag(q, "stderr")
    if not (want_in or want_out or want_err):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    target = locate(pod, container, state_dir, "attach")
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0, autoping=True)
    if not ws.can_prepare(request).ok:
        raise upgrade_required("attach")
    await ws.prepare(request)
    out_channel = STDOUT if want_out else STDERR if want_err and not tty else None
    session = AttachSession(ws, target, os.path.join(target.pod_dir, f"{container}.log"), out_channel,
                            want_in and bool(spec.get("stdin")), tty)
    try:
        await session.run()
    except (ConnectionResetError, OSError) as e:
        log.info("attach to %s/%s ended: %s", pod["metadata"]["namespace"], pod["metadata"]["name"], e)
    finally:
        session.detach()
    return ws


class AttachSession:
    def __init__(self, ws: web.WebSocketResponse, target: PodTarget, log_path: str, out_channel: int | None,
                 want_in: bool, tty: bool) -> None:
        self.ws, self.target, self.log_path, self.out_channel, self.tty = ws, target, log_path, out_channel, tty
        self.fifo: int | None = self._open_fifo(attachpipe.fifo_path(log_path)) if want_in else None

    @staticmethod
    def _open_fifo(path: str) -> int | None:
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no relay (ENOENT; ENXIO: its kubelet restarted): stdin is at end of file
            return None

    async def send(self, channel: int, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(bytes([channel]) + data)

    def _running(self) -> bool:
        return pid_alive(self.target.entry["pid"])

    # -- output: the log from now on, until the container's first process exits --
    async def _follow(self) -> None:
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            quiet_since = None
            while True:
                data = f.read(65536)
                if data:
                    quiet_since = None
                    if self.out_channel is not None:
                        await self.send(self.out_channel, data)
                    continue
                if self._running():
                    await asyncio.sleep(FOLLOW_POLL)
                    continue
                loop_now = asyncio.get_running_loop().time()
                quiet_since = quiet_since or loop_now
                if loop_now - quiet_since >= SETTLE:
                    return
                await asyncio.sleep(FOLLOW_POLL)

    # -- input: frames for the kubelet's relay --
    async def _write(self, frames: list[bytes]) -> None:
        for frame in frames:
            while self.fifo is not None:
                try:
                    os.write(self.fifo, frame)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.01)  # the container has not read what came before
                except OSError:  # the relay is gone with its container
                    self._close_fifo()

    def _close_fifo(self) -> None:
        if self.fifo is not None:
            os.close(self.fifo)
            self.fifo = None

    async def _read_client(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN and data and self.fifo is not None:
                await self._write(attachpipe.encode(attachpipe.STDIN, data))
            elif channel == RESIZE and self.tty:
                try:
                    size = json.loads(data)
                    cols, rows = int(size.get("Width", 0)), int(size.get("Height", 0))
                except (ValueError, AttributeError, TypeError):
                    continue
                if cols > 0 and rows > 0:
                    await self._write([attachpipe.resize_frame(cols, rows)])
            elif channel == CLOSE and data[:1] == bytes([STDIN]):
                self.detach()

    def detach(self) -> None:
        """This session's stdin is over (stdinOnce closes the container's; the relay decides)."""
        if self.fifo is not None:
            try:
                os.write(self.fifo, attachpipe.encode(attachpipe.DETACH)[0])
            except OSError:
                pass
            self._close_fifo()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        follow, reader = loop.create_task(self._follow()), loop.create_task(self._read_client())
        done, _ = await asyncio.wait({follow, reader}, return_when=asyncio.FIRST_COMPLETED)
        if follow not in done:  # the client went away: the container goes on
            follow.cancel()
            await asyncio.gather(follow, return_exceptions=True)
            return
        follow.result()
        await self.send(ERROR, json.dumps({"metadata": {}, "status": "Success"}).encode())
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await self.ws.close()
