"""IPAM for a node's pod block, in the manner of the reference host-local plugin.

A ``Store`` keeps one reservation per IP (``DiskStore``: one file per IP under a
directory, a ``last_reserved`` cursor, and an index by container so that a lookup
reads one file, not the block; ``MemoryStore`` for tests). The
allocator takes the store's lock for the whole allocation, so parallel ADDs
(threads or processes) never get the same address. Allocation is idempotent:
the same container and interface get the address they already hold.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
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
    def find(self, container_id: str, ifname: str) -> Reservation | None: ...
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

    def find(self, container_id: str, ifname: str) -> Reservation | None:
        return next((r for r in self.items.values() if (r.container_id, r.ifname) == (container_id, ifname)), None)

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
    """One JSON file per reserved IP; flock on a lock file (across processes), a mutex across threads.

    ``by-container/<hash of container/ifname>`` is a symlink to the IP's file. The IP file is
    the truth: a link is followed only when the file it names holds that container.

    Crash reasoning (kill -9 at any instruction must leak nothing):
    - reserve writes the link first, then the IP file, and the IP file appears whole or not at
      all (written under ``.tmp-<ip>``, then hard-linked into place, which fails if the IP is
      taken). A crash before the IP file leaves a link to a missing or foreign file: harmless,
      the next reserve of that container replaces it. The other order leaked: an IP file no
      lookup finds, so the runtime's retry got a second address.
    - release removes the IP file first, then the link: a crash leaves only a harmless link.
    - Opening the store (the agent's start) removes ``.tmp-*`` and links without their IP file
      left by a crash, and re-links any IP file whose link is missing (an older version's order)."""

    INDEX = "by-container"

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(os.path.join(directory, self.INDEX), exist_ok=True)
        self._mutex = threading.Lock()
        with self.lock():
            self._recover()

    def _recover(self) -> None:
        for d in (self.dir, os.path.join(self.dir, self.INDEX)):
            for name in os.listdir(d):
                if name.startswith(".tmp-"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(d, name))
        held = self.all()
        for r in held:
            if self.find(r.container_id, r.ifname) is None:
                self._link(r)
        keys = {os.path.basename(self._key(r.container_id, r.ifname)) for r in held}
        for name in os.listdir(os.path.join(self.dir, self.INDEX)):
            if name not in keys:  # a link a crash left (its IP file never came, or went first)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, self.INDEX, name))

    def _key(self, container_id: str, ifname: str) -> str:
        return os.path.join(self.dir, self.INDEX, hashlib.sha1(f"{container_id}/{ifname}".encode()).hexdigest())

    def _read(self, ip: str) -> Reservation | None:
        try:
            with open(self._path(ip)) as f:
                return Reservation(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def find(self, container_id: str, ifname: str) -> Reservation | None:
        try:
            ip = os.readlink(self._key(container_id, ifname))
        except OSError:
            return None
        r = self._read(ip)
        return r if r is not None and (r.container_id, r.ifname) == (container_id, ifname) else None

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

    def _link(self, r: Reservation) -> None:
        """Point the container's index link at ``r.ip``, atomically (a stale link is replaced)."""
        key = self._key(r.container_id, r.ifname)
        tmp = os.path.join(self.dir, self.INDEX, ".tmp-" + os.path.basename(key))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(r.ip, tmp)
        os.replace(tmp, key)

    def reserve(self, r: Reservation) -> bool:
        path = self._path(r.ip)
        if os.path.lexists(path):
            return False
        self._link(r)  # first: see the class note
        tmp = os.path.join(self.dir, ".tmp-" + r.ip)
        fd = os.open(tmp, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(r), f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)  # the whole file or none, and never over another's
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def release(self, ip: str) -> None:
        r = self._read(ip)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(ip))  # first: see the class note
        if r is not None:
            key = self._key(r.container_id, r.ifname)
            with contextlib.suppress(OSError):
                if os.readlink(key) == ip:
                    os.unlink(key)

    def all(self) -> list[Reservation]:
        out = []
        for name in os.listdir(self.dir):
            if name in ("lock", "last_reserved", self.INDEX) or name.startswith("."):
                continue
            r = self._read(name)
            if r is not None:
                out.append(r)
        return out

    def last_reserved(self) -> str | None:
        try:
            with open(os.path.join(self.dir, "last_reserved")) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def set_last_reserved(self, ip: str) -> None:
        """Overwritten in place, padded to a fixed width: a hint for where to look next,
        so a torn write only makes the next search start elsewhere."""
        fd = os.open(os.path.join(self.dir, "last_reserved"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, ip.ljust(15).encode(), 0)
        finally:
            os.close(fd)


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
        try:
            a = ipaddress.ip_address(after) if after else None
        except ValueError:  # a torn cursor: start from the beginning
            a = None
        if a is not None:
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
        return self.store.find(container_id, ifname)

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
