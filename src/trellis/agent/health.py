"""The agent's health endpoints beside /metrics, for the DaemonSet's probes.

- ``/livez``: 200 while the agent's main loop turns (it syncs at least every resync period);
  500 once it has not for three periods: the kubelet restarts a wedged agent.
- ``/readyz``: 200 once every controller has synced since start (pod network, service proxy,
  policy); else 503 naming what it waits for. Ready is what the DaemonSet's rolling update waits on.

Every other path is Prometheus' exposition (prometheus_client's WSGI app).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool
    why: str  # what is wrong, or what readiness waits for ("" when both are fine)


def judge(now: float, started: float, heartbeat: float, resync: float, waiting: list[str]) -> Health:
    """Pure: ``heartbeat`` is when the main loop last finished a sync (0: never); ``waiting`` names
    the controllers not synced once yet."""
    last = heartbeat or started
    live = now - last <= 3 * resync + 30 * (not heartbeat)  # the first sync may wait on the API
    why = "" if live else f"the main loop has not synced for {now - last:.0f}s"
    if not why and waiting:
        why = "waiting for the first sync of: " + ", ".join(waiting)
    return Health(live, live and not waiting, why)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve(addr: str, port: int, health: Callable[[], Health], metrics_app) -> _Server:
    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path in ("/livez", "/readyz", "/healthz"):
            h = health()
            ok = h.live if path == "/livez" else h.ready
            body = (("ok" if ok else h.why) + "\n").encode()
            start_response("200 OK" if ok else ("500 Internal Server Error" if path == "/livez"
                                                 else "503 Service Unavailable"),
                           [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))])
            return [body]
        return metrics_app(environ, start_response)
    srv = make_server(addr, port, app, _Server, handler_class=_Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True, name="metrics-http").start()
    return srv


def waiting(agent) -> list[str]:
    out = []
    if agent.network is None:
        out.append(f"pod network ({agent.why_not_ready})")
    if not agent.proxier.syncs:
        out.append("service proxy")
    if not agent.policy.syncs:
        out.append("policy")
    return out


def of(agent) -> Callable[[], Health]:
    started = time.time()
    return lambda: judge(time.time(), started, agent.heartbeat, agent.resync, waiting(agent))
