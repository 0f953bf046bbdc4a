#!/usr/bin/env python3
"""CNI benchmarks: trellis-cni vs the reference bridge+host-local plugins, in the same run.

- ADD and DEL latency (p50/p99), sequential, and 30 ADDs in parallel (wall time, median of
  5 rounds with the two plugins taking turns). The trellis side is the agent's CNI path
  (server, IPAM, dataplane) without the policy engine, which a full agent runs before it answers;
- TCP throughput (iperf3, median of 3 interleaved runs): same node pod-to-pod vs a bare
  veth pair at its default MTU and at the pods' link MTU; across nodes over VXLAN vs the
  underlay path between the nodes;
- agent resident memory with 100 pods on its node (a real lab node), and ADD latency through
  that node's full agent (policy compiled and installed before the answer; kubelet paused).

Everything runs in throwaway namespaces (prefix ``tk<hex>``, the tests' helper) and is removed at the end.
Run as root: ``.venv/bin/python bench/cni_bench.py``; the table goes to docs/bench-cni.md.
"""
from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "kernel"))
sys.path.insert(0, HERE)
from report import pct, write_markdown  # noqa: E402
from nsutil import Spaces  # noqa: E402

CNI_EXE = ""  # the launcher the lab installs (python -I -S), written at start
ROWS: list[tuple[str, str, str, str]] = []
SEQ, PAR, ROUNDS = 40, 30, 5
TP_ROUNDS = 3  # iperf3 runs per path (median)


def row(what: str, trellis: str, reference: str, ratio: str) -> None:
    ROWS.append((what, trellis, reference, ratio))
    print(f"  {what:<44} {trellis:>14} {reference:>14} {ratio:>10}", flush=True)



def sh(ns: str, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd} in {ns}: {p.stderr}")
    return p


class Bench(Spaces):
    """Throwaway namespaces (from the kernel tests' helper) plus a temp dir for sockets and IPAM."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="trellis-bench-")

    def ns(self, role: str) -> str:
        return self.add(role)

    def close(self) -> None:
        super().close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- plugins --
    def start_agent_core(self, node_ns: str, block: str) -> str:
        """The agent's CNI path (server + dataplane) running inside node_ns, as deployed."""
        sock = os.path.join(self.tmp, f"{node_ns}.sock")
        code = ("import sys,time;from trellis.agent.cniserver import CNIServer;"
                "from trellis.agent.dataplane import PodNetwork;from trellis.agent.ipam import Allocator,DiskStore;"
                f"n=PodNetwork(Allocator('{block}',DiskStore('{self.tmp}/ipam-{node_ns}')),1500,'10.244.0.0/16');"
                f"n.restore();s=CNIServer('{sock}',lambda:n,lambda:None);s.start();print('ready',flush=True);"
                "time.sleep(3600)")
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{node_ns}", "--", sys.executable, "-c", code],
                             stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready"
        return sock

    def cni(self, node_ns: str, exe: str, conf: dict, cmd: str, cid: str, pod_ns: str, args: str = "") -> float:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": cmd, "CNI_CONTAINERID": cid,
               "CNI_NETNS": f"/run/netns/{pod_ns}", "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni",
               **({"CNI_ARGS": args} if args else {})}
        t0 = time.perf_counter()
        p = subprocess.run(["nsenter", f"--net=/run/netns/{node_ns}", "--", exe], input=json.dumps(conf),
                           capture_output=True, text=True, env=env)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError(f"{exe} {cmd} {cid}: {p.stdout} {p.stderr}")
        return dt


def bench_latency(b: Bench) -> None:
    tnode, rnode = b.ns("tnode"), b.ns("rnode")
    sock = b.start_agent_core(tnode, "10.244.1.0/24")
    tconf = {"cniVersion": "1.0.0", "name": "trellis", "type": "trellis", "socket": sock}
    rconf = {"cniVersion": "1.0.0", "name": "ref", "type": "bridge", "bridge": "cni0", "isGateway": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.2.0/24"}]],
                      "dataDir": os.path.join(b.tmp, "host-local")}}
    plugins = (("trellis", tnode, CNI_EXE, tconf), ("reference", rnode, "/usr/lib/cni/bridge", rconf))
    results = {}
    for label, node, exe, conf in plugins:
        pods = [b.ns(f"{label[0]}p{i}") for i in range(SEQ)]
        adds = [b.cni(node, exe, conf, "ADD", f"{label}{i}", pods[i]) for i in range(SEQ)]
        dels = [b.cni(node, exe, conf, "DEL", f"{label}{i}", pods[i]) for i in range(SEQ)]
        results[label] = (adds, dels, [])
    # parallel: ROUNDS rounds, the two plugins taking turns, so that both see the same machine
    par_pods = {label: [b.ns(f"{label[0]}q{i}") for i in range(PAR)] for label, *_ in plugins}
    for _ in range(ROUNDS):
        for label, node, exe, conf in plugins:
            def one(i: int, cmd: str) -> float:
                return b.cni(node, exe, conf, cmd, f"{label}par{i}", par_pods[label][i])
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(PAR) as pool:
                list(pool.map(lambda i: one(i, "ADD"), range(PAR)))
            results[label][2].append(time.perf_counter() - t0)
            with concurrent.futures.ThreadPoolExecutor(PAR) as pool:
                list(pool.map(lambda i: one(i, "DEL"), range(PAR)))
    results = {k: (a, d, pct(p, 50)) for k, (a, d, p) in results.items()}
    (ta, td, tp), (ra, rd, rp) = results["trellis"], results["reference"]
    ms = lambda x: f"{x * 1000:.1f} ms"  # noqa: E731
    row("ADD p50 (sequential)", ms(pct(ta, 50)), ms(pct(ra, 50)), f"{pct(ta, 50) / pct(ra, 50):.2f}x")
    row("ADD p99 (sequential)", ms(pct(ta, 99)), ms(pct(ra, 99)), f"{pct(ta, 99) / pct(ra, 99):.2f}x")
    row("DEL p50 (sequential)", ms(pct(td, 50)), ms(pct(rd, 50)), f"{pct(td, 50) / pct(rd, 50):.2f}x")
    row("DEL p99 (sequential)", ms(pct(td, 99)), ms(pct(rd, 99)), f"{pct(td, 99) / pct(rd, 99):.2f}x")
    row(f"{PAR} ADDs in parallel, wall time (median of {ROUNDS})", ms(tp), ms(rp), f"{tp / rp:.2f}x")


def iperf(b: Bench, server_ns: str, client_ns: str, ip: str) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", server_ns, "iperf3", "-s", "-1", "-B", ip],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.4)
    out = sh(client_ns, "iperf3", "-c", ip, "-t", "3", "-J", timeout=30).stdout
    srv.wait(10)
    return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9


def veth_pair(b: Bench, role: str, mtu: int) -> tuple[str, str]:
    """Two namespaces joined by a bare veth pair (10.9.0.1 - 10.9.0.2): the ceiling for one node."""
    va, vb = b.ns(f"{role}a"), b.ns(f"{role}b")
    subprocess.run(["ip", "-n", va, "link", "add", "v0", "mtu", str(mtu), "type", "veth", "peer", "name", "v0",
                    "mtu", str(mtu), "netns", vb], check=True)
    for n, ip in ((va, "10.9.0.1"), (vb, "10.9.0.2")):
        sh(n, "ip", "addr", "add", f"{ip}/24", "dev", "v0")
        sh(n, "ip", "link", "set", "v0", "up")
    return va, vb


def bench_throughput(b: Bench) -> None:
    from trellis.agent.dataplane import LINK_MTU, PodNetwork, Request
    from trellis.agent.ipam import Allocator, MemoryStore
    from trellis.agent.routing import Routing, vtep_mac
    veth = veth_pair(b, "v", 1500)  # as `ip link add type veth` makes it
    veth_big = veth_pair(b, "w", LINK_MTU)  # the same MTU as trellis' pod links
    # two nodes on an underlay bridge, trellis routing + pods
    u = b.ns("u")
    sh(u, "ip", "link", "add", "br0", "type", "bridge")
    sh(u, "ip", "link", "set", "br0", "up")
    nodes, objs = {}, []
    for i in (1, 2):
        n = b.ns(f"n{i}")
        subprocess.run(["ip", "-n", u, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", n],
                       check=True)
        sh(u, "ip", "link", "set", f"p{i}", "master", "br0", "up")
        sh(n, "ip", "addr", "add", f"172.31.99.{i}/24", "dev", "eth0")
        sh(n, "ip", "link", "set", "eth0", "up")
        sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nodes[i] = n
        objs.append({"metadata": {"name": f"node-{i}", "annotations": {"trellis.dev/vtep-mac": vtep_mac(f"node-{i}")}},
                     "spec": {"podCIDR": f"10.244.{i}.0/24"},
                     "status": {"addresses": [{"type": "InternalIP", "address": f"172.31.99.{i}"}]}})
    pods = {}
    for i in (1, 2):
        r = Routing(f"node-{i}", "vxlan", netns=nodes[i])
        r.reconcile(objs)
        net = PodNetwork(Allocator(f"10.244.{i}.0/24", MemoryStore()), r.pod_mtu(), "10.244.0.0/16", netns=nodes[i])
        net.restore()
        for k in ("a", "b"):
            p = b.ns(f"pod{i}{k}")
            res = net.add(Request("ADD", f"c{i}{k}", f"/run/netns/{p}", "eth0"))
            pods[f"{i}{k}"] = (p, res["ips"][0]["address"].split("/")[0])
    paths = {"veth": (veth[1], veth[0], "10.9.0.2"), "veth_big": (veth_big[1], veth_big[0], "10.9.0.2"),
             "same": (pods["1b"][0], pods["1a"][0], pods["1b"][1]), "underlay": (nodes[2], nodes[1], "172.31.99.2"),
             "cross": (pods["2a"][0], pods["1a"][0], pods["2a"][1])}
    runs: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(TP_ROUNDS):  # interleaved, so that every path sees the same machine
        for k, (server, client, ip) in paths.items():
            runs[k].append(iperf(b, server, client, ip))
    g = {k: pct(v, 50) for k, v in runs.items()}
    gb = lambda x: f"{x:.1f} Gbit/s"  # noqa: E731
    row("TCP, pod to pod on one node", gb(g["same"]), f"{g['veth']:.1f} (veth)", f"{g['same'] / g['veth']:.0%}")
    row(f"  same, vs a veth at the pods' MTU ({LINK_MTU})", gb(g["same"]), f"{g['veth_big']:.1f} (veth)",
        f"{g['same'] / g['veth_big']:.0%}")
    row("TCP, pod to pod across nodes (VXLAN)", gb(g["cross"]), f"{g['underlay']:.1f} (underlay)",
        f"{g['cross'] / g['underlay']:.0%}")


def bench_lab_node() -> None:
    """A real one-node lab: the agent's memory with 100 pods, then ADD through its full agent
    (policy compiled and installed before the answer) for pods that exist in the API."""
    import signal
    from trellis.kube.client import KubeClient
    from trellis.lab import topology
    name = f"cb{uuid.uuid4().hex[:5]}"
    cfg = topology.up(name, 1)
    spaces = Bench()
    try:
        c = cfg.client()
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hundred"},
               "spec": {"replicas": 100, "selector": {"matchLabels": {"app": "h"}}, "template": {
                   "metadata": {"labels": {"app": "h"}},
                   "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}}
        c.create("apps/v1", "deployments", dep, "default")
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pods, _ = c.list("v1", "pods", "default")
            if sum(1 for p in pods if p["status"].get("podIP")) == 100:
                break
            time.sleep(0.5)
        comps = topology.components(cfg)
        agent = next(p for p in c.list("v1", "pods", "trellis-system", label_selector="app.kubernetes.io/name=trellis-agent")[0])
        with open(os.path.join(topology.node_dir(cfg, "node-1"), "pods", agent["metadata"]["uid"], "agent.pid.json")) as f:
            agent_pid = json.load(f)["inner"]  # the agent container's process (its DaemonSet pod)
        with open(f"/proc/{agent_pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        row("agent RSS with 100 pods on its node", f"{rss / 1024:.1f} MiB", "", "")
        # the kubelet is paused, so that the pods below are wired by this benchmark alone
        node_ns, kubelet = cfg.ns("node-1"), comps["kubelet-node-1"]
        with open(os.path.join(topology.cni_conf_dir(cfg, "node-1"), "10-trellis.conflist")) as f:
            conflist = json.load(f)  # what the DaemonSet's install-cni wrote on the node
        conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **conflist["plugins"][0]}
        exe = os.path.join(topology.cni_bin_dirs(cfg, "node-1")[0], "trellis")
        os.kill(kubelet, signal.SIGSTOP)
        try:
            for i in range(SEQ):
                c.create("v1", "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"full{i}",
                         "labels": {"app": "full"}}, "spec": {"nodeName": "node-1", "containers": [
                             {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}, "default")
            sandboxes = [spaces.ns(f"f{i}") for i in range(SEQ)]
            adds = [spaces.cni(node_ns, exe, conf, "ADD", f"full{i}", sandboxes[i],
                               f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=full{i}") for i in range(SEQ)]
            for i in range(SEQ):
                spaces.cni(node_ns, exe, conf, "DEL", f"full{i}", sandboxes[i],
                           f"K8S_POD_NAMESPACE=default;K8S_POD_NAME=full{i}")
        finally:
            os.kill(kubelet, signal.SIGCONT)
        ms = lambda x: f"{x * 1000:.1f} ms"  # noqa: E731
        row("ADD p50 / p99 via a lab node's full agent", f"{ms(pct(adds, 50))} / {ms(pct(adds, 99))}", "", "")
    finally:
        spaces.close()
        topology.down(name, force=True)


def main() -> int:
    if os.geteuid() != 0:
        print("run as root")
        return 1
    print(f"trellis CNI benchmark ({os.cpu_count()} cores)")
    print(f"  {'':<44} {'trellis':>14} {'reference':>14} {'ratio':>10}")
    b = Bench()
    global CNI_EXE
    from trellis.lab.topology import write_cni_launcher
    CNI_EXE = os.path.join(b.tmp, "trellis")
    write_cni_launcher(CNI_EXE)
    try:
        bench_latency(b)
        bench_throughput(b)
    finally:
        b.close()
    bench_lab_node()
    write_markdown("bench-cni.md", "CNI benchmarks", "cni_bench.py",
                   "Reference: Debian's containernetworking-plugins `bridge` + `host-local` (latency), a bare veth pair and the underlay path (throughput), measured in the same run. "
                   "Latency is the runtime's view: exec of the plugin (through nsenter into the node) until it exits; trellis' side is trellis-cni plus the agent's CNI path "
                   "(server, IPAM, dataplane) without the policy engine, which a full agent also runs before it answers (the last row: a real lab node). "
                   "Parallel: 5 rounds, the two plugins taking turns; throughput: median of 3 interleaved iperf3 runs per path.",
                   ["measurement", "trellis", "reference", "ratio"], ROWS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
