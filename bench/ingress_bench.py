#!/usr/bin/env python3
"""Ingress benchmark: requests/s and p99 latency through the ingress vs straight to one backend
pod, in the same run from the same client (wrk in the lab's client namespace), with keep-alive
and without; then 1,000 Ingresses: config change to served (p50/p99) and haproxy + controller
memory.

Run as root: ``.venv/bin/python bench/ingress_bench.py`` (prints a table, writes
docs/ingress-bench.md). The backend is the Ingress conformance echo server (one pod, the
lab's Python implementation), so "direct" is what that one pod can do; the ingress row shows
what haproxy adds in front of it. For "direct", the client namespace gets a route to the
pod's node block for the duration of the run (inside the lab; removed afterwards).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "lab"))

from report import pct, write_markdown  # noqa: E402
from helpers import running_pods, wait_for  # noqa: E402
from trellis.kernel import netns as kns  # noqa: E402
from trellis.kube.client import KubeClient  # noqa: E402
from trellis.lab import topology  # noqa: E402

NET = "networking.k8s.io/v1"
IMAGE = "registry.k8s.io/ingressconformance/echoserver:v0.0.1"
DURATION = os.environ.get("BENCH_DURATION", "10s")
CONNS = int(os.environ.get("BENCH_CONNS", "16"))
N_INGRESSES = int(os.environ.get("BENCH_INGRESSES", "1000"))
ROWS: list[tuple[str, ...]] = []


def row(*cells: str) -> None:
    ROWS.append(cells)
    print("  " + " | ".join(cells), flush=True)


def echo(kc: KubeClient) -> dict:
    labels = {"app": "bench-echo"}
    kc.create("apps/v1", "deployments", {"metadata": {"name": "bench-echo"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "containers": [{"name": "echo", "image": IMAGE, "ports": [{"name": "http-api", "containerPort": 3000}],
                            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "readinessProbe": {"httpGet": {"path": "/health", "port": 3000}, "periodSeconds": 1}}]}}}},
              "default")
    kc.create("v1", "services", {"metadata": {"name": "bench-echo"}, "spec": {
        "selector": labels, "ports": [{"name": "http", "port": 8080, "targetPort": 3000}]}}, "default")
    return running_pods(kc, "default", "app=bench-echo", 1, timeout=60)[0]


def ingress(name: str, host: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"rules": [{"host": host, "http": {"paths": [{
        "path": "/", "pathType": "Prefix", "backend": {"service": {"name": "bench-echo", "port": {"number": 8080}}}}]}}]}}


def wrk(cfg, url: str, host: str, close: bool) -> tuple[float, float, int]:
    """requests/s, p99 ms, errors (socket errors + non-2xx)."""
    extra = ["-H", "Connection: close"] if close else []
    out = subprocess.run(["nsenter", f"--net={os.path.join(kns.NETNS_DIR, cfg.ns('client'))}", "--", "wrk", "-t1",
                          f"-c{CONNS}", f"-d{DURATION}", "--latency", "--timeout", "5s", "-H", f"Host: {host}",
                          *extra, url], capture_output=True, text=True, timeout=120).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, errors + (int(non2xx.group(1)) if non2xx else 0)


def curl_status(cfg, ip: str, host: str) -> int:
    p = subprocess.run(["nsenter", f"--net={os.path.join(kns.NETNS_DIR, cfg.ns('client'))}", "--", "curl", "-s",
                        "-o", "/dev/null", "-w", "%{http_code}", "-m", "2", "-H", f"Host: {host}", f"http://{ip}/"],
                       capture_output=True, text=True)
    return int(p.stdout or 0)


def rss_mib(pids: list[int], names: tuple[str, ...]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if not any(n.encode() in cmd for n in names):
                continue
            with open(f"/proc/{pid}/status") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total / 1024


def main() -> int:
    name = "bench-ing"
    topology.down(name, force=True)
    cfg = topology.up(name, 2)
    kc = cfg.client()
    route = None
    try:
        pod = echo(kc)
        pod_ip, node = pod["status"]["podIP"], pod["spec"]["nodeName"]
        lb = kc.get("v1", "services", "trellis-ingress", "kube-system")["status"]["loadBalancer"]["ingress"][0]["ip"]
        kc.create(NET, "ingresses", ingress("bench", "bench.test"), "default")
        wait_for(lambda: curl_status(cfg, lb, "bench.test") == 200, 30, "the bench Ingress")
        node_ip = topology.node_ip(int(node.split("-")[1]))
        route = f"{pod_ip.rsplit('.', 1)[0]}.0/24 via {node_ip}"
        kns.ip_batch([f"route add {route}"], "bench: client -> pod block", cfg.ns("client"))
        for close in (False, True):
            mode = "new connection per request" if close else "keep-alive"
            d_rps, d_p99, d_err = wrk(cfg, f"http://{pod_ip}:3000/", "bench.test", close)
            i_rps, i_p99, i_err = wrk(cfg, f"http://{lb}/", "bench.test", close)
            row(f"direct to the pod, {mode}", f"{d_rps:,.0f}", f"{d_p99:.2f}", str(d_err), "")
            row(f"through the ingress, {mode}", f"{i_rps:,.0f}", f"{i_p99:.2f}", str(i_err),
                f"{i_rps / d_rps:.0%} of direct")
        ingress_pod = running_pods(kc, "kube-system", "app.kubernetes.io/name=trellis-ingress", 1)[0]
        pod_ns = [n for n in topology.owned_netns(name) if "-p-" in n]
        pids = [p for n in pod_ns for p in kns.pids(n)]
        mem0 = (rss_mib(pids, ("haproxy",)), rss_mib(pids, ("trellis.ingress.main",)))
        t0 = time.monotonic()
        for i in range(N_INGRESSES):
            kc.create(NET, "ingresses", ingress(f"many-{i}", f"h{i}.many.test"), "default")
        wait_for(lambda: curl_status(cfg, lb, f"h{N_INGRESSES - 1}.many.test") == 200, 300, "1,000 Ingresses")
        row(f"{N_INGRESSES:,} Ingresses created and all served", f"{time.monotonic() - t0:.1f} s", "", "", "")
        lat = []
        for i in range(20):  # one more Ingress on top of 1,000: create -> first 200
            t0 = time.monotonic()
            kc.create(NET, "ingresses", ingress(f"extra-{i}", f"x{i}.many.test"), "default")
            wait_for(lambda: curl_status(cfg, lb, f"x{i}.many.test") == 200, 30, "the extra Ingress", interval=0.02)
            lat.append(time.monotonic() - t0)
        row(f"config change to served, with {N_INGRESSES:,} Ingresses (20 changes)",
            f"p50 {pct(lat, 50) * 1000:.0f} ms", f"p99 {pct(lat, 99) * 1000:.0f} ms", "", "")
        pids = [p for n in pod_ns for p in kns.pids(n)]
        mem = (rss_mib(pids, ("haproxy",)), rss_mib(pids, ("trellis.ingress.main",)))
        row(f"memory with {N_INGRESSES:,} Ingresses: haproxy (master + workers)", f"{mem[0]:.0f} MiB",
            f"(1 Ingress: {mem0[0]:.0f} MiB)", "", "")
        row(f"memory with {N_INGRESSES:,} Ingresses: trellis ingress controller", f"{mem[1]:.0f} MiB",
            f"(1 Ingress: {mem0[1]:.0f} MiB)", "", "")
        log = subprocess.run([sys.executable, "-m", "trellis.cli.main", "logs", "--lab", name, "-n", "kube-system",
                              ingress_pod["metadata"]["name"]], capture_output=True, text=True).stdout
        reloads = [float(x) for x in re.findall(r"haproxy reloaded in (\d+) ms", log)]
        if reloads:
            row("haproxy reload (write, haproxy -c, master CLI reload, new worker up)",
                f"p50 {pct(reloads, 50):.0f} ms", f"p99 {pct(reloads, 99):.0f} ms", "", f"{len(reloads)} reloads")
    finally:
        if route:
            kns.ip_batch([f"route del {route}"], "bench: remove the route", cfg.ns("client"))
        kc.close()
        topology.down(name, force=True)
    write_markdown("ingress-bench.md", "Ingress benchmark", "ingress_bench.py",
                   f"wrk -t1 -c{CONNS} -d{DURATION} from the lab's client namespace; backend: one conformance "
                   "echo server pod (Python); ingress: haproxy 2.6 in the trellis-ingress pod, reached at the "
                   "LoadBalancer address; direct: the pod IP, routed through its node.",
                   ["what", "requests/s (or value)", "p99 ms", "errors", "note"], ROWS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
