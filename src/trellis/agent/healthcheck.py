"""healthCheckNodePort servers, as kube-proxy runs them for externalTrafficPolicy Local.

An external load balancer (or a test) asks ``http://<node>:<healthCheckNodePort>/``
whether this node should get the service's traffic: 200 with the count of
local endpoints when there is one, 503 when there is none.
"""
from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

log = logging.getLogger("trellis.agent.healthcheck")


class HealthChecks:
    def __init__(self, local_endpoints: Callable[[str, str], int], bind: str = "0.0.0.0") -> None:
        self.local_endpoints, self.bind = local_endpoints, bind
        self.servers: dict[int, tuple[tuple[str, str], ThreadingHTTPServer]] = {}

    def _server(self, port: int, svc: tuple[str, str]) -> ThreadingHTTPServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ns, name = owner.servers[port][0]
                n = owner.local_endpoints(ns, name)
                body = json.dumps({"service": {"namespace": ns, "name": name}, "localEndpoints": n}).encode()
                self.send_response(200 if n > 0 else 503)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a) -> None:
                pass

        srv = ThreadingHTTPServer((self.bind, port), Handler)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True, name=f"healthcheck-{port}").start()
        return srv

    def ensure(self, want: dict[int, tuple[str, str]]) -> None:
        for port in list(self.servers):
            if port not in want:
                self.servers.pop(port)[1].shutdown()
        for port, svc in want.items():
            if port in self.servers:
                self.servers[port] = (svc, self.servers[port][1])
                continue
            try:
                self.servers[port] = (svc, self._server(port, svc))
            except OSError as e:
                log.warning("healthCheckNodePort %d for %s/%s: %s", port, *svc, e)

    def stop(self) -> None:
        self.ensure({})
