"""IPAM for a node's pod block, in the manner of the reference host-local plugin.

A ``Store`` keeps one reservation per IP (``DiskStore``: one file per IP under a
directory, plus a ``last_reserved`` cursor; ``MemoryStore`` for tests). The
allocator takes the store's lock for the whole allocation, so parallel ADDs
(threads or processes) never get the same address. Allocation is idempotent:
the same container and interface get the address they already hold.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import threading
from dataclasses import asdict, dataclass
from typing import Iterator, Protocol


class IPAMError(RuntimeError):
    pass


class Exhausted(IPAMError):
    pass


@dataclass(frozen=True)
class Reservation:
    ip: str
    container_id: str
    ifname: str
    pod: str = ""  # namespace/name, for GC against live pods
    netns: str = ""


class Store(Protocol):
    def lock(self) -> contextlib.AbstractContextManager: ...
    def reserve(self, r: Reservation) -> bool: ...
    def release(self, ip: str) -> None: ...
    def all(self) -> list[Reservation]: ...
    def last_reserved(self) -> str | None: ...
    def set_last_reserved(self, ip: str) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: dict[str, Reservation] = {}
        self.last: str | None = None

    def lock(self):
        return self._lock

    def reserve(self, r: Reservation) -> bool:
        if r.ip in self.items:
            return False
        self.items[r.ip] = r
        return True

    def release(self, ip: str) -> None:
        self.items.pop(ip, None)

    def all(self) -> list[Reservation]:
        return list(self.items.values())

    def last_reserved(self) -> str | None:
        return self.last

    def set_last_reserved(self, ip: str) -> None:
        self.last = ip


class DiskStore:
    """One JSON file per reserved IP; flock on a lock file (across processes), a mutex across threads."""

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self._mutex = threading.Lock()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with self._mutex:
            fd = os.open(os.path.join(self.dir, "lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)

    def _path(self, ip: str) -> str:
        return os.path.join(self.dir, ip)

    def reserve(self, r: Reservation) -> bool:
        try:
            fd = os.open(self._path(r.ip), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(r), f)
            f.flush()
            os.fsync(f.fileno())
        return True

    def release(self, ip: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(ip))

    def all(self) -> list[Reservation]:
        out = []
        for name in os.listdir(self.dir):
            if name in ("lock", "last_reserved") or name.startswith("."):
                continue
            try:
                with open(self._path(name)) as f:
                    out.append(Reservation(**json.load(f)))
            except (OSError, ValueError, TypeError):
                continue
        return out

    def last_reserved(self) -> str | None:
        try:
            with open(os.path.join(self.dir, "last_reserved")) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def set_last_reserved(self, ip: str) -> None:
        tmp = os.path.join(self.dir, ".last_reserved")
        with open(tmp, "w") as f:
            f.write(ip)
        os.replace(tmp, os.path.join(self.dir, "last_reserved"))


class Allocator:
    """Addresses of one block: skips the network address (the node's tunnel address) and broadcast."""

    def __init__(self, block: str, store: Store) -> None:
        self.net = ipaddress.ip_network(block)
        self.store = store
        self.first = self.net.network_address + 1
        self.last = self.net.broadcast_address - 1

    def _candidates(self, after: str | None) -> Iterator[ipaddress.IPv4Address]:
        size = int(self.last) - int(self.first) + 1
        start = 0
        if after:
            a = ipaddress.ip_address(after)
            if self.first <= a <= self.last:
                start = int(a) - int(self.first) + 1
        for k in range(size):
            yield ipaddress.ip_address(int(self.first) + (start + k) % size)

    def allocate(self, container_id: str, ifname: str, pod: str = "", netns: str = "") -> Reservation:
        with self.store.lock():
            held = self.find(container_id, ifname)
            if held is not None:
                return held
            for ip in self._candidates(self.store.last_reserved()):
                r = Reservation(str(ip), container_id, ifname, pod, netns)
                if self.store.reserve(r):
                    self.store.set_last_reserved(str(ip))
                    return r
        raise Exhausted(f"no free address in {self.net} for container {container_id} ({pod or 'unknown pod'})")

    def find(self, container_id: str, ifname: str) -> Reservation | None:
        for r in self.store.all():
            if r.container_id == container_id and r.ifname == ifname:
                return r
        return None

    def release(self, container_id: str, ifname: str) -> Reservation | None:
        with self.store.lock():
            r = self.find(container_id, ifname)
            if r is not None:
                self.store.release(r.ip)
            return r

    def gc(self, keep: set[tuple[str, str]]) -> list[Reservation]:
        """Release every reservation whose (container_id, ifname) is not in keep."""
        with self.store.lock():
            gone = [r for r in self.store.all() if (r.container_id, r.ifname) not in keep]
            for r in gone:
                self.store.release(r.ip)
            return gone
