"""``trellis ingress``: the ingress controller, driving a real haproxy in its own network namespace.

Watches Ingresses, IngressClasses, Services, EndpointSlices and Secrets. Handlers only mark
the world dirty; one worker compiles a Plan (``compile.py``) at most every ``--debounce``
seconds and after every ``--resync``, then moves haproxy to it the cheapest way:

- same backends and certificates (endpoints, hosts or paths changed): runtime-API
  ``set server`` and ``add/set/del map`` commands, no reload;
- anything else: new files, ``haproxy -c``, then a hitless master-worker reload.

Then it writes ``status.loadBalancer.ingress[].ip`` (the addresses of ``--publish-service``,
the LoadBalancer Service in front of this controller) on every Ingress it serves, removes
them from Ingresses it no longer serves, and records a Warning Event for every Problem.
A failure anywhere is logged and retried on the next round; haproxy keeps serving the last
good configuration.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time

from trellis.ingress.compile import Plan, compile_plan
from trellis.ingress.haproxy import runtime_commands
from trellis.ingress.runtime import HAProxy, HAProxyError
from trellis.ingress.status import EventRecorder, lb_ips, sync_status
from trellis.ingress.tlscerts import self_signed
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer

log = logging.getLogger("trellis.ingress")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


class IngressController:
    def __init__(self, client: KubeClient, haproxy: HAProxy, publish_service: str = "",
                 debounce: float = 0.1, resync: float = 30.0) -> None:
        self.client, self.haproxy = client, haproxy
        self.publish = publish_service
        self.debounce, self.resync = debounce, resync
        self.informers = {
            "ingresses": Informer(client, "networking.k8s.io/v1", "ingresses"),
            "classes": Informer(client, "networking.k8s.io/v1", "ingressclasses"),
            "services": Informer(client, "v1", "services"),
            "slices": Informer(client, "discovery.k8s.io/v1", "endpointslices"),
            "secrets": Informer(client, "v1", "secrets"),
        }
        self.dirty = threading.Event()
        for inf in self.informers.values():
            inf.add_handler(lambda *_: self.dirty.set())
        self.events = EventRecorder(client)
        self.plan: Plan | None = None
        self.default_cert = self_signed()
        self.syncs = 0

    def snapshot(self) -> Plan:
        inf = self.informers
        services = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in inf["services"].items()}
        slices: dict[str, list[dict]] = {}
        for sl in inf["slices"].items():
            svc = (sl["metadata"].get("labels") or {}).get(SERVICE_NAME_LABEL)
            if svc:
                slices.setdefault(f"{sl['metadata']['namespace']}/{svc}", []).append(sl)
        secrets = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s for s in inf["secrets"].items()}
        prev = {n: b.slots for n, b in self.plan.backends.items()} if self.plan else None
        return compile_plan(inf["ingresses"].items(), inf["classes"].items(), services, slices, secrets, prev,
                            self.default_cert)

    def sync(self) -> None:
        plan = self.snapshot()
        if self.plan is None or not self.haproxy.alive():
            self.haproxy.write(plan)
            self.haproxy.stop()
            self.haproxy.start()
            log.info("haproxy started: %d hosts, %d backends", len(plan.vhosts), len(plan.backends))
        elif plan.structure() != self.plan.structure():
            self.haproxy.write(plan)
            t0 = time.monotonic()
            self.haproxy.reload()
            log.info("haproxy reloaded in %.0f ms: %d hosts, %d backends", (time.monotonic() - t0) * 1000,
                     len(plan.vhosts), len(plan.backends))
        else:
            cmds = runtime_commands(self.plan, plan, self.haproxy.paths)
            if cmds:
                t0 = time.monotonic()
                self.haproxy.apply(cmds)
                self.haproxy.write(plan, check=False)  # a later reload starts from the same state
                log.info("runtime API: %d commands in %.0f ms", len(cmds), (time.monotonic() - t0) * 1000)
        self.plan = plan
        uids = {f"{o['metadata'].get('namespace')}/{o['metadata']['name']}": o["metadata"].get("uid", "")
                for o in self.informers["ingresses"].items() + self.informers["secrets"].items()}
        for p in plan.problems:
            self.events.record(p, uids.get(f"{p.namespace}/{p.name}", ""))
        ips = self.published_ips()
        if ips is not None:
            sync_status(self.client, self.informers["ingresses"].items(), set(plan.served), ips)
        self.syncs += 1

    def published_ips(self) -> list[str] | None:
        """Our addresses; None (status left alone) while the Service has none yet."""
        if not self.publish:
            return None
        ns, _, name = self.publish.partition("/")
        ips = lb_ips(self.informers["services"].get(ns, name))
        return ips or None

    def run(self, stop: threading.Event) -> None:
        for inf in self.informers.values():
            inf.start()
        for inf in self.informers.values():
            while not inf.synced.wait(0.5):
                if stop.is_set():
                    return
        backoff = 0.5
        last = 0.0
        self.dirty.set()
        while not stop.is_set():
            while not self.dirty.wait(0.5) and not stop.is_set():
                if time.monotonic() - last >= self.resync:
                    self.dirty.set()
            if stop.is_set():
                break
            time.sleep(self.debounce)  # let a burst of events land in one sync
            self.dirty.clear()
            last = time.monotonic()
            try:
                self.sync()
                backoff = 0.5
            except (ApiError, HAProxyError, OSError) as e:
                log.error("sync failed: %s (retrying in %.1fs)", e, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10)
                self.dirty.set()
        self.haproxy.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trellis ingress",
                                description="The trellis ingress controller: Ingresses served by haproxy.")
    p.add_argument("--server", help="API server URL (default: in-cluster config)")
    p.add_argument("--run-dir", default=os.path.join(os.getcwd(), "ingress-run"),
                   help="haproxy's config, certificates and sockets (default: ./ingress-run)")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--https-port", type=int, default=443)
    p.add_argument("--health-port", type=int, default=10254, help="haproxy answers GET /healthz here (0: off)")
    p.add_argument("--publish-service", default="kube-system/trellis-ingress",
                   help="NAMESPACE/NAME of the LoadBalancer Service whose addresses go into Ingress status")
    p.add_argument("--debounce", type=float, default=0.1, help="seconds to gather events before a sync")
    p.add_argument("--resync", type=float, default=30.0, help="seconds between full syncs")
    p.add_argument("--haproxy", default="haproxy", help="the haproxy binary")
    args = p.parse_args(argv)
    from trellis import daemon
    client, stop = daemon.start("ingress", args.server)
    haproxy = HAProxy(args.run_dir, args.http_port, args.https_port, binary=args.haproxy,
                      health_port=args.health_port)
    IngressController(client, haproxy, args.publish_service, args.debounce, args.resync).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
