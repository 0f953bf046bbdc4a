"""The agent's one loop contract (agent/syncloop.py): marks coalesce, a full sync on the timer and
after an error with capped back-off, the typed status, metrics of every sync."""
import threading
from contextlib import contextmanager

from conftest import wait_until
from fakes import FakeInformer

from trellis.agent.syncloop import CHANGES, FULL, Schedule, SyncLoop, SyncStatus


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Recorder:
    """A controller: records each sync's kind; raises while ``fail`` says so."""

    def __init__(self, clock: Clock | None = None, took: float = 0.0) -> None:
        self.kinds: list[str] = []
        self.fail = 0
        self.pending: str | None = None
        self.clock, self.took = clock, took
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def __call__(self, full: bool) -> str | None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.clock is not None:
            self.clock.t += self.took
        self.kinds.append(FULL if full else CHANGES)
        if self.fail:
            self.fail -= 1
            raise RuntimeError(f"nft: busy ({self.fail} more)")
        return self.pending


@contextmanager
def running(loop: SyncLoop):
    stop = threading.Event()
    t = loop.start(stop)
    try:
        yield
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()  # the worker sees stop within WAKE


def test_schedule_first_full_then_changes_then_the_timer():
    s = Schedule(resync=60, beat=10)
    assert s.due(0) == (FULL, 0)
    s.begin(FULL)
    s.succeeded(FULL, 0)
    assert s.due(5) == (None, 10)  # idle: wake within a beat
    s.dirty = True
    assert s.due(5) == (CHANGES, 0)
    s.begin(CHANGES)
    s.succeeded(CHANGES, 5)
    assert s.due(55) == (None, 5)
    assert s.due(60) == (FULL, 0)  # the timer, without any mark


def test_schedule_backs_off_doubling_to_the_beat_and_retries_in_full():
    s = Schedule(resync=300, beat=10)
    s.begin(FULL)
    waits = []
    for now in range(6):
        s.failed(now * 100)
        waits.append(s.retry_at - now * 100)
    assert waits == [0.5, 1, 2, 4, 8, 10]
    s.dirty = True  # a mark during the back-off waits for the retry, which covers it
    assert s.due(500 + 9) == (None, 1)
    assert s.due(500 + 10) == (FULL, 0)
    s.begin(FULL)
    s.succeeded(FULL, 510)
    assert s.failures == 0 and not s.dirty and s.due(511) == (None, 10)
    s.failed(512)
    assert s.retry_at == 512.5  # back from the start after a success


def test_marks_coalesce_while_a_sync_runs():
    ctl = Recorder()
    loop = SyncLoop("routing", ctl, resync=60, beat=1)
    with running(loop):
        wait_until("the first sync", lambda: loop.status().syncs == 1)
        ctl.gate, ctl.entered = threading.Event(), threading.Event()
        loop.mark_dirty()
        assert ctl.entered.wait(5)  # a sync of changes is running, held
        for _ in range(50):
            loop.mark_dirty()
        ctl.gate.set()
        wait_until("one more sync for the 50 marks", lambda: loop.status().syncs == 3)
        assert ctl.kinds == [FULL, CHANGES, CHANGES]
        assert loop.status().busy_since == 0
    assert ctl.kinds == [FULL, CHANGES, CHANGES]  # and none after: no mark was left


def test_timer_runs_full_syncs_without_marks():
    ctl = Recorder()
    loop = SyncLoop("proxy", ctl, resync=0.2, beat=0.1)
    with running(loop):
        wait_until("three timer syncs", lambda: len(ctl.kinds) >= 3)
    assert set(ctl.kinds) == {FULL}


def test_an_error_is_retried_in_full_with_back_off_and_kept_in_the_status():
    clock, wall = Clock(), Clock()
    ctl = Recorder(clock, took=2.5)
    ctl.fail = 2
    loop = SyncLoop("policy", ctl, resync=300, beat=10, clock=clock, wall=wall)
    stop = threading.Event()
    loop.turn(stop)
    s = loop.status()
    assert (s.synced, s.failing, s.errors, s.syncs) == (False, True, 1, 0)
    assert s.last_error == "nft: busy (1 more)" and s.last_error_at == wall.t
    assert s.problem() == "sync failed: nft: busy (1 more)"
    loop.mark_dirty()
    assert loop._plan.due(clock.t) == (None, 0.5)  # the mark waits for the back-off
    clock.t += 0.5
    wall.t += 1
    loop.turn(stop)
    assert loop._plan.retry_at - clock.t == 1.0  # doubled
    clock.t += 1.0
    wall.t += 1
    loop.turn(stop)
    assert ctl.kinds == [FULL, FULL, FULL]  # every retry is a full sync
    s = loop.status()
    # the error is kept, with its time, after the success; ``failing`` says it is not the latest
    assert s == SyncStatus("policy", synced=True, waiting="", failing=False, started_at=1000.0,
                           last_turn_at=1002.0, busy_since=0.0, last_sync_at=1002.0, last_sync_seconds=2.5,
                           last_error="nft: busy (0 more)", last_error_at=1001.0, syncs=1, errors=2)
    assert s.problem() == ""
    # a failed sync of changes is retried as a full one, not as changes
    ctl.fail = 1
    loop.mark_dirty()
    loop.turn(stop)
    assert ctl.kinds[-1] == CHANGES and loop.status().failing
    clock.t += 0.5
    loop.turn(stop)
    assert ctl.kinds[-1] == FULL and not loop.status().failing and loop.status().errors == 3


def test_waiting_and_pending_are_not_synced_and_not_errors():
    clock = Clock()
    listed = threading.Event()
    ctl = Recorder()
    ctl.pending = "waiting for this node's pod CIDR"
    loop = SyncLoop("routing", ctl, resync=10, clock=clock, wall=clock,
                    waiting=lambda: "" if listed.is_set() else "waiting for nodes to list")
    stop = threading.Event()
    loop.turn(stop)
    assert ctl.kinds == [] and loop.status().waiting == "waiting for nodes to list"
    listed.set()
    loop.turn(stop)
    s = loop.status()
    assert ctl.kinds == [FULL] and not s.synced and s.errors == 0 and s.syncs == 1
    assert s.problem() == "waiting for this node's pod CIDR"
    ctl.pending = None
    loop.mark_dirty()
    loop.turn(stop)
    assert loop.status().synced and loop.status().waiting == ""
    ctl.pending = "gone again"
    loop.mark_dirty()
    loop.turn(stop)
    assert loop.status().synced  # synced once since start stays so


def test_observers_see_every_sync():
    from prometheus_client import CollectorRegistry
    from trellis.agent.metrics import SyncMetrics
    registry = CollectorRegistry()
    m = SyncMetrics(registry, "node-1", ["routing", "lb"])
    clock = Clock()
    ctl = Recorder(clock, took=0.3)
    ctl.fail = 1
    loop = SyncLoop("routing", ctl, resync=10, clock=clock, wall=clock)
    loop.observers.append(m.observe)
    stop = threading.Event()
    loop.turn(stop)
    clock.t += 1
    loop.turn(stop)
    labels = {"node": "node-1", "controller": "routing"}
    assert registry.get_sample_value("trellis_agent_sync_errors_total", labels) == 1
    assert registry.get_sample_value("trellis_agent_sync_duration_seconds_count", labels) == 2
    assert abs(registry.get_sample_value("trellis_agent_sync_duration_seconds_sum", labels) - 0.6) < 1e-6
    assert registry.get_sample_value("trellis_agent_sync_duration_seconds_bucket", dict(labels, le="0.25")) == 0
    assert registry.get_sample_value("trellis_agent_sync_errors_total", {"node": "node-1", "controller": "lb"}) == 0


def test_policy_waits_for_required_then_briefly_for_optional_watches():
    from trellis.agent.policy import PolicyController
    pc = PolicyController(None, "node-1", "10.244.0.0/16", optional_grace=60)
    assert pc.loop.status().controller == "policy"
    assert pc._waiting() == "waiting for pods, namespaces, networkpolicies, endpointslices to list"
    for inf in pc.required:
        inf.synced.set()
    assert pc._waiting().startswith("waiting for endpointgroups, contracts, configmaps")
    pc.optional_grace = 0
    assert pc._waiting() == ""  # a real cluster without the CRDs goes on without them


def test_the_proxy_on_the_loop_retries_a_failed_update_in_full_and_still_reports_it(monkeypatch):
    """Handlers only mark; a failed transaction's services are applied by the full retry, and
    ``on_applied`` (the LB announcer's trigger) is told of them then."""
    from trellis.agent import proxier as proxier_mod

    scripts, fail = [], [0]

    def apply(script, what, netns=None):
        if fail[0]:
            fail[0] -= 1
            raise RuntimeError(f"nft: {what}: busy")
        scripts.append(what)
    monkeypatch.setattr(proxier_mod.nft, "apply", apply)
    monkeypatch.setattr(proxier_mod.nft, "list_table", lambda *a: None)
    services, slices = FakeInformer("services", synced=False), FakeInformer("endpointslices", synced=False)
    applied = []
    clock = Clock()
    px = proxier_mod.Proxier(services, slices, "n1", "10.244.0.0/16", on_applied=lambda keys, t: applied.append(keys))
    px.loop = SyncLoop("proxy", px._sync, 300, 10, waiting=px._waiting, clock=clock, wall=clock)
    stop = threading.Event()
    px.loop.turn(stop)
    assert px.loop.status().waiting == "waiting for services and endpointslices to list" and scripts == []
    services.synced.set()
    slices.synced.set()
    px.loop.turn(stop)
    assert scripts == ["full sync of 0 services"] and px.loop.status().synced
    svc = {"metadata": {"namespace": "default", "name": "web"},
           "spec": {"clusterIP": "10.96.0.5", "ports": [{"port": 80, "protocol": "TCP"}]}}
    services.put(svc)
    assert scripts == ["full sync of 0 services"]  # the handler did no work
    sl = {"metadata": {"namespace": "default", "name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
          "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
          "ports": [{"port": 8080, "protocol": "TCP"}]}
    fail[0] = 1
    slices.put(sl)
    px.loop.turn(stop)
    assert px.loop.status().failing and applied == []
    clock.t += 0.5
    px.loop.turn(stop)
    assert scripts[-1] == "full sync of 1 services" and applied == [{"default/web"}]
