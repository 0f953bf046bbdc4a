"""The lab's controller manager: scheduler, workload, EndpointSlice, node lifecycle, ServiceAccounts
and root CA controllers."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from trellis.kube.client import KubeClient
from trellis.kube.informer import Informer
from trellis.lab.daemonsets import DaemonSetController
from trellis.lab.endpointslices import EndpointSliceController
from trellis.lab.jobs import CronJobController, JobController
from trellis.lab.nodelifecycle import NodeLifecycleController
from trellis.lab.rootca import NAME as ROOT_CA_CONFIGMAP, RootCAPublisher
from trellis.lab.serviceaccounts import ServiceAccountsController
from trellis.lab.workloads import DeploymentController, ReplicaSetController, Scheduler


def run(client: KubeClient, stop: threading.Event, node_grace: float = 40.0, root_ca: str | None = None) -> None:
    pods = Informer(client, "v1", "pods")
    nodes = Informer(client, "v1", "nodes")
    rsets = Informer(client, "apps/v1", "replicasets")
    deploys = Informer(client, "apps/v1", "deployments")
    dsets = Informer(client, "apps/v1", "daemonsets")
    revisions = Informer(client, "apps/v1", "controllerrevisions")
    services = Informer(client, "v1", "services")
    slices = Informer(client, "discovery.k8s.io/v1", "endpointslices")
    jobs = Informer(client, "batch/v1", "jobs")
    cronjobs = Informer(client, "batch/v1", "cronjobs")
    namespaces = Informer(client, "v1", "namespaces")
    accounts = Informer(client, "v1", "serviceaccounts")
    controllers = [Scheduler(client, pods, nodes), ReplicaSetController(client, pods, rsets),
                   DeploymentController(client, deploys, rsets),
                   DaemonSetController(client, dsets, pods, nodes, revisions),
                   EndpointSliceController(client, services, pods, slices),
                   NodeLifecycleController(client, nodes, grace=node_grace),
                   JobController(client, jobs, pods), CronJobController(client, cronjobs, jobs),
                   ServiceAccountsController(client, namespaces, accounts)]
    informers = (pods, nodes, rsets, deploys, dsets, revisions, services, slices, jobs, cronjobs, namespaces,
                 accounts)
    if root_ca:
        cms = Informer(client, "v1", "configmaps", field_selector=f"metadata.name={ROOT_CA_CONFIGMAP}")
        controllers.append(RootCAPublisher(client, namespaces, cms, root_ca))
        informers += (cms,)
    for inf in informers:
        inf.start()
    for inf in informers:
        inf.synced.wait(30)
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True, name=type(c).__name__)
               for c in controllers]
    for t in threads:
        t.start()
    stop.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trellis-controller-manager",
                                description="The lab's scheduler and workload controllers.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--server", help="API server URL (no credentials)")
    who.add_argument("--kubeconfig", help="kubeconfig with the server and this component's credentials")
    p.add_argument("--root-ca-file", help="the cluster CA, published in every namespace as ConfigMap kube-root-ca.crt")
    p.add_argument("--node-monitor-grace-period", type=float, default=40.0,
                   help="seconds without a kubelet heartbeat (its Lease) before a node's Ready is Unknown")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller-manager %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    client = KubeClient.from_kubeconfig(args.kubeconfig) if args.kubeconfig else KubeClient(args.server)
    root_ca = None
    if args.root_ca_file:
        with open(args.root_ca_file) as f:
            root_ca = f.read()
    if not client.wait_healthy(60, stop):  # started beside the API server
        logging.error("the API server did not become ready in 60 s")
        return 1
    run(client, stop, args.node_monitor_grace_period, root_ca)
    return 0


if __name__ == "__main__":
    sys.exit(main())
