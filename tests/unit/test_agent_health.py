"""The agent's /livez and /readyz (the DaemonSet's probes) beside /metrics."""
import httpx

from trellis.agent import health


def test_judge():
    assert health.judge(100, 0, 95, 10, []) == health.Health(True, True, "")
    h = health.judge(100, 0, 95, 10, ["policy"])
    assert h.live and not h.ready and h.why == "waiting for the first sync of: policy"
    assert not health.judge(100, 0, 60, 10, []).live  # three resync periods without a turn of the loop
    assert health.judge(50, 0, 0, 10, ["service proxy"]).live  # the first sync may take a while
    assert not health.judge(100, 0, 0, 10, ["service proxy"]).live


def test_endpoints_and_metrics_share_the_port():
    state = {"h": health.Health(True, False, "waiting for the first sync of: pod network")}

    def metrics(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"trellis_up 1\n"]
    srv = health.serve("127.0.0.1", 0, lambda: state["h"], metrics)
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        assert httpx.get(url + "/livez").status_code == 200
        r = httpx.get(url + "/readyz")
        assert r.status_code == 503 and "pod network" in r.text
        assert httpx.get(url + "/metrics").text == "trellis_up 1\n"
        state["h"] = health.Health(True, True, "")
        assert httpx.get(url + "/readyz").text == "ok\n"
        state["h"] = health.Health(False, False, "the main loop has not synced for 99s")
        assert httpx.get(url + "/livez").status_code == 500
    finally:
        srv.shutdown()
