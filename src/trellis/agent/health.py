"""The agent's health, judged from its controllers' ``SyncStatus`` (agent/syncloop.py), and the
endpoints beside /metrics that the DaemonSet's probes, operators and CNI STATUS read.

- ready: every controller has synced once since the agent started (routing with the pod network
  up, proxy, policy, LB announcement). A later failing sync does not take readiness back: the
  kernel keeps the last good state, and an unready agent would only stall the rolling update.
- live: every worker turned within ``LIVE_BEATS`` beats (the agent's resync period; a worker wakes
  at least once a beat); before its first sync a worker gets ``FIRST_SYNC_GRACE`` more (a first
  full sync may be long). Waiting for the API to list is a turn: a restart would not bring it back.

Endpoints (paths and codes as the probes in manifests/workloads.py expect):

- ``/livez``, ``/readyz`` (and ``/healthz`` = livez): 200 ``ok``, else 500 (livez) / 503 (readyz)
  with kube-apiserver's listing; ``?verbose`` gives the listing also when all is well:
  ``[+]routing ok`` / ``[-]policy failed: <reason>``, then ``readyz check passed|failed``.
- ``/statusz``: JSON, always 200: ``{"ready", "live", "controllers": [SyncStatus as a dict]}``.

Every other path is Prometheus' exposition (prometheus_client's WSGI app).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass
from socketserver import ThreadingMixIn
from typing import Callable, Iterable
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from trellis.agent.syncloop import SyncStatus

LIVE_BEATS = 3
FIRST_SYNC_GRACE = 30.0


@dataclass(frozen=True)
class Check:
    name: str
    reason: str = ""  # "" when it passes

    @property
    def ok(self) -> bool:
        return not self.reason


@dataclass(frozen=True)
class Health:
    live: tuple[Check, ...]
    ready: tuple[Check, ...]

    @property
    def is_live(self) -> bool:
        return all(c.ok for c in self.live)

    @property
    def is_ready(self) -> bool:
        return all(c.ok for c in self.ready)


def judge(now: float, statuses: Iterable[SyncStatus], beat: float) -> Health:
    """Pure: ``now`` in Unix seconds, ``beat`` the agent's resync period."""
    live, ready = [], []
    for s in statuses:
        last = s.last_turn_at or s.started_at
        limit = LIVE_BEATS * beat + (0 if s.synced else FIRST_SYNC_GRACE)
        why = ""
        if now - last > limit:
            why = (f"in one sync for {now - s.busy_since:.0f}s" if s.busy_since
                   else f"the worker has not turned for {now - last:.0f}s")
        live.append(Check(s.controller, why))
        ready.append(Check(s.controller, s.problem()))
    return Health(tuple(live), tuple(ready))


@dataclass(frozen=True)
class NotReady:
    """CNI STATUS' error 50: ``msg`` names the controllers not synced, ``details`` why."""
    msg: str
    details: str = ""


def not_ready(statuses: Iterable[SyncStatus]) -> NotReady | None:
    behind = [s for s in statuses if not s.synced]
    if not behind:
        return None
    details = []
    for s in behind:
        line = f"{s.controller}: {s.problem()}"
        if s.last_error and not s.failing:
            line += f" (last error: {s.last_error})"
        details.append(line)
    return NotReady(", ".join(s.controller for s in behind) + " not synced yet", "; ".join(details))


def listing(kind: str, checks: Iterable[Check]) -> str:
    """kube-apiserver's verbose health text."""
    checks = list(checks)
    lines = [f"[+]{c.name} ok" if c.ok else f"[-]{c.name} failed: {c.reason}" for c in checks]
    lines.append(f"{kind} check {'passed' if all(c.ok for c in checks) else 'failed'}")
    return "\n".join(lines) + "\n"


def status_doc(health: Health, statuses: Iterable[SyncStatus]) -> dict:
    return {"ready": health.is_ready, "live": health.is_live, "controllers": [asdict(s) for s in statuses]}


def respond(path: str, query: str, now: float, statuses: list[SyncStatus], beat: float) -> tuple[int, str, str] | None:
    """Pure: (HTTP code, content type, body) for a health path, None for any other."""
    kind = {"/livez": "livez", "/healthz": "livez", "/readyz": "readyz"}.get(path)
    h = judge(now, statuses, beat)
    if path == "/statusz":
        return 200, "application/json", json.dumps(status_doc(h, statuses), indent=1) + "\n"
    if kind is None:
        return None
    checks, ok = (h.live, h.is_live) if kind == "livez" else (h.ready, h.is_ready)
    code = 200 if ok else (500 if kind == "livez" else 503)
    verbose = "verbose" in parse_qs(query, keep_blank_values=True)
    body = listing(kind, checks) if verbose or not ok else "ok\n"
    return code, "text/plain; charset=utf-8", body


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


REASONS = {200: "OK", 500: "Internal Server Error", 503: "Service Unavailable"}


def serve(addr: str, port: int, statuses: Callable[[], list[SyncStatus]], beat: float, metrics_app,
          now: Callable[[], float] | None = None) -> _Server:
    clock = now or time.time

    def app(environ, start_response):
        got = respond(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""), clock(), statuses(), beat)
        if got is None:
            return metrics_app(environ, start_response)
        code, ctype, text = got
        body = text.encode()
        start_response(f"{code} {REASONS[code]}", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]
    srv = make_server(addr, port, app, _Server, handler_class=_Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True, name="metrics-http").start()
    return srv
