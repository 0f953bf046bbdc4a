"""What every long-running trellis component does first: log, connect, and stop on a signal."""
from __future__ import annotations

import logging
import signal
import threading

from trellis.kube.client import KubeClient, client_for


def start(component: str, server: str | None) -> tuple[KubeClient, threading.Event]:
    """-> (a client of ``server``; without one, of the kubeconfig $KUBECONFIG names, else in-cluster
    config, as client-go tools choose; an event SIGTERM/SIGINT set)."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {component} %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    client = client_for(server)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    return client, stop
