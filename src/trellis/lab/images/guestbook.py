"""The guestbook frontend (the classic Kubernetes example), as a small stdlib web app.

Same protocol as the original ``guestbook.php``: ``GET /guestbook.php?cmd=set&
key=messages&value=...`` writes to the redis master; ``cmd=get`` reads from a
redis replica. Hosts come from DNS names (``redis-master``, ``redis-slave``) or,
with GET_HOSTS_FROM=env, from the service environment variables. Port: 80, or
$PORT.
"""
from __future__ import annotations

import html
import json
import os
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PAGE = """<!doctype html><html><head><title>Guestbook</title></head><body>
<h2>Guestbook (served by {pod})</h2>
<form onsubmit="fetch('guestbook.php?cmd=set&key=messages&value='+encodeURIComponent(
 (window.m||'')+document.getElementById('e').value+','));window.m=undefined;setTimeout(load,200);return false;">
<input id="e" placeholder="message"><button>Submit</button></form><div id="out"></div>
<script>function load(){{fetch('guestbook.php?cmd=get&key=messages').then(r=>r.json()).then(d=>{{window.m=d.data;
document.getElementById('out').innerText=(d.data||'').split(',').filter(x=>x).join('\\n');}})}};load();</script>
</body></html>"""


class RedisError(Exception):
    pass


def redis_command(host: str, *args: str, port: int = 6379, timeout: float = 2.0):
    """One RESP command over a fresh connection; returns str, int, None or list."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        req = f"*{len(args)}\r\n" + "".join(f"${len(a.encode())}\r\n{a}\r\n" for a in args)
        s.sendall(req.encode())
        f = s.makefile("rb")
        return _read_reply(f)


def _read_reply(f):
    line = f.readline()
    if not line:
        raise RedisError("connection closed")
    kind, rest = line[:1], line[1:-2].decode()
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisError(rest)
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode()
    if kind == b"*":
        return [_read_reply(f) for _ in range(int(rest))]
    raise RedisError(f"bad reply {line!r}")


def hosts() -> tuple[str, str]:
    if os.environ.get("GET_HOSTS_FROM", "dns") == "env":
        master = os.environ.get("REDIS_MASTER_SERVICE_HOST", "redis-master")
        replica = (os.environ.get("REDIS_SLAVE_SERVICE_HOST") or os.environ.get("REDIS_REPLICA_SERVICE_HOST")
                   or os.environ.get("REDIS_FOLLOWER_SERVICE_HOST") or master)
        return master, replica
    return "redis-master", "redis-slave"


class Handler(BaseHTTPRequestHandler):
    server_version = "guestbook/trellis"

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlparse(self.path)
        if url.path in ("/", "/index.html"):
            pod = html.escape(os.environ.get("HOSTNAME") or socket.gethostname())
            return self._send(200, PAGE.format(pod=pod).encode(), "text/html")
        if url.path == "/healthz":
            return self._send(200, b"ok\n", "text/plain")
        if url.path != "/guestbook.php":
            return self._send(404, b"not found\n", "text/plain")
        q = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        master, replica = hosts()
        key = q.get("key", "messages")
        try:
            if q.get("cmd") == "set":
                redis_command(master, "SET", key, q.get("value", ""))
                out = {"message": "Updated"}
            else:
                try:
                    value = redis_command(replica, "GET", key)
                except (OSError, RedisError):
                    value = redis_command(master, "GET", key)  # no replica reachable: read the master
                out = {"data": value or ""}
            return self._send(200, json.dumps(out).encode(), "application/json")
        except (OSError, RedisError) as e:
            return self._send(503, json.dumps({"error": f"redis: {e}"}).encode(), "application/json")

    def log_message(self, fmt: str, *args) -> None:
        sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))
        sys.stdout.flush()


def main() -> int:
    from trellis.lab.images import exit_on_sigterm
    exit_on_sigterm()
    port = int(os.environ.get("PORT", "80"))
    srv = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    print(f"guestbook frontend on :{port}", flush=True)
    srv.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
