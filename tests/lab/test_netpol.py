"""NetworkPolicy end to end, in the model of the upstream e2e suite: namespaces x, y, z with
pods a, b, c serving 80 and 81 on TCP and UDP (SCTP declared too; this kernel cannot open it).
Every scenario probes the full matrix with real connections from inside each pod and compares
it with a hand-written expectation (never computed by trellis), then checks that trellis explain
agrees with every cell."""
import time

import pytest

from conftest import needs_root
from helpers import running_pods, wait_for
from trellis.cli.policy import explain_matrix, probe_matrix
from trellis.kube.client import KubeClient
from trellis.lab import topology

pytestmark = [needs_root, pytest.mark.lab]
NSS = ("x", "y", "z")
PODS = ("a", "b", "c")
ALL = [f"{n}/{p}" for n in NSS for p in PODS]
CELLS = ("TCP/80", "TCP/81", "UDP/80", "UDP/81")


def pod(ns, name):
    ports = [{"name": f"serve-{p}-{pr.lower()}", "containerPort": p, "protocol": pr}
             for p in (80, 81) for pr in ("TCP", "UDP", "SCTP")]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "labels": {"pod": name}},
            "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.40",
                                     "ports": ports}]}}


@pytest.fixture(scope="module")
def kc(lab):
    c = KubeClient(lab.api_url)
    for ns in NSS:
        c.create("v1", "namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": ns, "labels": {"ns": ns}}})
        for p in PODS:
            c.create("v1", "pods", pod(ns, p), ns)
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


def probe(lab, kc):
    res, _, _, targets = probe_matrix(kc, lab.dir, list(NSS), None, [80, 81], ["tcp", "udp"])
    return res, targets


def diff(got, want):
    return [f"{c} {s}->{d}: got {'.' if got[c][s][d] else 'X'} want {'.' if want.m[c][s][d] else 'X'}"
            for c in want.m for s in ALL for d in ALL if got[c][s][d] != want.m[c][s][d]]


def check(lab, kc, want, timeout=8.0):
    """Probe until the matrix matches (policy changes are asynchronous), then cross-check explain."""
    deadline = time.monotonic() + timeout
    while True:
        got, targets = probe(lab, kc)
        bad = diff(got, want)
        if not bad or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert not bad, f"{len(bad)} cells differ:\n" + "\n".join(bad[:30])
    pods = [p for ns in NSS for p in kc.list("v1", "pods", ns)[0]]
    explained = explain_matrix(kc, got, pods, targets)
    off = [f"{c} {s}->{d}" for c in got for s in ALL for d in ALL
           if s != d and explained[c][s][d] != got[c][s][d]]
    assert not off, "trellis explain disagrees with the probe on: " + ", ".join(off[:20])


def test_no_policy_everything_reaches(lab, clean):
    check(lab, clean, Reach(True))


def test_default_deny_ingress_in_one_namespace(lab, clean):
    clean.create("networking.k8s.io/v1", "networkpolicies", netpol("x", "deny-all", {"podSelector": {}}), "x")
    check(lab, clean, Reach(True).set(False, dst=ns_is("x")))


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
