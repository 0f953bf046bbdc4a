"""The agent's Proxier against a real kernel: a node namespace with routed pods, services fed
through in-memory informers, real connections to ClusterIPs, minimal updates, conntrack cleanup."""
import threading
import time

import pytest

from conftest import needs_root
from fakes import FakeInformer
from nsutil import PY, Spaces, sh
from trellis.agent.dataplane import PodNetwork, Request
from trellis.agent.ipam import Allocator, MemoryStore
from trellis.agent.proxier import Proxier
from trellis.kernel import netlink, nft
from trellis.proxy import nftables as pnft

pytestmark = needs_root


def service(name, ip, port=80, proto="TCP"):
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip],
                     "ports": [{"name": "p", "port": port, "protocol": proto, "targetPort": 8080}]}}


def endpoint_slice(name, ips, proto="TCP"):
    return {"metadata": {"name": f"{name}-x", "namespace": "default", "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "ports": [{"name": "p", "port": 8080, "protocol": proto}],
            "endpoints": [{"addresses": [ip], "nodeName": "n1", "conditions": {"ready": True}} for ip in ips]}


@pytest.fixture
def node():
    sp = Spaces()
    n = sp.add("node")
    sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    sh(n, "ip", "link", "set", "lo", "up")
    sh(n, "ip", "addr", "add", "172.31.9.1/32", "dev", "lo")
    sh(n, "ip", "route", "add", "10.96.0.0/16", "dev", "lo")  # as the agent does: output NAT needs a route
    net = PodNetwork(Allocator("10.244.1.0/24", MemoryStore()), 1500, "10.244.0.0/16", netns=n)
    net.restore()
    pods = []
    for name in ("a", "b"):
        ns = sp.add(name)
        res = net.add(Request("ADD", f"cid-{name}", f"/run/netns/{ns}", "eth0", {}, {"cniVersion": "1.0.0"}))
        ip = res["ips"][0]["address"].split("/")[0]
        sp.spawn(ns, PY, "-c", SERVER, name)
        pods.append((ns, ip))
    services, slices = FakeInformer(), FakeInformer()
    applied = []
    px = Proxier(services, slices, "n1", "10.244.0.0/16", netns=n, on_applied=lambda k, t: applied.append(k))
    stop = threading.Event()
    t = threading.Thread(target=px.run, args=(stop,), daemon=True)
    t.start()
    time.sleep(0.3)
    yield n, pods, services, slices, px, applied
    stop.set()
    t.join(5)
    sp.close()


SERVER = """
import socket, sys, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080)); s.listen()
    while True:
        c, _ = s.accept(); c.sendall(sys.argv[1].encode()); c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 8080))
    while True:
        d, a = s.recvfrom(100); s.sendto(sys.argv[1].encode(), a)
threading.Thread(target=udp, daemon=True).start(); tcp()
"""


def ask(n, target, proto="tcp"):
    p = sh(n, PY, "-m", "trellis.lab.images.agnhost", "connect", target, "--protocol", proto, "--timeout", "1",
           check=False)
    return p.stdout.strip()


def wait_applied(applied, key, timeout=5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if any(key in k for k in applied):
            applied.clear()
            return
        time.sleep(0.02)
    raise AssertionError(f"{key} was not applied")


def test_clusterip_from_the_node_spreads_and_follows_endpoints(node):
    n, pods, services, slices, px, applied = node
    time.sleep(0.5)
    services.put(service("web", "10.96.5.5"))
    slices.put(endpoint_slice("web", [ip for _, ip in pods]))
    wait_applied(applied, "default/web")
    seen = {ask(n, "10.96.5.5:80") for _ in range(20)}
    assert seen == {"a", "b"}
    slices.put(endpoint_slice("web", [pods[1][1]]))  # a goes away
    wait_applied(applied, "default/web")
    assert {ask(n, "10.96.5.5:80") for _ in range(5)} == {"b"}
    # the update touched this service only, in memory: the table shows it
    table = nft.list_table("inet", pnft.TABLE, n)
    chains = [i["chain"]["name"] for i in table["nftables"] if "chain" in i]
    assert sum(c.startswith("svc-") for c in chains) == 1


def test_no_endpoints_is_refused_then_served_when_one_appears(node):
    n, pods, services, slices, px, applied = node
    time.sleep(0.5)
    services.put(service("late", "10.96.5.6"))
    wait_applied(applied, "default/late")
    t0 = time.monotonic()
    assert "refused" in ask(n, "10.96.5.6:80").lower()
    assert time.monotonic() - t0 < 1
    slices.put(endpoint_slice("late", [pods[0][1]]))
    wait_applied(applied, "default/late")
    assert ask(n, "10.96.5.6:80") == "a"
    services.remove("default", "late")
    wait_applied(applied, "default/late")
    assert "refused" in ask(n, "10.96.5.6:80").lower() or "timed out" in ask(n, "10.96.5.6:80")
    table = str(nft.list_table("inet", pnft.TABLE, n))
    assert "10.96.5.6" not in table and "late" not in table


def test_udp_flows_to_a_removed_endpoint_are_flushed(node):
    n, pods, services, slices, px, applied = node
    time.sleep(0.5)
    services.put(service("dns", "10.96.5.7", 53, "UDP"))
    slices.put(endpoint_slice("dns", [pods[0][1]], "UDP"))
    wait_applied(applied, "default/dns")
    assert ask(n, "10.96.5.7:53", "udp") == "a"
    assert pods[0][1] in sh(n, "conntrack", "-L", "-p", "udp", check=False).stdout
    slices.put(endpoint_slice("dns", [pods[1][1]], "UDP"))
    wait_applied(applied, "default/dns")
    assert f"src={pods[0][1]}" not in sh(n, "conntrack", "-L", "-p", "udp", check=False).stdout
    assert ask(n, "10.96.5.7:53", "udp") == "b"


def test_full_sync_after_restart_sweeps_what_the_old_agent_left(node):
    n, pods, services, slices, px, applied = node
    nft.apply(f"add chain inet {pnft.TABLE} svc-OLDOLDOL-default/gone/tcp/p\n", "plant a stale chain", n)
    services2, slices2 = FakeInformer(), FakeInformer()
    fresh = Proxier(services2, slices2, "n1", "10.244.0.0/16", netns=n)
    services2.put(service("web", "10.96.5.5"))
    slices2.put(endpoint_slice("web", [pods[0][1]]))
    fresh.full_sync()
    chains = [i["chain"]["name"] for i in nft.list_table("inet", pnft.TABLE, n)["nftables"] if "chain" in i]
    assert "svc-OLDOLDOL-default/gone/tcp/p" not in chains
    assert ask(n, "10.96.5.5:80") == "a"
    assert netlink.get_link("lo", n).up
