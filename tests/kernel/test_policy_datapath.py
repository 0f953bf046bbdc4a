"""The compiled policy table in a throwaway node namespace, with real pods (routed veths) and
real connections: fail-closed skeleton, known set, NetworkPolicy, incremental transactions."""
import pytest

from conftest import needs_root
from nsutil import PY, Spaces, sh, tcp_connect
from test_proxier import SERVER

from trellis.agent.dataplane import PodNetwork, Request
from trellis.agent.ipam import Allocator, MemoryStore
from trellis.kernel import nft
from trellis.policy import model
from trellis.policy import nftables as pnft
from trellis.policy.engine import PolicyState

pytestmark = needs_root
CIDR = "10.244.0.0/16"


@pytest.fixture
def node():
    sp = Spaces()
    n = sp.add("node")
    sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh(n, "ip", "link", "set", "lo", "up")
    net = PodNetwork(Allocator("10.244.1.0/24", MemoryStore()), 1500, "10.244.0.0/16", netns=n)
    net.restore()
    pods = {}
    for name in ("a", "b", "c"):
        ns = sp.add(name)
        res = net.add(Request("ADD", f"cid-{name}", f"/run/netns/{ns}", "eth0", {}, {"cniVersion": "1.0.0"}))
        sp.spawn(ns, PY, "-c", SERVER, name)
        pods[name] = (ns, res["ips"][0]["address"].split("/")[0])
    import time
    time.sleep(0.3)
    yield n, pods
    sp.close()


def pod_obj(name, ip, labels):
    return model.pod_info({"metadata": {"namespace": "default", "name": name, "labels": labels},
                           "spec": {"nodeName": "n1", "containers": [{"name": "c"}]}, "status": {"podIP": ip}})


def reaches(pods, src, dst):
    return tcp_connect(pods[src][0], f"{pods[dst][1]}:8080") == dst


def test_skeleton_fails_closed_then_full_sync_opens(node):
    n, pods = node
    assert reaches(pods, "a", "b")  # no table: plain routed pods
    nft.apply(pnft.full(pnft.Desired(), CIDR), "skeleton", n)
    assert not reaches(pods, "a", "b") and not reaches(pods, "c", "a")
    st = PolicyState()
    st.set_namespace(model.ns_info({"metadata": {"name": "default"}}))
    for name, (_, ip) in pods.items():
        st.set_pod(pod_obj(name, ip, {"pod": name}))
    nft.apply(pnft.full(pnft.desired(st, "n1"), CIDR), "full", n)
    assert reaches(pods, "a", "b") and reaches(pods, "c", "a")


def test_netpol_and_incremental_updates(node):
    n, pods = node
    st = PolicyState()
    st.set_namespace(model.ns_info({"metadata": {"name": "default"}}))
    for name in ("a", "b"):
        st.set_pod(pod_obj(name, pods[name][1], {"pod": name}))
    st.set_policy("default/b", model.netpol({"metadata": {"namespace": "default", "name": "b"}, "spec": {
        "podSelector": {"matchLabels": {"pod": "b"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                     "ports": [{"port": 8080}]}]}}))
    d1 = pnft.desired(st, "n1")
    nft.apply(pnft.full(d1, CIDR), "full", n)
    assert not reaches(pods, "a", "b")          # a is not a client
    assert not reaches(pods, "c", "a")          # c's policy is not in place yet: fail closed
    # c appears (as CNI ADD would report it) with role=client: one small transaction
    st.set_pod(pod_obj("c", pods["c"][1], {"pod": "c", "role": "client"}))
    d2 = pnft.desired(st, "n1")
    tx = pnft.transaction(d1, d2)
    assert "delete table" not in tx and "add element inet trellis-policy known" in tx
    nft.apply(tx, "update", n)
    assert reaches(pods, "c", "b") and reaches(pods, "c", "a")
    assert not reaches(pods, "a", "b")
    # a gains the label: only set elements change
    st.set_pod(pod_obj("a", pods["a"][1], {"pod": "a", "role": "client"}))
    d3 = pnft.desired(st, "n1")
    tx = pnft.transaction(d2, d3)
    assert tx.startswith("add element") and "chain" not in tx
    nft.apply(tx, "update", n)
    assert reaches(pods, "a", "b")
    # the policy goes: its chain and sets go with it
    st.set_policy("default/b", None)
    d4 = pnft.desired(st, "n1")
    nft.apply(pnft.transaction(d3, d4), "update", n)
    doc = nft.list_table("inet", pnft.TABLE, n)
    assert not [o for o in doc["nftables"] if "chain" in o and o["chain"]["name"].startswith("netpol-")]
    assert not [o for o in doc["nftables"] if "set" in o and o["set"]["name"].startswith("sel-")]
    assert reaches(pods, "a", "b") and reaches(pods, "b", "a")


def test_established_flows_survive_a_full_sync(node):
    """A full sync replaces the table atomically; conntrack keeps admitted connections."""
    n, pods = node
    st = PolicyState()
    for name, (_, ip) in pods.items():
        st.set_pod(pod_obj(name, ip, {"pod": name}))
    nft.apply(pnft.full(pnft.desired(st, "n1"), CIDR), "full", n)
    import subprocess
    hold = subprocess.Popen(["ip", "netns", "exec", pods["a"][0], PY, "-c", ECHO_CLIENT, pods["b"][1]],
                            stdout=subprocess.PIPE, text=True)
    subprocess.Popen(["ip", "netns", "exec", pods["b"][0], PY, "-c", ECHO_SERVER])
    import time
    time.sleep(0.5)
    for _ in range(3):
        nft.apply(pnft.full(pnft.desired(st, "n1"), CIDR), "full", n)
        time.sleep(0.3)
    out, _ = hold.communicate(timeout=20)
    assert hold.returncode == 0, out


ECHO_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9090)); s.listen()
c, _ = s.accept(); c.settimeout(10)
while True:
    d = c.recv(100)
    if not d: break
    c.sendall(d)
"""
ECHO_CLIENT = """
import socket, sys, time
for _ in range(50):
    try:
        s = socket.create_connection((sys.argv[1], 9090), timeout=1); break
    except OSError: time.sleep(0.05)
s.settimeout(2)
for i in range(20):
    s.sendall(b"%d" % i); assert s.recv(100) == b"%d" % i; time.sleep(0.1)
print("ok")
"""
