"""Informer: a list+watch cache of one resource, with event handlers.

Lists once, then watches from the list's resourceVersion; resumes a dropped
watch from the last seen version (bookmarks keep it fresh) and relists when
the server says 410 Gone, reporting the differences as events. Handlers run
on the informer's thread and should only record work (see ``WorkQueue``).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from trellis.kube.client import ApiError, KubeClient, WatchExpired

log = logging.getLogger(__name__)
Handler = Callable[[str, dict, dict | None], None]  # (event type, obj, old obj)


def obj_key(obj: dict) -> str:
    md = obj["metadata"]
    return f"{md.get('namespace', '')}/{md['name']}"


class Informer:
    def __init__(self, client: KubeClient, api_version: str, plural: str, ns: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None) -> None:
        self.client, self.api_version, self.plural = client, api_version, plural
        self.ns, self.label_selector, self.field_selector = ns, label_selector, field_selector
        self.cache: dict[str, dict] = {}
        self.handlers: list[Handler] = []
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def add_handler(self, h: Handler) -> None:
        self.handlers.append(h)

    def items(self) -> list[dict]:
        with self._lock:
            return list(self.cache.values())

    def get(self, ns: str, name: str) -> dict | None:
        with self._lock:
            return self.cache.get(f"{ns}/{name}")

    def start(self) -> "Informer":
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"informer-{self.plural}")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _emit(self, typ: str, obj: dict, old: dict | None) -> None:
        for h in self.handlers:
            try:
                h(typ, obj, old)
            except Exception:  # noqa: BLE001 - one bad handler must not stop the informer
                log.exception("handler failed for %s %s", typ, obj_key(obj))

    def _relist(self) -> str:
        items, rv = self.client.list(self.api_version, self.plural, self.ns, self.label_selector,
                                     self.field_selector)
        fresh = {obj_key(o): o for o in items}
        with self._lock:
            old_cache, self.cache = self.cache, fresh
        for k, o in fresh.items():
            prev = old_cache.get(k)
            if prev is None:
                self._emit("ADDED", o, None)
            elif prev["metadata"].get("resourceVersion") != o["metadata"].get("resourceVersion"):
                self._emit("MODIFIED", o, prev)
        for k, o in old_cache.items():
            if k not in fresh:
                self._emit("DELETED", o, o)
        return rv

    def _run(self) -> None:
        rv, backoff = "", 0.2
        while not self._stop.is_set():
            try:
                if not rv:
                    rv = self._relist()
                    self.synced.set()
                for typ, obj in self.client.watch(self.api_version, self.plural, self.ns, rv,
                                                  self.label_selector, self.field_selector, timeout_seconds=120):
                    if self._stop.is_set():
                        return
                    rv = obj["metadata"].get("resourceVersion", rv)
                    if typ == "BOOKMARK":
                        continue
                    k = obj_key(obj)
                    with self._lock:
                        old = self.cache.get(k)
                        if typ == "DELETED":
                            self.cache.pop(k, None)
                        else:
                            self.cache[k] = obj
                    self._emit(typ, obj, old)
                backoff = 0.2
            except WatchExpired:
                rv = ""
            except (ApiError, OSError, ValueError) as e:
                if self._stop.is_set():
                    return
                log.debug("watch %s failed (%s); retrying in %.1fs", self.plural, e, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as e:  # noqa: BLE001 - httpx transport errors and friends
                if self._stop.is_set():
                    return
                log.debug("watch %s broke (%s); retrying", self.plural, e)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


class WorkQueue:
    """Keys to reconcile, deduplicated; one worker pulls them in order of arrival."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._keys: dict[str, float] = {}

    def add(self, key: str, delay: float = 0.0) -> None:
        with self._cond:
            due = time.monotonic() + delay
            if key not in self._keys or self._keys[key] > due:
                self._keys[key] = due
            self._cond.notify()

    def get(self, timeout: float = 1.0) -> str | None:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.monotonic()
                ready = [k for k, due in self._keys.items() if due <= now]
                if ready:
                    k = min(ready, key=lambda x: self._keys[x])
                    del self._keys[k]
                    return k
                nxt = min(self._keys.values(), default=end)
                wait = min(nxt, end) - now
                if wait <= 0:
                    return None
                self._cond.wait(wait)


class Reconciler:
    """The controller contract: handlers only enqueue keys; one worker reconciles them.

    ``sync(key)`` makes the world match the object behind ``key``; it returns False
    (or raises an ApiError/RuntimeError) to be retried after ``retry`` seconds.
    """

    name = "controller"
    retry = 0.5

    def __init__(self) -> None:
        self.queue = WorkQueue()

    def sync(self, key: str) -> bool | None:
        raise NotImplementedError

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            key = self.queue.get(0.5)
            if key is None:
                continue
            try:
                if self.sync(key) is False:
                    self.queue.add(key, self.retry * 2)
            except (ApiError, RuntimeError) as e:
                log.info("%s %s: %s (retrying)", self.name, key, e)
                self.queue.add(key, self.retry)
