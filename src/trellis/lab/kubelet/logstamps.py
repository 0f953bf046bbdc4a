"""Timestamps for container logs (``kubectl logs --timestamps``), kept beside the log.

Containers write straight into their log file (no pipe through the kubelet, so
a restarted kubelet finds them still logging). Instead of a runtime's per-line
stamps, the kubelet notes every ``INTERVAL`` seconds where each log file has
grown to: ``<c>.log.idx`` gets ``<start> <end> <RFC 3339 time>`` for each new
stretch of bytes, and a line's timestamp is the time its first byte was seen.
So a stamp is at most ``INTERVAL`` late, like a runtime's read of its pipe.
Bytes written since the last look (a reader can come before the stamper) get
the file's modification time, which is the time of the newest write.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trellis.lab.kubelet.kubelet import Kubelet

INTERVAL = 0.2


def rfc3339nano(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def index_path(log_path: str) -> str:
    return log_path + ".idx"


class LogStamper(threading.Thread):
    def __init__(self, kubelet: "Kubelet") -> None:
        super().__init__(daemon=True, name="log-stamps")
        self.k = kubelet
        self.sizes: dict[str, tuple[int, int]] = {}  # log path -> (inode, size seen)

    def tick(self) -> None:
        with self.k.lock:
            workers = list(self.k.workers.values())
        now = rfc3339nano(dt.datetime.now(dt.timezone.utc))
        live = set()
        for w in workers:
            for r in list(w.runs):
                if r.container is None:
                    continue
                path = r.container.log_path
                live.add(path)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                inode, last = self.sizes.get(path, (st.st_ino, 0))
                if inode != st.st_ino or st.st_size < last:  # a new file (the container restarted)
                    last = 0
                if st.st_size > last:
                    with open(index_path(path), "a" if last else "w") as f:
                        f.write(f"{last} {st.st_size} {now}\n")
                self.sizes[path] = (st.st_ino, st.st_size)
        self.sizes = {p: s for p, s in self.sizes.items() if p in live}

    def run(self) -> None:
        while not self.k.stop.wait(INTERVAL):
            try:
                self.tick()
            except OSError:
                pass


def stamp_lines(data: bytes, index: list[tuple[int, str]], base: int = 0) -> bytes:
    """Prefix each line of ``data`` (which starts at file offset ``base``) with its timestamp."""
    out, pos, j = [], base, 0
    for line in data.splitlines(keepends=True):
        while j + 1 < len(index) and index[j + 1][0] <= pos:
            j += 1
        out.append(f"{index[j][1]} ".encode() + line if index else line)
        pos += len(line)
    return b"".join(out)


def read_index(log_path: str) -> list[tuple[int, str]]:
    """The stamps of a log as (offset, time); bytes no stamper saw get the file's modification time."""
    index, end = [], 0
    try:
        with open(index_path(log_path)) as f:
            for line in f:
                start, stop, t = line.split()
                index.append((int(start), t))
                end = int(stop)
    except (OSError, ValueError):
        index, end = [], 0
    try:
        st = os.stat(log_path)
    except OSError:
        return index
    mtime = rfc3339nano(dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc))
    if not index or index[0][0] > 0:  # written while no kubelet watched
        index.insert(0, (0, mtime))
    elif st.st_size > end:  # written since the stamper last looked
        index.append((end, mtime))
    return index
