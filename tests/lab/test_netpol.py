"""NetworkPolicy end to end, in the model of the upstream e2e suite: namespaces x, y, z with
pods a, b, c serving 80 and 81 on TCP and UDP (SCTP declared too; this kernel cannot open it).
Pods are pinned (a on node-1, b on node-2, c on node-3), so most cells cross nodes, and pod a of
every namespace has a Service. Every scenario probes the full matrix with real connections from
inside each pod and compares the pod cells with a hand-written expectation (never computed by
trellis), then checks that trellis explain agrees with every cell, Services included."""
import time

import pytest

from conftest import needs_root
from helpers import running_pods, wait_for
from trellis.cli import probe as cprobe
from trellis.kube.client import KubeClient
from trellis.lab import topology

pytestmark = [needs_root, pytest.mark.lab]
NSS = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL = [f"{n}/{p}" for n in NSS for p in PODS]
NODE_OF = {"a": "node-1", "b": "node-2", "c": "node-3"}
CELLS = ("TCP/80", "TCP/81", "UDP/80", "UDP/81")


def pod(ns, name):
    ports = [{"name": f"serve-{p}-{pr.lower()}", "containerPort": p, "protocol": pr}
             for p in (80, 81) for pr in ("TCP", "UDP", "SCTP")]
    # NET_ADMIN (in their own namespace only): the bypass tests forge source addresses and add IPv6 from
    # inside pods, as a pod its owner granted NET_ADMIN could; policy and anti-spoofing must hold anyway
    spec = {"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.40", "ports": ports,
                            "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}
    if name in NODE_OF:  # pinned: a, b and c of a namespace on three different nodes
        spec["nodeName"] = NODE_OF[name]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
            "spec": spec}


@pytest.fixture(scope="module")
def kc(lab):
    c = lab.client()
    for ns in NSS:
        c.create("v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": ns, "labels": {"ns": ns}}})
        for p in PODS:
            c.create("v1", "pods", pod(ns, p), ns)
        c.create("v1", "services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sa", "namespace": ns},
                                    "spec": {"selector": {"pod": "a"}, "ports": [
                                        {"name": f"{pr.lower()}-{p}", "port": p, "protocol": pr}
                                        for p in (80, 81) for pr in ("TCP", "UDP")]}}, ns)
    for ns in NSS:
        running_pods(c, ns, "pod", 3, timeout=60)
    yield c
    c.close()


@pytest.fixture
def clean(kc):
    yield kc
    for ns in NSS:
        for np in kc.list("networking.k8s.io/v1", "networkpolicies", ns)[0]:
            kc.delete("networking.k8s.io/v1", "networkpolicies", np["metadata"]["name"], ns)


class Reach:
    """Expected reachability: every (src, dst) per cell; loopback always reaches."""

    def __init__(self, default=True, cells=CELLS):
        self.m = {c: {s: {d: default for d in ALL} for s in ALL} for c in cells}

    def set(self, value, src=lambda s: True, dst=lambda d: True, cells=CELLS):
        for c in cells:
            for s in ALL:
                for d in ALL:
                    if src(s) and dst(d) and s != d:
                        self.m[c][s][d] = value
        return self


def ns_is(*names):
    return lambda p: p.split("/")[0] in names


def is_(*pods):
    return lambda p: p in pods


def netpol(ns, name, spec):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


def probe(lab, kc, namespaces=NSS, ports=(80, 81), protocols=("tcp", "udp")):
    return cprobe.probe(kc, lab.dir, list(namespaces), None, list(ports), list(protocols), services=True,
                        explain=True)


def diff(got, want):
    """Pod cells: reachable is "ok", unreachable must be a policy denial ("denied"), nothing else."""
    word = {True: "ok", False: "denied"}
    return [f"{c} {s}->{d}: got {got[c][s][d]} want {word[want.m[c][s][d]]}"
            for c in want.m for s in ALL for d in ALL if got[c][s][d] != word[want.m[c][s][d]]]


def disagreements(pr):
    return [f"{k} {s}->{d}: probe {pr.result[k][s][d]}, explain {v[0]}" for k, tab in pr.explained.items()
            for s, row in tab.items() for d, v in row.items() if not v[1]]


def check(lab, kc, want, timeout=8.0):
    """Probe until the matrix matches and explain agrees with every cell, the Services' included
    (policy changes are asynchronous: a Service cell is judged at the node that DNATs, whose copy
    of the destination's chain can follow the destination node's by a moment); fail on what is
    still wrong at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        pr = probe(lab, kc)
        bad, off = diff(pr.result, want), disagreements(pr)
        if (not bad and not off) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert not bad, f"{len(bad)} cells differ:\n" + "\n".join(bad[:30])
    assert not off, f"trellis explain disagrees with the probe on {len(off)} cells:\n" + "\n".join(off[:20])
    return pr


def test_no_policy_everything_reaches(lab, clean):
    check(lab, clean, Reach(True))


def test_default_deny_ingress_in_one_namespace(lab, clean):
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "deny-all", {"podSelector": {}}), "x")
    check(lab, clean, Reach(True).set(False, dst=ns_is("x")))


def scrape(lab, node):
    """The agent's /metrics, read from inside the node's network namespace."""
    import subprocess

    from prometheus_client.parser import text_string_to_metric_families
    out = subprocess.run(["ip", "netns", "exec", lab.ns(node), "curl", "-sf", "-m", "5",
                          "http://127.0.0.1:9753/metrics"], capture_output=True, text=True, check=True).stdout
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(out) for s in fam.samples}


def denied(samples, node, layer, direction="in"):
    key = ("trellis_policy_verdicts_total", (("action", "deny"), ("direction", direction), ("layer", layer),
                                             ("node", node)))
    return samples.get(key, 0)


def test_agent_metrics_count_denials_where_they_are_judged_and_the_pool(lab, clean):
    """A connection from y/b (node-2) to x/a (node-1) that x's deny-all rejects is counted by
    node-1's agent as a NetworkPolicy ingress deny, once per rejected packet; node-2 counts none
    of it. The address pool gauge is node-1's pods."""
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "deny-all", {"podSelector": {}}), "x")
    check(lab, clean, Reach(True).set(False, dst=ns_is("x")))
    src = next(p for p in kc_pods(clean) if p["metadata"]["namespace"] == "y" and p["metadata"]["name"] == "b")
    dst = next(p for p in kc_pods(clean) if p["metadata"]["namespace"] == "x" and p["metadata"]["name"] == "a")
    before = {n: scrape(lab, n) for n in ("node-1", "node-2")}
    argv = cprobe.sandbox_argv(lab.dir, src, ["{cmd}"])
    got = cprobe.agnhost_matrix(cprobe.Source("y/b", argv, None), [f"{dst['status']['podIP']}:80/tcp"], 1.0)
    assert next(iter(got.values()))[0] == "denied", got
    after = wait_for(lambda: (s := scrape(lab, "node-1")) and denied(s, "node-1", "netpol") >
                     denied(before["node-1"], "node-1", "netpol") and s, 10, "node-1 to count the denial")
    assert denied(after, "node-1", "netpol") - denied(before["node-1"], "node-1", "netpol") >= 1
    two = scrape(lab, "node-2")
    assert denied(two, "node-2", "netpol") == denied(before["node-2"], "node-2", "netpol")
    on_node = [p for p in kc_pods(clean) if p["spec"].get("nodeName") == "node-1" and p["status"].get("podIP")
               and not p["spec"].get("hostNetwork")]
    assert after[("trellis_ipam_addresses", (("node", "node-1"), ("state", "allocated")))] == len(on_node)
    assert after[("trellis_ipam_addresses", (("node", "node-1"), ("state", "capacity")))] == 254
    assert after[("trellis_controller_syncs_total", (("controller", "policy"), ("node", "node-1")))] >= 1


def kc_pods(kc):
    return [p for p in kc.list("v1", "pods")[0] if p.get("status", {}).get("phase") == "Running"]


def test_allow_from_a_namespace_on_one_port(lab, clean):
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "allow-y-80", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}],
                     "ports": [{"port": 80, "protocol": "TCP"}]}]}), "x")
    want = Reach(True).set(False, dst=is_("x/a"))
    want.set(True, src=ns_is("y"), dst=is_("x/a"), cells=("TCP/80",))
    check(lab, clean, want)


def test_pod_and_namespace_selector_together_is_and_apart_is_or(lab, clean):
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "and", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                               "podSelector": {"matchLabels": {"pod": "b"}}}]}]}), "x")
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "or", {
        "podSelector": {"matchLabels": {"pod": "b"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}},
                              {"podSelector": {"matchLabels": {"pod": "c"}}}]}]}), "x")
    want = Reach(True).set(False, dst=is_("x/a", "x/b"))
    want.set(True, src=is_("y/b"), dst=is_("x/a"))
    want.set(True, src=lambda s: s.startswith("y/") or s == "x/c", dst=is_("x/b"))
    check(lab, clean, want)


def test_ipblock_with_except_and_egress(lab, clean):
    ips = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"]["podIP"]
           for ns in NSS for p in clean.list("v1", "pods", ns)[0]}
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "egress-block", {
        "podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": [f"{ips['y/b']}/32", f"{ips['z/c']}/32"]}}],
                    "ports": [{"port": 81, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}]}]}), "x")
    want = Reach(True).set(False, src=is_("x/a"))
    want.set(True, src=is_("x/a"), dst=lambda d: d not in ("y/b", "z/c"), cells=("TCP/80", "UDP/81"))
    check(lab, clean, want)


def test_named_port_and_end_port(lab, clean):
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("y", "named", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": "serve-81-udp", "protocol": "UDP"}]}]}), "y")
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("y", "range", {
        "podSelector": {"matchLabels": {"pod": "b"}},
        "ingress": [{"from": [{"namespaceSelector": {}}], "ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}]}),
        "y")
    want = Reach(True).set(False, dst=is_("y/a", "y/b"))
    want.set(True, dst=is_("y/a"), cells=("UDP/81",))
    want.set(True, dst=is_("y/b"), cells=("TCP/80", "TCP/81"))
    check(lab, clean, want)


def test_egress_deny_all_with_ingress_allow_is_still_denied_at_source(lab, clean):
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("z", "deny-egress", {
        "podSelector": {}, "policyTypes": ["Egress"]}), "z")
    check(lab, clean, Reach(True).set(False, src=ns_is("z")))


def test_policies_are_additive_and_changes_of_labels_reach_the_datapath(lab, clean):
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "deny-all", {"podSelector": {}}), "x")
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "from-c", {
        "podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {},
                                                  "podSelector": {"matchLabels": {"role": "client"}}}]}]}), "x")
    want = Reach(True).set(False, dst=ns_is("x"))
    check(lab, clean, want)
    clean.patch("v1", "pods", "c", {"metadata": {"labels": {"role": "client"}}}, "z")
    try:
        check(lab, clean, want.set(True, src=is_("z/c"), dst=ns_is("x")))
    finally:
        clean.patch("v1", "pods", "c", {"metadata": {"labels": {"role": None}}}, "z")
    clean.patch("v1", "namespaces", "y", {"metadata": {"labels": {"trusted": "yes"}}})
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "from-trusted", {
        "podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"trusted": "yes"}}}]}]}), "x")
    try:
        check(lab, clean, Reach(True).set(False, dst=ns_is("x")).set(True, src=ns_is("y"), dst=ns_is("x")))
    finally:
        clean.patch("v1", "namespaces", "y", {"metadata": {"labels": {"trusted": None}}})
    check(lab, clean, Reach(True).set(False, dst=ns_is("x")))


def test_isolated_namespace_opencontrail_semantics(lab, clean):
    clean.patch("v1", "namespaces", "y", {"metadata": {"annotations": {"opencontrail.kubernetes.isolated": "true"}}})
    try:
        # own pods reach each other, others cannot reach in, y reaches out
        check(lab, clean, Reach(True).set(False, src=ns_is("x", "z"), dst=ns_is("y")))
    finally:
        clean.patch("v1", "namespaces", "y", {"metadata": {"annotations": {"opencontrail.kubernetes.isolated": None}}})
    check(lab, clean, Reach(True))


def test_policy_table_in_the_kernel(lab, clean):
    """The compiled ruleset is really in each node's namespace, with SCTP rules for SCTP ports."""
    from trellis.kernel import nft
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "sctp", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"ports": [{"port": "serve-80-sctp", "protocol": "SCTP"}, {"port": 81, "protocol": "SCTP"}]}]}), "x")
    node = clean.get("v1", "pods", "a", "x")["spec"]["nodeName"]
    netns = f"{lab.name}-{node}"

    def rules():
        doc = nft.list_table("inet", "trellis-policy", netns) or {"nftables": []}
        return [r["rule"] for r in doc["nftables"] if "rule" in r]
    def has_sctp():
        import json
        text = json.dumps(rules())
        return '"sctp"' in text and "80" in text and "x/sctp ingress[0]" in text
    wait_for(has_sctp, 8, "SCTP rules for x/a")
    check(lab, clean, Reach(True).set(False, dst=is_("x/a")))


# ---- endpoint groups, contracts, isolation modes ---------------------------------------

GV = "trellis.dev/v1alpha1"


@pytest.fixture
def groups(clean):
    yield clean
    for ns in NSS:
        for plural in ("contracts", "endpointgroups"):
            for o in clean.list(GV, plural, ns)[0]:
                clean.delete(GV, plural, o["metadata"]["name"], ns)
    clean.patch("v1", "pods", "b", {"metadata": {"annotations": {"trellis.dev/endpoint-group": None,
                                                                  "opflex.cisco.com/endpoint-group": None}}}, "x")
    clean.patch("v1", "namespaces", "z", {"metadata": {"annotations": {"opflex.cisco.com/endpoint-group": None}}})
    set_isolation_mode(clean, None)


def set_isolation_mode(kc, mode):
    """trellis-config exists from lab up (routing mode, cluster CIDR): change only isolationMode."""
    kc.patch("v1", "configmaps", "trellis-config", {"data": {"isolationMode": mode}}, "trellis-system")


def epg(ns, name, spec):
    return {"apiVersion": GV, "kind": "EndpointGroup", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def contract(ns, name, spec):
    return {"apiVersion": GV, "kind": "Contract", "metadata": {"name": name, "namespace": ns}, "spec": spec}


def test_endpoint_groups_and_contracts(lab, groups):
    kc = groups
    kc.create(GV, "endpointgroups", epg("x", "db", {"podSelector": {"matchLabels": {"pod": "a"}}}), "x")
    kc.create(GV, "endpointgroups", epg("x", "app", {}), "x")
    kc.patch("v1", "pods", "b", {"metadata": {"annotations": {"trellis.dev/endpoint-group": "app"}}}, "x")
    kc.create(GV, "contracts", contract("x", "app-to-db", {
        "provider": "db", "consumers": ["app"], "rules": [{"action": "allow", "protocol": "TCP", "ports": [80]}]}), "x")
    # once in a group, only the group itself and contracts let traffic in; x/c and others are in no group
    want = Reach(True).set(False, dst=is_("x/a", "x/b"))
    want.set(True, src=is_("x/b"), dst=is_("x/a"), cells=("TCP/80",))
    check(lab, kc, want)
    z_c = kc.get("v1", "pods", "c", "z")["status"]["podIP"]
    kc.create(GV, "contracts", contract("x", "zc-to-app", {
        "provider": "app", "consumerIPBlocks": [{"cidr": f"{z_c}/32"}],
        "rules": [{"action": "deny", "protocol": "UDP", "ports": [80]}, {"action": "allow"}]}), "x")
    want.set(True, src=is_("z/c"), dst=is_("x/b"), cells=("TCP/80", "TCP/81", "UDP/81"))
    check(lab, kc, want)


def test_aci_annotation_and_what_is_not_honoured(lab, groups):
    """ACI's annotation puts a pod in a group; a malformed annotation, a contract naming a missing group and
    an unknown isolation mode become Warning Events and CLI warnings, and the mode in force stays."""
    import json
    import subprocess
    from helpers import PY
    kc = groups
    aci = "opflex.cisco.com/endpoint-group"
    kc.create(GV, "endpointgroups", epg("x", "web", {}), "x")
    kc.patch("v1", "pods", "b", {"metadata": {"annotations": {
        aci: json.dumps({"tenant": "kube", "app-profile": "kubernetes", "name": "web"})}}}, "x")
    want = Reach(True).set(False, dst=is_("x/b"))  # the group admits only its own members: x/b alone
    check(lab, kc, want)
    kc.patch("v1", "namespaces", "z", {"metadata": {"annotations": {aci: "{tenant: kube"}}})
    kc.create(GV, "contracts", contract("x", "to-nowhere", {"provider": "web", "consumers": ["nosuch"]}), "x")
    set_isolation_mode(kc, "tenant")

    def warnings():
        evs = [e for ns in ("default", "x", "kube-system", "trellis-system") for e in kc.list("v1", "events", ns)[0]
               if (e.get("source") or {}).get("component") == "trellis-controller"]
        return {(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"]): e["message"] for e in evs}
    wait_for(lambda: {("Namespace", "z", "InvalidEndpointGroupAnnotation"), ("Contract", "to-nowhere",
                      "EndpointGroupNotFound"), ("ConfigMap", "trellis-config", "InvalidConfig")} <= set(warnings()),
             15, "the controller's Warning events")
    ev = warnings()
    assert "not JSON" in ev[("Namespace", "z", "InvalidEndpointGroupAnnotation")]
    assert "EndpointGroup x/nosuch does not exist" in ev[("Contract", "to-nowhere", "EndpointGroupNotFound")]
    assert "isolation mode cluster stays" in ev[("ConfigMap", "trellis-config", "InvalidConfig")]
    check(lab, kc, want)  # nothing changed in the datapath: the mode in force (cluster) stays
    r = subprocess.run([PY, "-m", "trellis.cli.main", "explain", "--lab", lab.name, "-n", "x", "a", "b", "80/tcp"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 3 and "EndpointGroup x/web" in r.stdout, r.stdout
    for text in ("Namespace z:", "Contract x/to-nowhere:", "ConfigMap trellis-system/trellis-config:"):
        assert f"warning: not honoured: {text}" in r.stderr, r.stderr


def test_isolation_mode_namespace_opened_by_contract_and_by_policy(lab, groups):
    kc = groups
    set_isolation_mode(kc, "namespace")
    want = Reach(True).set(False, src=ns_is("y", "z"), dst=ns_is("x"))
    want.set(False, src=ns_is("x", "z"), dst=ns_is("y")).set(False, src=ns_is("x", "y"), dst=ns_is("z"))
    check(lab, kc, want)
    kc.create(GV, "contracts", contract("x", "y-in", {"provider": "namespace:x", "consumers": ["namespace:y"],
                                                      "rules": [{"protocol": "TCP", "ports": [80]}]}), "x")
    want.set(True, src=ns_is("y"), dst=ns_is("x"), cells=("TCP/80",))
    check(lab, kc, want)
    # a NetworkPolicy selecting x/a governs its ingress: its namespace group steps aside
    kc.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "from-z", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "z"}}}]}]}), "x")
    want.set(False, dst=is_("x/a")).set(True, src=ns_is("z"), dst=is_("x/a"))
    check(lab, kc, want)


def test_isolation_mode_deployment_with_a_contract_between_two(lab, groups):
    """ACI's deployment mode: each Deployment is its own group; bare pods are in none."""
    kc = groups
    for app, replicas in (("front", 2), ("back", 1)):
        tmpl = pod("z", app)
        kc.create("apps/v1", "deployments", {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "metadata": {"name": app, "namespace": "z"},
                                             "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                                                      "template": {"metadata": {"labels": {"app": app}},
                                                                   "spec": tmpl["spec"]}}}, "z")
    try:
        running_pods(kc, "z", "app=front", 2, timeout=60)
        running_pods(kc, "z", "app=back", 1, timeout=60)
        set_isolation_mode(kc, "deployment")

        def role(label):
            p = kc.get("v1", "pods", label.split("/")[1], "z")
            return (p["metadata"].get("labels") or {}).get("app", "bare")

        def expect(front_to_back):
            # the intent, by role: a group admits its own members (and its contracts' consumers);
            # a pod in no group admits everyone
            def allowed(src, dst):
                if dst == "bare" or src == dst:
                    return True
                return front_to_back and (src, dst) == ("front", "back")
            return allowed

        def check_roles(allowed, timeout=8.0):
            deadline = time.monotonic() + timeout
            while True:
                pr = probe(lab, kc, namespaces=["z"], ports=[80], protocols=["tcp"])
                cell = pr.result["TCP/80"]
                roles = {p: role(p) for p in cell}
                bad = [f"{s} ({roles[s]}) -> {d} ({roles[d]}): got {cell[s][d]}" for s in cell for d in cell[s]
                       if s != d and not d.startswith("svc/")
                       and cell[s][d] != ("ok" if allowed(roles[s], roles[d]) else "denied")]
                if not bad or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            assert not bad, "\n".join(bad)
            assert len(cell) == 6  # z/a, z/b, z/c, two fronts, one back
            assert not disagreements(pr), disagreements(pr)

        check_roles(expect(front_to_back=False))
        kc.create(GV, "contracts", contract("z", "front-to-back", {
            "provider": "deployment:back", "consumers": ["deployment:front"],
            "rules": [{"protocol": "TCP", "ports": [80]}]}), "z")
        check_roles(expect(front_to_back=True))
    finally:
        for app in ("front", "back"):
            kc.delete("apps/v1", "deployments", app, "z")
        wait_for(lambda: not kc.list("v1", "pods", "z", label_selector="app")[0], 60, "the deployments' pods gone")


def test_egress_to_cluster_dns_only(lab, clean):
    """The recipe from docs/policy.md: a namespace whose pods may only ask the cluster DNS."""
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("y", "dns-only", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}), "y")
    check(lab, clean, Reach(True).set(False, src=ns_is("y")))
    from helpers import PY
    ask = ("import sys;from dnslib import DNSRecord,RCODE;q=DNSRecord.question('kubernetes.default.svc.cluster.local');"
           "r=DNSRecord.parse(q.send('10.96.0.10',53,tcp=sys.argv[1]=='tcp',timeout=3));"
           "print(RCODE.get(r.header.rcode),*[str(a.rdata) for a in r.rr])")
    for transport in ("udp", "tcp"):  # through the Service address: the policy sees the DNS pod after DNAT
        out = sh(lab, "y", "a", PY, "-c", ask, transport)
        assert out.returncode == 0 and out.stdout.split() == ["NOERROR", "10.96.0.1"], (transport, out.stdout,
                                                                                        out.stderr)


# ---- bypass attempts --------------------------------------------------------------------

def sh(lab, ns, pod, *cmd, timeout=20):
    from helpers import pod_exec
    return pod_exec(lab.name, pod, *cmd, ns=ns, timeout=timeout)


def try_tcp(lab, ns, pod, dst, port=80, src=None):
    code = ("import socket,sys\ns=socket.socket();s.settimeout(1.5)\n"
            + (f"s.bind(({src!r},0))\n" if src else "")
            + f"try:\n s.connect(({dst!r},{port}));print('open')\nexcept OSError as e:\n print('fail',e);sys.exit(1)")
    from helpers import PY
    return sh(lab, ns, pod, PY, "-c", code)


@pytest.fixture
def only_y_a_reaches_x_a(lab, clean):
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "only-y-a", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                               "podSelector": {"matchLabels": {"pod": "a"}}}]}]}), "x")
    x_a = clean.get("v1", "pods", "a", "x")["status"]["podIP"]
    wait_for(lambda: try_tcp(lab, "x", "c", x_a).returncode != 0, 8, "the policy in place")
    return x_a


def test_bypass_forged_source_address(lab, only_y_a_reaches_x_a, clean):
    x_a = only_y_a_reaches_x_a
    y_a = clean.get("v1", "pods", "a", "y")["status"]["podIP"]
    wait_for(lambda: try_tcp(lab, "y", "a", x_a).returncode == 0, 8, "y/a reaching x/a")
    assert try_tcp(lab, "x", "c", x_a).returncode != 0
    from trellis.kernel import nft
    node = clean.get("v1", "pods", "c", "x")["spec"]["nodeName"]

    def spoof_drops():
        doc = nft.list_table("inet", "trellis-net", f"{lab.name}-{node}")
        return sum(r["rule"]["expr"][-2]["counter"]["packets"] for r in doc["nftables"]
                   if "rule" in r and r["rule"].get("comment") == "anti-spoofing")
    before = spoof_drops()
    assert sh(lab, "x", "c", "ip", "addr", "add", f"{y_a}/32", "dev", "eth0").returncode == 0
    try:
        r = try_tcp(lab, "x", "c", x_a, src=y_a)
        assert r.returncode != 0, r.stdout
        assert spoof_drops() > before  # dropped at the source node, never reached x/a's node
    finally:
        sh(lab, "x", "c", "ip", "addr", "del", f"{y_a}/32", "dev", "eth0")


def test_bypass_through_service_and_nodeport(lab, only_y_a_reaches_x_a, clean):
    clean.create("v1", "services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
                                    "spec": {"type": "NodePort", "selector": {"pod": "a"},
                                             "ports": [{"port": 80, "nodePort": 30777}]}}, "x")
    try:
        vip = clean.get("v1", "services", "a", "x")["spec"]["clusterIP"]
        wait_for(lambda: try_tcp(lab, "y", "a", vip).returncode == 0, 10, "y/a reaching x/a via its Service")
        assert try_tcp(lab, "x", "c", vip).returncode != 0
        assert try_tcp(lab, "z", "b", vip).returncode != 0
        client_ns = f"{lab.name}-client"
        import subprocess
        from helpers import PY
        for node_ip in ("172.31.0.11", "172.31.0.12", "172.31.0.13"):
            r = subprocess.run(["ip", "netns", "exec", client_ns, PY, "-m", "trellis.lab.images.agnhost", "connect",
                                f"{node_ip}:30777", "--timeout", "1.5"], capture_output=True, text=True, timeout=20)
            assert r.returncode != 0, f"NodePort on {node_ip} reached a denied pod: {r.stdout}"
        # control: the same NodePort works once a policy lets every address in (the source seen at the pod
        # is the client, or the VTEP address of the node that forwarded and masqueraded)
        clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "anywhere", {
            "podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}),
            "x")
        wait_for(lambda: subprocess.run(["ip", "netns", "exec", client_ns, PY, "-m", "trellis.lab.images.agnhost",
                                         "connect", "172.31.0.11:30777", "--timeout", "1.5"],
                                        capture_output=True).returncode == 0, 10, "NodePort allowed from anywhere")
    finally:
        clean.delete("v1", "services", "a", "x")


def test_bypass_from_host_network_pod_and_over_ipv6(lab, only_y_a_reaches_x_a, clean):
    x_a = only_y_a_reaches_x_a
    a_node = clean.get("v1", "pods", "a", "x")["spec"]["nodeName"]
    other = next(n for n in ("node-1", "node-2", "node-3") if n != a_node)
    for name, node in (("hn-other", other), ("hn-same", a_node)):
        clean.create("v1", "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"hn": name}},
                                    "spec": {"hostNetwork": True, "nodeName": node, "containers": [
                                        {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}, "default")
    try:
        running_pods(clean, "default", "hn", 2)
        # exec into a hostNetwork pod lands in its node's namespace (never in the caller's)
        node_ip = clean.get("v1", "nodes", other)["status"]["addresses"][0]["address"]
        assert f"inet {node_ip}/" in sh(lab, "default", "hn-other", "ip", "-4", "addr").stdout
        assert try_tcp(lab, "default", "hn-other", x_a).returncode != 0  # another node is not trusted
        # upstream semantics: a pod's own node always reaches it (kubelet probes)
        assert try_tcp(lab, "default", "hn-same", x_a).returncode == 0
    finally:
        for name in ("hn-other", "hn-same"):
            clean.delete("v1", "pods", name, "default")
    # the other address family: pods are IPv4-only, IPv6 towards or from them is dropped
    assert sh(lab, "x", "c", "ip", "-6", "addr", "add", "fd00:5::c/128", "dev", "eth0", "nodad").returncode == 0
    assert sh(lab, "x", "a", "ip", "-6", "addr", "add", "fd00:5::a/128", "dev", "eth0", "nodad").returncode == 0
    try:
        sh(lab, "x", "c", "ip", "-6", "route", "add", "fd00:5::a/128", "dev", "eth0")
        from helpers import PY
        r = sh(lab, "x", "c", PY, "-m", "trellis.lab.images.agnhost", "connect", "[fd00:5::a]:80", "--timeout", "1.5")
        assert r.returncode != 0, r.stdout
    finally:
        sh(lab, "x", "c", "ip", "-6", "addr", "del", "fd00:5::c/128", "dev", "eth0")
        sh(lab, "x", "a", "ip", "-6", "addr", "del", "fd00:5::a/128", "dev", "eth0")


# ---- fail closed -------------------------------------------------------------------------

def test_new_pod_never_sends_what_its_policy_denies(lab, clean):
    """The container's first packets go out right after CNI ADD: its egress policy is already there."""
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("z", "no-egress", {
        "podSelector": {"matchLabels": {"pod": "fresh"}}, "policyTypes": ["Egress"]}), "z")
    y_a = clean.get("v1", "pods", "a", "y")["status"]["podIP"]
    from helpers import PY
    clean.create("v1", "pods", {"apiVersion": "v1", "kind": "Pod",
                                "metadata": {"name": "fresh", "labels": {"pod": "fresh"}},
                                "spec": {"restartPolicy": "Never", "containers": [{
                                    "name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.40",
                                    "command": [PY, "-m", "trellis.lab.images.agnhost", "connect", f"{y_a}:80",
                                                "--count", "20", "--timeout", "0.2"]}]}}, "z")
    try:
        wait_for(lambda: clean.get("v1", "pods", "fresh", "z")["status"].get("phase") in ("Succeeded", "Failed"),
                 40, "the fresh pod to finish")
        from helpers import trellis
        log = trellis(lab.name, "logs", "-n", "z", "fresh").stdout
        lines = [ln for ln in log.splitlines() if ln.strip()]
        assert len(lines) == 20 and all(ln.startswith("connect ") for ln in lines), log
    finally:
        clean.delete("v1", "pods", "fresh", "z")


def test_agent_restart_keeps_rules_and_established_connections(lab, clean):
    import subprocess
    from helpers import PY
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "only-y", {
        "podSelector": {"matchLabels": {"pod": "a"}},
        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}), "x")
    x_a = clean.get("v1", "pods", "a", "x")["status"]["podIP"]
    wait_for(lambda: try_tcp(lab, "x", "b", x_a).returncode != 0, 8, "the policy in place")
    hold = subprocess.Popen([PY, "-m", "trellis.cli.main", "exec", "--lab", lab.name, "-n", "y", "a", "--",
                             PY, "-m", "trellis.lab.images.agnhost", "hold", f"{x_a}:80", "--seconds", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    node = clean.get("v1", "pods", "a", "x")["spec"]["nodeName"]
    from helpers import agent_back, kill_agent
    before = kill_agent(lab, clean, node)
    assert try_tcp(lab, "x", "b", x_a).returncode != 0  # still denied with the agent down
    assert try_tcp(lab, "y", "b", x_a).returncode == 0  # still allowed
    agent_back(clean, node, before)  # its kubelet restarts it
    out, _ = hold.communicate(timeout=30)
    assert hold.returncode == 0, out
    time.sleep(1)
    assert try_tcp(lab, "x", "b", x_a).returncode != 0


def test_cli_group_contract_explain_probe(lab, groups, tmp_path):
    import json
    import subprocess
    from helpers import PY

    def trellis(name, *args, timeout=30):
        n = 2 if args[0] in ("group", "contract") else 1  # --lab goes after the verb (and the action)
        return subprocess.run([PY, "-m", "trellis.cli.main", *args[:n], "--lab", name, *args[n:]],
                              capture_output=True, text=True, timeout=timeout)
    r = trellis(lab.name, "group", "create", "-n", "x", "db", "--selector", "pod=a")
    assert r.returncode == 0 and "endpointgroup.trellis.dev/db created" in r.stdout, r.stderr
    r = trellis(lab.name, "contract", "create", "-n", "x", "bad", "--provider", "db", "--consumer", "app",
                "--allow", "tcp/99999")
    assert r.returncode == 1 and "spec.rules[0].ports[0]" in r.stderr and "99999" in r.stderr, r.stderr
    r = trellis(lab.name, "contract", "create", "-n", "x", "app-db", "--provider", "db", "--consumer", "app",
                "--allow", "tcp/80")
    assert r.returncode == 0, r.stderr
    r = trellis(lab.name, "group", "ls", "-n", "x")
    head, line = r.stdout.splitlines()[:2]
    assert head.split() == ["NAME", "SELECTOR", "INTRA-GROUP", "MEMBERS", "PROVIDES"]
    assert line.split() == ["db", "pod=a", "allow", "1", "app-db"], r.stdout
    assert "app-db" in trellis(lab.name, "contract", "ls", "-n", "x").stdout
    wait_for(lambda: try_tcp(lab, "x", "b", clean_ip(groups, "x", "a")).returncode != 0, 8, "the group enforced")
    r = trellis(lab.name, "explain", "-n", "x", "b", "a", "80/tcp")
    assert r.returncode == 3 and "DENIED" in r.stdout and "EndpointGroup x/db: no contract allows this source" in r.stdout
    r = trellis(lab.name, "explain", "-n", "x", "a", "b", "80/tcp", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["verdict"] == "allowed"
    want = {"TCP/80": {s: {d: not (d == "x/a" and s != d) for d in ("x/a", "x/b", "x/c")}
                       for s in ("x/a", "x/b", "x/c")}}
    (tmp_path / "want.json").write_text(json.dumps(want))
    r = trellis(lab.name, "probe", "--namespaces", "x", "--ports", "80", "--expect", str(tmp_path / "want.json"),
                "--explain", timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 cells differ" in r.stdout and "0 cells where trellis explain disagrees" in r.stdout, r.stdout
    assert r.stdout.splitlines()[0].split() == ["TCP/80", "x/a", "x/b", "x/c"]


def clean_ip(kc, ns, name):
    return kc.get("v1", "pods", name, ns)["status"]["podIP"]
