"""The Kubernetes network model on a 3-node lab with trellis CNI: real packets, joins, leaves, restarts."""
import json
import subprocess
import time

import pytest

from conftest import needs_root
from helpers import AGNHOST, PY, agent_back, connect, deployment, kill_agent, pod_exec, running_pods, wait_for
from trellis.kernel import netlink, netns as kns
from trellis.kube.client import KubeClient
from trellis.lab import topology

pytestmark = [needs_root, pytest.mark.lab]


@pytest.fixture(scope="module")
def kc(lab):
    c = lab.client()
    c.create("apps/v1", "deployments", deployment("mesh", 6), "default")
    running_pods(c, "default", "app=mesh", 6)
    yield c
    c.close()


def mesh(kc):
    return running_pods(kc, "default", "app=mesh", 6)


def matrix(lab, pod, targets, ns="default"):
    out = pod_exec(lab.name, pod, PY, "-m", "trellis.lab.images.agnhost", "matrix", *targets, ns=ns, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout)


def node_exec(lab, node, *cmd):
    return subprocess.run(["ip", "netns", "exec", f"{lab.name}-{node}", *cmd], capture_output=True, text=True,
                          timeout=30)


def test_every_pod_reaches_every_pod_on_every_node(lab, kc):
    pods = mesh(kc)
    assert {p["spec"]["nodeName"] for p in pods} == {"node-1", "node-2", "node-3"}
    for src in pods:
        targets = []
        for dst in pods:
            ip = dst["status"]["podIP"]
            targets += [f"{ip}/icmp", f"{ip}:80/tcp", f"{ip}:81/udp"]
        got = matrix(lab, src["metadata"]["name"], targets)
        for dst in pods:
            ip, name = dst["status"]["podIP"], dst["metadata"]["name"]
            assert got[f"{ip}/icmp"][0] == "ok", (src["metadata"]["name"], name)
            assert got[f"{ip}:80/tcp"] == ["ok", name] and got[f"{ip}:81/udp"] == ["ok", name], (
                src["metadata"]["name"], got)


def test_nodes_reach_every_pod(lab, kc):
    pods = mesh(kc)
    for node in ("node-1", "node-2", "node-3"):
        for p in pods:
            ip = p["status"]["podIP"]
            assert node_exec(lab, node, "ping", "-c1", "-W2", ip).returncode == 0, (node, ip)
        ans = node_exec(lab, node, PY, "-m", "trellis.lab.images.agnhost", "connect", f"{pods[0]['status']['podIP']}:80")
        assert ans.stdout.strip() == pods[0]["metadata"]["name"]


def test_pods_see_their_own_ip_as_others_see_it(lab, kc):
    pods = mesh(kc)
    a = next(p for p in pods if p["spec"]["nodeName"] == "node-1")
    b = next(p for p in pods if p["spec"]["nodeName"] == "node-3")
    for proto in ("tcp", "udp"):
        port = 80 if proto == "tcp" else 81
        seen = pod_exec(lab.name, a["metadata"]["name"], PY, "-m", "trellis.lab.images.agnhost", "connect",
                        f"{b['status']['podIP']}:{port}", "--protocol", proto, "--ask", "clientip")
        assert seen.stdout.strip() == a["status"]["podIP"]
    own = pod_exec(lab.name, a["metadata"]["name"], "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"inet {a['status']['podIP']}/32" in own
    # what leaves the node goes at 1500 underlay minus VXLAN's 50: the default route's MTU
    route = pod_exec(lab.name, a["metadata"]["name"], "ip", "route", "get", b["status"]["podIP"]).stdout
    assert "mtu 1450" in route, route


def test_a_pod_cannot_send_from_an_address_not_its_own(lab, kc):
    pods = mesh(kc)
    a = next(p for p in pods if p["spec"]["nodeName"] == "node-1")
    b = next(p for p in pods if p["spec"]["nodeName"] == "node-2")
    victim = next(p for p in pods if p["spec"]["nodeName"] == "node-3")
    name, target = a["metadata"]["name"], b["status"]["podIP"]
    for forged in ("10.244.1.250", victim["status"]["podIP"], "172.31.0.2"):
        pod_exec(lab.name, name, "ip", "addr", "add", f"{forged}/32", "dev", "eth0")
        try:
            assert pod_exec(lab.name, name, "ping", "-c1", "-W1", "-I", forged, target).returncode != 0, forged
        finally:
            pod_exec(lab.name, name, "ip", "addr", "del", f"{forged}/32", "dev", "eth0")
    assert pod_exec(lab.name, name, "ping", "-c1", "-W1", target).returncode == 0


def test_egress_to_outside_the_cluster_is_masqueraded(lab, kc):
    pods = mesh(kc)
    a = next(p for p in pods if p["spec"]["nodeName"] == "node-2")
    server = subprocess.Popen(["ip", "netns", "exec", f"{lab.name}-client", PY, "-m", "trellis.lab.images.agnhost",
                               "serve", "--port", "9000/TCP"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        seen = pod_exec(lab.name, a["metadata"]["name"], PY, "-m", "trellis.lab.images.agnhost", "connect",
                        "172.31.0.250:9000", "--ask", "clientip")
        assert seen.stdout.strip() == "172.31.0.12"  # the node's underlay address, not the pod's
    finally:
        server.kill()
        server.wait()


def test_agent_kill_9_and_restart_keeps_connections_and_repairs(lab, kc):
    pods = mesh(kc)
    a = next(p for p in pods if p["spec"]["nodeName"] == "node-1")
    b = next(p for p in pods if p["spec"]["nodeName"] == "node-2")
    hold = subprocess.Popen([PY, "-m", "trellis.cli.main", "exec", "--lab", lab.name, a["metadata"]["name"], "--",
                             PY, "-m", "trellis.lab.images.agnhost", "hold", f"{b['status']['podIP']}:80",
                             "--seconds", "8"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    before = {node: kill_agent(lab, kc, node) for node in ("node-1", "node-2")}
    # while the agents are down, break things they own
    assert node_exec(lab, "node-1", "ip", "route", "del", "10.244.2.0/24").returncode == 0
    for node, n in before.items():  # their kubelets restart them (a DaemonSet pod's container)
        agent_back(kc, node, n)
    out, _ = hold.communicate(timeout=30)
    assert hold.returncode == 0, out  # the established connection never broke
    wait_for(lambda: any(r.dst == "10.244.2.0/24" for r in netlink.owned_routes(f"{lab.name}-node-1")), 15,
             "the agent to restore the route")
    ans = connect(lab.name, a["metadata"]["name"], f"{b['status']['podIP']}:80")
    assert ans.stdout.strip() == b["metadata"]["name"]
    # new pods still get wired by the restarted agent
    kc.patch("apps/v1", "deployments", "mesh", {"spec": {"replicas": 7}}, "default")
    running_pods(kc, "default", "app=mesh", 7)
    kc.patch("apps/v1", "deployments", "mesh", {"spec": {"replicas": 6}}, "default")
    running_pods(kc, "default", "app=mesh", 6)


def test_a_node_joins_and_leaves(lab, kc):
    node = topology.add_node(lab.name)
    assert node == "node-4"
    n4 = kc.get("v1", "nodes", node)
    assert n4["spec"]["podCIDR"] == "10.244.4.0/24"
    kc.create("v1", "pods", {"metadata": {"name": "newcomer", "labels": {"test": "newcomer"}}, "spec": {
        "nodeName": node, "containers": [{"name": "c", "image": AGNHOST, "ports": [{"containerPort": 80}]}]}},
        "default")
    newcomer = running_pods(kc, "default", "test=newcomer", 1)[0]
    ip4 = newcomer["status"]["podIP"]
    assert ip4.startswith("10.244.4.")
    for p in mesh(kc):
        got = matrix(lab, p["metadata"]["name"], [f"{ip4}:80/tcp"])
        assert got[f"{ip4}:80/tcp"] == ["ok", "newcomer"], p["spec"]["nodeName"]
    back = matrix(lab, "newcomer", [f"{p['status']['podIP']}:80/tcp" for p in mesh(kc)])
    assert all(v[0] == "ok" for v in back.values()), back
    topology.remove_node(lab.name, node)
    assert kc.get_or_none("v1", "nodes", node) is None
    for n in ("node-1", "node-2", "node-3"):
        wait_for(lambda: not any(r.dst == "10.244.4.0/24" for r in netlink.owned_routes(f"{lab.name}-{n}")), 15,
                 f"{n} to drop the route to the departed node")
    assert f"{lab.name}-node-4" not in kns.list_names()
    test_every_pod_reaches_every_pod_on_every_node(lab, kc)


def test_agent_releases_addresses_of_pods_that_are_gone(lab, kc):
    """IPAM GC: an address whose pod is not on this node and whose sandbox is gone goes back
    to the pool (as after a kubelet that died before CNI DEL); live pods keep theirs."""
    import os
    from trellis.agent.ipam import Allocator, DiskStore
    pods = mesh(kc)
    here = [p for p in pods if p["spec"]["nodeName"] == "node-1"]
    elsewhere = next(p for p in pods if p["spec"]["nodeName"] == "node-2")
    store = DiskStore(os.path.join(topology.agent_state_dir(lab, "node-1"), "ipam", "10.244.1.0_24"))
    ipam = Allocator("10.244.1.0/24", store)
    ghost = ipam.allocate("ghost-container", "eth0", "default/ghost", "/run/netns/gone-sandbox")
    # the same name as a live pod, but that pod runs on node-2: not a reason to keep it here
    moved = ipam.allocate("moved-container", "eth0", f"default/{elsewhere['metadata']['name']}", "/run/netns/gone-2")
    wait_for(lambda: ipam.find("ghost-container", "eth0") is None and ipam.find("moved-container", "eth0") is None,
             45, f"the agent to release {ghost.ip} and {moved.ip}")
    held = {r.ip for r in store.all()}
    assert {p["status"]["podIP"] for p in here} <= held  # the live pods of node-1 keep their addresses
