#!/usr/bin/env python3
"""Lab benchmarks: lab up, 30 pods to Ready, list/watch with 10,000 pods, process memory.

Run as root: ``.venv/bin/python bench/lab_bench.py`` (prints a table, writes docs/bench-lab.md).
References measured in the same run: the bare topology (namespaces and veths only, no
processes) for ``lab up``, and a raw HTTP GET of the same list for list throughput.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from conftest import ApiServer  # noqa: E402
from trellis.kernel import netns as kns  # noqa: E402
from trellis.kube.client import KubeClient  # noqa: E402
from trellis.lab import topology  # noqa: E402

ROWS: list[tuple[str, str, str]] = []


def row(what: str, value: str, ref: str = "") -> None:
    ROWS.append((what, value, ref))
    print(f"  {what:<58} {value:>16}  {ref}", flush=True)


def rss_kib(pid: int) -> int:
    """VmRSS of a process (0 when it is gone: a probe's short-lived process)."""
    try:
        f = open(f"/proc/{pid}/status")
    except FileNotFoundError:
        return 0
    with f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def bare_topology(name: str, nodes: int) -> float:
    t0 = time.monotonic()
    members = ["master", "client"] + [f"node-{i}" for i in range(1, nodes + 1)]
    for m in ["underlay"] + members:
        kns.add(f"{name}-{m}")
    cmds = ["link add br0 type bridge", "link set br0 up"]
    for i, m in enumerate(members):
        cmds += [f"link add name to-{m} type veth peer name eth0 netns {name}-{m}", f"link set to-{m} master br0 up"]
    kns.ip_batch(cmds, "bare topology", f"{name}-underlay")
    for i, m in enumerate(members):
        kns.ip_batch(["link set lo up", f"addr add 172.31.0.{100 + i}/24 dev eth0", "link set eth0 up"], "addr",
                     f"{name}-{m}")
    dt = time.monotonic() - t0
    for m in ["underlay"] + members:
        kns.delete(f"{name}-{m}")
    return dt


def bench_lab_up() -> None:
    for n in (3, 10):
        ref = bare_topology(f"bb{n}", n)
        name = f"bench{n}"
        topology.down(name, force=True)
        t0 = time.monotonic()
        ready = []

        def seen(line: str) -> None:  # topology.up's progress: "nodes ready: 3/3" once all are
            if line == f"nodes ready: {n}/{n}" and not ready:
                ready.append(time.monotonic() - t0)
        topology.up(name, n, progress=seen)
        dt = time.monotonic() - t0
        topology.down(name, force=True)
        row(f"lab up, {n} nodes, until every node is Ready (with its pod CIDR)", f"{ready[0]:.2f} s",
            f"bare namespaces+veths: {ref:.2f} s ({ready[0] / ref:.1f}x)")
        row(f"lab up, {n} nodes, until cluster DNS and ingress serve too", f"{dt:.2f} s",
            "trellis installed from deploy/trellis.yaml by the lab, as kubectl apply does")


def bench_pods_and_memory() -> None:
    name = "benchpods"
    topology.down(name, force=True)
    cfg = topology.up(name, 3)
    try:
        c = cfg.client()
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "p30"},
               "spec": {"replicas": 30, "selector": {"matchLabels": {"app": "p30"}}, "template": {
                   "metadata": {"labels": {"app": "p30"}},
                   "spec": {"containers": [{"name": "c", "image": "agnhost", "ports": [{"containerPort": 80}]}]}}}}
        t0 = time.monotonic()
        c.create("apps/v1", "deployments", dep, "default")
        while True:
            pods, _ = c.list("v1", "pods", "default", label_selector="app=p30")
            ready = [p for p in pods if any(x["type"] == "Ready" and x["status"] == "True"
                                            for x in p["status"].get("conditions") or [])]
            if len(ready) == 30:
                break
            if time.monotonic() - t0 > 120:
                raise SystemExit("30 pods not Ready within 120 s")
            time.sleep(0.05)
        dt = time.monotonic() - t0
        row("apply Deployment of 30 pods -> all Running and Ready", f"{dt:.2f} s", f"{dt / 30 * 1000:.0f} ms/pod, 3 nodes, 2 cores")
        for comp, pid in topology.components(cfg).items():
            row(f"RSS {comp} (30 pods running)", f"{rss_kib(pid) / 1024:.1f} MiB")
        pod_pids = [p for n in topology.owned_netns(name) if "-p-" in n for p in kns.pids(n)]
        rss = [r for r in (rss_kib(p) for p in pod_pids) if r]
        row("RSS per pod process (pause + test server), mean", f"{statistics.mean(rss) / 1024:.1f} MiB",
            f"{len(rss)} processes")
    finally:
        topology.down(name, force=True)


def bench_list_watch(n: int = 10_000) -> None:
    d = tempfile.mkdtemp()
    srv = ApiServer(d).start()
    try:
        c = KubeClient(srv.url)
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"labels": {"app": "x"}},
                "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "agnhost",
                                                              "ports": [{"containerPort": 80}]}]}}

        def create(lo: int, hi: int) -> None:
            cl = KubeClient(srv.url)
            for i in range(lo, hi):
                b = json.loads(json.dumps(body))
                b["metadata"]["name"] = f"pod-{i:05d}"
                cl.create("v1", "pods", b, "default")
        t0 = time.monotonic()
        threads = [threading.Thread(target=create, args=(k * n // 4, (k + 1) * n // 4)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        dt = time.monotonic() - t0
        row(f"create {n} pods (4 clients)", f"{n / dt:,.0f} obj/s")
        times = []
        for _ in range(3):
            t0 = time.monotonic()
            items, rv = c.list("v1", "pods")
            times.append(time.monotonic() - t0)
            assert len(items) == n
        raw = []
        for _ in range(3):
            t0 = time.monotonic()
            httpx.get(f"{srv.url}/api/v1/pods", timeout=60).content
            raw.append(time.monotonic() - t0)
        row(f"list {n} pods, decoded by the client", f"{n / min(times):,.0f} obj/s",
            f"raw HTTP bytes only: {n / min(raw):,.0f} obj/s")
        t0 = time.monotonic()
        seen = 0
        for typ, _ in c.watch("v1", "pods", resource_version="0", timeout_seconds=60):
            seen += 1
            if seen == n:
                break
        dt = time.monotonic() - t0
        row(f"watch from resourceVersion 0 (initial {n} ADDED)", f"{n / dt:,.0f} obj/s")
        got = []
        m = 2000

        def watcher() -> None:
            for typ, obj in KubeClient(srv.url).watch("v1", "pods", resource_version=rv, timeout_seconds=60):
                got.append(typ)
                if len(got) == m:
                    return
        t = threading.Thread(target=watcher)
        t.start()
        t0 = time.monotonic()
        for i in range(m):
            c.patch("v1", "pods", f"pod-{i:05d}", {"metadata": {"labels": {"v": "2"}}}, "default")
        t.join(60)
        dt = time.monotonic() - t0
        row(f"watch live: {m} patches written and delivered", f"{m / dt:,.0f} events/s",
            f"{len(got)} MODIFIED received")
        row(f"RSS apiserver with {n} pods stored", f"{rss_kib(srv.proc.pid) / 1024:.1f} MiB")
    finally:
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def bench_secure_get(n: int = 2000, fresh: int = 200) -> None:
    """A kubectl-like GET of one object: the secure port (TLS, client certificate, RBAC) vs the
    plain in-lab port of the same kind of server, same client, same run."""
    import ssl

    from trellis.kube.client import ClusterConfig, tls_client
    from trellis.lab.pki import LabPKI
    d = tempfile.mkdtemp()
    pki = LabPKI(d)
    serving = pki.init(["127.0.0.1"])
    alice = pki.client("alice", "alice")
    secure = ApiServer(os.path.join(d, "s"), "--tls-cert-file", serving.cert, "--tls-private-key-file", serving.key,
                       "--client-ca-file", pki.ca.cert)
    plain = ApiServer(os.path.join(d, "p"))
    os.makedirs(secure.state_dir)
    os.makedirs(plain.state_dir)
    try:
        secure.start()
        plain.start()
        surl = secure.url.replace("http://", "https://")
        ctx = ssl.create_default_context(cafile=pki.ca.cert)
        tls_client(ctx, alice.cert, alice.key)
        admin = pki.client("admin", "admin", ("system:masters",))
        admin_ctx = ssl.create_default_context(cafile=pki.ca.cert)
        tls_client(admin_ctx, admin.cert, admin.key)
        path = "/api/v1/namespaces/default/configmaps/bench"
        for url, c in ((plain.url, None), (surl, admin_ctx)):
            KubeClient(ClusterConfig(url, None, c or True)).create(
                "v1", "configmaps", {"metadata": {"name": "bench"}, "data": {"k": "v"}}, "default")
        # alice reads it through a RoleBinding to view: RBAC is evaluated on every request
        KubeClient(ClusterConfig(surl, None, admin_ctx)).create(
            "rbac.authorization.k8s.io/v1", "rolebindings", {"metadata": {"name": "alice-view"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": "alice"}]}, "default")
        results = {}
        for label, url, verify in (("plain", plain.url, False), ("secure", surl, ctx)):  # False: no CA bundle to load per client
            with httpx.Client(base_url=url, verify=verify) as h:
                assert h.get(path).status_code == 200
                t0 = time.monotonic()
                for _ in range(n):
                    h.get(path)
                results[(label, "keep")] = n / (time.monotonic() - t0)
            t0 = time.monotonic()
            for _ in range(fresh):
                with httpx.Client(base_url=url, verify=verify) as h:
                    h.get(path)
            results[(label, "fresh")] = fresh / (time.monotonic() - t0)
        for mode, what in (("keep", "keep-alive"), ("fresh", "a new connection each")):
            p_, s_ = results[("plain", mode)], results[("secure", mode)]
            row(f"GET one ConfigMap, TLS + client cert + RBAC, {what}", f"{s_:,.0f} req/s",
                f"plain HTTP: {p_:,.0f} req/s ({s_ / p_:.0%})")
    finally:
        secure.stop()
        plain.stop()
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    if os.geteuid() != 0:
        print("run as root (the lab creates network namespaces)")
        return 1
    print(f"trellis lab benchmark on {os.cpu_count()} cores")
    bench_lab_up()
    bench_pods_and_memory()
    bench_list_watch()
    bench_secure_get()
    out = os.path.join(HERE, "..", "docs", "bench-lab.md")
    with open(out, "w") as f:
        f.write("# Lab benchmarks\n\nProduced by `sudo .venv/bin/python bench/lab_bench.py` on "
                f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores.\n\n| measurement | result | reference / note |\n"
                "|---|---:|---|\n")
        for what, value, ref in ROWS:
            f.write(f"| {what} | {value} | {ref} |\n")
    print(f"written to {os.path.normpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
