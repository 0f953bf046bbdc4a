"""``trellis controller``: one per cluster.

Gives each Node a pod block from the cluster CIDR (``spec.podCIDR``, as
kube-controller-manager's node IPAM does), and publishes what agents need to
reach it: the VTEP MAC (annotation ``trellis.dev/vtep-mac``); the underlay IP is
the Node's InternalIP. A deleted Node's block is free again, since the set of
used blocks is read from the live Nodes. It also hands out LoadBalancer
addresses from IPPools (``lbipam``), and reports the policy it cannot honour as
Events (``policyaudit``).
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
import threading

from trellis.agent.routing import VTEP_ANNOTATION, vtep_mac
from trellis.controller.lbipam import LoadBalancerIPs
from trellis.controller.policyaudit import PolicyAudit
from trellis.kube.events import EventRecorder
from trellis.kube.client import KubeClient
from trellis.kube.informer import Informer, Reconciler

log = logging.getLogger("trellis.controller")
LEASE_NAME = "trellis-controller"


class NodeBlocks(Reconciler):
    name = "node-blocks"

    def __init__(self, client: KubeClient, nodes: Informer, cluster_cidr: str, block_prefix: int = 24) -> None:
        super().__init__()
        self.client, self.nodes = client, nodes
        self.cidr = ipaddress.ip_network(cluster_cidr)
        self.prefix = block_prefix
        nodes.add_handler(lambda t, o, old: self.queue.add(o["metadata"]["name"]) if t != "DELETED" else None)
        self.assigned: dict[str, str] = {}  # blocks handed out but maybe not seen in the cache yet

    def _used(self) -> set[str]:
        used = {n["spec"].get("podCIDR") for n in self.nodes.items() if n.get("spec", {}).get("podCIDR")}
        live = {n["metadata"]["name"] for n in self.nodes.items()}
        self.assigned = {k: v for k, v in self.assigned.items() if k in live}
        return used | set(self.assigned.values())

    def free_block(self, name: str) -> str:
        used = self._used()
        # prefer the block matching a node's number (node-3 -> 10.244.3.0/24): easy to read in a lab
        tail = name.rsplit("-", 1)[-1]
        subnets = list(self.cidr.subnets(new_prefix=self.prefix))
        if tail.isdigit() and 0 < int(tail) < len(subnets) and str(subnets[int(tail)]) not in used:
            return str(subnets[int(tail)])
        for s in subnets[1:]:
            if str(s) not in used:
                return str(s)
        raise RuntimeError(f"cluster CIDR {self.cidr} has no free /{self.prefix} block for node {name}")

    def sync(self, name: str) -> None:
        node = self.nodes.get("", name)
        if node is None:
            return
        patch: dict = {}
        if not node.get("spec", {}).get("podCIDR"):
            # the block handed out already if the cache has not seen it yet (a node event came first)
            block = self.assigned.get(name) or self.free_block(name)
            self.assigned[name] = block
            patch["spec"] = {"podCIDR": block, "podCIDRs": [block]}
        if (node["metadata"].get("annotations") or {}).get(VTEP_ANNOTATION) != vtep_mac(name):
            patch["metadata"] = {"annotations": {VTEP_ANNOTATION: vtep_mac(name)}}
        if patch:
            self.client.patch("v1", "nodes", name, patch)
            log.info("node %s: %s", name, patch)


def start(client: KubeClient, cluster_cidr: str, block_prefix: int, stop: threading.Event) -> None:
    """Start the informers and every controller's worker (threads; they end with ``stop``)."""
    nodes = Informer(client, "v1", "nodes")
    services = Informer(client, "v1", "services")
    pools = Informer(client, "trellis.dev/v1alpha1", "ippools")
    events = EventRecorder(client, "trellis-controller")
    audit = PolicyAudit(client, events)
    controllers = [NodeBlocks(client, nodes, cluster_cidr, block_prefix),
                   LoadBalancerIPs(client, services, pools, events), audit]
    for inf in (nodes, services, pools):
        inf.start()
    audit.start()
    for c in controllers:
        threading.Thread(target=c.run, args=(stop,), daemon=True, name=c.name).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trellis controller", description="The trellis cluster controller.")
    p.add_argument("--server", help="API server URL (default: in-cluster config)")
    p.add_argument("--cluster-cidr", default="10.244.0.0/16")
    p.add_argument("--block-prefix", type=int, default=24)
    p.add_argument("--leader-elect", action="store_true",
                   help="run only while holding the Lease trellis-controller (several replicas: one works, "
                        "the others stand by); exit 1 when the Lease is lost")
    p.add_argument("--leader-elect-namespace", default="trellis-system", help="namespace of the Lease")
    args = p.parse_args(argv)
    from trellis import daemon
    client, stop = daemon.start("controller", args.server)
    if not args.leader_elect:
        start(client, args.cluster_cidr, args.block_prefix, stop)
        stop.wait()
        return 0
    from trellis.kube.leader import LeaderElector
    elector = LeaderElector(client, args.leader_elect_namespace, LEASE_NAME)
    log.info("%s waits for the lease %s/%s", elector.identity, args.leader_elect_namespace, LEASE_NAME)
    if elector.run(stop, lambda: start(client, args.cluster_cidr, args.block_prefix, stop)):
        return 1  # lost the lease: stop leading by exiting; the Deployment starts a fresh candidate
    return 0


if __name__ == "__main__":
    sys.exit(main())
