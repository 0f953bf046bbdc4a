#!/usr/bin/env python3
"""Service proxy and DNS benchmarks, in the same run:

- network programming latency: one service's endpoints change -> the agent's Proxier has the
  new rules in the kernel (handler call to ``nft`` transaction returned), p50/p99 over 50
  changes, with 1, 1,000 and 10,000 services (2 endpoints each: 20,000 at 10k) present;
- full sync time (the whole table in one transaction) at each size;
- first-connection latency (TCP connect + answer) from the node to a ClusterIP, median of 200,
  with 10,000 services present vs 1;
- resident memory of the process holding the Proxier and its caches at 10,000 services;
- DNS queries per second answered by ``trellis dns`` (10,000 services indexed; UDP on 127.0.0.1).

Everything runs in throwaway namespaces (the kernel tests' helper) and is removed at the end.
Run as root: ``.venv/bin/python bench/proxy_bench.py``; the table goes to docs/bench-proxy.md.
"""
from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "kernel"))
sys.path.insert(0, HERE)
from report import pct, rss_mib, write_markdown  # noqa: E402
from nsutil import PY, Spaces, sh  # noqa: E402
from test_proxier import SERVER, FakeInformer, endpoint_slice, service  # noqa: E402

from trellis.agent.dataplane import PodNetwork, Request  # noqa: E402
from trellis.agent.ipam import Allocator, MemoryStore  # noqa: E402
from trellis.agent.proxier import Proxier  # noqa: E402

ROWS: list[tuple[str, str, str]] = []
CHANGES = 50


def row(what: str, value: str, note: str = "") -> None:
    ROWS.append((what, value, note))
    print(f"  {what:<58} {value:>14}  {note}", flush=True)



def svc_ip(i: int) -> str:
    return f"10.96.{16 + i // 250}.{i % 250 + 1}"


CONNECT = """
import socket, sys, time
ts = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    s = socket.create_connection((sys.argv[1], 80), timeout=2); s.recv(100); s.close()
    ts.append(time.perf_counter() - t)
ts.sort(); print(ts[len(ts) // 2] * 1e6)
"""


def first_connection_us(n: str, ip: str) -> float:
    return float(sh(n, PY, "-c", CONNECT, ip, "200").stdout)


def bench_size(sp: Spaces, size: int, pod_ips: list[str]) -> dict:
    n = sp.add(f"n{size}")
    sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh(n, "ip", "link", "set", "lo", "up")
    sh(n, "ip", "addr", "add", "172.31.9.1/32", "dev", "lo")  # the node's address (source of its connections)
    sh(n, "ip", "route", "add", "10.96.0.0/16", "dev", "lo")
    net = PodNetwork(Allocator("10.244.1.0/24", MemoryStore()), 1500, "10.244.0.0/16", netns=n)
    net.restore()
    ips = []
    for name in ("a", "b"):
        ns = sp.add(f"{size}{name}")
        res = net.add(Request("ADD", f"cid-{size}{name}", f"/run/netns/{ns}", "eth0", {}, {"cniVersion": "1.0.0"}))
        ips.append(res["ips"][0]["address"].split("/")[0])
        sp.spawn(ns, PY, "-c", SERVER, name)
    services, slices = FakeInformer(), FakeInformer()
    done: dict[str, float] = {}
    cond = threading.Condition()

    def applied(keys, t):
        with cond:
            for k in keys:
                done[k] = t
            cond.notify_all()
    px = Proxier(services, slices, "n1", "10.244.0.0/16", netns=n, on_applied=applied, resync=10**9)
    rss0 = rss_mib()
    for i in range(size):
        services.put(service(f"s{i}", svc_ip(i)))
        slices.put(endpoint_slice(f"s{i}", ips))
    t0 = time.perf_counter()
    px.full_sync()
    full = time.perf_counter() - t0
    stop = threading.Event()
    th = threading.Thread(target=px.run, args=(stop,), daemon=True)
    th.start()
    time.sleep(0.3)
    lat = []
    for j in range(CHANGES):
        i = random.randrange(size)
        key = f"default/s{i}"
        with cond:
            done.pop(key, None)
        eps = random.choice([ips, ips[:1], ips[1:]])
        t = time.monotonic()
        slices.put(endpoint_slice(f"s{i}", eps))
        with cond:
            cond.wait_for(lambda: key in done, timeout=30)
        lat.append(done[key] - t)
        time.sleep(0.02)
    slices.put(endpoint_slice("s0", ips))
    time.sleep(0.5)
    out = {"full": full, "p50": pct(lat, 50), "p99": pct(lat, 99), "ns": n, "rss": rss_mib(),
           "rss_delta": rss_mib() - rss0}
    stop.set()
    th.join(5)
    return out


DNS_SERVER = """
import socket, sys, threading
sys.path.insert(0, sys.argv[2])
from trellis.dns.records import build
from trellis.dns.server import Resolver, serve_udp
svcs = [{"metadata": {"name": f"s{i}", "namespace": "default"},
         "spec": {"clusterIP": f"10.96.{16 + i // 250}.{i % 250 + 1}", "ports": [{"name": "p", "port": 80}]}}
        for i in range(10000)]
r = Resolver("cluster.local", ["10.96.0.0/16"]); r.index = build(svcs, [], [])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", int(sys.argv[1])))
print("ready", flush=True)
serve_udp(s, r, threading.Event())
"""


def bench_dns(seconds: float = 5.0) -> float:
    from dnslib import DNSRecord
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    srv = subprocess.Popen([PY, "-c", DNS_SERVER, str(port), os.path.join(HERE, "..", "src")],
                           stdout=subprocess.PIPE, text=True)
    try:
        srv.stdout.readline()
        qs = [DNSRecord.question(f"s{i}.default.svc.cluster.local", "A") for i in range(0, 10000, 7)]
        for i, q in enumerate(qs):
            q.header.id = i % 65536
        packets = [q.pack() for q in qs]
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(1)
        c.connect(("127.0.0.1", port))
        answered, window, k = 0, 32, 0
        end = time.monotonic() + seconds
        t0 = time.monotonic()
        while time.monotonic() < end:  # keep `window` queries in flight
            for _ in range(window):
                c.send(packets[k % len(packets)])
                k += 1
            for _ in range(window):
                try:
                    c.recv(512)
                    answered += 1
                except socket.timeout:
                    break
        return answered / (time.monotonic() - t0)
    finally:
        srv.kill()
        srv.wait()


def main() -> int:
    if os.geteuid() != 0:
        print("run as root")
        return 1
    print(f"trellis service proxy benchmark ({os.cpu_count()} cores)")
    results = {}
    sp = Spaces()
    try:
        for size in (1, 1000, 10000):
            print(f"  ... {size} services", flush=True)
            results[size] = bench_size(sp, size, [])
        # first connections: 1 and 10k services measured alternately, so drift hits both alike
        runs = {1: [], 10000: []}
        for _ in range(5):
            for size in runs:
                runs[size].append(first_connection_us(results[size]["ns"], svc_ip(0)))
        for size in runs:
            results[size]["first_us"] = statistics.median(runs[size])
    finally:
        sp.close()
    for size, r in results.items():
        row(f"one-service change -> rules in place, {size:,} services: p50", f"{r['p50'] * 1000:.1f} ms")
        row(f"one-service change -> rules in place, {size:,} services: p99", f"{r['p99'] * 1000:.1f} ms",
            "target <= 100 ms at 10k" if size == 10000 else "")
        row(f"full sync, {size:,} services ({2 * size:,} endpoints)", f"{r['full']:.2f} s",
            "target <= 3 s at 10k" if size == 10000 else "")
    f1, f10k = results[1]["first_us"], results[10000]["first_us"]
    row("first connection to a ClusterIP, 1 service (median of 5 x 200)", f"{f1:.0f} us")
    row("first connection to a ClusterIP, 10,000 services (median of 5 x 200)", f"{f10k:.0f} us",
        f"{f10k / f1:.2f}x of 1 service (target within 1.10x)")
    row("proxy process RSS with 10,000 services (caches + state)", f"{results[10000]['rss']:.0f} MiB",
        f"+{results[10000]['rss_delta']:.0f} MiB for the services")
    row("DNS queries/s (trellis dns, 10,000 services, UDP, 1 client)", f"{bench_dns():,.0f}")
    write_markdown("bench-proxy.md", "Service proxy and DNS benchmarks", "proxy_bench.py",
                   "Latency is measured from the watch event handler to the returned nft transaction (the API server's own delay is not included). Services have 2 endpoints each.",
                   ["measurement", "result", "note"], ROWS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
