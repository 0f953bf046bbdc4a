"""Routes between nodes' blocks, VXLAN and direct, with two throwaway nodes on a bridge."""
import pytest

from conftest import needs_root
from nsutil import Spaces, ping, sh, tcp_connect
from trellis.agent.dataplane import PodNetwork, Request
from trellis.agent.ipam import Allocator, MemoryStore
from trellis.agent.routing import VXLAN_DEV, Routing, vtep_mac
from trellis.kernel import netlink

pytestmark = needs_root


def node_obj(name, ip, block):
    return {"metadata": {"name": name, "annotations": {"trellis.dev/vtep-mac": vtep_mac(name)}},
            "spec": {"podCIDR": block}, "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


@pytest.fixture
def two_nodes():
    sp = Spaces()
    u = sp.add("u")
    sh(u, "ip", "link", "add", "br0", "type", "bridge")
    sh(u, "ip", "link", "set", "br0", "up")
    nodes = {}
    for i in (1, 2):
        n = sp.add(f"n{i}")
        sh(u, "ip", "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", n)
        sh(u, "ip", "link", "set", f"p{i}", "master", "br0", "up")
        sh(n, "ip", "addr", "add", f"192.168.77.{i}/24", "dev", "eth0")
        sh(n, "ip", "link", "set", "eth0", "up")
        sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        nodes[f"node-{i}"] = n
    objs = [node_obj("node-1", "192.168.77.1", "10.244.1.0/24"), node_obj("node-2", "192.168.77.2", "10.244.2.0/24")]
    yield sp, nodes, objs
    sp.close()


def pod_on(sp, node_ns, block, name, mtu):
    net = PodNetwork(Allocator(block, MemoryStore()), mtu, "10.244.0.0/16", netns=node_ns)
    net.restore()
    ns = sp.add(name)
    res = net.add(Request("ADD", f"c-{name}", f"/run/netns/{ns}", "eth0"))
    return ns, res["ips"][0]["address"].split("/")[0]


@pytest.mark.parametrize("mode", ["vxlan", "direct"])
def test_pods_reach_pods_on_other_nodes(two_nodes, mode):
    sp, nodes, objs = two_nodes
    r1, r2 = Routing("node-1", mode, netns=nodes["node-1"]), Routing("node-2", mode, netns=nodes["node-2"])
    assert r1.reconcile(objs)["ready"] and r2.reconcile(objs)["ready"]
    mtu = r1.pod_mtu()
    assert mtu == (1450 if mode == "vxlan" else 1500)
    a, ip_a = pod_on(sp, nodes["node-1"], "10.244.1.0/24", "a", mtu)
    b, ip_b = pod_on(sp, nodes["node-2"], "10.244.2.0/24", "b", mtu)
    sp.spawn(b, "python3", "-c", "import socket;s=socket.socket();s.setsockopt(1,2,1);s.bind(('0.0.0.0',8080));"
             "s.listen();c,a=s.accept();c.sendall(a[0].encode());c.close()")
    assert ping(a, ip_b) and ping(b, ip_a)
    import time
    time.sleep(0.3)
    assert tcp_connect(a, f"{ip_b}:8080") == ip_a  # b sees a's own address: no NAT between pods
    assert ping(nodes["node-2"], ip_a)  # node -> pod on another node
    if mode == "vxlan":
        assert netlink.neighbours(VXLAN_DEV, nodes["node-1"]) == {"10.244.2.0": vtep_mac("node-2")}
        assert netlink.fdb_entries(VXLAN_DEV, nodes["node-1"]) == {vtep_mac("node-2"): "192.168.77.2"}
        # a big packet fits the overlay MTU without fragmentation trouble
        assert sh(a, "ping", "-c1", "-W2", "-M", "do", "-s", str(mtu - 28), ip_b, check=False).returncode == 0


def test_same_node_traffic_uses_the_link_mtu_and_leaving_traffic_the_overlays(two_nodes):
    sp, nodes, objs = two_nodes
    r1, r2 = Routing("node-1", "vxlan", netns=nodes["node-1"]), Routing("node-2", "vxlan", netns=nodes["node-2"])
    r1.reconcile(objs), r2.reconcile(objs)
    net = PodNetwork(Allocator("10.244.1.0/24", MemoryStore()), r1.pod_mtu(), "10.244.0.0/16", netns=nodes["node-1"])
    net.restore()
    a, b = sp.add("a"), sp.add("b")
    ip_a, ip_b = (net.add(Request("ADD", f"c-{n}", f"/run/netns/{n}", "eth0"))["ips"][0]["address"].split("/")[0]
                  for n in (a, b))
    _, ip_c = pod_on(sp, nodes["node-2"], "10.244.2.0/24", "c", r2.pod_mtu())
    assert sh(a, "cat", "/sys/class/net/eth0/mtu").stdout.strip() == "65535"
    assert "mtu 1450" in sh(a, "ip", "route", "get", ip_c).stdout
    assert "mtu" not in sh(a, "ip", "route", "get", ip_b).stdout
    # 20,000 bytes, don't fragment: fits between pods of a node...
    assert sh(a, "ping", "-c1", "-W2", "-M", "do", "-s", "20000", ip_b, check=False).returncode == 0
    # ...while toward another node the pod's own stack holds to the overlay MTU (no black hole)
    assert sh(a, "ping", "-c1", "-W2", "-M", "do", "-s", "1422", ip_c, check=False).returncode == 0
    too_big = sh(a, "ping", "-c1", "-W2", "-M", "do", "-s", "1423", ip_c, check=False)
    assert too_big.returncode != 0 and "1450" in too_big.stdout + too_big.stderr
    assert ping(a, ip_c) and ping(a, ip_b)


def test_reconcile_repairs_and_sweeps(two_nodes):
    sp, nodes, objs = two_nodes
    n1 = nodes["node-1"]
    r1 = Routing("node-1", "vxlan", netns=n1)
    r1.reconcile(objs)
    sh(n1, "ip", "route", "del", "10.244.2.0/24")
    sh(n1, "bridge", "fdb", "del", vtep_mac("node-2"), "dev", VXLAN_DEV, "dst", "192.168.77.2")
    assert r1.reconcile(objs)["changes"] == 2  # exactly what was removed comes back
    assert r1.reconcile(objs)["changes"] == 0  # idempotent
    assert any(r.dst == "10.244.2.0/24" for r in netlink.owned_routes(n1))
    # node-2 leaves: its route, neighbour and FDB entry go
    r1.reconcile(objs[:1])
    assert not any(r.dst == "10.244.2.0/24" for r in netlink.owned_routes(n1))
    assert netlink.neighbours(VXLAN_DEV, n1) == {} and netlink.fdb_entries(VXLAN_DEV, n1) == {}
    # switching to direct removes the overlay device
    Routing("node-1", "direct", netns=n1).reconcile(objs)
    assert netlink.get_link(VXLAN_DEV, n1) is None
    assert netlink.Route("10.244.2.0/24", "eth0", "192.168.77.2") in netlink.owned_routes(n1)


def test_a_node_without_vtep_data_is_skipped(two_nodes):
    sp, nodes, objs = two_nodes
    objs[1]["metadata"]["annotations"] = {}
    r1 = Routing("node-1", "vxlan", netns=nodes["node-1"])
    assert r1.reconcile(objs)["peers"] == 0
    assert not any(r.dst == "10.244.2.0/24" for r in netlink.owned_routes(nodes["node-1"]))
