"""Routed pod wiring in throwaway namespaces: ADD/DEL/CHECK/GC, rollback, anti-spoofing, restart."""
import concurrent.futures
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import needs_root
from nsutil import Spaces, ping, sh, tcp_connect
from trellis.agent import nettable
from trellis.agent.cniserver import CNIServer
from trellis.agent.dataplane import CNIFailure, PodNetwork, Request, host_ifname
from trellis.agent.ipam import Allocator, DiskStore
from trellis.kernel import netlink, nft

pytestmark = needs_root


@pytest.fixture
def node(tmp_path):
    sp = Spaces()
    n = sp.add("node")
    sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh(n, "ip", "addr", "add", "172.31.9.1/32", "dev", "lo")  # a node address to ping from
    net = PodNetwork(Allocator("10.244.1.0/24", DiskStore(str(tmp_path / "ipam"))), 1500, "10.244.0.0/16", netns=n)
    net.restore()
    yield sp, n, net
    sp.close()


def add_pod(sp, net, name, ifname="eth0"):
    ns = sp.add(name)
    req = Request("ADD", f"cid-{name}", f"/run/netns/{ns}", ifname, {"K8S_POD_NAMESPACE": "default",
                                                                      "K8S_POD_NAME": name}, {"cniVersion": "1.0.0"})
    return ns, req, net.add(req)


def test_add_wires_a_routed_pod(node):
    sp, n, net = node
    ns, req, res = add_pod(sp, net, "a")
    assert res["ips"] == [{"address": "10.244.1.1/32", "gateway": "169.254.1.1", "interface": 1}]
    host_if = host_ifname("cid-a", "eth0")
    assert res["interfaces"][0]["name"] == host_if and "sandbox" not in res["interfaces"][0]
    assert res["interfaces"][1]["name"] == "eth0" and res["interfaces"][1]["sandbox"] == req.netns
    assert netlink.get_link(host_if, n).up
    pod = netlink.pod_interface(req.netns, "eth0")
    assert pod["addrs"] == ["10.244.1.1/32"] and pod["mtu"] == 65535  # the link: between pods of the node
    assert (None, 0, "169.254.1.1") in pod["routes"] and ("10.244.1.0", 24, "169.254.1.1") in pod["routes"]
    assert "default via 169.254.1.1 dev eth0 mtu 1500" in sh(ns, "ip", "route").stdout  # what leaves the node
    assert netlink.Route("10.244.1.1/32", host_if) in netlink.owned_routes(n)
    assert sh(n, "cat", f"/proc/sys/net/ipv4/conf/{host_if}/proxy_arp").stdout.strip() == "1"
    table = json.dumps(nft.list_table("inet", nettable.TABLE, n))
    assert '"fib"' in table and "anti-spoofing" in table and "masquerade" in table
    assert ping(n, "10.244.1.1")  # node -> pod
    # a repeated ADD returns the same answer and makes nothing new
    assert net.add(req) == res
    assert len(netlink.list_links(n, nettable.HOST_IF_PREFIX)) == 1
    net.check(req)


def test_pods_on_a_node_talk(node):
    sp, n, net = node
    a, _, ra = add_pod(sp, net, "a")
    b, _, rb = add_pod(sp, net, "b")
    ip_b = rb["ips"][0]["address"].split("/")[0]
    sp.spawn(b, sys.executable, "-m", "trellis.lab.images.agnhost", "serve", "--port", "8080/TCP", "--port", "8081/UDP")
    time.sleep(0.5)
    assert ping(a, ip_b)
    assert tcp_connect(a, f"{ip_b}:8080")
    p = sh(a, sys.executable, "-m", "trellis.lab.images.agnhost", "connect", f"{ip_b}:8081", "--protocol", "udp",
           check=False)
    assert p.returncode == 0, p.stdout


def test_check_notices_a_broken_pod(node):
    sp, n, net = node
    ns, req, _ = add_pod(sp, net, "a")
    sh(ns, "ip", "addr", "flush", "dev", "eth0")
    with pytest.raises(CNIFailure, match="does not hold 10.244.1.1/32"):
        net.check(req)


def test_del_is_idempotent_and_releases_without_the_namespace(node):
    sp, n, net = node
    ns, req, _ = add_pod(sp, net, "a")
    host_if = host_ifname("cid-a", "eth0")
    net.delete(req)
    net.delete(req)  # twice: still fine
    assert netlink.get_link(host_if, n) is None
    assert not [r for r in netlink.owned_routes(n) if r.dst == "10.244.1.1/32"]
    assert net.ipam.store.all() == []
    ns2, req2, _ = add_pod(sp, net, "b")
    subprocess.run(["ip", "netns", "del", ns2], check=True)  # the runtime lost the namespace
    net.delete(req2)
    assert net.ipam.store.all() == [] and netlink.list_links(n, nettable.HOST_IF_PREFIX) == []


def test_failed_add_leaves_nothing(node):
    sp, n, net = node
    with pytest.raises(CNIFailure) as e:
        net.add(Request("ADD", "cid-x", "/run/netns/does-not-exist", "eth0"))
    assert e.value.code == 3 and net.ipam.store.all() == []
    clash = sp.add("clash")
    sh(clash, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "other0")  # the pod already has an eth0
    with pytest.raises(CNIFailure, match="wiring pod"):
        net.add(Request("ADD", "cid-c", f"/run/netns/{clash}", "eth0"))
    assert net.ipam.store.all() == []
    assert netlink.list_links(n, nettable.HOST_IF_PREFIX) == []
    assert not [r for r in netlink.owned_routes(n) if r.dst.startswith("10.244.1.")]


def test_add_replaces_a_half_made_veth_of_an_earlier_attempt(node):
    sp, n, net = node
    pod = sp.add("retry")
    host_if = host_ifname("cid-r", "eth0")
    sh(n, "ip", "link", "add", host_if, "type", "veth", "peer", "name", "leftover0")  # as a crash might leave it
    res = net.add(Request("ADD", "cid-r", f"/run/netns/{pod}", "eth0"))
    assert netlink.get_link(host_if, n).kind == "veth" and netlink.get_link("leftover0", n) is None
    assert ping(n, res["ips"][0]["address"].split("/")[0])


def test_exhausted_block_says_try_again_and_leaks_nothing(tmp_path):
    sp = Spaces()
    try:
        n = sp.add("node")
        net = PodNetwork(Allocator("10.244.7.0/30", DiskStore(str(tmp_path))), 1500, "10.244.0.0/16", netns=n)
        net.restore()
        add_pod(sp, net, "a")
        add_pod(sp, net, "b")
        with pytest.raises(CNIFailure) as e:
            add_pod(sp, net, "c")
        assert e.value.code == 11 and "no free address in 10.244.7.0/30" in e.value.msg
        assert len(netlink.list_links(n, nettable.HOST_IF_PREFIX)) == 2
    finally:
        sp.close()


def test_anti_spoofing_drops_forged_sources(node):
    sp, n, net = node
    a, _, _ = add_pod(sp, net, "a")
    b, _, rb = add_pod(sp, net, "b")
    ip_b = rb["ips"][0]["address"].split("/")[0]
    assert ping(a, ip_b)
    sh(a, "ip", "addr", "add", "10.244.1.77/32", "dev", "eth0")  # a claims an address that is not its own
    assert not ping(a, ip_b, source="10.244.1.77")
    sh(a, "ip", "addr", "add", ip_b + "/32", "dev", "eth0", check=False)
    rules = nft.list_table("inet", nettable.TABLE, n)["nftables"]
    drops = [r["rule"] for r in rules if "rule" in r and r["rule"].get("comment") == "anti-spoofing"]
    counter = next(e["counter"] for e in drops[0]["expr"] if "counter" in e)
    assert counter["packets"] >= 1
    assert ping(a, ip_b)  # its own address still works


def test_restore_after_an_agent_restart(node):
    sp, n, net = node
    a, _, _ = add_pod(sp, net, "a")
    b, _, rb = add_pod(sp, net, "b")
    ip_b = rb["ips"][0]["address"].split("/")[0]
    sh(n, "nft", "delete", "table", "inet", nettable.TABLE)
    sh(n, "ip", "route", "del", f"{ip_b}/32")
    assert not ping(a, ip_b)
    fresh = PodNetwork(Allocator("10.244.1.0/24", net.ipam.store), 1500, "10.244.0.0/16", netns=n)
    fresh.restore()
    assert ping(a, ip_b)
    assert nft.list_table("inet", nettable.TABLE, n) is not None


def test_64_parallel_adds_through_trellis_cni(node, tmp_path):
    sp, n, net = node
    sock = str(tmp_path / "agent.sock")
    srv = CNIServer(sock, lambda: net, lambda: None)
    srv.start()
    pods = [sp.add(f"q{i}") for i in range(64)]
    conf = json.dumps({"cniVersion": "1.0.0", "name": "trellis", "type": "trellis", "socket": sock})

    def cni(cmd, i):
        env = {"PATH": os.environ["PATH"], "CNI_COMMAND": cmd, "CNI_CONTAINERID": f"par{i}", "CNI_IFNAME": "eth0",
               "CNI_NETNS": f"/run/netns/{pods[i]}", "CNI_PATH": "/usr/lib/cni"}
        p = subprocess.run([sys.executable, "-m", "trellis.cni.main"], input=conf, env=env, capture_output=True,
                           text=True, timeout=120)
        return p.returncode, p.stdout
    try:
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            results = list(pool.map(lambda i: cni("ADD", i), range(64)))
        assert all(rc == 0 for rc, _ in results), [o for rc, o in results if rc][:3]
        ips = [json.loads(out)["ips"][0]["address"] for _, out in results]
        assert len(set(ips)) == 64
        assert len(netlink.list_links(n, nettable.HOST_IF_PREFIX)) == 64
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            assert all(rc == 0 for rc, _ in pool.map(lambda i: cni("DEL", i), range(64)))
        assert net.ipam.store.all() == [] and netlink.list_links(n, nettable.HOST_IF_PREFIX) == []
    finally:
        srv.stop()


def test_gc_releases_what_the_runtime_no_longer_has(node):
    sp, n, net = node
    add_pod(sp, net, "a")
    add_pod(sp, net, "b")
    gone = net.gc({("cid-a", "eth0")})
    assert [r.container_id for r in gone] == ["cid-b"]
    assert [r.container_id for r in net.ipam.store.all()] == ["cid-a"]
    assert netlink.get_link(host_ifname("cid-b", "eth0"), n) is None
