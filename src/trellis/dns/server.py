"""``trellis dns``: the cluster DNS server (the job CoreDNS does), on UDP and TCP port 53.

Watches Services, EndpointSlices and Pods and rebuilds its record index
(``records.build``) at most every ``--debounce`` seconds after a change, so
answers follow the cluster within a second. Names in the cluster zone and
reverse names of the cluster's address ranges are answered authoritatively
(NXDOMAIN with the zone's SOA when unknown). Anything else is forwarded to
``--upstream`` when one is given, and refused otherwise: the server never sends
a query anywhere it was not told to.

Wire format by dnslib; one thread serves UDP (no thread per query), one per
TCP connection.
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import socket
import socketserver
import struct
import sys
import threading
import time

from dnslib import AAAA, CNAME, PTR, QTYPE, RCODE, RR, SOA, SRV, TXT, A, DNSRecord

from trellis.dns.records import TTL, Index, build
from trellis.kube.client import KubeClient, client_for
from trellis.kube.informer import Informer

log = logging.getLogger("trellis.dns")
RDATA = {"A": A, "AAAA": AAAA, "CNAME": CNAME, "PTR": PTR, "TXT": TXT}


class Resolver:
    def __init__(self, zone: str = "cluster.local", cluster_ranges: list[str] | None = None,
                 upstream: str | None = None) -> None:
        self.index = Index(zone)
        self.zone = zone
        self.ranges = [ipaddress.ip_network(r) for r in cluster_ranges or []]
        self.upstream = upstream
        self.queries = 0

    def _authoritative(self, qname: str) -> bool:
        if self.index.authoritative_for(qname):
            return True
        name = qname.lower().rstrip(".")
        if name.endswith(".in-addr.arpa"):
            parts = name[: -len(".in-addr.arpa")].split(".")
            if len(parts) == 4 and all(p.isdigit() for p in parts):
                try:
                    ip = ipaddress.ip_address(".".join(reversed(parts)))
                except ValueError:
                    return False
                return any(ip in r for r in self.ranges)
        return (name, "PTR") in self.index.records

    def _soa(self) -> RR:
        return RR(self.zone, QTYPE.SOA, ttl=TTL, rdata=SOA(f"ns.dns.{self.zone}", f"hostmaster.{self.zone}",
                                                           (int(time.time()), 7200, 1800, 86400, TTL)))

    def answer(self, request: DNSRecord) -> DNSRecord:
        self.queries += 1
        reply = request.reply()
        q = request.q
        qname, qtype = str(q.qname), QTYPE.get(q.qtype)
        if not self._authoritative(qname):
            return self._forward(request, reply)
        reply.header.aa = 1
        rcode, recs = self.index.lookup(qname, qtype)
        asked = qname.lower().rstrip(".")
        for r in recs:
            owner = qname if r.name == asked else r.name  # a followed CNAME's target owns its records
            if r.rtype == "SRV":
                prio, weight, port, target = r.data
                rdata = SRV(prio, weight, port, target)
            else:
                rdata = RDATA[r.rtype](r.data)
            reply.add_answer(RR(owner, getattr(QTYPE, r.rtype), ttl=TTL, rdata=rdata))
            if r.rtype == "SRV":  # additional section: the targets' addresses
                for a in self.index.records.get((r.data[3], "A"), []):
                    reply.add_ar(RR(r.data[3], QTYPE.A, ttl=TTL, rdata=A(a.data)))
        if rcode == "NXDOMAIN":
            reply.header.rcode = RCODE.NXDOMAIN
        if not recs or rcode == "NXDOMAIN":
            reply.add_auth(self._soa())
        return reply

    def _forward(self, request: DNSRecord, reply: DNSRecord) -> DNSRecord:
        if not self.upstream:
            reply.header.rcode = RCODE.REFUSED
            return reply
        host, _, port = self.upstream.partition(":")
        try:
            return DNSRecord.parse(request.send(host, int(port or 53), timeout=2))
        except (OSError, socket.timeout, Exception):  # a bad upstream answer is SERVFAIL, never a crash
            reply.header.rcode = RCODE.SERVFAIL
            return reply

    def handle(self, data: bytes) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None  # not DNS: drop, as servers do
        try:
            return self.answer(request).pack()
        except Exception as e:  # never let one query kill the server
            log.warning("query %s: %s", request.q.qname, e)
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()


class Watcher:
    """Keeps the resolver's index equal to the cluster, rebuilt after changes (debounced)."""

    def __init__(self, client: KubeClient, resolver: Resolver, debounce: float = 0.1) -> None:
        self.resolver, self.debounce = resolver, debounce
        self.informers = [Informer(client, "v1", "services"), Informer(client, "discovery.k8s.io/v1", "endpointslices"),
                          Informer(client, "v1", "pods")]
        self.changed = threading.Event()
        self.built = threading.Event()
        for inf in self.informers:
            inf.add_handler(lambda *a: self.changed.set())

    def run(self, stop: threading.Event) -> None:
        for inf in self.informers:
            inf.start()
        for inf in self.informers:
            inf.synced.wait()
        self.changed.set()
        while not stop.is_set():
            if not self.changed.wait(0.5):
                continue
            stop.wait(self.debounce)
            self.changed.clear()
            svcs, slices, pods = (inf.items() for inf in self.informers)
            self.resolver.index = build(svcs, slices, pods, self.resolver.zone)
            self.built.set()


def ready_server(port: int, built: threading.Event) -> None:
    """GET /ready: 200 once the first index is built (the readiness probe), else 503."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = built.is_set()
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"OK" if ok else b"syncing")

        def log_message(self, *a) -> None:
            pass

    srv = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True, name="dns-ready").start()


def serve_udp(sock: socket.socket, resolver: Resolver, stop: threading.Event) -> None:
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(4096)
        except socket.timeout:
            continue
        except OSError:
            return
        out = resolver.handle(data)
        if out is not None:
            if len(out) > 512:  # too big for plain UDP: truncated, the client retries over TCP
                r = DNSRecord.parse(out)
                r.rr, r.auth, r.ar = [], [], []
                r.header.tc = 1
                out = r.pack()
            sock.sendto(out, addr)


def tcp_server(addr: tuple[str, int], resolver: Resolver) -> socketserver.ThreadingTCPServer:
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(5)
            try:
                while True:
                    head = self.request.recv(2)
                    if len(head) < 2:
                        return
                    n = struct.unpack("!H", head)[0]
                    data = b""
                    while len(data) < n:
                        chunk = self.request.recv(n - len(data))
                        if not chunk:
                            return
                        data += chunk
                    out = resolver.handle(data)
                    if out is None:
                        return
                    self.request.sendall(struct.pack("!H", len(out)) + out)
            except OSError:
                return

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    srv = socketserver.ThreadingTCPServer(addr, Handler)
    srv.daemon_threads = True
    return srv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trellis dns", description="The trellis cluster DNS server.")
    p.add_argument("--server", help="API server URL (default: in-cluster config)")
    p.add_argument("--listen", default="0.0.0.0:53", help="IP:PORT for UDP and TCP")
    p.add_argument("--zone", default="cluster.local")
    p.add_argument("--cluster-range", action="append", default=[],
                   help="CIDR whose reverse names are answered here (repeatable; default: 10.96.0.0/16, 10.244.0.0/16)")
    p.add_argument("--ready-port", type=int, default=8181, help="HTTP /ready for the readiness probe (0: off)")
    p.add_argument("--upstream", help="IP[:PORT] to forward other names to (default: refuse them)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s dns %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    client = client_for(args.server)
    resolver = Resolver(args.zone, args.cluster_range or ["10.96.0.0/16", "10.244.0.0/16"], args.upstream)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    host, _, port = args.listen.rpartition(":")
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, int(port)))
    tcp = tcp_server((host, int(port)), resolver)
    threading.Thread(target=tcp.serve_forever, daemon=True, name="dns-tcp").start()
    watcher = Watcher(client, resolver)
    threading.Thread(target=watcher.run, args=(stop,), daemon=True, name="dns-watch").start()
    if args.ready_port:
        ready_server(args.ready_port, watcher.built)
    log.info("serving %s on %s (udp+tcp)%s", args.zone, args.listen,
             f", forwarding to {args.upstream}" if args.upstream else "")
    serve_udp(udp, resolver, stop)
    tcp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
