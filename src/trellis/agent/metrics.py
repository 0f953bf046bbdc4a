"""The agent's Prometheus metrics (prometheus-client), served on port 9753 of the node.

Read at scrape time from what the agent and the kernel already keep, so a scrape costs no
work on the packet path and a series can never disagree with the state it describes:

- ``trellis_policy_verdicts_total{layer,direction,action="deny"}``: packets rejected by the
  policy table, from the nft counters on its reject rules (the per-pod chains are named
  ``<layer>-<direction>-<hash>``; the fail-closed rules of the base chains are layer
  ``fail-closed``), kept monotonic across chain replacement (``Totals``). Allowed traffic is
  not counted per verdict (no counter on the hot path) and explicit deny rules carry no
  counter yet: what is counted is every "no rule allows it" default and the fail-closed guards.
- ``trellis_policy_denied_bytes_total`` likewise, in bytes.
- ``trellis_ipam_addresses{state="allocated"|"capacity"}``: the node's pod block.
- ``trellis_controller_syncs_total{controller}``, ``trellis_controller_last_sync_timestamp_seconds``:
  each agent controller's syncs that did not raise, from its ``SyncStatus`` (agent/syncloop.py).
- ``trellis_agent_sync_duration_seconds{controller}`` (histogram) and
  ``trellis_agent_sync_errors_total{controller}``: every sync, observed by ``SyncMetrics``.
- ``trellis_policy_objects_not_enforced``: policy objects the agent left out (each has an Event).

Label sets are bounded: layers, directions and controllers are fixed words.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from trellis.agent.syncloop import SyncStatus

log = logging.getLogger("trellis.agent")
PORT = 9753
FAIL_CLOSED = "fail-closed"


def _layer(chain: str) -> tuple[str, str]:
    """(layer, direction) of a policy chain: ``netpol-in-<hash>`` -> (netpol, in); the base
    chains' rejects (ingress, ingress-peer, egress) are the fail-closed guards."""
    layer, _, rest = chain.partition("-")
    direction = rest.split("-", 1)[0]
    if direction in ("in", "out") and rest.count("-") == 1:
        return layer, direction
    return FAIL_CLOSED, "out" if chain.startswith("egress") else "in"


def reject_counters(table: dict | None) -> list[tuple[tuple[str, int], str, str, int, int]]:
    """nft's JSON of the policy table -> [((chain, handle), layer, direction, packets, bytes)]
    for every reject rule with a counter."""
    out = []
    for item in (table or {}).get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        exprs = rule.get("expr") or []
        counter = next((e["counter"] for e in exprs if "counter" in e), None)
        if counter is None or not any("reject" in e for e in exprs):
            continue
        layer, direction = _layer(rule.get("chain", ""))
        out.append(((rule.get("chain", ""), int(rule.get("handle", 0))), layer, direction,
                    int(counter.get("packets", 0)), int(counter.get("bytes", 0))))
    return out


class Totals:
    """Monotonic totals from counters that come and go: chains are content-addressed, so a policy
    change replaces a pod's chain (new counter at 0) and deletes the old one. Each scrape adds
    what every counter gained since the last one (all of it for a new or reset counter); what a
    deleted chain counted after the last scrape is lost, at most one scrape interval's worth."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], tuple[int, int]] = {}
        self.total: dict[tuple[str, str], list[int]] = {}

    def update(self, rows: list[tuple[tuple[str, int], str, str, int, int]]) -> dict[tuple[str, str], list[int]]:
        seen = {}
        for key, layer, direction, packets, nbytes in rows:
            before = self.seen.get(key)
            acc = self.total.setdefault((layer, direction), [0, 0])
            if before is None or packets < before[0] or nbytes < before[1]:
                acc[0] += packets
                acc[1] += nbytes
            else:
                acc[0] += packets - before[0]
                acc[1] += nbytes - before[1]
            seen[key] = (packets, nbytes)
        self.seen = seen
        return self.total


class AgentCollector(Collector):
    def __init__(self, node: str, policy_table: Callable[[], dict | None], ipam: Callable[[], tuple[int, int] | None],
                 controllers: Callable[[], Iterable[SyncStatus]],
                 not_enforced: Callable[[], int]) -> None:
        self.node, self.policy_table, self.ipam = node, policy_table, ipam
        self.controllers, self.not_enforced = controllers, not_enforced
        self.totals, self.lock = Totals(), threading.Lock()

    def collect(self):
        verdicts = CounterMetricFamily("trellis_policy_verdicts", "Packets judged by the policy table",
                                       labels=["node", "layer", "direction", "action"])
        denied_bytes = CounterMetricFamily("trellis_policy_denied_bytes", "Bytes of packets the policy rejected",
                                           labels=["node", "layer", "direction"])
        try:
            with self.lock:
                counters = self.totals.update(reject_counters(self.policy_table()))
        except Exception as e:  # noqa: BLE001 - a scrape reports what it can
            log.warning("metrics: cannot read the policy table: %s", e)
            counters = self.totals.total
        for (layer, direction), (packets, nbytes) in sorted(counters.items()):
            verdicts.add_metric([self.node, layer, direction, "deny"], packets)
            denied_bytes.add_metric([self.node, layer, direction], nbytes)
        yield verdicts
        yield denied_bytes
        addrs = GaugeMetricFamily("trellis_ipam_addresses", "Pod addresses of this node's block",
                                  labels=["node", "state"])
        usage = self.ipam()
        if usage is not None:
            addrs.add_metric([self.node, "allocated"], usage[0])
            addrs.add_metric([self.node, "capacity"], usage[1])
        yield addrs
        syncs = CounterMetricFamily("trellis_controller_syncs", "Syncs of each agent controller that did not fail",
                                    labels=["node", "controller"])
        last = GaugeMetricFamily("trellis_controller_last_sync_timestamp_seconds",
                                 "When each controller last finished a sync that did not fail (Unix time)",
                                 labels=["node", "controller"])
        for st in self.controllers():
            syncs.add_metric([self.node, st.controller], st.syncs)
            if st.last_sync_at:
                last.add_metric([self.node, st.controller], st.last_sync_at)
        yield syncs
        yield last
        yield GaugeMetricFamily("trellis_policy_objects_not_enforced",
                                "Policy objects this agent left out (each has a Warning Event)",
                                value=self.not_enforced())


class SyncMetrics:
    """Every sync of every controller, as a ``SyncLoop`` observer: how long it took, and whether it
    raised. The error counter starts at 0 for each controller, so a rate over it is defined."""
    BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

    def __init__(self, registry: CollectorRegistry, node: str, controllers: Iterable[str]) -> None:
        self.node = node
        self.duration = Histogram("trellis_agent_sync_duration_seconds", "How long each sync of a controller took",
                                  ["node", "controller"], registry=registry, buckets=self.BUCKETS)
        self.errors = Counter("trellis_agent_sync_errors", "Syncs of a controller that failed (and were retried)",
                              ["node", "controller"], registry=registry)
        for name in controllers:
            self.errors.labels(node, name)
            self.duration.labels(node, name)

    def observe(self, controller: str, seconds: float, error: str | None) -> None:
        self.duration.labels(self.node, controller).observe(seconds)
        if error is not None:
            self.errors.labels(self.node, controller).inc()
