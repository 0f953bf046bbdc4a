"""Leader election on a Lease (trellis.kube.leader) against the lab API server: one of two
candidates leads, the other takes over only once the leader stops renewing (after the lease
duration) or at once when it releases; a leader that finds the Lease taken stops leading; and
`trellis controller --leader-elect` exits 1 when that happens, so its Deployment restarts it."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from trellis.kube.client import KubeClient
from trellis.kube.leader import API, LeaderElector, Timing

NS, NAME = "trellis-system", "trellis-controller"
FAST = Timing(lease_duration=2.0, renew_deadline=1.5, retry_period=0.2)


@pytest.fixture
def kc(client):
    client.create("v1", "namespaces", {"metadata": {"name": NS}})
    return client


def wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


class Candidate:
    """An elector on its own threads; ``crash()`` stops it without releasing the Lease."""

    def __init__(self, url: str, ident: str) -> None:
        self.client = KubeClient(url)
        self.elector = LeaderElector(self.client, NS, NAME, ident, FAST)
        self.stop = threading.Event()
        self.led_at: float | None = None

    def start(self) -> "Candidate":
        def go():
            if self.elector.acquire(self.stop):
                self.led_at = time.monotonic()
                self.elector.renew(self.stop)
        self.thread = threading.Thread(target=go, daemon=True)
        self.thread.start()
        return self

    def crash(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def close(self) -> None:
        self.crash()
        self.client.close()


def lease(kc) -> dict:
    return kc.get(API, "leases", NAME, NS)["spec"]


def test_one_leads_and_the_other_takes_over_after_the_lease_expires(apiserver, kc):
    a, b = Candidate(apiserver.url, "a").start(), Candidate(apiserver.url, "b").start()
    try:
        assert wait(lambda: a.elector.leading.is_set() or b.elector.leading.is_set())
        leader, standby = (a, b) if a.elector.leading.is_set() else (b, a)
        time.sleep(3 * FAST.lease_duration / 2)  # more than a lease duration of renewals
        assert not standby.elector.leading.is_set()
        spec = lease(kc)
        assert spec["holderIdentity"] == leader.elector.identity
        assert spec["leaseDurationSeconds"] == 2 and spec["leaseTransitions"] == 0
        stopped = time.monotonic()
        leader.crash()  # stops renewing, keeps the Lease
        assert wait(lambda: standby.elector.leading.is_set(), 10)
        # not before the record was unchanged for a lease duration (minus the last renewal's retry)
        assert standby.led_at - stopped >= FAST.lease_duration - 1.2 * FAST.retry_period - 0.1
        spec = lease(kc)
        assert spec["holderIdentity"] == standby.elector.identity and spec["leaseTransitions"] == 1
    finally:
        a.close()
        b.close()


def test_a_released_lease_is_taken_at_the_next_retry(apiserver, kc):
    a = Candidate(apiserver.url, "a").start()
    assert wait(lambda: a.elector.leading.is_set())
    b = Candidate(apiserver.url, "b").start()
    try:
        time.sleep(0.5)
        assert not b.elector.leading.is_set()
        a.crash()
        released = time.monotonic()
        a.elector.release()
        assert lease(kc)["holderIdentity"] == ""
        assert wait(lambda: b.elector.leading.is_set(), 5)
        assert time.monotonic() - released < FAST.lease_duration
    finally:
        a.close()
        b.close()


def test_a_leader_that_finds_the_lease_taken_stops_leading(apiserver, kc):
    c = KubeClient(apiserver.url)
    e = LeaderElector(c, NS, NAME, "a", FAST)
    stop = threading.Event()
    lost: list[bool] = []
    t = threading.Thread(target=lambda: lost.append(e.run(stop, lambda: None)), daemon=True)
    t.start()
    try:
        assert wait(lambda: e.leading.is_set())
        obj = kc.get(API, "leases", NAME, NS)
        obj["spec"].update(holderIdentity="intruder", leaseDurationSeconds=60)
        kc.update(API, "leases", obj)
        t.join(FAST.renew_deadline + 2)
        assert lost == [True] and e.lost.is_set() and not e.leading.is_set()
        assert lease(kc)["holderIdentity"] == "intruder"  # a lost leader does not write again
    finally:
        stop.set()
        c.close()


def test_the_controller_exits_when_it_loses_the_lease(apiserver, kc):
    env = dict(os.environ, POD_NAME="controller-a")
    p = subprocess.Popen([sys.executable, "-m", "trellis.controller.main", "--server", apiserver.url,
                          "--leader-elect"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait(lambda: (kc.get_or_none(API, "leases", NAME, NS) or {}).get("spec", {}).get(
            "holderIdentity") == "controller-a", 15), p.stdout.read1().decode() if p.poll() is not None else ""
        obj = kc.get(API, "leases", NAME, NS)
        obj["spec"].update(holderIdentity="controller-b", leaseDurationSeconds=60)
        kc.update(API, "leases", obj)
        assert p.wait(15) == 1  # the next renewal (2 s retry) finds another holder
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()


def test_timings_that_allow_two_leaders_are_refused():
    with pytest.raises(ValueError, match="lease duration > renew deadline"):
        Timing(lease_duration=10, renew_deadline=10, retry_period=2)
