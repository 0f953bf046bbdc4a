"""The Ingress conformance suite's echo server (``ingressconformance/echoserver``), stdlib only.

HTTP on ``$HTTP_PORT`` (default 3000); HTTPS on ``$HTTPS_PORT`` (default 8443) only when
``TLS_SERVER_CERT`` and ``TLS_SERVER_PRIVKEY`` name PEM files. ``/health`` answers 200 ``OK``;
any other path and method answers 200 ``application/json`` describing the request:

    path       the raw request target, query included
    host       the Host header as received
    method, proto
    headers    every header but Host, canonical names (``User-Agent``), arrays of values
    namespace, ingress, service, pod   from NAMESPACE, INGRESS_NAME, SERVICE_NAME, POD_NAME
    tls        on HTTPS only: version, serverName, negotiatedProtocol, cipherSuite
"""
from __future__ import annotations

import json
import os
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def canonical(name: str) -> str:
    """Go's CanonicalMIMEHeaderKey: ``x-forwarded-for`` -> ``X-Forwarded-For``."""
    return "-".join(p[:1].upper() + p[1:].lower() for p in name.split("-"))


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "echoserver"
    sys_version = ""
    disable_nagle_algorithm = True

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # every method, as the original's catch-all handler
            return self._echo
        raise AttributeError(name)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:  # the client asked for it (or HTTP/1.0): say so, as Go's server does
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _echo(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path.split("?", 1)[0] == "/health":
            return self._send(200, b"OK", "text/plain")
        headers: dict[str, list[str]] = {}
        for k, v in self.headers.items():
            if k.lower() != "host":
                headers.setdefault(canonical(k), []).append(v)
        out = {"path": self.path, "host": self.headers.get("Host", ""), "method": self.command,
               "proto": self.request_version, "headers": headers,
               "namespace": os.environ.get("NAMESPACE", ""), "ingress": os.environ.get("INGRESS_NAME", ""),
               "service": os.environ.get("SERVICE_NAME", ""), "pod": os.environ.get("POD_NAME", "")}
        if isinstance(self.connection, ssl.SSLSocket):
            c = self.connection
            out["tls"] = {"version": c.version(), "serverName": getattr(c, "sni", "") or "",
                          "negotiatedProtocol": c.selected_alpn_protocol() or "",
                          "cipherSuite": (c.cipher() or ("",))[0]}
        self._send(200, json.dumps(out).encode(), "application/json")

    def log_message(self, fmt: str, *args) -> None:
        pass


class Server(ThreadingHTTPServer):
    request_queue_size = 4096  # listen() backlog as Go's (somaxconn), not socketserver's 5
    daemon_threads = True


def _server(port: int, address: str = "0.0.0.0") -> ThreadingHTTPServer:
    srv = Server((address, port), Echo)
    return srv


def main() -> int:
    from trellis.lab.images import exit_on_sigterm
    exit_on_sigterm()
    http_port = int(os.environ.get("HTTP_PORT", "3000"))
    servers = [_server(http_port)]
    cert, key = os.environ.get("TLS_SERVER_CERT"), os.environ.get("TLS_SERVER_PRIVKEY")
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)

        def remember_sni(sock, name, _ctx):
            sock.sni = name
        ctx.sni_callback = remember_sni
        tls = _server(int(os.environ.get("HTTPS_PORT", "8443")))
        tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
        servers.append(tls)
    print(f"echoserver: http on :{http_port}" + (" and https" if len(servers) > 1 else ""), flush=True)
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
