"""Kubernetes Events from trellis components and the lab's control plane.

``EventRecorder(client, component, host).event(obj, type, reason, message)``
writes a core/v1 Event about ``obj`` (any object dict, or an ObjectReference)
the way client-go's recorder does, so ``kubectl describe`` and ``kubectl get
events`` show why something is stuck, on the lab and on a real cluster alike:

* The same event again (same object, type, reason, message and source) is
  not a new object: the existing one gets ``count`` + 1 and a new
  ``lastTimestamp`` (client-go's EventLogger). If it has expired meanwhile
  (the API server's event TTL), a new one is created.
* Many events that differ only in their message (10 within 10 minutes, as
  client-go's EventAggregator counts) collapse into one whose message starts
  with "(combined from similar events): ".
* Writing happens on a background thread with a bounded queue: a component
  never waits for, nor fails because of, the API server's event store.
  ``flush()`` waits for the queue to drain (tests, shutdown).
"""
from __future__ import annotations

import collections
import datetime as dt
import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from trellis.kube.client import ApiError, KubeClient

log = logging.getLogger("trellis.events")

NORMAL, WARNING = "Normal", "Warning"
CACHE_SIZE = 4096
SIMILAR_MAX, SIMILAR_WINDOW = 10, 600.0
COMBINED = "(combined from similar events): "
MAX_MESSAGE = 1024  # the API server rejects longer notes (events.k8s.io: 1 kB)


def timestamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_timestamp(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def reference(obj: dict, kind: str | None = None, api_version: str | None = None,
              field_path: str = "") -> dict:
    """The ObjectReference of an object (objects listed from a real API carry no kind: pass it)."""
    md = obj.get("metadata")
    if md is None:  # already a reference
        ref = {k: v for k, v in obj.items() if v}
    else:
        ref = {"kind": kind or obj.get("kind", ""), "apiVersion": api_version or obj.get("apiVersion", ""),
               "namespace": md.get("namespace", ""), "name": md.get("name", ""), "uid": md.get("uid", ""),
               "resourceVersion": md.get("resourceVersion", "")}
    if kind:
        ref["kind"] = kind
    if api_version:
        ref["apiVersion"] = api_version
    if field_path:
        ref["fieldPath"] = field_path
    if not ref.get("kind") or not ref.get("name"):
        raise ValueError(f"an event needs an object with a kind and a name, got {ref}")
    return {k: v for k, v in ref.items() if v}


@dataclass
class _Seen:
    name: str
    namespace: str
    count: int
    first: str


class EventRecorder:
    def __init__(self, client: KubeClient, component: str, host: str = "", instance: str = "",
                 clock=time.time, queue_size: int = 1000) -> None:
        self.client, self.component, self.host = client, component, host
        self.instance = instance or (f"{component}-{host}" if host else component)
        self.clock = clock
        self.seen: collections.OrderedDict[tuple, _Seen] = collections.OrderedDict()
        self.similar: dict[tuple, tuple[float, set[str]]] = {}
        self.q: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    # -- the producer side: never blocks, never raises on API trouble --
    def event(self, obj: dict, type: str, reason: str, message: str, *, kind: str | None = None,
              api_version: str | None = None, field_path: str = "") -> None:
        if type not in (NORMAL, WARNING):
            raise ValueError(f"event type must be {NORMAL} or {WARNING}, not {type!r}")
        ref = reference(obj, kind, api_version, field_path)
        log.log(logging.WARNING if type == WARNING else logging.INFO, "event %s %s %s/%s: %s", type, reason,
                ref.get("namespace", ""), ref["name"], message)
        try:
            self.q.put_nowait((ref, type, reason, message[:MAX_MESSAGE], self.clock()))
        except queue.Full:
            self.dropped += 1
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._worker, daemon=True, name=f"events-{self.component}")
                self._thread.start()

    def eventf(self, obj: dict, type: str, reason: str, fmt: str, *args: Any, **kw: Any) -> None:
        self.event(obj, type, reason, fmt % args, **kw)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every event recorded so far is written (or given up on)."""
        deadline = time.monotonic() + timeout
        with self.q.all_tasks_done:
            while self.q.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.q.all_tasks_done.wait(remaining)
        return True

    # -- the writer --
    def _worker(self) -> None:
        while True:
            item = self.q.get()
            try:
                self.write(*item)
            except Exception:  # noqa: BLE001 - an event is best effort; the component goes on
                log.exception("writing an event failed")
            finally:
                self.q.task_done()

    def _aggregate(self, ref: dict, type: str, reason: str, message: str, t: float) -> str:
        """client-go's EventAggregator: too many distinct messages for one reason -> one combined event."""
        key = (self.component, self.host, ref.get("kind"), ref.get("namespace"), ref["name"], ref.get("uid"),
               ref.get("fieldPath"), type, reason)
        start, messages = self.similar.get(key, (t, set()))
        if t - start > SIMILAR_WINDOW:
            start, messages = t, set()
        messages.add(message)
        if len(self.similar) > CACHE_SIZE:
            self.similar.pop(next(iter(self.similar)))
        self.similar[key] = (start, messages)
        if len(messages) > SIMILAR_MAX:
            return COMBINED + message
        return message

    def write(self, ref: dict, type: str, reason: str, message: str, t: float) -> dict | None:
        message = self._aggregate(ref, type, reason, message, t)
        key_message = COMBINED if message.startswith(COMBINED) else message
        key = (self.component, self.host, ref.get("kind"), ref.get("namespace"), ref["name"], ref.get("uid"),
               ref.get("apiVersion"), ref.get("fieldPath"), type, reason, key_message)
        ns = ref.get("namespace") or "default"
        seen = self.seen.get(key)
        if seen is not None:
            self.seen.move_to_end(key)
            patch = {"count": seen.count + 1, "lastTimestamp": timestamp(t), "message": message}
            try:
                out = self.client.patch("v1", "events", seen.name, patch, seen.namespace)
                seen.count += 1
                return out
            except ApiError as e:
                if e.code != 404:
                    log.info("event %s/%s: %s", seen.namespace, seen.name, e)
                    return None
                del self.seen[key]  # expired: start again
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{ref['name']}.{int(t * 1e9):x}", "namespace": ns},
                "involvedObject": ref, "reason": reason, "message": message, "type": type,
                "source": {"component": self.component, **({"host": self.host} if self.host else {})},
                "firstTimestamp": timestamp(t), "lastTimestamp": timestamp(t), "count": 1,
                "eventTime": None, "reportingComponent": self.component, "reportingInstance": self.instance}
        try:
            out = self.client.create("v1", "events", body, ns)
        except ApiError as e:
            log.info("event about %s %s/%s not written: %s", ref["kind"], ns, ref["name"], e)
            return None
        self.seen[key] = _Seen(out["metadata"]["name"], ns, 1, body["firstTimestamp"])
        while len(self.seen) > CACHE_SIZE:
            self.seen.popitem(last=False)
        return out
