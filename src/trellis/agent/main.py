"""``trellis agent``: the node agent (one per node; a DaemonSet on a real cluster).

It serves trellis-cni over a unix socket, owns the node's pod block (IPAM),
wires pods (routed veths, proxy ARP, anti-spoofing, masquerade), keeps the
routes to other nodes' blocks, proxies Services (nftables), announces
LoadBalancer IPs and enforces policy (fail closed). Nothing it needs lives only in its memory: the
kernel keeps links, routes and rules, the IPAM store is on disk, the node data
is in the API. So pods keep connectivity while the agent is down, and on start
it reconciles instead of rebuilding.

Four controllers, one loop contract each (agent/syncloop.py): ``routing`` (routes to other nodes,
the pod network once the node has its block, IPAM GC), ``proxy`` (agent/proxier.py), ``policy``
(agent/policy.py) and ``lb`` (LoadBalancer announcement and healthCheckNodePort servers, after the
proxy's view). Their statuses are the agent's health (agent/health.py) and CNI STATUS.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time

from trellis.agent.attachments import Attachment
from trellis.agent.cniserver import CNIServer, pod_event
from trellis.agent.dataplane import GATEWAY, PodNetwork
from trellis.agent import health
from trellis.agent.healthcheck import HealthChecks
from trellis.agent.ipam import Allocator, DiskStore
from trellis.agent import lbannounce
from trellis.agent.policy import PolicyController
from trellis.agent.proxier import Proxier
from trellis.agent.routing import Routing
from trellis.agent.syncloop import SyncLoop, SyncStatus
from trellis.agent import uninstall
from trellis.kernel import netlink, nft
from trellis.kernel.netns import KernelError
from trellis.kube.client import KubeClient, client_for
from trellis.kube.events import EventRecorder
from trellis.kube.informer import Informer

log = logging.getLogger("trellis.agent")
GC_EVERY = 30.0  # seconds between IPAM garbage collections


class Agent:
    def __init__(self, client: KubeClient, node: str, state_dir: str, socket_path: str, mode: str,
                 cluster_cidr: str, underlay_dev: str = "eth0", resync: float = 10.0,
                 service_cidr: str = "10.96.0.0/16") -> None:
        self.client, self.node, self.state_dir, self.cluster_cidr = client, node, state_dir, cluster_cidr
        self.service_cidr = service_cidr
        self.routing = Routing(node, mode, underlay_dev, cluster_cidr=cluster_cidr)
        self.resync = resync
        self.network: PodNetwork | None = None
        self.why_not_ready = "waiting for this node's pod CIDR and VTEP address from the controller"
        self.nodes = Informer(client, "v1", "nodes")
        # one pod cache for all: policy needs every pod (peers), IPAM GC this node's
        self.pods = Informer(client, "v1", "pods")
        self.services = Informer(client, "v1", "services")
        self.slices = Informer(client, "discovery.k8s.io/v1", "endpointslices")
        self.routing_loop = SyncLoop("routing", self.sync_routing, resync, waiting=self._routing_waits)
        self.lb_loop = SyncLoop("lb", self.sync_lb, resync, waiting=self._lb_waits)
        self.next_gc = time.monotonic() + GC_EVERY
        # the node's own address (its underlay device's): the source of masqueraded Service traffic
        node_ip = next((c.split("/")[0] for c in netlink.addresses(underlay_dev)), None)
        self.proxier = Proxier(self.services, self.slices, node, cluster_cidr,
                               on_applied=lambda keys, t: self.lb_loop.mark_dirty(), snat_ip=node_ip, beat=resync)
        self.health = HealthChecks(self.proxier.local_endpoints)
        self.events = EventRecorder(client, "trellis-agent", node)
        self.policy = PolicyController(client, node, cluster_cidr, pods=self.pods, slices=self.slices,
                                       events=self.events, held=self._held, beat=resync)
        self.server = CNIServer(socket_path, lambda: self.network, lambda: health.not_ready(self.statuses()),
                                on_add=self.policy.pod_added, on_del=self.policy.attachment_deleted,
                                on_failure=pod_event(self.events))
        self.stop = threading.Event()

    @property
    def loops(self) -> list[SyncLoop]:
        return [self.routing_loop, self.proxier.loop, self.policy.loop, self.lb_loop]

    def statuses(self) -> list[SyncStatus]:
        return [loop.status() for loop in self.loops]

    def _held(self) -> set[tuple[str, str]] | None:
        net = self.network
        return None if net is None else {(r.container_id, r.ifname) for r in net.ipam.store.all()}

    def _me(self) -> dict | None:
        return self.nodes.get("", self.node)

    def _ensure_network(self, overlay_peers: set[str]) -> None:
        me = self._me()
        block = (me or {}).get("spec", {}).get("podCIDR")
        if not block or self.network is not None:
            return
        # NOTE: proxy ARP only answers for an address the node has a route to; nodes need
        # no default route, so give the gateway address one (never used to send).
        netlink.replace_route(netlink.Route(f"{GATEWAY}/32", self.routing.underlay_dev))
        # The node itself reaching a ClusterIP: output NAT needs a route to exist first
        # (lab nodes have no default route); after DNAT the packet is re-routed.
        netlink.replace_route(netlink.Route(self.service_cidr, self.routing.underlay_dev))
        store = DiskStore(os.path.join(self.state_dir, "ipam", block.replace("/", "_")))
        net = PodNetwork(Allocator(block, store), self.routing.pod_mtu(), self.cluster_cidr)
        net.overlay_peers = set(overlay_peers)  # the restored table accepts the peers' VXLAN at once
        net.restore()
        self.policy.seed([Attachment(r.container_id, r.ifname, r.ip, r.pod) for r in store.all()])
        self.network = net
        log.info("node %s: pod block %s, mode %s, MTU %d off the node (%d between its pods); ready for pods",
                 self.node, block, self.routing.mode, net.mtu, net.link_mtu)

    def _routing_waits(self) -> str:
        return "" if self.nodes.synced.is_set() else "waiting for nodes to list"

    def sync_routing(self, full: bool) -> str | None:
        """Routes to the other nodes; the pod network once this node has its block; IPAM GC."""
        state = self.routing.reconcile(self.nodes.items())
        if state.get("ready"):
            self._ensure_network(set(state["underlay_ips"]))
            if self.network is not None:
                self.network.set_overlay_peers(set(state["underlay_ips"]))
        if time.monotonic() >= self.next_gc:
            self.gc_pods()
            self.next_gc = time.monotonic() + GC_EVERY
        return None if self.network is not None else self.why_not_ready

    def _lb_waits(self) -> str:
        if not (self.nodes.synced.is_set() and self.services.synced.is_set()):
            return "waiting for nodes and services to list"
        return "" if self.proxier.loop.status().synced else "waiting for the service proxy's first sync"

    def sync_lb(self, full: bool) -> None:
        """LoadBalancer announcements and healthCheckNodePort servers follow the proxy's view."""
        def endpoint_nodes(ns: str, name: str) -> set[str]:
            return {e.node for p in self.proxier.ports.get(f"{ns}/{name}", []) for e in p.usable()}
        services = self.services.items()
        want = lbannounce.desired(self.node, services, self.nodes.items(), endpoint_nodes)
        lbannounce.reconcile(want, self.routing.underlay_dev)
        self.health.ensure({int(s["spec"]["healthCheckNodePort"]): (s["metadata"]["namespace"], s["metadata"]["name"])
                            for s in services if s["spec"].get("healthCheckNodePort")
                            and s["spec"].get("externalTrafficPolicy") == "Local"})

    def gc_pods(self) -> None:
        """Release addresses whose pod is gone from this node and whose namespace no longer exists."""
        if self.network is None or not self.pods.synced.is_set():
            return
        live = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in self.pods.items()
                if p["spec"].get("nodeName") == self.node}
        keep = {(r.container_id, r.ifname) for r in self.network.ipam.store.all()
                if (r.pod and r.pod in live) or (r.netns and os.path.exists(r.netns))}
        for r in self.network.gc(keep):
            self.policy.attachment_deleted(r.container_id, r.ifname)

    def run(self) -> None:
        try:
            self.policy.ensure_closed()  # before the first CNI ADD can hand out a pod
        except KernelError as e:
            log.error("cannot install the policy skeleton: %s", e)
        self.server.start()

        def node_changed(*_) -> None:
            self.routing_loop.mark_dirty()
            self.lb_loop.mark_dirty()  # announcers follow the nodes
        self.nodes.add_handler(node_changed)
        for inf in (self.nodes, self.pods, self.services, self.slices):
            inf.start()
        self.routing_loop.start(self.stop)
        for name, run in (("proxy", self.proxier.run), ("policy", self.policy.run)):
            threading.Thread(target=run, args=(self.stop,), daemon=True, name=name).start()
        self.lb_loop.start(self.stop)
        while not self.stop.wait(1.0):  # a timeout, so SIGTERM's handler runs promptly
            pass

    def serve_metrics(self, port: int, addr: str = "0.0.0.0") -> None:
        """Prometheus metrics on ``addr:port`` of the node (agent/metrics.py), and the health
        endpoints the DaemonSet's probes ask (agent/health.py)."""
        from prometheus_client import CollectorRegistry, make_wsgi_app

        from trellis.agent import metrics
        from trellis.policy import nftables as pnft

        def ipam() -> tuple[int, int] | None:
            net = self.network
            if net is None:
                return None
            a = net.ipam
            return len(a.store.all()), int(a.last) - int(a.first) + 1

        registry = CollectorRegistry(auto_describe=False)
        registry.register(metrics.AgentCollector(
            self.node, lambda: nft.list_table("inet", pnft.TABLE, self.policy.netns), ipam, self.statuses,
            lambda: len(self.policy.errors)))
        syncs = metrics.SyncMetrics(registry, self.node, [loop.name for loop in self.loops])
        for loop in self.loops:
            loop.observers.append(syncs.observe)
        self.metrics_server = health.serve(addr, port, self.statuses, self.resync, make_wsgi_app(registry))
        log.info("metrics on %s:%d/metrics, health on /livez, /readyz and /statusz", addr, port)

    def shutdown(self) -> None:
        self.stop.set()
        self.server.stop()
        self.health.stop()
        if getattr(self, "metrics_server", None) is not None:
            self.metrics_server.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trellis agent", description="The trellis node agent.")
    p.add_argument("--node", required=True, help="this node's name")
    p.add_argument("--server", help="API server URL (default: in-cluster config)")
    p.add_argument("--state-dir", help="where the IPAM store lives (required; with --cleanup: removed)")
    p.add_argument("--socket", help="unix socket for trellis-cni (required but with --cleanup)")
    p.add_argument("--mode", default="vxlan", choices=["vxlan", "direct"])
    p.add_argument("--cluster-cidr", default="10.244.0.0/16")
    p.add_argument("--service-cidr", default="10.96.0.0/16")
    p.add_argument("--underlay-dev", default="eth0")
    p.add_argument("--metrics-port", type=int, default=9753,
                   help="serve Prometheus metrics on this port of every node address (0: off)")
    p.add_argument("--cleanup", action="store_true",
                   help="uninstall: remove the agent's links, addresses, routes, rule, nftables tables and "
                        "--state-dir from this node, then exit (agent/uninstall.py)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s agent/{args.node} %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.cleanup:
        for what in uninstall.cleanup(args.state_dir):
            log.info("removed %s", what)
        return 0
    for flag in ("state_dir", "socket"):
        if not getattr(args, flag):
            p.error(f"the following arguments are required: --{flag.replace('_', '-')}")
    client = client_for(args.server)
    agent = Agent(client, args.node, args.state_dir, args.socket, args.mode, args.cluster_cidr, args.underlay_dev,
                  service_cidr=args.service_cidr)
    if args.metrics_port:
        agent.serve_metrics(args.metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: agent.shutdown())
    signal.signal(signal.SIGINT, lambda *_: agent.shutdown())
    agent.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
