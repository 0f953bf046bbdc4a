"""Object storage for the lab API: memory for reads, SQLite for durability.

Every object lives in a bucket (``group/plural``) under ``(namespace, name)``.
One global, strictly increasing resourceVersion orders all writes, as etcd's
revision does. The last ``window`` events are kept in memory so a watch can
resume from a resourceVersion; an older one gets 410 Gone.

All methods run on the API server's single event-loop thread, so no locks.
"""
from __future__ import annotations

import asyncio
import collections
import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

Key = tuple[str, str]  # (namespace, name); namespace "" for cluster scope


@dataclass
class Event:
    rv: int
    bucket: str
    type: str  # ADDED | MODIFIED | DELETED
    obj: dict
    old: dict | None


@dataclass
class Watcher:
    bucket: str
    accept: Callable[[dict], bool]
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=100_000))
    overflowed: bool = False


class Store:
    def __init__(self, path: str, window: int = 50_000) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS objects (bucket TEXT, ns TEXT, name TEXT,"
                        " data TEXT, PRIMARY KEY (bucket, ns, name))")
        self.db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        self.buckets: dict[str, dict[Key, dict]] = collections.defaultdict(dict)
        for bucket, ns, name, data in self.db.execute("SELECT bucket, ns, name, data FROM objects"):
            self.buckets[bucket][(ns, name)] = json.loads(data)
        row = self.db.execute("SELECT v FROM meta WHERE k='rv'").fetchone()
        self.rv = int(row[0]) if row else 1
        self.events: collections.deque[Event] = collections.deque(maxlen=window)
        # the oldest resourceVersion a watch can resume from
        self.oldest_rv = self.rv
        self.watchers: dict[str, list[Watcher]] = collections.defaultdict(list)
        self._pending = 0

    # -- reads --
    def get(self, bucket: str, ns: str, name: str) -> dict | None:
        return self.buckets[bucket].get((ns, name))

    def list(self, bucket: str, ns: str | None = None) -> Iterator[dict]:
        objs = self.buckets[bucket]
        if ns is None:
            return iter(objs.values())
        return (o for (n, _), o in objs.items() if n == ns)

    def count(self, bucket: str) -> int:
        return len(self.buckets[bucket])

    # -- writes --
    def next_rv(self) -> int:
        self.rv += 1
        return self.rv

    def put(self, bucket: str, obj: dict, event_type: str, old: dict | None) -> dict:
        """Store obj (whose metadata.resourceVersion the caller set from next_rv)."""
        md = obj["metadata"]
        key = (md.get("namespace", ""), md["name"])
        self.buckets[bucket][key] = obj
        self.db.execute("INSERT OR REPLACE INTO objects VALUES (?,?,?,?)",
                        (bucket, key[0], key[1], json.dumps(obj, separators=(",", ":"))))
        self._persist_rv()
        self._emit(Event(int(md["resourceVersion"]), bucket, event_type, obj, old))
        return obj

    def remove(self, bucket: str, obj: dict) -> dict:
        md = obj["metadata"]
        key = (md.get("namespace", ""), md["name"])
        old = self.buckets[bucket].pop(key, None)
        self.db.execute("DELETE FROM objects WHERE bucket=? AND ns=? AND name=?", (bucket, *key))
        rv = self.next_rv()
        gone = dict(obj, metadata=dict(md, resourceVersion=str(rv)))
        self._persist_rv()
        self._emit(Event(rv, bucket, "DELETED", gone, old))
        return gone

    def _persist_rv(self) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('rv', ?)", (str(self.rv),))

    def _emit(self, ev: Event) -> None:
        if len(self.events) == self.events.maxlen:
            self.oldest_rv = self.events[0].rv
        self.events.append(ev)
        for w in self.watchers.get(ev.bucket, ()):
            try:
                w.queue.put_nowait(ev)
            except asyncio.QueueFull:
                w.overflowed = True

    # -- watch --
    def subscribe(self, w: Watcher) -> None:
        self.watchers[w.bucket].append(w)

    def unsubscribe(self, w: Watcher) -> None:
        try:
            self.watchers[w.bucket].remove(w)
        except ValueError:
            pass

    def events_since(self, bucket: str, rv: int) -> list[Event] | None:
        """Events of a bucket after rv, or None when rv is older than the window."""
        if rv < self.oldest_rv:
            return None
        return [e for e in self.events if e.rv > rv and e.bucket == bucket]

    def close(self) -> None:
        self.db.close()


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
