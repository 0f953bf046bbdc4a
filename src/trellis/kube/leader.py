"""Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.

Several replicas of a component run; one leads (holds the Lease ``<namespace>/<name>``), the
others wait. The rules are client-go's, so a trellis replica and any tool that reads the Lease
agree on who leads:

* A candidate takes the Lease when it does not exist, when its ``holderIdentity`` is empty
  (released), or when the record has not changed for ``leaseDurationSeconds`` *as this
  candidate observed it* (its own monotonic clock from the moment it saw the record change),
  so clock skew between nodes never makes two leaders. It retries every ``retry_period``.
* The leader renews every ``retry_period``. Writes are updates with the resourceVersion the
  leader read (optimistic concurrency): of two racing candidates only one write succeeds.
* A leader that has not renewed within ``renew_deadline`` has lost the Lease (another
  candidate may take it once the lease duration is over: deadline < duration leaves the
  margin). Losing is final for this elector; the component stops leading, and the simplest
  correct way to do that is to exit and let its Deployment restart it, as
  kube-controller-manager does.
* ``release()`` (on a clean shutdown) empties ``holderIdentity`` so a standby takes over
  within one retry period instead of a lease duration.

Defaults are client-go's and kube-controller-manager's: 15 s lease, 10 s renew deadline,
2 s retry.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from trellis.kube.client import ApiError, KubeClient

log = logging.getLogger("trellis.leader")
API = "coordination.k8s.io/v1"
JITTER = 1.2  # client-go's JitterFactor: a retry waits retry_period * [1, 1.2)


def identity() -> str:
    """This replica's name in the Lease: the pod's name when the Deployment passes it, else host_pid."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}"


def micro_time(t: float) -> str:
    """metav1.MicroTime, as a Lease's times are written."""
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Timing:
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        # client-go refuses the same: a deadline not shorter than the lease lets two lead at once
        if not self.lease_duration > self.renew_deadline > JITTER * self.retry_period > 0:
            raise ValueError(f"leader election needs lease duration > renew deadline > {JITTER} x retry period "
                             f"> 0, got {self.lease_duration}, {self.renew_deadline}, {self.retry_period}")


class LeaderElector:
    def __init__(self, client: KubeClient, namespace: str, name: str, ident: str | None = None,
                 timing: Timing = Timing(), wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.client, self.namespace, self.name = client, namespace, name
        self.identity = ident or identity()
        self.timing, self.wall, self.mono = timing, wall, mono
        self.observed: dict | None = None   # the Lease spec last read
        self.observed_at = 0.0              # when (monotonic) it last changed
        self.leading = threading.Event()
        self.lost = threading.Event()

    # -- one attempt --------------------------------------------------------------------------
    def _spec(self, old: dict | None) -> dict:
        now = micro_time(self.wall())
        old = old or {}
        mine = old.get("holderIdentity") == self.identity
        return {"holderIdentity": self.identity, "leaseDurationSeconds": max(1, round(self.timing.lease_duration)),
                "acquireTime": old.get("acquireTime") if mine and old.get("acquireTime") else now,
                "renewTime": now,
                "leaseTransitions": int(old.get("leaseTransitions") or 0) + (0 if mine or not old else 1)}

    def try_acquire_or_renew(self) -> bool:
        """One get + create/update; True when this elector holds the Lease afterwards."""
        try:
            lease = self.client.get_or_none(API, "leases", self.name, self.namespace)
            if lease is None:
                body = {"apiVersion": API, "kind": "Lease",
                        "metadata": {"name": self.name, "namespace": self.namespace}, "spec": self._spec(None)}
                created = self.client.create(API, "leases", body, self.namespace)
                self._observe(created.get("spec") or {})
                return True
            spec = lease.get("spec") or {}
            self._observe(spec)
            holder = spec.get("holderIdentity") or ""
            if holder and holder != self.identity and not self._expired():
                return False
            lease["spec"] = self._spec(spec)
            updated = self.client.update(API, "leases", lease)  # carries the resourceVersion read
            self._observe(updated.get("spec") or {})
            return True
        except ApiError as e:
            if e.code not in (409, 0) and e.code < 500:
                log.warning("lease %s/%s: %s", self.namespace, self.name, e)
            return False

    def _observe(self, spec: dict) -> None:
        if spec != self.observed:
            self.observed, self.observed_at = dict(spec), self.mono()

    def _expired(self) -> bool:
        duration = float((self.observed or {}).get("leaseDurationSeconds") or self.timing.lease_duration)
        return self.mono() >= self.observed_at + duration

    # -- the loops ----------------------------------------------------------------------------
    def _sleep(self, stop: threading.Event) -> bool:
        return stop.wait(self.timing.retry_period * random.uniform(1.0, JITTER))

    def acquire(self, stop: threading.Event) -> bool:
        """Block until this elector leads (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            if self.try_acquire_or_renew():
                log.info("%s leads (lease %s/%s)", self.identity, self.namespace, self.name)
                self.leading.set()
                return True
            if self._sleep(stop):
                break
        return False

    def renew(self, stop: threading.Event) -> None:
        """Renew until ``stop`` is set or a renewal misses the deadline (then ``lost`` is set)."""
        last = self.mono()
        while not stop.is_set():
            if self._sleep(stop):
                return
            if self.try_acquire_or_renew():
                last = self.mono()
            elif self.mono() - last >= self.timing.renew_deadline or not self._holds():
                log.error("%s lost the lease %s/%s", self.identity, self.namespace, self.name)
                self.leading.clear()
                self.lost.set()
                return

    def _holds(self) -> bool:
        return (self.observed or {}).get("holderIdentity") == self.identity

    def release(self) -> None:
        """Give the Lease up (clean shutdown): a standby takes it at its next retry."""
        if not self.leading.is_set():
            return
        self.leading.clear()
        try:
            lease = self.client.get(API, "leases", self.name, self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            now = micro_time(self.wall())
            lease["spec"] = dict(lease["spec"], holderIdentity="", leaseDurationSeconds=1,
                                 renewTime=now, acquireTime=now)
            self.client.update(API, "leases", lease)
        except ApiError as e:
            log.info("releasing lease %s/%s: %s", self.namespace, self.name, e)

    def run(self, stop: threading.Event, lead: Callable[[], None]) -> bool:
        """Acquire, call ``lead()`` (it starts the work and returns), renew until ``stop`` or a
        loss. -> True when it ended because the Lease was lost."""
        if not self.acquire(stop):
            return False
        lead()
        self.renew(stop)
        if self.lost.is_set():
            return True
        self.release()
        return False
