"""The pure policy engine: parsing with field-named errors, upstream NetworkPolicy semantics,
groups/contracts/modes, rendering, minimal transactions, explain."""
import pytest

from trellis.policy import model
from trellis.policy import nftables as pnft
from trellis.policy.engine import PolicyState, cidrs_of, explain

CIDR = "10.244.0.0/16"


def pod(ns, name, ip, node="n1", labels=None, ports=(), owner=None, ann=None):
    md = {"namespace": ns, "name": name, "labels": dict(labels or {}), "annotations": ann or {}}
    if owner:
        md["labels"]["pod-template-hash"] = "h1"
        md["ownerReferences"] = [{"kind": "ReplicaSet", "name": f"{owner}-h1", "controller": True}]
    return model.pod_info({"metadata": md, "spec": {"nodeName": node, "containers": [
        {"name": "c", "ports": [{"name": n, "containerPort": p, "protocol": pr} for n, pr, p in ports]}]},
        "status": {"podIP": ip}})


def np(ns, name, spec):
    return model.netpol({"metadata": {"namespace": ns, "name": name}, "spec": spec})


@pytest.fixture
def st():
    s = PolicyState()
    for ns in ("x", "y"):
        s.set_namespace(model.ns_info({"metadata": {"name": ns, "labels": {"ns": ns}}}))
    s.set_pod(pod("x", "a", "10.0.1.1", labels={"pod": "a"}, ports=[("http", "TCP", 8080)]))
    s.set_pod(pod("x", "b", "10.0.1.2", labels={"pod": "b"}))
    s.set_pod(pod("y", "a", "10.0.2.1", node="n2", labels={"pod": "a"}, ports=[("http", "TCP", 9090)]))
    return s


def verdict(st, src, dst, port=80, proto="tcp", dnat=False):
    return explain(st, src, dst, proto, port, dnat)[0]


def test_policy_types_default_and_egress_only_policy_does_not_isolate_ingress():
    p = np("x", "p", {"podSelector": {}, "egress": [{}]})   # no policyTypes: Ingress, and Egress (rules given)
    assert p.ingress == () and len(p.egress) == 1 and p.egress[0].peers is None and p.egress[0].ports is None
    q = np("x", "q", {"podSelector": {}, "policyTypes": ["Egress"]})
    assert q.ingress is None and q.egress == ()


def test_errors_name_the_field():
    with pytest.raises(model.PolicyError, match=r"spec.ingress\[0\].ports\[0\].endPort"):
        np("x", "p", {"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]})
    with pytest.raises(model.PolicyError, match=r"spec.ingress\[0\].from\[0\].ipBlock.except\[0\]"):
        np("x", "p", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                                                          "except": ["11.0.0.0/8"]}}]}]})
    assert "spec.provider" in model.validate("Contract", {"metadata": {"namespace": "x", "name": "c"}, "spec": {}})
    assert "spec.rules[0].ports[0]" in model.validate("Contract", {"metadata": {"namespace": "x", "name": "c"},
        "spec": {"provider": "g", "consumers": ["h"], "rules": [{"protocol": "TCP", "ports": ["99999"]}]}})
    assert "spec.intraGroup" in model.validate("EndpointGroup", {"metadata": {"namespace": "x", "name": "g"},
                                                                 "spec": {"intraGroup": "maybe"}})


def test_ipblock_except_cuts_holes():
    assert cidrs_of("10.0.0.0/30", ("10.0.0.1/32",)) == ("10.0.0.0/32", "10.0.0.2/31")
    assert cidrs_of("fd00::/64", ()) == ()  # IPv6 blocks match no IPv4 packet


def test_ingress_allow_additive_named_ports_and_isolation_only_where_selected(st):
    st.set_policy("x/p1", np("x", "p1", {"podSelector": {"matchLabels": {"pod": "a"}},
                                         "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}],
                                                      "ports": [{"port": "http"}]}]}))
    assert verdict(st, "10.0.1.2", "10.0.1.1", 8080) == "allow"   # named port resolved on x/a
    assert verdict(st, "10.0.1.2", "10.0.1.1", 80) == "deny"
    assert verdict(st, "10.0.2.1", "10.0.1.1", 8080) == "deny"    # podSelector alone: same namespace only
    assert verdict(st, "10.0.1.1", "10.0.1.2", 80) == "allow"     # x/b is not selected
    st.set_policy("x/p2", np("x", "p2", {"podSelector": {"matchLabels": {"pod": "a"}},
                                         "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}]}))
    assert verdict(st, "10.0.2.1", "10.0.1.1", 80) == "allow"     # additive
    _, steps = explain(st, "10.0.2.1", "10.0.1.1", "tcp", 80)
    assert steps[-1].origin == "NetworkPolicy x/p2 ingress[0]"


def test_egress_named_port_resolves_on_destinations(st):
    st.set_policy("x/e", np("x", "e", {"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Egress"],
                                       "egress": [{"ports": [{"port": "http"}]}]}))
    assert verdict(st, "10.0.1.1", "10.0.2.1", 9090) == "allow"   # y/a's http is 9090
    assert verdict(st, "10.0.1.1", "10.0.2.1", 8080) == "deny"
    assert verdict(st, "10.0.1.1", "10.0.1.2", 9090) == "deny"    # x/b has no port named http
    # a pod gaining the named port joins the set incrementally
    name = next(n for n, d in st.set_defs.items() if d[0] == "named")
    st.set_pod(pod("x", "b", "10.0.1.2", labels={"pod": "b"}, ports=[("http", "TCP", 7070)]))
    assert "10.0.1.2 . tcp . 7070" in st.members(name)


def test_isolated_namespace_allows_own_and_service_traffic(st):
    st.set_namespace(model.ns_info({"metadata": {"name": "x", "labels": {"ns": "x"},
                                                 "annotations": {"trellis.dev/isolated": "true"}}}))
    assert verdict(st, "10.0.1.2", "10.0.1.1") == "allow"
    assert verdict(st, "10.0.2.1", "10.0.1.1") == "deny"
    assert verdict(st, "10.0.2.1", "10.0.1.1", dnat=True) == "allow"   # through its Service
    assert verdict(st, "10.0.1.1", "10.0.2.1") == "allow"              # x reaches out


def test_groups_contracts_deny_wins_and_ungrouped_untouched(st):
    st.set_group("x/db", model.group({"metadata": {"namespace": "x", "name": "db"}, "spec": {}}))
    st.set_group("y/app", model.group({"metadata": {"namespace": "y", "name": "app"},
                                       "spec": {"podSelector": {"matchLabels": {"pod": "a"}}}}))
    st.set_pod(pod("x", "a", "10.0.1.1", labels={"pod": "a", "io.contiv.net-group": "db"}))
    st.set_contract("x/c", model.contract({"metadata": {"namespace": "x", "name": "c"}, "spec": {
        "provider": "db", "consumers": ["y/app"],
        "rules": [{"action": "deny", "protocol": "TCP", "ports": [22]}, {"action": "allow"}]}}))
    assert verdict(st, "10.0.2.1", "10.0.1.1", 80) == "allow"
    assert verdict(st, "10.0.2.1", "10.0.1.1", 22) == "deny"
    assert explain(st, "10.0.2.1", "10.0.1.1", "tcp", 22)[1][-1].origin == "Contract x/c rules[0] deny"
    assert verdict(st, "10.0.1.2", "10.0.1.1") == "deny"             # x/b is in no group
    assert verdict(st, "10.0.1.1", "10.0.1.2") == "allow"            # ...and so not protected


def test_isolation_modes(st):
    st.set_pod(pod("x", "w1", "10.0.1.5", labels={"app": "w"}, owner="web"))
    st.set_pod(pod("x", "w2", "10.0.1.6", labels={"app": "w"}, owner="web"))
    st.set_pod(pod("x", "d1", "10.0.1.7", labels={"app": "d"}, owner="db"))
    st.set_pod(pod("kube-system", "dns", "10.0.1.9", labels={"k8s-app": "kube-dns"}))
    st.set_mode("deployment")
    assert verdict(st, "10.0.1.5", "10.0.1.6") == "allow" and verdict(st, "10.0.1.5", "10.0.1.7") == "deny"
    st.set_mode("namespace")
    assert verdict(st, "10.0.1.5", "10.0.1.7") == "allow" and verdict(st, "10.0.2.1", "10.0.1.7") == "deny"
    assert verdict(st, "10.0.2.1", "10.0.1.9", 53, "udp") == "allow"  # kube-system stays reachable
    st.set_contract("x/open", model.contract({"metadata": {"namespace": "x", "name": "open"}, "spec": {
        "provider": "namespace:x", "consumers": ["namespace:y"]}}))
    assert verdict(st, "10.0.2.1", "10.0.1.7") == "allow"


def test_render_and_minimal_transaction(st):
    st.set_policy("x/p", np("x", "p", {"podSelector": {"matchLabels": {"pod": "a"}},
                                       "ingress": [{"ports": [{"port": 80, "endPort": 90, "protocol": "SCTP"}]}]}))
    d1 = pnft.desired(st, "n1")
    text = pnft.full(d1, CIDR)
    assert "meta l4proto sctp th dport 80-90 return" in text
    assert "type filter hook forward priority filter" in text and "ct state established,related accept" in text
    assert set(d1.known) == {"10.0.1.1", "10.0.1.2"}                  # n2's pod is not local
    assert pnft.transaction(d1, pnft.desired(st, "n1")) == ""          # nothing changed: nothing to do
    st.set_pod(pod("x", "z", "10.0.1.3", labels={"pod": "a"}))
    tx = pnft.transaction(d1, pnft.desired(st, "n1"))
    assert "add element inet trellis-policy known { 10.0.1.3 }" in tx and "add chain" not in tx  # chain is shared


def test_other_nodes_pods_are_held_only_when_behind_a_service(st):
    """A node judges the ingress of another node's pod only for connections it DNATs to it, and it
    DNATs only to Service endpoints: those pods' ingress chains are held, no others."""
    st.set_policy("y/p", np("y", "p", {"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}))
    every = pnft.desired(st, "n1")
    assert set(every.peers) == {"10.0.2.1"} and "10.0.2.1" in every.maps["ingress-netpol"]
    none = pnft.desired(st, "n1", service_endpoints=frozenset())
    assert not none.peers and "10.0.2.1" not in none.maps["ingress-netpol"]
    assert set(none.known) == {"10.0.1.1", "10.0.1.2"}   # local pods do not depend on Services
    behind = pnft.desired(st, "n1", service_endpoints=frozenset({"10.0.2.1"}))
    assert set(behind.peers) == {"10.0.2.1"} and behind.maps == every.maps
    tx = pnft.transaction(none, behind)
    assert "add element inet trellis-policy peers { 10.0.2.1 }" in tx and "add chain" in tx


def test_incremental_caches_match_a_fresh_compile():
    """Policies, pods and groups change in any order: the state kept up to date incrementally (with
    its per-namespace invalidation and per-workload chain cache) renders exactly what a state built
    from scratch renders."""
    import random
    rnd = random.Random(7)

    def netpol(ns, k):
        return np(ns, f"p{k}", {"podSelector": {"matchLabels": {"app": f"a{k % 3}"}},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": f"a{(k + 1) % 3}"}}}],
                                             "ports": [{"port": "http"}]}]})
    pods = {f"{ns}/p{i}": pod(ns, f"p{i}", f"10.0.{n}.{i + 10 * (ns == 'y')}", node=f"n{n}",
                              labels={"app": f"a{i % 3}"}, ports=[("http", "TCP", 8000 + i % 2)])
            for ns in ("x", "y") for i in range(6) for n in [1 + i % 2]}
    live, objs = PolicyState(), {}
    for ns in ("x", "y"):
        live.set_namespace(model.ns_info({"metadata": {"name": ns}}))
    for step in range(120):
        what = rnd.choice(["pol", "pol", "pod", "group"])
        ns = rnd.choice(["x", "y"])
        if what == "pol":
            key, val = f"{ns}/p{rnd.randrange(4)}", rnd.choice([None, netpol(ns, rnd.randrange(6))])
            live.set_policy(key, val)
        elif what == "pod":
            key = rnd.choice(sorted(pods))
            val = rnd.choice([None, pods[key]])
            live.set_pod(val, key)
        else:
            key = f"{ns}/g"
            val = rnd.choice([None, model.group({"metadata": {"namespace": ns, "name": "g"},
                                                 "spec": {"podSelector": {"matchLabels": {"app": "a0"}}}})])
            live.set_group(key, val)
        objs[(what, key)] = val
        fresh = PolicyState()
        for n in ("x", "y"):
            fresh.set_namespace(model.ns_info({"metadata": {"name": n}}))
        for (w, k), v in objs.items():
            if v is not None:
                {"pol": fresh.set_policy, "group": fresh.set_group}[w](k, v) if w != "pod" else fresh.set_pod(v)
        for node in ("n1", "n2"):
            assert pnft.desired(live, node) == pnft.desired(fresh, node), f"step {step}: {what} {key}"
