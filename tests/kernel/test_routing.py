"""Routes between nodes' blocks, VXLAN and direct, with two throwaway nodes on a bridge."""
import pytest

from conftest import needs_root
from nsutil import PY, Spaces, ping, sh, tcp_connect
from trellis.agent.dataplane import PodNetwork, Request
from trellis.agent.ipam import Allocator, MemoryStore
from trellis.agent.routing import VXLAN_DEV, Routing, vtep_mac
from trellis.kernel import netlink
from trellis.names import JUDGED_MARK, TUNNEL_TABLE

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
    net.overlay_peers = {"192.168.77.1", "192.168.77.2"}  # VXLAN is accepted from the nodes only
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
    net.overlay_peers = {"192.168.77.2"}
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
    # switching to direct: plain routes in the main table; the overlay stays for judged packets,
    # routed to it by the fwmark rule and the tunnel table (and gone again when back in vxlan mode)
    r1.reconcile(objs)
    Routing("node-1", "direct", netns=n1).reconcile(objs)
    assert netlink.Route("10.244.2.0/24", "eth0", "192.168.77.2") in netlink.owned_routes(n1)
    assert netlink.owned_routes(n1, TUNNEL_TABLE) == [netlink.Route("10.244.2.0/24", VXLAN_DEV, "10.244.2.0")]
    assert f"fwmark {JUDGED_MARK:#x}/{JUDGED_MARK:#x} lookup {TUNNEL_TABLE}" in sh(n1, "ip", "rule").stdout
    link = netlink.get_link(VXLAN_DEV, n1)
    assert link is not None and link.mtu == 1500
    r1.reconcile(objs)
    assert netlink.owned_routes(n1, TUNNEL_TABLE) == [] and "fwmark" not in sh(n1, "ip", "rule").stdout
    # uninstall (agent --cleanup) removes all of it, the direct mode's rule and tunnel table included
    Routing("node-1", "direct", netns=n1).reconcile(objs)
    sh(n1, PY, "-m", "trellis.agent.main", "--node", "node-1", "--cleanup")
    assert netlink.owned_routes(n1) == [] and netlink.owned_routes(n1, TUNNEL_TABLE) == []
    assert "fwmark" not in sh(n1, "ip", "rule").stdout and netlink.get_link(VXLAN_DEV, n1) is None


def test_a_node_without_vtep_data_is_skipped(two_nodes):
    sp, nodes, objs = two_nodes
    objs[1]["metadata"]["annotations"] = {}
    r1 = Routing("node-1", "vxlan", netns=nodes["node-1"])
    assert r1.reconcile(objs)["peers"] == 0
    assert not any(r.dst == "10.244.2.0/24" for r in netlink.owned_routes(nodes["node-1"]))


COUNT_MARKED = """table inet t {{
  chain watch {{
    type filter hook forward priority -200; policy accept;
    iifname "{dev}" meta mark & {bit:#x} == {bit:#x} ip daddr {dst} counter comment "marked"
    iifname "eth0" ip daddr {dst} counter comment "plain"
  }}
}}"""
MARK_FROM_POD = """table inet m {{
  chain tag {{
    type filter hook prerouting priority -90; policy accept;
    ip daddr {dst} tcp dport 8080 meta mark set {bit:#x}
  }}
}}"""


def counters(netns):
    import json
    doc = json.loads(sh(netns, "nft", "-j", "list", "table", "inet", "t").stdout)
    return {r["rule"]["comment"]: next(e["counter"]["packets"] for e in r["rule"]["expr"] if "counter" in e)
            for r in (o for o in doc["nftables"] if "rule" in o)}


@pytest.mark.parametrize("mode", ["vxlan", "direct"])
def test_a_judged_packet_carries_its_mark_to_the_other_node(two_nodes, mode):
    """The JUDGED mark crosses to the destination node in the VXLAN GBP header; in direct mode only
    marked packets take the tunnel (policy routing), the others the plain routes."""
    sp, nodes, objs = two_nodes
    for name in nodes:
        Routing(name, mode, netns=nodes[name]).reconcile(objs)
    a, ip_a = pod_on(sp, nodes["node-1"], "10.244.1.0/24", "a", 1450)
    b, ip_b = pod_on(sp, nodes["node-2"], "10.244.2.0/24", "b", 1450)
    import subprocess
    for netns, text in ((nodes["node-2"], COUNT_MARKED.format(dev=VXLAN_DEV, bit=JUDGED_MARK, dst=ip_b)),
                        (nodes["node-1"], MARK_FROM_POD.format(dst=ip_b, bit=JUDGED_MARK))):
        subprocess.run(["ip", "netns", "exec", netns, "nft", "-f", "-"], input=text, text=True, check=True)
    assert ping(a, ip_b)  # not marked
    c = counters(nodes["node-2"])
    assert c["marked"] == 0 and c["plain"] == (1 if mode == "direct" else 0)
    tcp_connect(a, f"{ip_b}:8080")  # marked (nothing listens: the SYN is what counts)
    c = counters(nodes["node-2"])
    assert c["marked"] >= 1, c


def test_vxlan_from_a_stranger_on_the_underlay_is_dropped(two_nodes):
    """Only the other nodes may send VXLAN (an inner source address and a GBP mark are easy to forge)."""
    sp, nodes, objs = two_nodes
    for name in nodes:
        Routing(name, "vxlan", netns=nodes[name]).reconcile(objs)
    b, ip_b = pod_on(sp, nodes["node-2"], "10.244.2.0/24", "b", 1450)
    u = sp.names[0]
    s = sp.add("stranger")
    sh(u, "ip", "link", "add", "p9", "type", "veth", "peer", "name", "eth0", "netns", s)
    sh(u, "ip", "link", "set", "p9", "master", "br0", "up")
    sh(s, "ip", "addr", "add", "192.168.77.9/24", "dev", "eth0")
    sh(s, "ip", "link", "set", "eth0", "up")
    # a VXLAN frame (GBP flag, policy id = JUDGED) with an inner ICMP echo to pod b, from node-1's VTEP MAC
    forge = f"""
import socket, struct
def csum(b):
    b += b"\\0" * (len(b) % 2); s = sum(struct.unpack("!%dH" % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff)
    return ~(s + (s >> 16)) & 0xffff
icmp = struct.pack("!BBHHH", 8, 0, 0, 1, 1) + b"forged"
icmp = icmp[:2] + struct.pack("!H", csum(icmp)) + icmp[4:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0, socket.inet_aton("10.244.1.77"),
                 socket.inet_aton("{ip_b}"))
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
eth = bytes.fromhex("{vtep_mac('node-2').replace(':', '')}") + bytes.fromhex("{vtep_mac('node-1').replace(':', '')}") + b"\\x08\\x00"
vx = struct.pack("!BBHI", 0x88, 0, {JUDGED_MARK}, 1 << 8)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):
    s.sendto(vx + eth + ip + icmp, ("192.168.77.2", 4789))
"""
    import subprocess
    dump = subprocess.Popen(["ip", "netns", "exec", b, "timeout", "2", "tcpdump", "-lni", "eth0", "-c", "1", "icmp"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sp.procs.append(dump)
    while "listening on" not in dump.stderr.readline():  # capturing before anything is sent
        pass
    sh(s, PY, "-c", forge)
    out, _ = dump.communicate(timeout=10)
    assert "10.244.1.77" not in out, out
    import json
    table = json.loads(sh(nodes["node-2"], "nft", "-j", "list", "chain", "inet", "trellis-net", "input").stdout)
    drops = [e["counter"]["packets"] for o in table["nftables"] if "rule" in o for e in o["rule"]["expr"]
             if "counter" in e]
    assert drops == [5]
