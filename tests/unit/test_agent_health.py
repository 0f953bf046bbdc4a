"""The agent's health from its controllers' statuses (agent/health.py): ready, live, kube-apiserver's
verbose listing, /statusz JSON, and the endpoints beside /metrics (the DaemonSet's probes)."""
import json

import httpx

from trellis.agent import health
from trellis.agent.syncloop import SyncStatus


def ok(name, at=100.0):
    return SyncStatus(name, synced=True, started_at=0.0, last_turn_at=at, last_sync_at=at, syncs=1)


def test_ready_only_once_every_controller_synced():
    started = [SyncStatus(n, started_at=0.0, last_turn_at=99.0) for n in ("routing", "proxy", "policy", "lb")]
    h = health.judge(100, started, 10)
    assert h.is_live and not h.is_ready
    three = [ok("routing"), ok("proxy"), ok("policy"), started[3]]
    assert not health.judge(100, three, 10).is_ready
    assert health.not_ready(three) == health.NotReady("lb not synced yet", "lb: not synced yet")
    four = three[:3] + [ok("lb")]
    assert health.judge(100, four, 10).is_ready and health.not_ready(four) is None
    # a later failure does not take readiness back (the kernel keeps the last good state)
    failing = four[:3] + [SyncStatus("lb", synced=True, failing=True, last_error="x", last_turn_at=100.0)]
    assert health.judge(100, failing, 10).is_ready


def test_live_while_every_worker_turns():
    assert health.judge(130, [ok("proxy", at=100.0)], 10).is_live          # three beats
    h = health.judge(131, [ok("routing"), ok("proxy", at=100.0)], 10)
    assert not h.is_live and h.live[1] == health.Check("proxy", "the worker has not turned for 31s")
    stuck = SyncStatus("policy", synced=True, last_turn_at=100.0, busy_since=95.0)
    assert health.judge(140, [stuck], 10).live[0].reason == "in one sync for 45s"
    # before its first sync a worker gets 30 s more
    first = SyncStatus("policy", started_at=100.0, busy_since=100.0)
    assert health.judge(159, [first], 10).is_live and not health.judge(161, [first], 10).is_live


def test_verbose_and_json_rendering():
    sts = [ok("routing"), SyncStatus("policy", failing=True, last_error="nft: no table", last_error_at=99.0,
                                     errors=2, started_at=0.0, last_turn_at=99.0)]
    code, ctype, body = health.respond("/readyz", "verbose", 100, sts, 10)
    assert code == 503 and body == "[+]routing ok\n[-]policy failed: sync failed: nft: no table\nreadyz check failed\n"
    assert health.respond("/readyz", "", 100, sts, 10)[2] == body  # a failure always lists
    assert health.respond("/livez", "", 100, sts, 10) == (200, "text/plain; charset=utf-8", "ok\n")
    assert health.respond("/livez", "verbose", 100, sts, 10)[2] == "[+]routing ok\n[+]policy ok\nlivez check passed\n"
    assert health.respond("/livez", "", 200, sts, 10)[0] == 500
    code, ctype, text = health.respond("/statusz", "", 100, sts, 10)
    doc = json.loads(text)
    assert (code, ctype, doc["ready"], doc["live"]) == (200, "application/json", False, True)
    assert doc["controllers"][1] == {"controller": "policy", "synced": False, "waiting": "", "failing": True,
                                     "started_at": 0.0, "last_turn_at": 99.0, "busy_since": 0.0,
                                     "last_sync_at": 0.0, "last_sync_seconds": 0.0, "last_error": "nft: no table",
                                     "last_error_at": 99.0, "syncs": 0, "errors": 2}
    assert health.respond("/metrics", "", 100, sts, 10) is None


def test_endpoints_and_metrics_share_the_port():
    sts = [SyncStatus("routing", waiting="waiting for this node's pod CIDR", started_at=100.0, last_turn_at=100.0)]
    clock = [101.0]

    def metrics(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"trellis_up 1\n"]
    srv = health.serve("127.0.0.1", 0, lambda: list(sts), 10, metrics, now=lambda: clock[0])
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        assert httpx.get(url + "/livez").status_code == 200
        r = httpx.get(url + "/readyz")
        assert r.status_code == 503 and "[-]routing failed: waiting for this node's pod CIDR" in r.text
        assert httpx.get(url + "/metrics").text == "trellis_up 1\n"
        assert httpx.get(url + "/statusz").json()["controllers"][0]["waiting"] == "waiting for this node's pod CIDR"
        sts[0] = SyncStatus("routing", synced=True, started_at=100.0, last_turn_at=101.0, syncs=1)
        assert httpx.get(url + "/readyz").text == "ok\n"
        assert httpx.get(url + "/readyz?verbose").text == "[+]routing ok\nreadyz check passed\n"
        clock[0] = 200.0
        r = httpx.get(url + "/livez")
        assert r.status_code == 500 and "[-]routing failed: the worker has not turned for 99s" in r.text
    finally:
        srv.shutdown()
