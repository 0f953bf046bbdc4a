"""Services end to end on a 3-node lab: EndpointSlices, the agent's nftables proxy, LoadBalancer
addresses, cluster DNS. Real connections from pods, nodes and the lab's client namespace."""
import json
import subprocess
import time

import pytest

from conftest import needs_root
from helpers import PY, deployment, pod_exec, running_pods, wait_for
from trellis.kube.client import KubeClient
from trellis.lab import topology

pytestmark = [needs_root, pytest.mark.lab]
NODES = {"node-1": "172.31.0.11", "node-2": "172.31.0.12", "node-3": "172.31.0.13"}


@pytest.fixture(scope="module")
def kc(lab):
    c = lab.client()
    web = deployment("web", 3, container={"ports": [{"name": "http", "containerPort": 80},
                                                   {"name": "dns-ish", "containerPort": 81, "protocol": "UDP"}]})
    c.create("apps/v1", "deployments", web, "default")
    c.create("apps/v1", "deployments", deployment("client", 1), "default")
    c.create("v1", "services", service("web", {"app": "web"}, [("http", 80, "http", "TCP"),
                                                              ("udp", 81, "dns-ish", "UDP")],
                                       type="LoadBalancer"), "default")
    running_pods(c, "default", "app=web", 3)
    running_pods(c, "default", "app=client", 1)
    yield c
    c.close()


def service(name, selector, ports, **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": selector, **spec, "ports": [
                {"name": n, "port": p, "targetPort": t, "protocol": proto} for n, p, t, proto in ports]}}


def client_pod(kc):
    return running_pods(kc, "default", "app=client", 1)[0]["metadata"]["name"]


def connect(lab, pod, target, protocol="tcp", count=1, ask="hostname", timeout=2):
    out = pod_exec(lab.name, pod, PY, "-m", "trellis.lab.images.agnhost", "connect", target, "--protocol", protocol,
                   "--count", str(count), "--ask", ask, "--timeout", str(timeout), timeout=60)
    return out.stdout.split("\n")[:-1]


def from_client_ns(lab, target, protocol="tcp", count=1, ask="hostname", timeout=2):
    out = subprocess.run(["ip", "netns", "exec", f"{lab.name}-client", PY, "-m", "trellis.lab.images.agnhost",
                          "connect", target, "--protocol", protocol, "--count", str(count), "--ask", ask,
                          "--timeout", str(timeout)], capture_output=True, text=True, timeout=60)
    return out.stdout.split("\n")[:-1]


def slice_ips(kc, svc, ns="default"):
    items, _ = kc.list("discovery.k8s.io/v1", "endpointslices", ns, label_selector=f"kubernetes.io/service-name={svc}")
    return sorted(a for s in items for e in s.get("endpoints") or [] for a in e["addresses"]
                  if (e.get("conditions") or {}).get("ready"))


def test_endpointslices_follow_pods_and_resolve_named_ports(lab, kc):
    pods = running_pods(kc, "default", "app=web", 3)
    want = sorted(p["status"]["podIP"] for p in pods)
    # the slice controller follows pod readiness a moment after the pods report it, as upstream's does
    wait_for(lambda: slice_ips(kc, "web") == want, 15, f"the web EndpointSlice to list {want}")
    items, _ = kc.list("discovery.k8s.io/v1", "endpointslices", "default", label_selector="kubernetes.io/service-name=web")
    ports = {p["name"]: (p["port"], p["protocol"]) for p in items[0]["ports"]}
    assert ports == {"http": (80, "TCP"), "udp": (81, "UDP")}
    assert items[0]["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert {e["nodeName"] for e in items[0]["endpoints"]} <= set(NODES)


def test_clusterip_spreads_tcp_and_udp_over_every_endpoint(lab, kc):
    names = {p["metadata"]["name"] for p in running_pods(kc, "default", "app=web", 3)}
    src = client_pod(kc)
    tcp = connect(lab, src, "web:80", count=30)  # by DNS name: resolv.conf search path + cluster DNS
    assert set(tcp) == names, tcp
    ip = kc.get("v1", "services", "web", "default")["spec"]["clusterIP"]
    udp = connect(lab, src, f"{ip}:81", "udp", count=30)
    assert set(udp) == names, udp


def test_pod_sees_client_ip_unchanged_through_clusterip(lab, kc):
    src = running_pods(kc, "default", "app=client", 1)[0]
    assert connect(lab, src["metadata"]["name"], "web:80", ask="clientip", count=3) == [src["status"]["podIP"]] * 3


def test_nodeport_on_every_node_and_loadbalancer_ip_from_outside(lab, kc):
    svc = wait_for(lambda: (s := kc.get("v1", "services", "web", "default"))["status"]["loadBalancer"].get("ingress")
                   and s, 10, "a LoadBalancer address")
    lb_ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert lb_ip.startswith("172.31.0.") and 200 <= int(lb_ip.rsplit(".", 1)[1]) <= 239
    names = {p["metadata"]["name"] for p in running_pods(kc, "default", "app=web", 3)}
    node_port = next(p["nodePort"] for p in svc["spec"]["ports"] if p["name"] == "http")
    for node_ip in NODES.values():
        got = from_client_ns(lab, f"{node_ip}:{node_port}", count=3)
        assert got and set(got) <= names, (node_ip, got)
    got = wait_for(lambda: (r := from_client_ns(lab, f"{lb_ip}:80", count=3)) and set(r) <= names and r,
                   10, "the LoadBalancer IP to answer")
    assert set(got) <= names
    # exactly one node answers ARP for it
    holders = [n for n in NODES if lb_ip in subprocess.run(["ip", "netns", "exec", f"{lab.name}-{n}", "ip", "-4",
                                                            "addr", "show", "dev", "lo"],
                                                           capture_output=True, text=True).stdout]
    assert len(holders) == 1, holders


def test_service_without_endpoints_rejects_instead_of_dropping(lab, kc):
    kc.create("v1", "services", service("empty", {"app": "nobody"}, [("t", 80, 80, "TCP"), ("u", 81, 81, "UDP")]),
              "default")
    ip = wait_for(lambda: kc.get("v1", "services", "empty", "default")["spec"].get("clusterIP"), 5)
    src = client_pod(kc)
    time.sleep(0.5)
    t0 = time.monotonic()
    out = connect(lab, src, f"{ip}:80", timeout=5)
    assert "refused" in out[0].lower(), out
    out = connect(lab, src, f"{ip}:81", "udp", timeout=5)
    assert "refused" in out[0].lower(), out
    assert time.monotonic() - t0 < 4, "rejected connections must fail fast, not time out"


def test_hairpin_pod_reaches_itself_through_its_service(lab, kc):
    pod = running_pods(kc, "default", "app=web", 3)[0]
    name = pod["metadata"]["name"]
    kc.create("v1", "services", service("self", {"app": "web", "pod-template-hash": pod["metadata"]["labels"][
        "pod-template-hash"]}, [("t", 80, 80, "TCP")]), "default")
    kc.patch("v1", "pods", name, {"metadata": {"labels": {"hairpin": "yes"}}}, "default")
    kc.patch("v1", "services", "self", {"spec": {"selector": {"hairpin": "yes"}}}, "default")
    wait_for(lambda: slice_ips(kc, "self") == [pod["status"]["podIP"]], 10, "the self service's slice")
    got = wait_for(lambda: (r := connect(lab, name, "self:80")) and r[0] == name and r, 10, "hairpin")
    assert got == [name]
    # the pod cannot receive its own address as source: hairpin traffic is masqueraded to the node
    seen = connect(lab, name, "self:80", ask="clientip")
    assert seen == [NODES[pod["spec"]["nodeName"]]], seen


def test_session_affinity_client_ip_sticks(lab, kc):
    kc.create("v1", "services", service("sticky", {"app": "web"}, [("t", 80, 80, "TCP")],
                                        sessionAffinity="ClientIP",
                                        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}), "default")
    wait_for(lambda: len(slice_ips(kc, "sticky")) == 3, 10, "sticky's endpoints")
    time.sleep(0.5)
    got = connect(lab, client_pod(kc), "sticky:80", count=12)
    assert len(got) == 12 and len(set(got)) == 1, got


def test_external_traffic_policy_local_keeps_client_ip_and_health_checks(lab, kc):
    kc.create("v1", "services", service("local", {"app": "web"}, [("t", 80, 80, "TCP")], type="LoadBalancer",
                                        externalTrafficPolicy="Local"), "default")
    svc = wait_for(lambda: (s := kc.get("v1", "services", "local", "default"))["status"]["loadBalancer"].get("ingress")
                   and s, 10, "an address")
    hc, node_port = svc["spec"]["healthCheckNodePort"], svc["spec"]["ports"][0]["nodePort"]
    wait_for(lambda: len(slice_ips(kc, "local")) == 3, 10, "endpoints")
    kc.patch("apps/v1", "deployments", "web", {"spec": {"replicas": 1}}, "default")
    pod = running_pods(kc, "default", "app=web", 1)[0]
    wait_for(lambda: len(slice_ips(kc, "local")) == 1, 15, "one endpoint left")
    home = pod["spec"]["nodeName"]
    time.sleep(0.5)
    for node, ip in NODES.items():
        code = health(lab, ip, hc)
        if node == home:
            assert code == 200
            assert from_client_ns(lab, f"{ip}:{node_port}", ask="clientip") == [topology.CLIENT_IP]
        else:
            assert code == 503
            assert "timed out" in from_client_ns(lab, f"{ip}:{node_port}", timeout=1)[0]
    kc.patch("apps/v1", "deployments", "web", {"spec": {"replicas": 3}}, "default")
    running_pods(kc, "default", "app=web", 3)
    # the next tests probe every node's NodePort from outside: wait until each node has its endpoint again
    wait_for(lambda: len(slice_ips(kc, "local")) == 3, 20, "three ready endpoints again")


def health(lab, ip, port):
    out = subprocess.run(["ip", "netns", "exec", f"{lab.name}-client", "curl", "-s", "-o", "/dev/null", "-w",
                          "%{http_code}", "-m", "2", f"http://{ip}:{port}/"], capture_output=True, text=True)
    return int(out.stdout or 0)


def dig(lab, pod, name, qtype="A"):
    code = ("import sys;from dnslib import DNSRecord;"
            "r=DNSRecord.parse(DNSRecord.question(sys.argv[1],sys.argv[2]).send('10.96.0.10',53,timeout=2));"
            "print(__import__('json').dumps([__import__('dnslib').RCODE.get(r.header.rcode)]+"
            "[[str(a.rname),__import__('dnslib').QTYPE.get(a.rtype),str(a.rdata)] for a in r.rr]))")
    out = pod_exec(lab.name, pod, PY, "-c", code, name, qtype)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_cluster_dns_records(lab, kc):
    src = client_pod(kc)
    ip = kc.get("v1", "services", "web", "default")["spec"]["clusterIP"]
    assert dig(lab, src, "web.default.svc.cluster.local") == ["NOERROR", ["web.default.svc.cluster.local.", "A", ip]]
    srv = dig(lab, src, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert srv[0] == "NOERROR" and srv[1][2] == "0 100 80 web.default.svc.cluster.local."
    ptr = dig(lab, src, ".".join(reversed(ip.split("."))) + ".in-addr.arpa", "PTR")
    assert ptr[1][2] == "web.default.svc.cluster.local."
    assert dig(lab, src, "nothere.default.svc.cluster.local")[0] == "NXDOMAIN"
    assert dig(lab, src, "example.org")[0] == "REFUSED"  # no upstream configured: nothing leaves the lab
    kc.create("v1", "services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"},
                                 "spec": {"type": "ExternalName", "externalName": "db.example.org"}}, "default")
    kc.create("v1", "services", service("hl", {"app": "web"}, [("http", 80, 80, "TCP")], clusterIP="None"), "default")
    t0 = time.monotonic()
    wait_for(lambda: dig(lab, src, "ext.default.svc.cluster.local")[1:] ==
             [["ext.default.svc.cluster.local.", "CNAME", "db.example.org."]], 5, "the CNAME")
    assert time.monotonic() - t0 < 3
    pods = {p["status"]["podIP"] for p in running_pods(kc, "default", "app=web", 3)}
    wait_for(lambda: {a[2] for a in dig(lab, src, "hl.default.svc.cluster.local")[1:]} == pods, 5, "headless A")
    # a pod's resolver uses the search path: the short name resolves
    out = pod_exec(lab.name, src, PY, "-c", "import socket;print(socket.gethostbyname('web'))")
    assert out.stdout.strip() == ip


def test_guestbook_end_to_end_through_dns_nodeports_lb_and_port_forward(lab, kc, capsys):
    from trellis.kube.discovery import Discovery, apply
    from trellis.lab import demo
    for obj in demo.guestbook_manifests():
        apply(kc, Discovery(kc), obj, "default")
    running_pods(kc, "default", "app=guestbook", 3)
    running_pods(kc, "default", "app=redis", 3)
    demo.guestbook_end_to_end(lab, kc, lambda m: None)
    out = capsys.readouterr().out
    assert out.count(" stored ") == 4, out  # three NodePorts and the LoadBalancer IP
    assert "4/4 entries OK" in out, out
    assert "-> svc/frontend: 4 entries" in out, out
    # the demo's second half: groups and contracts protect it, the probe matches the intent,
    # and users still get through every NodePort and the LoadBalancer
    assert demo.protect_guestbook(lab, kc, lambda m: None)
    out = capsys.readouterr().out
    assert "policy: as intended" in out and "rogue" in out, out
    assert "EndpointGroup default/redis-master: no contract allows this source" in out, out
    demo.guestbook_end_to_end(lab, kc, lambda m: None)
    out = capsys.readouterr().out
    assert out.count(" stored ") == 4 and "4/4 entries OK" in out, out
    # `make demo` again on the same lab: the policy of the first run is taken away for the "before"
    # matrix (all open), then applied again
    assert demo.protect_guestbook(lab, kc, lambda m: None)
    out = capsys.readouterr().out
    before = out.split("# before: no policy")[1].split("'.' reaches")[0]
    assert " X" not in before and "policy: as intended" in out, out


def test_loadbalancer_moves_when_its_node_leaves(lab, kc):
    svc = kc.get("v1", "services", "web", "default")
    lb_ip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
    holder = next(n for n in NODES if lb_ip in subprocess.run(
        ["ip", "netns", "exec", f"{lab.name}-{n}", "ip", "-4", "addr", "show", "dev", "lo"],
        capture_output=True, text=True).stdout)
    topology.remove_node(lab.name, holder)
    t0 = time.monotonic()
    got = wait_for(lambda: (r := from_client_ns(lab, f"{lb_ip}:80", timeout=1)) and "connect" not in r[0] and r,
                   20, "another node to take the LoadBalancer IP over")
    assert got and time.monotonic() - t0 < 10
