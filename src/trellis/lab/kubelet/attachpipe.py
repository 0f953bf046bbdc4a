"""A container's stdin kept open for ``kubectl attach`` (``stdin: true``), and the frames that feed it.

A runtime keeps the stdin of a container that asks for it open (a pipe; with ``tty: true`` a
pseudo-terminal that is stdin, stdout and stderr) so that attach sessions can write to the
container's first process. Here the kubelet holds the pipe's write end or the terminal's master
side, and the API server (on the same machine) reaches it through a FIFO beside the container's
log, ``<c>.attach``: each attach session writes frames to it and the relay thread applies them in
order. A frame is at most PIPE_BUF bytes and written with one write(2), so the frames of several
sessions never interleave. Frame: kind (1 byte) | length (2 bytes, big-endian) | payload:

  STDIN   bytes for the container's stdin
  RESIZE  ``b"cols rows"``: the terminal's new size
  DETACH  a session that wrote stdin has ended: with ``stdinOnce`` the container's stdin closes
          (end of file) and stays closed until the container restarts, as upstream documents.

Output needs no relay: a container writes into its log file (with a terminal the relay copies the
master side there), and every attach session follows that file from where it was when it attached.

NOTE: the kubelet holds the other end, so a restarted kubelet leaves an adopted container's stdin
at end of file (a terminal: hung up); a runtime's shim would keep it across restarts.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import termios
import threading
from dataclasses import dataclass

STDIN, RESIZE, DETACH = 0, 4, 255
HEADER = struct.Struct(">BH")
MAX_PAYLOAD = select.PIPE_BUF - HEADER.size
EOF_CHAR = b"\x04"  # the line discipline's end of file (VEOF)
TICK = 0.2


def encode(kind: int, data: bytes = b"") -> list[bytes]:
    """``data`` as frames of ``kind``, each small enough for one atomic write to a FIFO."""
    if not data:
        return [HEADER.pack(kind, 0)]
    return [HEADER.pack(kind, len(data[i:i + MAX_PAYLOAD])) + data[i:i + MAX_PAYLOAD]
            for i in range(0, len(data), MAX_PAYLOAD)]


def resize_frame(cols: int, rows: int) -> bytes:
    return encode(RESIZE, f"{cols} {rows}".encode())[0]


class FrameReader:
    """Bytes from the FIFO in, whole frames out (a read may end inside a frame)."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf.extend(data)
        out = []
        while len(self.buf) >= HEADER.size:
            kind, n = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + n:
                break
            out.append((kind, bytes(self.buf[HEADER.size:HEADER.size + n])))
            del self.buf[:HEADER.size + n]
        return out


def fifo_path(log_path: str) -> str:
    return log_path[:-len(".log")] + ".attach"


@dataclass(frozen=True)
class StdioSpec:
    """What a container asked for: ``stdin``, ``stdinOnce``, ``tty`` of its spec."""
    tty: bool
    once: bool

    @classmethod
    def of(cls, container: dict) -> StdioSpec | None:
        if not container.get("stdin"):
            return None  # stdin is /dev/null; ``tty`` alone gives no terminal (as a runtime: no reader)
        return cls(bool(container.get("tty")), bool(container.get("stdinOnce")))


class StdinRelay(threading.Thread):
    """Owns the container's stdin (and terminal): FIFO frames in, the container's stdin out; with
    a terminal, the master side's output appended to the log. ``child_stdin``/``child_stdout``
    are for the container's Popen (``child_stdout`` None: the log file, as without a relay)."""

    def __init__(self, spec: StdioSpec, log_path: str) -> None:
        super().__init__(daemon=True, name=f"stdin-{os.path.basename(log_path)}")
        self.spec, self.log_path, self.fifo = spec, log_path, fifo_path(log_path)
        self.stopping = threading.Event()
        self.pending = bytearray()  # stdin not yet taken by the container
        self.closing = False  # stdinOnce: close once pending is written
        self.closed = False
        if spec.tty:
            self.sink, child = os.openpty()  # master side, terminal side
            self.child_stdin, self.child_stdout = child, child
        else:
            child, self.sink = os.pipe()
            self.child_stdin, self.child_stdout = child, None
        os.set_blocking(self.sink, False)
        if os.path.lexists(self.fifo):
            os.unlink(self.fifo)
        os.mkfifo(self.fifo, 0o600)
        self.fifo_ino = os.stat(self.fifo).st_ino  # a restart's relay makes its own at this path
        # O_RDWR: the FIFO always has a writer (no end of file between sessions) and a reader (so
        # the API server's non-blocking open succeeds)
        self.fifo_fd = os.open(self.fifo, os.O_RDWR | os.O_NONBLOCK)

    def started(self) -> None:
        """The container has its end: drop ours and start relaying."""
        os.close(self.child_stdin)
        self.start()

    def close(self) -> None:
        self.stopping.set()

    # -- frames --
    def _apply(self, kind: int, data: bytes) -> None:
        if kind == STDIN and not (self.closing or self.closed):
            self.pending += data
        elif kind == RESIZE and self.spec.tty:
            try:
                cols, rows = (int(v) for v in data.split())
                fcntl.ioctl(self.sink, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            except (ValueError, OSError):
                pass
        elif kind == DETACH and self.spec.once and not self.closed:
            self.closing = True
            if self.spec.tty:
                self.pending += EOF_CHAR

    def _flush(self) -> None:
        try:
            n = os.write(self.sink, self.pending)
            del self.pending[:n]
        except BlockingIOError:
            return
        except OSError:  # the container's stdin is gone (it exited): drop what it will never read
            self.pending.clear()
        if not self.pending and self.closing and not self.closed:
            self.closed = True
            if not self.spec.tty:
                os.close(self.sink)
                self.sink = -1

    def _copy_output(self, log) -> bool:
        try:
            data = os.read(self.sink, 65536)
        except BlockingIOError:
            return True
        except OSError as e:  # EIO: every holder of the terminal side is gone
            return e.errno not in (errno.EIO, errno.EBADF)
        log.write(data)
        log.flush()
        return bool(data)

    def run(self) -> None:
        frames = FrameReader()
        log = open(self.log_path, "ab") if self.spec.tty else None
        try:
            while True:
                # backpressure: the FIFO is read only once the container took what came before
                rd = [self.fifo_fd] if not self.pending else []
                if log is not None:
                    rd.append(self.sink)
                wr = [self.sink] if self.pending and self.sink >= 0 else []
                r, w, _ = select.select(rd, wr, [], TICK)
                if log is not None and self.sink in r and not self._copy_output(log):
                    return
                if self.fifo_fd in r:
                    try:
                        data = os.read(self.fifo_fd, 65536)
                    except BlockingIOError:
                        data = b""
                    for kind, payload in frames.feed(data):
                        self._apply(kind, payload)
                if w or (self.pending and self.sink < 0):
                    self._flush()
                if self.closing and not self.pending and not self.closed:
                    self._flush()
                if self.stopping.is_set() and not r:
                    return
        finally:
            if log is not None:
                log.close()
            os.close(self.fifo_fd)
            if self.sink >= 0:
                os.close(self.sink)
            try:
                if os.stat(self.fifo).st_ino == self.fifo_ino:
                    os.unlink(self.fifo)
            except FileNotFoundError:
                pass
