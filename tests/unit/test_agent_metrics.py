"""Policy deny counters from nft's JSON: layers and directions from chain names, and totals that
stay monotonic when content-addressed chains are replaced."""
from trellis.agent.metrics import FAIL_CLOSED, Totals, reject_counters


def rule(chain, handle, packets, nbytes, reject=True):
    expr = [{"match": {}}, {"counter": {"packets": packets, "bytes": nbytes}}]
    if reject:
        expr.append({"reject": {"type": "icmpx", "expr": "admin-prohibited"}})
    return {"rule": {"family": "inet", "table": "trellis-policy", "chain": chain, "handle": handle, "expr": expr}}


def table(*rules):
    return {"nftables": [{"metainfo": {}}, {"table": {"name": "trellis-policy"}}, *rules]}


def test_layers_and_directions_from_chain_names():
    rows = reject_counters(table(rule("netpol-in-0123456789ab", 7, 3, 180), rule("group-in-aaaaaaaaaaaa", 9, 2, 120),
                                 rule("netpol-out-bbbbbbbbbbbb", 4, 1, 60), rule("ingress", 2, 5, 300),
                                 rule("ingress-peer", 3, 1, 60), rule("egress", 5, 4, 240),
                                 rule("netpol-in-cccccccccccc", 8, 99, 99, reject=False)))
    assert sorted((key, layer, d, p, b) for key, layer, d, p, b in rows) == [
        (("egress", 5), FAIL_CLOSED, "out", 4, 240),
        (("group-in-aaaaaaaaaaaa", 9), "group", "in", 2, 120),
        (("ingress", 2), FAIL_CLOSED, "in", 5, 300),
        (("ingress-peer", 3), FAIL_CLOSED, "in", 1, 60),
        (("netpol-in-0123456789ab", 7), "netpol", "in", 3, 180),
        (("netpol-out-bbbbbbbbbbbb", 4), "netpol", "out", 1, 60),
    ]  # the rule without a reject is not a denial
    # two fail-closed rules of one direction add up
    t = Totals().update(rows)
    assert t[(FAIL_CLOSED, "in")] == [6, 360] and t[("netpol", "in")] == [3, 180]


def test_totals_survive_a_chain_being_replaced():
    t = Totals()
    assert t.update(reject_counters(table(rule("netpol-in-aaaaaaaaaaaa", 1, 10, 600))))[("netpol", "in")] == [10, 600]
    assert t.update(reject_counters(table(rule("netpol-in-aaaaaaaaaaaa", 1, 12, 720))))[("netpol", "in")] == [12, 720]
    # the policy changed: a new chain (counter from 0), the old one deleted
    assert t.update(reject_counters(table(rule("netpol-in-bbbbbbbbbbbb", 2, 3, 180))))[("netpol", "in")] == [15, 900]
    # a table recreated at a restart: the counter went back, all of it is new
    assert t.update(reject_counters(table(rule("netpol-in-bbbbbbbbbbbb", 2, 1, 60))))[("netpol", "in")] == [16, 960]
