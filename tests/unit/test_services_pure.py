"""Pure parts of Services: DNS records and a real UDP/TCP DNS server on loopback, EndpointSlice
construction, LoadBalancer IPAM and the L2 announcer choice."""
import socket
import struct
import threading

from dnslib import QTYPE, RCODE, DNSRecord

from trellis.agent.lbannounce import desired
from trellis.proxy.announce import announcer_for
from trellis.controller.lbipam import pool_addresses
from trellis.dns.records import build
from trellis.dns.server import Resolver, serve_udp, tcp_server
from trellis.lab.endpointslices import desired_slices

SERVICES = [
    {"metadata": {"name": "web", "namespace": "default"},
     "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
              "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"metadata": {"name": "db", "namespace": "prod"},
     "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
    {"metadata": {"name": "ext", "namespace": "default"},
     "spec": {"type": "ExternalName", "externalName": "db.example.org"}},
]
SLICES = [{"metadata": {"name": "db-1", "namespace": "prod", "labels": {"kubernetes.io/service-name": "db"}},
           "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
           "endpoints": [{"addresses": ["10.244.1.7"], "hostname": "db-0", "conditions": {"ready": True}},
                         {"addresses": ["10.244.2.8"], "conditions": {"ready": True}},
                         {"addresses": ["10.244.2.9"], "conditions": {"ready": False}}]}]
PODS = [{"metadata": {"name": "p", "namespace": "default"}, "spec": {}, "status": {"podIP": "10.244.3.3"}}]


def resolver():
    r = Resolver("cluster.local", ["10.96.0.0/16", "10.244.0.0/16"])
    r.index = build(SERVICES, SLICES, PODS)
    return r


def ask(r, name, qtype="A"):
    reply = r.answer(DNSRecord.question(name, qtype))
    return RCODE.get(reply.header.rcode), [(QTYPE.get(a.rtype), str(a.rdata)) for a in reply.rr]


def test_service_names():
    r = resolver()
    assert ask(r, "web.default.svc.cluster.local") == ("NOERROR", [("A", "10.96.0.20")])
    assert ask(r, "_http._tcp.web.default.svc.cluster.local", "SRV") == (
        "NOERROR", [("SRV", "0 100 80 web.default.svc.cluster.local.")])
    assert ask(r, "20.0.96.10.in-addr.arpa", "PTR") == ("NOERROR", [("PTR", "web.default.svc.cluster.local.")])
    assert ask(r, "ext.default.svc.cluster.local") == ("NOERROR", [("CNAME", "db.example.org.")])
    # a name that exists without records of the type: NODATA, not NXDOMAIN
    assert ask(r, "web.default.svc.cluster.local", "AAAA") == ("NOERROR", [])
    assert ask(r, "default.svc.cluster.local") == ("NOERROR", [])
    assert ask(r, "nope.default.svc.cluster.local") == ("NXDOMAIN", [])
    assert ask(r, "WEB.Default.svc.cluster.local.")[1] == [("A", "10.96.0.20")]  # names are case-insensitive


def test_headless_endpoints_and_pods():
    r = resolver()
    rc, answers = ask(r, "db.prod.svc.cluster.local")
    assert sorted(answers) == [("A", "10.244.1.7"), ("A", "10.244.2.8")]  # not-ready endpoint left out
    assert ask(r, "db-0.db.prod.svc.cluster.local") == ("NOERROR", [("A", "10.244.1.7")])
    assert ask(r, "10-244-2-8.db.prod.svc.cluster.local") == ("NOERROR", [("A", "10.244.2.8")])
    rc, srv = ask(r, "_pg._tcp.db.prod.svc.cluster.local", "SRV")
    assert sorted(srv) == [("SRV", "0 100 5432 10-244-2-8.db.prod.svc.cluster.local."),
                           ("SRV", "0 100 5432 db-0.db.prod.svc.cluster.local.")]
    assert ask(r, "7.1.244.10.in-addr.arpa", "PTR") == ("NOERROR", [("PTR", "db-0.db.prod.svc.cluster.local.")])
    assert ask(r, "10-244-3-3.default.pod.cluster.local") == ("NOERROR", [("A", "10.244.3.3")])
    assert ask(r, "3.3.244.10.in-addr.arpa", "PTR") == ("NOERROR", [("PTR", "10-244-3-3.default.pod.cluster.local.")])
    assert ask(r, "9.9.244.10.in-addr.arpa", "PTR")[0] == "NXDOMAIN"  # in a cluster range, unknown


def test_outside_names_are_refused_without_an_upstream():
    assert ask(resolver(), "example.org")[0] == "REFUSED"
    assert ask(resolver(), "1.1.168.192.in-addr.arpa", "PTR")[0] == "REFUSED"


def test_real_server_on_loopback_udp_and_tcp():
    r = resolver()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    port = udp.getsockname()[1]
    stop = threading.Event()
    t = threading.Thread(target=serve_udp, args=(udp, r, stop), daemon=True)
    t.start()
    tcp = tcp_server(("127.0.0.1", 0), r)
    threading.Thread(target=tcp.serve_forever, daemon=True).start()
    try:
        reply = DNSRecord.parse(DNSRecord.question("web.default.svc.cluster.local").send("127.0.0.1", port, timeout=2))
        assert str(reply.rr[0].rdata) == "10.96.0.20" and reply.header.aa == 1
        q = DNSRecord.question("db.prod.svc.cluster.local").pack()
        with socket.create_connection(tcp.server_address, timeout=2) as c:
            c.sendall(struct.pack("!H", len(q)) + q)
            n = struct.unpack("!H", c.recv(2))[0]
            data = b""
            while len(data) < n:
                data += c.recv(n - len(data))
        assert len(DNSRecord.parse(data).rr) == 2
        udp.sendto(b"garbage", ("127.0.0.1", port))  # not DNS: dropped, server keeps going
        reply = DNSRecord.parse(DNSRecord.question("nope.svc.cluster.local").send("127.0.0.1", port, timeout=2))
        assert reply.header.rcode == RCODE.NXDOMAIN and reply.auth  # negative answers carry the SOA
    finally:
        stop.set()
        tcp.shutdown()
        t.join(2)
        udp.close()


def pod(name, ip, ready=True, ports=(("http", 8080),), deleting=False, node="node-1"):
    return {"metadata": {"name": name, "namespace": "default", "uid": name,
                         **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
                {"name": n, "containerPort": p} for n, p in ports]}]},
            "status": {"podIP": ip, "phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


SVC = {"metadata": {"name": "web", "namespace": "default", "uid": "u"},
       "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}


def test_slices_resolve_named_ports_per_pod_and_set_conditions():
    pods = [pod("a", "10.244.1.1"), pod("b", "10.244.1.2", ports=(("http", 9090),)),
            pod("c", "10.244.1.3", ready=False), pod("d", "10.244.1.4", deleting=True),
            pod("e", "10.244.1.5", ports=())]
    got = desired_slices(SVC, pods)
    by_port = {ports: eps for ports, eps in got}
    assert set(by_port) == {(("http", 8080, "TCP"),), (("http", 9090, "TCP"),), ()}
    conds = {e["targetRef"]["name"]: e["conditions"] for e in by_port[(("http", 8080, "TCP"),)]}
    assert conds["a"] == {"ready": True, "serving": True, "terminating": False}
    assert conds["c"] == {"ready": False, "serving": False, "terminating": False}
    assert conds["d"] == {"ready": False, "serving": True, "terminating": True}
    pnr = {**SVC, "spec": {**SVC["spec"], "publishNotReadyAddresses": True}}
    assert all(e["conditions"]["ready"] for _, eps in desired_slices(pnr, pods) for e in eps)
    assert desired_slices(SVC, []) == [((), [])]  # the placeholder slice


def test_slices_hold_at_most_100_endpoints():
    pods = [pod(f"p{i:03d}", f"10.244.{i // 200}.{i % 200 + 1}") for i in range(250)]
    assert [len(eps) for _, eps in desired_slices(SVC, pods)] == [100, 100, 50]


def test_pool_addresses_and_announcer_choice():
    assert pool_addresses({"spec": {"addresses": ["172.31.0.200-172.31.0.202", "10.0.0.0/30"]}}) == [
        "172.31.0.200", "172.31.0.201", "172.31.0.202", "10.0.0.1", "10.0.0.2"]
    nodes = ["node-1", "node-2", "node-3"]
    owners = {announcer_for(f"172.31.0.{i}", nodes) for i in range(200, 240)}
    assert owners == set(nodes)  # addresses spread over the nodes
    assert announcer_for("172.31.0.200", nodes) == announcer_for("172.31.0.200", list(reversed(nodes)))
    first = announcer_for("172.31.0.200", nodes)
    rest = [n for n in nodes if n != first]
    assert announcer_for("172.31.0.200", rest) in rest

    def node(name, ready=True):
        return {"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready",
                                                                        "status": "True" if ready else "False"}]}}
    svc = {"metadata": {"name": "s", "namespace": "d"}, "spec": {"type": "LoadBalancer",
                                                                  "externalTrafficPolicy": "Local"},
           "status": {"loadBalancer": {"ingress": [{"ip": "172.31.0.200"}]}}}
    nodes_objs = [node("node-1"), node("node-2"), node("node-3", ready=False)]
    # Local policy: only a node with an endpoint may announce
    assert desired("node-2", [svc], nodes_objs, lambda ns, n: {"node-2"}) == {"172.31.0.200"}
    assert desired("node-1", [svc], nodes_objs, lambda ns, n: {"node-2"}) == set()
    assert desired("node-3", [svc], nodes_objs, lambda ns, n: {"node-3"}) == set()  # not Ready
