"""Cluster DNS to the letter of the Kubernetes DNS schema 1.1.0 (kubernetes/dns, specification.md)."""
import socket
import threading

from dnslib import QTYPE, RCODE, DNSRecord

from trellis.dns.records import build
from trellis.dns.server import Resolver, serve_udp

SERVICES = [
    {"metadata": {"name": "web", "namespace": "default"},
     "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"metadata": {"name": "empty", "namespace": "default"},  # headless, only a not-ready endpoint
     "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
    {"metadata": {"name": "db", "namespace": "prod"},
     "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}},
    {"metadata": {"name": "alias", "namespace": "default"},  # ExternalName at an in-cluster name
     "spec": {"type": "ExternalName", "externalName": "web.default.svc.cluster.local."}},
    {"metadata": {"name": "alias-db", "namespace": "default"},
     "spec": {"type": "ExternalName", "externalName": "db.prod.svc.cluster.local"}},
    {"metadata": {"name": "alias-empty", "namespace": "default"},
     "spec": {"type": "ExternalName", "externalName": "empty.default.svc.cluster.local"}},
    {"metadata": {"name": "outside", "namespace": "default"},
     "spec": {"type": "ExternalName", "externalName": "db.example.org"}},
    {"metadata": {"name": "loop-a", "namespace": "default"},
     "spec": {"type": "ExternalName", "externalName": "loop-b.default.svc.cluster.local"}},
    {"metadata": {"name": "loop-b", "namespace": "default"},
     "spec": {"type": "ExternalName", "externalName": "loop-a.default.svc.cluster.local"}},
]
SLICES = [
    {"metadata": {"name": "db-1", "namespace": "prod", "labels": {"kubernetes.io/service-name": "db"}},
     "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
     "endpoints": [{"addresses": ["10.244.1.7"], "hostname": "db-0", "conditions": {"ready": True}}]},
    {"metadata": {"name": "empty-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "empty"}},
     "addressType": "IPv4", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
     "endpoints": [{"addresses": ["10.244.1.9"], "conditions": {"ready": False}}]},
]


def resolver():
    r = Resolver("cluster.local", ["10.96.0.0/16", "10.244.0.0/16"])
    r.index = build(SERVICES, SLICES, [])
    return r


def ask(r, name, qtype="A"):
    reply = r.answer(DNSRecord.question(name, qtype))
    return (RCODE.get(reply.header.rcode),
            [(str(a.rname), QTYPE.get(a.rtype), str(a.rdata)) for a in reply.rr], reply)


def test_schema_version_txt_record():
    rcode, answers, reply = ask(resolver(), "dns-version.cluster.local", "TXT")
    assert rcode == "NOERROR" and answers == [("dns-version.cluster.local.", "TXT", '"1.1.0"')]
    assert reply.header.aa == 1
    assert ask(resolver(), "dns-version.cluster.local", "A")[:2] == ("NOERROR", [])  # exists, no A


def test_headless_without_ready_endpoints_is_nxdomain_for_a_and_srv():
    r = resolver()
    for qtype in ("A", "AAAA", "SRV"):
        rcode, answers, reply = ask(r, "empty.default.svc.cluster.local", qtype)
        assert (rcode, answers) == ("NXDOMAIN", []), qtype
        assert [QTYPE.get(a.rtype) for a in reply.auth] == ["SOA"]
    assert ask(r, "_http._tcp.empty.default.svc.cluster.local", "SRV")[:2] == ("NXDOMAIN", [])
    assert ask(r, "10-244-1-9.empty.default.svc.cluster.local")[:2] == ("NXDOMAIN", [])
    # with a ready endpoint the same shape of service answers (and NODATA for a type it lacks)
    assert ask(r, "db.prod.svc.cluster.local")[:2] == ("NOERROR", [("db.prod.svc.cluster.local.", "A", "10.244.1.7")])
    assert ask(r, "db.prod.svc.cluster.local", "AAAA")[:2] == ("NOERROR", [])


def test_external_name_in_the_cluster_carries_the_targets_records():
    r = resolver()
    rcode, answers, _ = ask(r, "alias.default.svc.cluster.local")
    assert rcode == "NOERROR" and answers == [
        ("alias.default.svc.cluster.local.", "CNAME", "web.default.svc.cluster.local."),
        ("web.default.svc.cluster.local.", "A", "10.96.0.20")]
    rcode, answers, _ = ask(r, "_pg._tcp.alias-db.default.svc.cluster.local", "SRV")
    assert rcode == "NXDOMAIN"  # SRV names are the service's own, not reached through the alias
    rcode, answers, _ = ask(r, "alias-db.default.svc.cluster.local")
    assert answers[-1] == ("db.prod.svc.cluster.local.", "A", "10.244.1.7")
    rcode, answers, reply = ask(r, "alias-empty.default.svc.cluster.local")
    assert rcode == "NXDOMAIN" and [a[1] for a in answers] == ["CNAME"] and reply.auth  # the target's rcode
    assert ask(r, "alias.default.svc.cluster.local", "CNAME")[1] == [
        ("alias.default.svc.cluster.local.", "CNAME", "web.default.svc.cluster.local.")]
    # outside the zone: the CNAME only, the client's resolver goes on
    assert ask(r, "outside.default.svc.cluster.local")[:2] == (
        "NOERROR", [("outside.default.svc.cluster.local.", "CNAME", "db.example.org.")])
    rcode, answers, _ = ask(r, "loop-a.default.svc.cluster.local")  # a loop ends, it does not hang
    assert rcode == "NOERROR" and 1 <= len(answers) <= 9 and all(a[1] == "CNAME" for a in answers)


def test_a_stub_resolver_gets_the_address_in_one_query_over_udp():
    """What getaddrinfo in a pod needs: one answer with the CNAME and the address, over real UDP."""
    r = resolver()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    stop = threading.Event()
    t = threading.Thread(target=serve_udp, args=(udp, r, stop), daemon=True)
    t.start()
    try:
        reply = DNSRecord.parse(DNSRecord.question("alias.default.svc.cluster.local").send(
            "127.0.0.1", udp.getsockname()[1], timeout=2))
        assert [(QTYPE.get(a.rtype), str(a.rdata)) for a in reply.rr] == [
            ("CNAME", "web.default.svc.cluster.local."), ("A", "10.96.0.20")]
        reply = DNSRecord.parse(DNSRecord.question("dns-version.cluster.local", "TXT").send(
            "127.0.0.1", udp.getsockname()[1], timeout=2))
        assert str(reply.rr[0].rdata) == '"1.1.0"'
    finally:
        stop.set()
        t.join(2)
        udp.close()
