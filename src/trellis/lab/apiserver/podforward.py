"""``pods/portforward``: kubectl 1.32's port-forward, SPDY streams tunnelled through a WebSocket.

kubectl asks for subprotocol ``SPDY/3.1+portforward.k8s.io`` and then speaks the
``portforward.k8s.io`` stream protocol inside: for every connection accepted on
its local listener it opens two SPDY streams with headers ``streamType``
(``error`` then ``data``), ``port`` and ``requestID``. This server replies to each
stream, connects to ``127.0.0.1:<port>`` inside the pod's network namespace (as
the kubelet does; a socket keeps the namespace it was made in, so only its
creation runs there), and copies bytes both ways; a failure to connect goes back
as text on the error stream, which kubectl prints. A half-close travels as FIN.

Several ports are just several request IDs on the one connection; ``svc/NAME``
is resolved to a pod and a target port by kubectl itself.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from trellis.kernel.netns import in_netns
from trellis.lab.apiserver import errors, spdy
from trellis.lab.apiserver.podtarget import PodTarget, container_name, locate

log = logging.getLogger("trellis.apiserver.portforward")
PROTOCOL = "SPDY/3.1+portforward.k8s.io"
CONNECT_TIMEOUT = 5.0
CHUNK = 32 * 1024


@dataclass
class Pair:
    """The error and data streams of one forwarded connection."""
    port: int
    error_id: int = 0
    data_id: int = 0
    inbox: asyncio.Queue = field(default_factory=asyncio.Queue)  # client -> pod; None = FIN
    task: asyncio.Task | None = None


async def portforward_pod(request: web.Request, pod: dict, state_dir: str) -> web.StreamResponse:
    target = locate(pod, container_name(pod, None), state_dir)
    ws = web.WebSocketResponse(protocols=(PROTOCOL,), max_msg_size=0, autoping=True)
    if not ws.can_prepare(request).ok or ws.can_prepare(request).protocol != PROTOCOL:
        raise errors.ApiError(400, "BadRequest", f"port-forward needs a WebSocket upgrade with subprotocol "
                              f"{PROTOCOL} (kubectl 1.30 or later); plain SPDY is not served")
    await ws.prepare(request)
    session = ForwardSession(ws, target, f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
    try:
        await session.run()
    finally:
        session.close()
    return ws


class ForwardSession:
    def __init__(self, ws: web.WebSocketResponse, target: PodTarget, pod: str) -> None:
        self.ws, self.target, self.pod = ws, target, pod
        self.framer = spdy.Framer()
        self.lock = asyncio.Lock()
        self.pairs: dict[str, Pair] = {}  # by requestID
        self.streams: dict[int, Pair] = {}  # by SPDY stream id

    async def send(self, frame: bytes) -> None:
        async with self.lock:
            if not self.ws.closed:
                await self.ws.send_bytes(frame)

    async def run(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY:
                continue
            try:
                frames = self.framer.feed(msg.data)
            except (spdy.ProtocolError, ValueError, IndexError, Exception) as e:  # noqa: BLE001 - a bad peer
                log.info("port-forward to %s: bad SPDY from the client: %s", self.pod, e)
                await self.send(self.framer.goaway(0, 1))
                return
            for f in frames:
                if await self.handle(f) is False:
                    return

    async def handle(self, f: spdy.Frame) -> bool:
        if not f.control:
            pair = self.streams.get(f.stream_id)
            if pair is not None and f.stream_id == pair.data_id:
                if f.data:
                    pair.inbox.put_nowait(f.data)
                if f.fin:
                    pair.inbox.put_nowait(None)
            return True
        if f.type == spdy.SYN_STREAM:
            await self.open_stream(f)
        elif f.type == spdy.RST_STREAM:
            pair = self.streams.get(f.stream_id)
            if pair is not None and pair.task is not None:
                pair.task.cancel()
        elif f.type == spdy.PING:
            await self.send(self.framer.ping(f.status))
        elif f.type == spdy.GOAWAY:
            return False
        return True  # SETTINGS, WINDOW_UPDATE, HEADERS: nothing to do for a byte pipe

    async def open_stream(self, f: spdy.Frame) -> None:
        kind, port, req = f.headers.get("streamtype"), f.headers.get("port", ""), f.headers.get("requestid", "")
        if kind not in ("error", "data") or not port.isdigit() or not 0 < int(port) < 65536:
            await self.send(self.framer.rst_stream(f.stream_id, spdy.RST_REFUSED_STREAM))
            log.info("port-forward to %s: refused stream %s (streamType=%r port=%r)", self.pod,
                     f.stream_id, kind, port)
            return
        pair = self.pairs.setdefault(req or f"stream-{f.stream_id}", Pair(int(port)))
        setattr(pair, f"{kind}_id", f.stream_id)
        self.streams[f.stream_id] = pair
        await self.send(self.framer.syn_reply(f.stream_id))
        if pair.error_id and pair.data_id and pair.task is None:
            pair.task = asyncio.get_running_loop().create_task(self.forward(req, pair))

    async def forward(self, req: str, pair: Pair) -> None:
        loop = asyncio.get_running_loop()
        writer = None
        try:
            with in_netns(self.target.netns_path):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", pair.port)), CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as e:
                sock.close()
                why = os.strerror(e.errno).lower() if isinstance(e, OSError) and e.errno else "timed out"
                await self.send(self.framer.data(pair.error_id, (
                    f"error forwarding port {pair.port} to pod {self.pod}: failed to connect to "
                    f"localhost:{pair.port} inside the pod's network namespace: dial tcp4 127.0.0.1:{pair.port}: "
                    f"connect: {why}").encode()))
                await self.send(self.framer.data(pair.data_id, b"", fin=True))
                return
            reader, writer = await asyncio.open_connection(sock=sock)
            up = loop.create_task(self._to_pod(pair, writer))
            while data := await reader.read(CHUNK):
                await self.send(self.framer.data(pair.data_id, data))
            await self.send(self.framer.data(pair.data_id, b"", fin=True))
            up.cancel()  # kubectl ends the connection once the pod's side has, as with the kubelet
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError) as e:
            log.info("port-forward to %s port %d (request %s): %s", self.pod, pair.port, req, e)
            await self.send(self.framer.rst_stream(pair.data_id, spdy.RST_CANCEL))
        finally:
            if writer is not None:
                writer.close()
            await self.send(self.framer.data(pair.error_id, b"", fin=True))
            self.pairs.pop(req, None)
            self.streams.pop(pair.error_id, None)
            self.streams.pop(pair.data_id, None)

    @staticmethod
    async def _to_pod(pair: Pair, writer: asyncio.StreamWriter) -> None:
        while (data := await pair.inbox.get()) is not None:
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

    def close(self) -> None:
        for pair in list(self.pairs.values()):
            if pair.task is not None:
                pair.task.cancel()
