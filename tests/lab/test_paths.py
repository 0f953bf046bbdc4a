"""Policy holds on every path, and trellis explain says what the kernel does (issue: the real client
decides). Pods pinned to nodes (nodeName), Services of every kind and both traffic policies, in both
routing modes; real connections from pods, from a host-network pod and from the lab's client
namespace (outside the cluster). Every probed cell must agree with trellis explain, and the key
verdicts are written here by hand."""
import subprocess

import pytest

from conftest import ROOT, needs_root, unique
from helpers import running_pods, wait_for
from trellis.cli import probe as cprobe
from trellis.kube.client import KubeClient
from trellis.lab import topology
from trellis.policy import live, paths

pytestmark = [needs_root, pytest.mark.lab]
NODE_OF = {"a": "node-1", "b": "node-2", "c": "node-3"}
EXTERNAL_IP = "172.31.0.240"


def pod(ns, name, host=False):
    ports = [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 80, "protocol": "UDP"}]
    spec = {"nodeName": NODE_OF[name], "containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/"
                                                       "agnhost:2.40", "ports": ports}]}
    if host:  # a client only: it must not serve on its node's ports
        spec["hostNetwork"] = True
        spec["containers"] = [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
            "spec": spec}


def service(ns, name, typ, etp="Cluster", **extra):
    spec = {"type": typ, "selector": {"pod": name},
            "ports": [{"name": "tcp", "port": 80, "protocol": "TCP"}, {"name": "udp", "port": 80, "protocol": "UDP"},
                      {"name": "none", "port": 81, "targetPort": 81, "protocol": "TCP"}], **extra}
    if typ != "ClusterIP":
        spec["externalTrafficPolicy"] = etp
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{name}", "namespace": ns}, "spec": spec}


@pytest.fixture(scope="module", params=["vxlan", "direct"])
def cluster(request):
    """x (isolated): a on node-1, b on node-2; y: a, b, c on nodes 1-3; z: the host-network pod on node-3.
    Services in x: sa NodePort (Cluster), sb LoadBalancer (Local) with an external IP, and in y: sc NodePort
    (Local)."""
    if not ROOT:
        pytest.skip("needs root")
    name = unique("tp")
    cfg = topology.up(name, 3, routing=request.param)
    kc = cfg.client()
    try:
        kc.create("v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "x", "annotations": {"trellis.dev/isolated": "true"}}})
        for ns in ("y", "z"):
            kc.create("v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        for ns, names in (("x", "ab"), ("y", "abc")):
            for n in names:
                kc.create("v1", "pods", pod(ns, n), ns)
        kc.create("v1", "pods", pod("z", "c", host=True), "z")
        kc.create("v1", "services", service("x", "a", "NodePort"), "x")
        kc.create("v1", "services", service("x", "b", "LoadBalancer", "Local", externalIPs=[EXTERNAL_IP]), "x")
        kc.create("v1", "services", service("y", "c", "NodePort", "Local"), "y")
        running_pods(kc, "x", "pod", 2, timeout=60)
        running_pods(kc, "y", "pod", 3, timeout=60)
        running_pods(kc, "z", "pod", 1, timeout=60)
        wait_for(lambda: (kc.get("v1", "services", "sb", "x").get("status") or {}).get("loadBalancer", {}).get(
            "ingress"), 20, "the LoadBalancer IP of x/sb")
        for ns, svc, n in (("x", "sa", 1), ("x", "sb", 1), ("y", "sc", 1)):
            wait_for(lambda: sum(len(s.get("endpoints") or []) for s in kc.list(
                "discovery.k8s.io/v1", "endpointslices", ns, label_selector=f"kubernetes.io/service-name={svc}")[0]
            ) == n, 20, f"endpoints of {ns}/{svc}")
        # the outside client reaches the external IP through node-2 (an admin's static route; trellis does not
        # announce external IPs)
        subprocess.run(["ip", "-n", cfg.ns("client"), "route", "add", f"{EXTERNAL_IP}/32", "via",
                        topology.node_ip(2)], check=True)
        yield cfg, kc
    finally:
        kc.close()
        topology.down(name, force=True)


@pytest.fixture
def policies(cluster):
    cfg, kc = cluster
    yield cfg, kc
    for ns in ("x", "y"):
        for np in kc.list("networking.k8s.io/v1", "networkpolicies", ns)[0]:
            kc.delete("networking.k8s.io/v1", "networkpolicies", np["metadata"]["name"], ns)


def probe_until(cfg, kc, want, timeout=10.0, ports=(80, 81), protocols=("tcp", "udp"), from_outside=False):
    """Probe (with explain) until the hand-written cells hold (policy changes are asynchronous); then
    every cell must agree with explain."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        pr = cprobe.probe(kc, cfg.dir, ["x", "y", "z"], None, list(ports), list(protocols), services=True,
                          explain=True, from_outside=from_outside)
        bad = [f"{cell} {s} -> {d}: got {pr.result[cell][s][d]}, want {v}" for (cell, s, d), v in want.items()
               if pr.result.get(cell, {}).get(s, {}).get(d) != v]
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert not bad, "\n".join(bad)
    off = [f"{k} {s} -> {d}: probe {pr.result[k][s][d]}, explain {v[0]}" for k, tab in pr.explained.items()
           for s, row in tab.items() for d, v in row.items() if not v[1]]
    assert not off, f"{len(off)} cells where explain disagrees with the kernel:\n" + "\n".join(off[:40])
    return pr


def svc_ip(kc, ns, name):
    return f"svc/{ns}/{name}"


def test_pods_and_services_across_nodes_without_policy(policies):
    """Isolated x: direct from y is denied, through the Service allowed, from any node (the DNAT happened
    on the client's node, which judges). Port 81 has no listener: refused, and that is not a disagreement."""
    cfg, kc = policies
    pr = probe_until(cfg, kc, {
        ("TCP/80", "y/c", "x/a"): "denied", ("TCP/80", "y/c", "svc/x/sa"): "ok",
        ("TCP/80", "y/a", "svc/x/sa"): "ok", ("UDP/80", "y/b", "svc/x/sa"): "ok",
        ("TCP/80", "x/b", "x/a"): "ok", ("TCP/81", "y/c", "svc/x/sa"): "refused",
        ("TCP/80", "y/a", "y/c"): "ok", ("TCP/80", "z/c", "svc/x/sb"): "ok", ("TCP/80", "z/c", "x/a"): "denied"},
        protocols=["tcp", "udp"])
    assert pr.result["TCP/81"]["y/a"]["y/b"] == "refused"


def test_icmp_is_probed_and_explained(policies):
    cfg, kc = policies
    probe_until(cfg, kc, {("ICMP", "y/a", "y/c"): "ok", ("ICMP", "y/a", "x/b"): "denied",
                          ("ICMP", "x/a", "x/b"): "ok"}, protocols=["icmp"], ports=[80])


def test_outside_clients_through_nodeports_lb_and_external_ip(policies):
    """A policy written for the real outside client holds through every entry node, whichever node the
    endpoint runs on; Local traffic policy drops at nodes without an endpoint."""
    cfg, kc = policies
    kc.create("networking.k8s.io/v1", "networkpolicies", {
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "x"},
        "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": f"{topology.CLIENT_IP}/32"}}],
                                                 "ports": [{"port": 80, "protocol": "TCP"}]}]}}, "x")
    out = "outside (172.31.0.250)"
    sa = kc.get("v1", "services", "sa", "x")["spec"]["ports"][0]["nodePort"]
    sc = kc.get("v1", "services", "sc", "y")["spec"]["ports"][0]["nodePort"]
    lb = kc.get("v1", "services", "sb", "x")["status"]["loadBalancer"]["ingress"][0]["ip"]
    want = {("TCP/80", out, f"svc/x/sa node-{i}:{sa}"): "ok" for i in (1, 2, 3)}
    want.update({("TCP/80", out, f"svc/y/sc node-{i}:{sc}"): "ok" if i == 3 else "timeout" for i in (1, 2, 3)})
    want[("TCP/80", out, f"svc/x/sb {lb}:80")] = "ok"
    pr = probe_until(cfg, kc, want, from_outside=True, ports=[80], protocols=["tcp", "udp"])
    # x's pods are now isolated; a pod still reaches itself, also through its own Service (the hairpin)
    probe_until(cfg, kc, {("TCP/80", "x/a", "x/a"): "ok", ("TCP/80", "x/a", "svc/x/sa"): "ok",
                          ("TCP/80", "x/b", "svc/x/sa"): "denied", ("TCP/80", "y/a", "x/b"): "denied"},
                ports=[80], protocols=["tcp"])
    # UDP is not in the policy: denied by the node the datagram enters by
    assert all(v == "denied" for d, v in pr.result["UDP/80"][out].items() if d.startswith("svc/x/sa"))
    # the external IP enters at node-2 (the client's route) and reaches x/b on node-2
    w, _ = live.world(kc)
    hops = paths.trace(w, paths.Client(out, topology.CLIENT_IP, "outside"), EXTERNAL_IP, "tcp", 80)
    at2 = [h for h in hops if h.entry == "node-2"]
    seen = cprobe.run_matrix([cprobe.outside_source(cfg.dir)], {"ext": cprobe.Target("ext", EXTERNAL_IP,
                                                                                   {("tcp", 80): 80})},
                             [("tcp", 80)], 1.0)["TCP/80"][out]["ext"]
    assert seen == "ok" and paths.agrees(at2, seen) and at2[0].judged_at == "node-2"
    # a client the policy does not name is denied at every entry node
    kc.patch("networking.k8s.io/v1", "networkpolicies", "web", {"spec": {"ingress": [
        {"from": [{"ipBlock": {"cidr": "172.31.0.0/28"}}], "ports": [{"port": 80, "protocol": "TCP"}]}]}}, "x")
    want = {k: "denied" for k in want if "svc/x/" in k[2]}
    probe_until(cfg, kc, want, from_outside=True, ports=[80], protocols=["tcp"])


def test_contract_with_consumer_ip_blocks_from_outside(policies):
    """The guestbook's recipe: an endpoint group whose contract admits the underlay's clients on 80."""
    cfg, kc = policies
    gv = "trellis.dev/v1alpha1"
    kc.create(gv, "endpointgroups", {"apiVersion": gv, "kind": "EndpointGroup", "metadata": {
        "name": "web", "namespace": "y"}, "spec": {"podSelector": {"matchLabels": {"pod": "c"}}}}, "y")
    kc.create(gv, "contracts", {"apiVersion": gv, "kind": "Contract", "metadata": {"name": "public", "namespace": "y"},
                                "spec": {"provider": "web", "consumerIPBlocks": [{"cidr": "172.31.0.0/24"}],
                                         "rules": [{"action": "allow", "protocol": "TCP", "ports": [80]}]}}, "y")
    try:
        out = "outside (172.31.0.250)"
        sc = kc.get("v1", "services", "sc", "y")["spec"]["ports"][0]["nodePort"]
        probe_until(cfg, kc, {("TCP/80", out, f"svc/y/sc node-3:{sc}"): "ok"}, from_outside=True, ports=[80],
                    protocols=["tcp"])
        probe_until(cfg, kc, {("TCP/80", "y/a", "svc/y/sc"): "denied", ("TCP/80", "y/a", "y/c"): "denied",
                              ("TCP/80", "y/c", "y/a"): "ok"}, ports=[80], protocols=["tcp"])
    finally:
        kc.delete(gv, "contracts", "public", "y")
        kc.delete(gv, "endpointgroups", "web", "y")
