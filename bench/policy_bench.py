#!/usr/bin/env python3
"""Network policy benchmarks, in one run:

- full sync: 1,000 NetworkPolicies over 5,000 pods (50 namespaces; this node hosts 102 of them):
  build the model from cold caches, render, load into the kernel in one transaction, at both ends
  of what a node holds of the others' pods (the ingress chains of those behind a Service): none,
  and all 4,898; and the worst case where all 5,000 pods are on this node;
- one new pod enforced: a local pod appears (as CNI ADD reports it) with 1,000 policies present
  -> its chains, set memberships and map entries are in the kernel (p50/p99 of 20);
- one policy added: the same, for a new NetworkPolicy;
- TCP throughput (iperf3, 3 s) between two pods of one node, through a policy that selects the
  server, with the 1,000-policy table loaded vs no policy table at all, same run;
- resident memory of the process holding the model for 5,000 pods and 1,000 policies.

Everything runs in throwaway namespaces and is removed at the end.
Run as root: ``.venv/bin/python bench/policy_bench.py``; the table goes to docs/bench-policy.md.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "kernel"))
sys.path.insert(0, HERE)
from report import pct, rss_mib, write_markdown  # noqa: E402
from nsutil import Spaces, sh  # noqa: E402

from trellis.agent.dataplane import PodNetwork, Request  # noqa: E402
from trellis.agent.ipam import Allocator, MemoryStore  # noqa: E402
from trellis.kernel import nft  # noqa: E402
from trellis.policy import model  # noqa: E402
from trellis.policy import nftables as pnft  # noqa: E402
from trellis.policy.engine import PolicyState  # noqa: E402

CIDR = "10.244.0.0/16"

ROWS: list[tuple[str, str, str]] = []
NS, PODS_PER_NS, POLICIES_PER_NS = 50, 100, 20


def row(what: str, value: str, note: str = "") -> None:
    ROWS.append((what, value, note))
    print(f"  {what:<60} {value:>12}  {note}", flush=True)


def pod(ns: str, name: str, ip: str, node: str, labels: dict) -> model.PodInfo:
    return model.pod_info({"metadata": {"namespace": ns, "name": name, "labels": labels},
                           "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                               {"name": "http", "containerPort": 8080}]}]}, "status": {"podIP": ip}})


def policy(ns: int, k: int) -> dict:
    spec = {"podSelector": {"matchLabels": {"app": f"app-{k}"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"app-{(k + 1) % 20}"}}},
                                  {"namespaceSelector": {"matchLabels": {"team": f"t{k % 5}"}},
                                   "podSelector": {"matchLabels": {"tier": str(k % 3)}}}],
                         "ports": [{"port": 80}, {"port": 8000, "endPort": 8100}]}]}
    if k % 4 == 0:
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.200.0.0/16"]}}],
                           "ports": [{"port": 53, "protocol": "UDP"}]},
                          {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": f"app-{(k + 1) % 20}"}}}]}]
    return {"metadata": {"namespace": f"ns-{ns}", "name": f"p-{k}"}, "spec": spec}


def build(local: list[model.PodInfo], all_local: bool = False) -> PolicyState:
    st = PolicyState()
    for i in range(NS):
        st.set_namespace(model.ns_info({"metadata": {"name": f"ns-{i}", "labels": {"team": f"t{i % 5}"}}}))
    idx = 0
    for i in range(NS):
        for j in range(PODS_PER_NS):
            node = "n1" if j < 2 or all_local else f"n{2 + idx % 49}"
            st.set_pod(pod(f"ns-{i}", f"p{j}", f"10.200.{idx // 250}.{idx % 250 + 1}", node,
                           {"app": f"app-{j % 20}", "tier": str(j % 3)}))
            idx += 1
    for p in local:
        st.set_pod(p)
    for i in range(NS):
        for k in range(POLICIES_PER_NS):
            obj = policy(i, k)
            st.set_policy(f"ns-{i}/p-{k}", model.netpol(obj))
    return st


def iperf(server_ns: str, client_ns: str, ip: str) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-p", "8080", "-B", ip],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.4)
    out = sh(client_ns, "iperf3", "-c", ip, "-p", "8080", "-t", "3", "-J", timeout=30).stdout
    srv.wait(10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def measure(st: PolicyState, n: str, eps: frozenset, tag: str) -> dict:
    """Full sync, a new local pod, a new policy, with ``eps`` as the Service endpoints."""
    t0 = time.perf_counter()
    d = pnft.desired(st, "n1", eps)
    text = pnft.full(d, CIDR)
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    nft.apply(text, "bench full sync", n)
    t_apply = time.perf_counter() - t0
    row(f"[{tag}] full sync: compile (cold caches)", f"{t_compile * 1000:.0f} ms",
        f"{len(d.chains)} chains, {len(d.sets)} sets, {sum(len(e) for _, e in d.sets.values())} elements, "
        f"{len(d.peers)} remote pods")
    row(f"[{tag}] full sync: load into the kernel (one transaction)", f"{t_apply * 1000:.0f} ms",
        f"{len(text) // 1024} KiB")
    row(f"[{tag}] full sync total", f"{(t_compile + t_apply) * 1000:.0f} ms", "target <= 2,000 ms")
    t0 = time.perf_counter()
    nft.apply(pnft.full(pnft.desired(st, "n1", eps), CIDR), "bench full sync", n)
    row(f"[{tag}] full sync, warm (periodic resync)", f"{(time.perf_counter() - t0) * 1000:.0f} ms")
    lat, applied = [], d
    for i in range(20):
        t0 = time.perf_counter()
        st.set_pod(pod(f"ns-{i}", f"new-{i}", f"10.244.1.{200 + i}", "n1", {"app": f"app-{i % 20}", "tier": "1"}))
        want = pnft.desired(st, "n1", eps)
        nft.apply(pnft.transaction(applied, want), "bench new pod", n)
        lat.append(time.perf_counter() - t0)
        applied = want
    pod50 = pct(lat, 50)
    row(f"[{tag}] one new pod enforced (model -> kernel), p50", f"{pod50 * 1000:.1f} ms")
    row(f"[{tag}] one new pod enforced, p99", f"{pct(lat, 99) * 1000:.1f} ms", "target <= 100 ms")
    lat = []
    for i in range(10):
        t0 = time.perf_counter()
        obj = policy(i, 100 + i)
        obj["spec"]["podSelector"] = {"matchLabels": {"tier": "1"}}
        st.set_policy(f"ns-{i}/extra", model.netpol(obj))
        want = pnft.desired(st, "n1", eps)
        nft.apply(pnft.transaction(applied, want), "bench new policy", n)
        lat.append(time.perf_counter() - t0)
        applied = want
    row(f"[{tag}] one new policy enforced, p50", f"{pct(lat, 50) * 1000:.1f} ms", "caches rebuilt")
    row(f"[{tag}] one new policy enforced, p99", f"{pct(lat, 99) * 1000:.1f} ms")
    return {"applied": applied, "full": t_compile + t_apply, "pod50": pod50, "policy50": pct(lat, 50)}


def main() -> int:
    if os.getuid() != 0:
        print("run as root (network namespaces)", file=sys.stderr)
        return 1
    sp = Spaces()
    try:
        n = sp.add("node")
        sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        net = PodNetwork(Allocator("10.244.1.0/24", MemoryStore()), 1500, "10.244.0.0/16", netns=n)
        net.restore()
        pods = {}
        for name in ("client", "server"):
            ns = sp.add(name)
            res = net.add(Request("ADD", f"cid-{name}", f"/run/netns/{ns}", "eth0", {}, {"cniVersion": "1.0.0"}))
            pods[name] = (ns, res["ips"][0]["address"].split("/")[0])
        # the server is selected by ns-0/p-0 (app-0); the client (app-1) is allowed by it on 8000-8100
        local = [pod("ns-0", "bench-client", pods["client"][1], "n1", {"app": "app-1", "tier": "9"}),
                 pod("ns-0", "bench-server", pods["server"][1], "n1", {"app": "app-0", "tier": "9"})]
        print(f"policy benchmark: {NS * POLICIES_PER_NS} policies over {NS * PODS_PER_NS} pods in {NS} namespaces")
        rss0 = rss_mib()
        t0 = time.perf_counter()
        st = build(local)
        t_build = time.perf_counter() - t0
        row("parse objects and index 5,000 pods + 1,000 policies", f"{t_build * 1000:.0f} ms", "informer events")
        # A node holds the ingress chains of the other nodes' pods that back a Service (it judges the
        # connections it DNATs to them). Both ends of that range, same run: no remote pod behind a
        # Service (only the node's own pods) and every pod behind one.
        everyone = frozenset(p.ip for p in st.pods.values())
        results = {}
        for tag, eps in (("own pods only", frozenset()), ("+ every remote pod behind a Service", everyone)):
            st = build(local)
            results[tag] = measure(st, n, eps, tag)
        applied = results["own pods only"]["applied"]
        for key in ("full", "pod50", "policy50"):
            a, b = results["own pods only"][key], results["+ every remote pod behind a Service"][key]
            row(f"ratio every-pod-behind-a-Service / own pods only: {key}", f"{b / a:.1f}x")
        # throughput with the table vs without: same pods, runs interleaved, medians of 3
        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(3):
            for with_table in (False, True):
                nft.apply(pnft.full(applied, CIDR) if with_table else
                          f"table inet {pnft.TABLE}\ndelete table inet {pnft.TABLE}\n", "throughput setup", n)
                runs[with_table].append(iperf(pods["server"][0], pods["client"][0], pods["server"][1]))
        base, with_pol = pct(runs[False], 50), pct(runs[True], 50)
        row("TCP throughput, no policy table (median of 3)", f"{base:.2f} Gbit/s")
        row("TCP throughput, 1,000 policies (server selected)", f"{with_pol:.2f} Gbit/s",
            f"{with_pol / base * 100:.0f}% of no policy (target >= 95%)")
        # worst case: every one of the 5,000 pods on this node, so every policy's chains are loaded
        t0 = time.perf_counter()
        worst = build(local, all_local=True)
        dw = pnft.desired(worst, "n1")
        tw = pnft.full(dw, CIDR)
        t_c = time.perf_counter() - t0
        t0 = time.perf_counter()
        nft.apply(tw, "bench worst-case full sync", n)
        t_a = time.perf_counter() - t0
        row("full sync, all 5,000 pods on one node: index + compile", f"{t_c * 1000:.0f} ms",
            f"{len(dw.chains)} chains, {len(dw.sets)} sets, {sum(len(e) for _, e in dw.sets.values())} elements")
        row("full sync, all 5,000 pods on one node: load", f"{t_a * 1000:.0f} ms", f"{len(tw) // 1024} KiB")
        del worst, dw, tw
        row("RSS for the model (5,000 pods, 1,000 policies, caches)", f"{rss_mib() - rss0:.0f} MiB",
            f"process total {rss_mib():.0f} MiB")
    finally:
        sp.close()
    write_markdown("bench-policy.md", "Network policy benchmark", "policy_bench.py",
                   "Model built as the agent's watches would; kernel work in a throwaway node namespace.",
                   ["measurement", "result", "note"], ROWS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
