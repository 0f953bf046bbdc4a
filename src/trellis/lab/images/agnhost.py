"""The lab's test image, in the spirit of Kubernetes' agnhost.

``serve``: listen on every declared containerPort (from TRELLIS_CONTAINER_PORTS,
``80/TCP,81/UDP``, or ``--port 80/TCP``) and answer with the pod name. TCP: an
HTTP request gets an HTTP answer, anything else (or silence) the bare name.
UDP: every datagram gets the name back. SCTP is logged and skipped (this
kernel has no SCTP sockets).

``connect HOST:PORT [--protocol tcp|udp] [--timeout S]``: print the answer and
exit 0, or print why not and exit 1. Stdlib only, so it starts fast.
"""
from __future__ import annotations

import argparse
import os
import select
import socket
import sys
import threading


def hostname() -> str:
    return os.environ.get("HOSTNAME") or socket.gethostname()


def _tcp_client(conn: socket.socket) -> None:
    name = hostname().encode()
    try:
        conn.settimeout(0.5)
        try:
            data = conn.recv(4096)
        except socket.timeout:
            data = b""
        if data.startswith(b"clientip"):  # who does the server see? (no NAT between pods)
            conn.sendall(conn.getpeername()[0].encode() + b"\n")
        elif data.startswith(b"echo"):  # echo until the client closes: a long-lived connection
            conn.settimeout(None)
            rest = data[5:]
            if rest:
                conn.sendall(rest)
            while True:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                conn.sendall(chunk)
        elif data[:4] in (b"GET ", b"HEAD", b"POST", b"PUT "):
            body = name + b"\n"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n%s" % (len(body), body))
        else:
            conn.sendall(name + b"\n")
    except OSError:
        pass
    finally:
        conn.close()


def serve_tcp(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    while True:
        conn, _ = s.accept()
        threading.Thread(target=_tcp_client, args=(conn,), daemon=True).start()


def serve_udp(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    name = hostname().encode() + b"\n"
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(addr[0].encode() + b"\n" if data.startswith(b"clientip") else name, addr)


def parse_ports(specs: list[str]) -> list[tuple[int, str]]:
    out = []
    for spec in specs:
        for item in spec.split(","):
            if not item.strip():
                continue
            port, _, proto = item.strip().partition("/")
            out.append((int(port), (proto or "TCP").upper()))
    return out


def cmd_serve(args) -> int:
    ports = parse_ports(args.port or [os.environ.get("TRELLIS_CONTAINER_PORTS", "")])
    if not ports:
        ports = [(80, "TCP")]
    threads = []
    for port, proto in ports:
        if proto == "SCTP":
            print(f"port {port}/SCTP declared: skipped, this kernel has no SCTP sockets", flush=True)
            continue
        fn = serve_tcp if proto == "TCP" else serve_udp
        t = threading.Thread(target=fn, args=(port,), daemon=True)
        t.start()
        threads.append(t)
        print(f"serving {port}/{proto} as {hostname()}", flush=True)
    for t in threads:
        t.join()
    return 0


def cmd_hold(args) -> int:
    """Keep one TCP connection and check an echo every 100 ms for --seconds; exit 1 on any loss."""
    import time
    host, _, port = args.target.rpartition(":")
    try:
        s = socket.create_connection((host, int(port)), timeout=2)
        s.sendall(b"echo\n")
        s.settimeout(args.timeout)
        deadline, n = time.monotonic() + args.seconds, 0
        while time.monotonic() < deadline:
            msg = f"{n}\n".encode()
            s.sendall(msg)
            got = b""
            while not got.endswith(b"\n"):
                chunk = s.recv(64)
                if not chunk:
                    raise OSError("connection closed by the server")
                got += chunk
            if got != msg:
                raise OSError(f"echo mismatch: sent {msg!r}, got {got!r}")
            n += 1
            time.sleep(0.1)
        print(f"held {args.target} for {args.seconds}s, {n} echoes", flush=True)
        return 0
    except OSError as e:
        print(f"hold {args.target}: {e}", flush=True)
        return 1


# What a probe saw (the words trellis probe and trellis explain share):
OK, REFUSED, DENIED, TIMEOUT, UNREACHABLE = "ok", "refused", "denied", "timeout", "unreachable"


def classify(err: OSError) -> str:
    """An error of connect/send/recv -> what it tells about the path. A policy rejects with ICMP
    administratively prohibited (EHOSTUNREACH, at once); a host with nothing on the port answers
    with a TCP reset or ICMP port unreachable (ECONNREFUSED); no route is ENETUNREACH."""
    import errno
    if isinstance(err, socket.timeout) or err.errno in (errno.ETIMEDOUT, errno.EAGAIN):
        return TIMEOUT
    if err.errno in (errno.ECONNREFUSED, errno.ECONNRESET):
        return REFUSED
    if err.errno in (errno.EHOSTUNREACH, errno.EACCES, errno.EPERM):
        return DENIED
    if err.errno == errno.ENETUNREACH:
        return UNREACHABLE
    return TIMEOUT


# the ingress controller's own answers, by their first line (trellis.ingress.haproxy)
INGRESS_SERVER = "trellis-ingress"
UPSTREAM = "upstream"  # the ingress connected to no endpoint: the caller looks at that leg itself
HTTP_ANSWER_WAIT = 15.0  # haproxy tries a rejected endpoint for about 7 s before its 503


def probe_http(target: str, timeout: float) -> tuple[str, str]:
    """``http[s]://HOST/PATH@IP:PORT``: a GET with that Host (and SNI) to IP:PORT. ``ok`` when
    an endpoint answered; ``refused`` when the ingress says no rule matches or the backend has
    no ready endpoint; ``upstream`` when it could connect to no endpoint; a failed connection to
    IP:PORT itself is classified as any other. A 308 to https is followed, to the same IP."""
    import http.client
    import ssl
    from urllib.parse import urlsplit
    url, _, addr = target.rpartition("@")
    ip, _, port = addr.rpartition(":")
    u = urlsplit(url)
    for _ in range(2):
        if u.scheme == "https":
            ctx = ssl.create_default_context()
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            conn = http.client.HTTPSConnection(ip, int(port), timeout=timeout, context=ctx)
            raw = socket.create_connection((ip, int(port)), timeout=timeout)
            conn.sock = ctx.wrap_socket(raw, server_hostname=u.hostname)
        else:
            conn = http.client.HTTPConnection(ip, int(port), timeout=timeout)
        try:
            if conn.sock is None:
                conn.connect()
            conn.sock.settimeout(max(timeout, HTTP_ANSWER_WAIT))
            conn.request("GET", u.path or "/", headers={"Host": u.netloc, "Connection": "close"})
            r = conn.getresponse()
            body = r.read(512).decode(errors="replace")
        except OSError as e:
            return classify(e), e.strerror or str(e)
        finally:
            conn.close()
        ours = r.getheader("Server") == INGRESS_SERVER
        first = body.splitlines()[0] if body else ""
        if r.status == 308 and (r.getheader("Location") or "").startswith("https://") and u.scheme == "http":
            u, port = urlsplit("https://" + u.netloc + (u.path or "/")), "443"
            continue
        if ours and first.startswith(("404 no ingress rule", "503 no ready endpoints")):
            return REFUSED, first
        if ours and r.status in (502, 503, 504):
            return UPSTREAM, first
        return OK, f"HTTP {r.status}"
    return OK, "HTTP 308"


def probe_one(target: str, timeout: float, ask: bytes = b"hostname\n") -> tuple[str, str]:
    """``ip/icmp``, ``host:port/tcp|udp`` or ``http[s]://HOST/PATH@IP:PORT`` -> (outcome, the
    answer or the error)."""
    import subprocess
    if target.startswith(("http://", "https://")):
        return probe_http(target, timeout)
    addr, _, proto = target.rpartition("/")
    if proto == "icmp":
        p = subprocess.run(["ping", "-c1", "-n", "-W", str(max(1, round(timeout))), addr], capture_output=True,
                           text=True)
        out = p.stdout + p.stderr
        if p.returncode == 0:
            return OK, "echo reply"
        if "rohibited" in out or "filtered" in out:  # ICMP administratively prohibited / packet filtered
            return DENIED, out.strip().splitlines()[1] if len(out.splitlines()) > 1 else out.strip()
        if "unreachable" in out.lower() and "Network" in out:
            return UNREACHABLE, "network unreachable"
        return TIMEOUT, "no reply"
    host, _, port = addr.rpartition(":")
    try:
        if proto == "udp":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.connect((host, int(port)))  # connected: ICMP errors come back as errors
                s.send(ask)
                return OK, s.recv(2048).decode(errors="replace").strip()
        with socket.create_connection((host, int(port)), timeout=timeout) as s:
            s.sendall(ask)
            s.settimeout(timeout)
            return OK, s.recv(4096).decode(errors="replace").strip() or "connected"
    except OSError as e:
        return classify(e), e.strerror or str(e)


def cmd_matrix(args) -> int:
    """Probe many targets in parallel and print {target: [outcome, detail]} as JSON."""
    import json
    from concurrent.futures import ThreadPoolExecutor
    import time
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda t: probe_one(t, args.timeout), args.targets))
        # NOTE: Linux sends a destination at most one ICMP error per second after a burst of six
        # (net.ipv4.icmp_ratelimit, icmp_ratemask): a client rejected many times at once sees the
        # later rejects as timeouts. Every timeout is tried again, one per second, to tell a
        # rate-limited reject from a real drop.
        again = [i for i, (outcome, _) in enumerate(answers) if outcome == TIMEOUT]
        start = time.monotonic()

        def retry(n_i):
            n, i = n_i
            time.sleep(max(0.0, start + 1.05 * (n + 1) - time.monotonic()))
            return i, probe_one(args.targets[i], args.timeout)
        for i, answer in pool.map(retry, enumerate(again)):
            answers[i] = answer
    print(json.dumps(dict(zip(args.targets, answers))), flush=True)
    return 0


def cmd_connect(args) -> int:
    """One line per attempt; each attempt is a new connection (a new source port)."""
    return max(_connect_once(args) for _ in range(max(1, args.count)))


def _connect_once(args) -> int:
    host, _, port = args.target.rpartition(":")
    host = host.strip("[]")
    ask = b"clientip\n" if args.ask == "clientip" else b"hostname\n"
    try:
        if args.protocol == "udp":
            s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(args.timeout)
            s.connect((host, int(port)))  # connected: ICMP errors (port unreachable) are reported
            s.send(ask)
            try:
                data = s.recv(2048)
            finally:
                s.close()
        else:
            s = socket.create_connection((host, int(port)), timeout=args.timeout)
            s.sendall(ask)
            r, _, _ = select.select([s], [], [], args.timeout)
            data = s.recv(4096) if r else b""
            s.close()
            if not data:
                print("connected, no answer", flush=True)
                return 0
        print(data.decode(errors="replace").strip(), flush=True)
        return 0
    except OSError as e:
        print(f"connect {args.target}/{args.protocol}: {e.strerror or e}", flush=True)
        return 1


def main(argv: list[str] | None = None) -> int:
    from trellis.lab.images import exit_on_sigterm
    exit_on_sigterm()
    p = argparse.ArgumentParser(prog="agnhost", description="trellis lab test server and client")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="answer with the pod name on the declared ports")
    s.add_argument("--port", action="append", help="PORT/PROTO (repeatable); default from the pod spec")
    c = sub.add_parser("connect", help="connect to HOST:PORT and print the answer")
    c.add_argument("target")
    c.add_argument("--protocol", choices=["tcp", "udp"], default="tcp")
    c.add_argument("--timeout", type=float, default=2.0)
    c.add_argument("--count", type=int, default=1, help="attempts, each a new connection")
    c.add_argument("--ask", choices=["hostname", "clientip"], default="hostname",
                   help="what to ask: the server's pod name, or the address it sees us as")
    h = sub.add_parser("hold", help="hold one TCP connection, checking an echo every 100 ms")
    h.add_argument("target")
    h.add_argument("--seconds", type=float, default=10)
    h.add_argument("--timeout", type=float, default=3.0)
    m = sub.add_parser("matrix", help="probe targets (ip/icmp, host:port/tcp, host:port/udp); print "
                       "{target: [ok|refused|denied|timeout|unreachable, detail]} as JSON")
    m.add_argument("targets", nargs="+")
    m.add_argument("--timeout", type=float, default=1.5)
    args = p.parse_args(argv)
    return {"serve": cmd_serve, "connect": cmd_connect, "hold": cmd_hold, "matrix": cmd_matrix}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
