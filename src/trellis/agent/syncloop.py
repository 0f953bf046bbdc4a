"""One loop contract for the agent's controllers (routing, proxy, policy, LB announcement, and
those to come), as kube-proxy's and kube-router's controllers have it.

- Informer handlers record what changed (if the controller keeps a set of changed keys) and call
  ``mark_dirty()``; they never sync themselves.
- One worker per controller calls ``sync(full)``. Marks coalesce: any number of them while a sync
  runs or the worker waits make one more sync.
- ``full`` is True for the first sync, every ``resync`` seconds, and for the retry after a sync
  raised, which waits with capped exponential back-off (0.5 s doubling up to ``beat``); marks that
  arrive during the back-off wait for the retry, which covers them.
- ``waiting()`` (optional, cheap, polled every ``POLL`` seconds): why the controller cannot sync yet,
  e.g. its caches have not listed; no sync runs while it names something.
- ``sync`` returns None when the controller is in service, or a reason it is not yet (routing: no
  pod CIDR from the cluster controller). That is not an error, only not "synced".
- The worker wakes at least every ``beat`` seconds (the agent's resync period), also when idle, so a
  worker that has not turned for a few beats is wedged (``health.judge``).

``SyncStatus`` is what health, CNI STATUS and metrics read. The last error and its time are kept
after a later success (an operator asking why a pod lost traffic a minute ago still sees it);
``failing`` says whether the latest sync is the one that failed.

``Schedule`` is the pure part (what to run when, given a clock); ``SyncLoop`` puts it on a thread.
"""
from __future__ import annotations

import logging
import subprocess
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from trellis.kube.client import ApiError

log = logging.getLogger("trellis.agent.sync")
FULL, CHANGES = "full", "changes"
MIN_BACKOFF = 0.5
POLL = 0.1   # how often ``waiting()`` is asked while it names something
WAKE = 1.0   # the longest a worker blocks at once (so it sees ``stop`` soon)
EXPECTED = (OSError, RuntimeError, subprocess.SubprocessError, ApiError)  # logged without a traceback

Sync = Callable[[bool], "str | None"]
Observer = Callable[[str, float, "str | None"], None]  # (controller, seconds, error or None)


@dataclass
class Schedule:
    """Pure: when the next sync is due and which kind. Times are monotonic seconds."""
    resync: float
    beat: float
    dirty: bool = False
    need_full: bool = True
    next_full: float = 0.0
    failures: int = 0
    retry_at: float = 0.0

    def backoff(self) -> float:
        return min(MIN_BACKOFF * 2 ** max(self.failures - 1, 0), max(self.beat, MIN_BACKOFF))

    def due(self, now: float) -> tuple[str | None, float]:
        """(FULL or CHANGES, 0) to sync now, or (None, how long to wait at most)."""
        if self.failures and now < self.retry_at:
            return None, min(self.retry_at - now, self.beat)
        if self.need_full or now >= self.next_full:
            return FULL, 0.0
        if self.dirty:
            return CHANGES, 0.0
        return None, min(self.next_full - now, self.beat)

    def begin(self, kind: str) -> None:
        """The marks so far are this sync's; marks from now on make another."""
        self.dirty = False
        if kind == FULL:
            self.need_full = False

    def succeeded(self, kind: str, now: float) -> None:
        self.failures = 0
        if kind == FULL:
            self.next_full = now + self.resync

    def failed(self, now: float) -> None:
        self.failures += 1
        self.need_full = True
        self.retry_at = now + self.backoff()


@dataclass(frozen=True)
class SyncStatus:
    """One controller's health. Times are Unix seconds, 0 for never."""
    controller: str
    synced: bool = False           # a sync has put it in service since the agent started
    waiting: str = ""              # why it is not in service (yet), as of the latest turn
    failing: bool = False          # the latest sync raised (``last_error``), a retry is due
    started_at: float = 0.0        # the loop was made (the agent started)
    last_turn_at: float = 0.0      # the worker last finished a turn: a sync, a check, an idle wake
    busy_since: float = 0.0        # a sync is running since then
    last_sync_at: float = 0.0      # the last sync that did not raise finished
    last_sync_seconds: float = 0.0  # and took this long
    last_error: str = ""           # the last sync that raised, kept after a later success
    last_error_at: float = 0.0
    syncs: int = 0                 # syncs that did not raise
    errors: int = 0                # syncs that raised

    def problem(self) -> str:
        """Why it is not in service, in words ("" once synced)."""
        if self.synced:
            return ""
        if self.failing:
            return f"sync failed: {self.last_error}"
        return self.waiting or ("first sync running" if self.busy_since else "not synced yet")


class SyncLoop:
    def __init__(self, name: str, sync: Sync, resync: float, beat: float | None = None,
                 waiting: Callable[[], str] | None = None,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.name, self._sync, self._waiting = name, sync, waiting
        self._clock, self._wall = clock, wall
        self._plan = Schedule(resync, min(beat or resync, resync))
        self._cond = threading.Condition()
        self._status = SyncStatus(name, started_at=wall())
        self.observers: list[Observer] = []  # told of every sync (metrics)

    @property
    def beat(self) -> float:
        return self._plan.beat

    def mark_dirty(self) -> None:
        with self._cond:
            self._plan.dirty = True
            self._cond.notify()

    def status(self) -> SyncStatus:
        with self._cond:
            return self._status

    def _record(self, **changes) -> None:
        with self._cond:
            self._status = replace(self._status, **changes)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.turn(stop)

    def start(self, stop: threading.Event) -> threading.Thread:
        t = threading.Thread(target=self.run, args=(stop,), daemon=True, name=self.name)
        t.start()
        return t

    def turn(self, stop: threading.Event) -> None:
        """One step of the worker: wait for its inputs, or for a sync to be due, or sync."""
        why = self._waiting() if self._waiting else ""
        if why:
            self._record(waiting=why, last_turn_at=self._wall())
            stop.wait(POLL)
            return
        with self._cond:
            kind, wait = self._plan.due(self._clock())
            if kind is None:
                self._cond.wait(min(wait, WAKE))
                self._status = replace(self._status, last_turn_at=self._wall())
                return
            self._plan.begin(kind)
            self._status = replace(self._status, busy_since=self._wall())
        t0 = self._clock()
        try:
            pending = self._sync(kind == FULL)
        except Exception as e:  # noqa: BLE001 - any failure is retried; a bug must not end the worker
            took, text = self._clock() - t0, str(e) or type(e).__name__
            with self._cond:
                self._plan.failed(self._clock())
                retry = self._plan.retry_at - self._clock()
                s = self._status
                self._status = replace(s, failing=True, busy_since=0.0, last_turn_at=self._wall(), last_error=text,
                                       last_error_at=self._wall(), errors=s.errors + 1)
            log.warning("%s: %s sync failed (%s); full sync in %.1fs", self.name, kind, text, retry,
                        exc_info=not isinstance(e, EXPECTED))
            self._tell(took, text)
            return
        took = self._clock() - t0
        with self._cond:
            self._plan.succeeded(kind, self._clock())
            s, now = self._status, self._wall()
            self._status = replace(s, synced=s.synced or pending is None, waiting=pending or "", failing=False,
                                   busy_since=0.0, last_turn_at=now, last_sync_at=now, last_sync_seconds=took,
                                   syncs=s.syncs + 1)
        self._tell(took, None)

    def _tell(self, seconds: float, error: str | None) -> None:
        for observe in self.observers:
            try:
                observe(self.name, seconds, error)
            except Exception:  # noqa: BLE001 - metrics must not stop the controller
                log.exception("%s: sync observer failed", self.name)
