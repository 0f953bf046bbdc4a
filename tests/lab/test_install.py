"""trellis installed the way a real CNI is (issue 12): a bare lab (what kubeadm leaves: nodes NotReady,
pods Pending), then `kubectl apply` of the manifest `trellis manifests` renders; a rollout restart of
the agents under a held connection and a denied probe; the DaemonSet deleted and applied again;
uninstall (kubectl delete, then `trellis manifests --cleanup`) leaves every node as it was before."""
import json
import os
import subprocess
import textwrap
import time

import pytest

from conftest import ROOT, kubectl_runner, needs_kubectl, needs_root, unique
from helpers import AGNHOST, PY, connect, ready, wait_for
from trellis.lab import topology

pytestmark = [needs_root, needs_kubectl, pytest.mark.lab]
NS = "trellis-system"
AGENTS = "app.kubernetes.io/name=trellis-agent"
# from a pod: a TCP connect every 100 ms for a while; prints how many got through
PROBE = textwrap.dedent("""
    import socket, sys, time
    target, seconds = sys.argv[1], float(sys.argv[2])
    tries = passed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s = socket.socket()
        s.settimeout(0.1)
        tries += 1
        try:
            s.connect((target, 80))
            passed += 1
        except OSError:
            pass
        finally:
            s.close()
        time.sleep(0.1)
    print(tries, passed, flush=True)
""")


# paths the kubelet creates for the agent's hostPath volumes (type FileOrCreate) that belong to the
# host, not to trellis: the iptables lock every netfilter user on the node shares
HOST_OWNED = {"run/xtables.lock"}
BEFORE: dict[str, dict] = {}


def footprint(cfg, node) -> dict:
    """What a node has that trellis could have made: links, addresses, routes of every table,
    rules, nftables tables (in the node's network namespace) and files (in its view of the host)."""
    ns = cfg.ns(node)

    def ip(*args):
        return json.loads(subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True,
                                         check=True).stdout or "[]")
    def mine(addr: str) -> bool:  # IPv6 link-local: the kernel's, added whenever a link comes up
        return not addr.startswith("fe80:")
    links = sorted((li["ifname"], li.get("linkinfo", {}).get("info_kind", "")) for li in ip("-d", "link", "show"))
    addrs = sorted((a["ifname"], i["local"], i["prefixlen"], i.get("label", "")) for a in ip("addr", "show")
                   for i in a.get("addr_info", []) if mine(i["local"]))
    routes = sorted((r.get("table", "main"), r["dst"], r.get("dev", ""), r.get("protocol", ""))
                    for r in ip("route", "show", "table", "all") if mine(r["dst"]))
    rules = sorted(json.dumps(r, sort_keys=True) for r in ip("rule", "show"))
    nft = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "tables"], capture_output=True, text=True,
                         check=True).stdout.split("\n")
    root = topology.node_root(cfg, node)
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, dirs, names in os.walk(root)
                   for f in names + dirs)
    return {"links": links, "addresses": addrs, "routes": routes, "rules": rules,
            "nft": sorted(t for t in nft if t), "files": [f for f in files if f not in HOST_OWNED]}


@pytest.fixture(scope="module")
def bare():
    if not ROOT:
        pytest.skip("needs root")
    name = unique("ti")
    cfg = topology.up(name, 3, cni="none")
    try:
        BEFORE.update({n: footprint(cfg, n) for n in cfg.node_names()})  # what kubeadm left, for uninstall
        yield cfg
    finally:
        topology.down(name, force=True)


@pytest.fixture(scope="module")
def kc(bare):
    c = bare.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def kubectl(bare, tmp_path_factory):
    return kubectl_runner(bare.kubeconfig, str(tmp_path_factory.mktemp("kubectl-home")))


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    path = tmp_path_factory.mktemp("deploy") / "trellis.yaml"
    p = subprocess.run([PY, "-m", "trellis.cli.main", "manifests", "--api-server",
                        f"{topology.MASTER_IP}:{topology.API_PORT}", "-o", str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return str(path)


def pod(name, node, labels=None, image=AGNHOST):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": image,
                                                       "ports": [{"containerPort": 80}]}]}}


def running(kc, name, ns="default", timeout=60):
    return wait_for(lambda: (lambda p: p if ready(p) and p["status"].get("podIP") else None)(
        kc.get("v1", "pods", name, ns)), timeout, f"pod {name} Running and Ready")


def agents(kc):
    items, _ = kc.list("v1", "pods", NS, label_selector=AGENTS)
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def agents_ready(kc, n=3):
    pods = agents(kc)
    return len(pods) == n and len({p["spec"].get("nodeName") for p in pods}) == n and all(ready(p) for p in pods)


def test_a_bare_lab_is_what_kubeadm_leaves_and_the_manifest_makes_it_a_cluster(bare, kc, kubectl, manifest):
    for n in kc.list("v1", "nodes")[0]:
        cond = next(c for c in n["status"]["conditions"] if c["type"] == "Ready")
        assert cond["status"] == "False" and "network plugin not ready: cni config uninitialized" in cond["message"]
    kc.create("v1", "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "early"},
                             "spec": {"containers": [{"name": "c", "image": AGNHOST}]}}, "default")
    pending = wait_for(lambda: (lambda p: p if p["status"].get("conditions") else None)(
        kc.get("v1", "pods", "early", "default")), 20, "the scheduler's verdict")
    assert pending["status"]["phase"] == "Pending" and not pending["spec"].get("nodeName")
    assert "untolerated taint {node.kubernetes.io/not-ready: }" in pending["status"]["conditions"][0]["message"]

    kubectl("apply", "-f", manifest)
    wait_for(lambda: all(any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
                         and n["spec"].get("podCIDR") for n in kc.list("v1", "nodes")[0]), 60, "every node Ready")
    wait_for(lambda: agents_ready(kc), 60, "one Ready agent per node")
    assert running(kc, "early")["spec"]["nodeName"]  # the waiting pod is scheduled and wired
    wide = kubectl("get", "pods", "-n", NS, "-o", "wide").stdout
    assert wide.count("trellis-agent-") == 3 and wide.count("trellis-controller-") == 2
    assert "ready for pods" in kubectl("logs", "-n", NS, "ds/trellis-agent").stdout
    # a mesh across the three nodes
    for i in (1, 2, 3):
        kc.create("v1", "pods", pod(f"m{i}", f"node-{i}"), "default")
    ips = {i: running(kc, f"m{i}")["status"]["podIP"] for i in (1, 2, 3)}
    for i in (1, 2, 3):
        for j in (1, 2, 3):
            assert connect(bare.name, f"m{i}", f"{ips[j]}:80").stdout.strip() == f"m{j}", (i, j)


def test_rollout_restart_keeps_connections_and_policy(bare, kc, kubectl):
    for name, node, role in (("srv", "node-2", "server"), ("cli", "node-1", "client"), ("bad", "node-3", "other")):
        kc.create("v1", "pods", pod(name, node, {"role": role}), "default")
    kc.create("networking.k8s.io/v1", "networkpolicies", {"metadata": {"name": "only-clients"}, "spec": {
        "podSelector": {"matchLabels": {"role": "server"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}]}]}}, "default")
    srv = running(kc, "srv")["status"]["podIP"]
    running(kc, "cli")
    running(kc, "bad")
    wait_for(lambda: connect(bare.name, "bad", f"{srv}:80").returncode != 0, 20, "the policy in force")
    assert connect(bare.name, "cli", f"{srv}:80").stdout.strip() == "srv"
    before = {p["metadata"]["name"] for p in agents(kc)}
    hold = subprocess.Popen([PY, "-m", "trellis.cli.main", "exec", "--lab", bare.name, "cli", "--", PY, "-m",
                             "trellis.lab.images.agnhost", "hold", f"{srv}:80", "--seconds", "40"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probe = subprocess.Popen([PY, "-m", "trellis.cli.main", "exec", "--lab", bare.name, "bad", "--", PY, "-c",
                              PROBE, srv, "40"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(1)
        t0 = time.monotonic()
        kubectl("rollout", "restart", "ds/trellis-agent", "-n", NS)
        kc.create("v1", "pods", pod("during", "node-1"), "default")  # created while agents come and go
        kubectl("rollout", "status", "ds/trellis-agent", "-n", NS, "--timeout=90s", timeout=100)
        took = time.monotonic() - t0
        assert {p["metadata"]["name"] for p in agents(kc)}.isdisjoint(before)  # every agent was replaced
        assert took < 38, f"the rollout took {took:.0f}s, longer than the held connection and the probe"
        out, _ = hold.communicate(timeout=60)
        assert hold.returncode == 0, out  # the established connection never broke
        out, _ = probe.communicate(timeout=60)
        tries, passed = map(int, out.split()[-2:])
        assert tries > 100 and passed == 0, f"the denied flow passed {passed} of {tries} times during the rollout"
    finally:
        for p in (hold, probe):
            if p.poll() is None:
                p.kill()
    running(kc, "during")
    assert connect(bare.name, "during", f"{srv}:80").returncode != 0  # policy holds for the new pod too
    assert connect(bare.name, "during", f"{running(kc, 'bad')['status']['podIP']}:80").stdout.strip() == "bad"


def test_deleting_the_daemonset_leaves_networking_and_applying_it_again_restores_the_agents(bare, kc, kubectl,
                                                                                           manifest):
    srv = running(kc, "srv")["status"]["podIP"]
    kubectl("delete", "ds", "trellis-agent", "-n", NS)
    wait_for(lambda: not kc.list("v1", "pods", NS, label_selector=AGENTS)[0], 60, "the agents gone")
    assert connect(bare.name, "cli", f"{srv}:80").stdout.strip() == "srv"  # running pods keep networking
    assert connect(bare.name, "bad", f"{srv}:80").returncode != 0  # and their policy
    kubectl("apply", "-f", manifest)
    wait_for(lambda: agents_ready(kc), 60, "the agents back")
    assert connect(bare.name, "cli", f"{srv}:80").stdout.strip() == "srv"
    kc.create("v1", "pods", pod("after", "node-3"), "default")
    assert connect(bare.name, "cli", f"{running(kc, 'after')['status']['podIP']}:80").stdout.strip() == "after"


def test_uninstall_leaves_every_node_as_it_was_before_trellis(bare, kc, kubectl, manifest, tmp_path):
    """docs/install.md's uninstall: the workloads go (while trellis can still unwire them), then
    `kubectl delete -f trellis.yaml`, then the cleanup DaemonSet; every node is then what the bare
    lab was: no trellis link, address, route, rule, table or file, and NotReady again."""
    assert any(f.startswith("opt/cni/bin/trellis") for f in footprint(bare, "node-1")["files"])  # installed
    kubectl("delete", "pods", "--all", "-n", "default", "--wait=true", "--timeout=60s", timeout=70)
    wait_for(lambda: not kc.list("v1", "pods", "default")[0], 60, "the workloads gone")
    kubectl("delete", "-f", manifest, "--wait=true", "--timeout=90s", timeout=100)
    wait_for(lambda: not kc.list("v1", "pods", NS)[0], 60, "trellis' pods gone")
    cleanup = tmp_path / "cleanup.yaml"
    p = subprocess.run([PY, "-m", "trellis.cli.main", "manifests", "--cleanup", "-o", str(cleanup)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    kubectl("apply", "-f", str(cleanup))
    kubectl("rollout", "status", "ds/trellis-cleanup", "-n", "kube-system", "--timeout=90s", timeout=100)
    logs = kubectl("logs", "-n", "kube-system", "ds/trellis-cleanup", "-c", "uninstall-cni").stdout
    assert "removed" in logs and "10-trellis.conflist" in logs
    logs = kubectl("logs", "-n", "kube-system", "ds/trellis-cleanup", "-c", "remove-agent-state").stdout
    assert "removed table inet trellis-net" in logs and "removed /host/var/lib/trellis/agent" in logs, logs
    kubectl("delete", "-f", str(cleanup), "--wait=true", "--timeout=60s", timeout=70)
    for node in bare.node_names():
        now, then = footprint(bare, node), BEFORE[node]
        assert now == then, (node, {k: {"left": sorted(set(now[k]) - set(then[k])),
                                        "gone": sorted(set(then[k]) - set(now[k]))} for k in now if now[k] != then[k]})
    wait_for(lambda: all(any(c["type"] == "Ready" and c["status"] == "False" for c in n["status"]["conditions"])
                         for n in kc.list("v1", "nodes")[0]), 30, "the nodes NotReady again (no CNI config)")
