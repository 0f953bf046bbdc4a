"""``trellis port-forward``: reach a lab Service from the host, on 127.0.0.1 only.

The listener lives in the host's namespace but binds 127.0.0.1 (safety rule 2).
Each accepted connection is relayed to the Service from inside the lab's
``<lab>-client`` namespace — the lab's "outside world" — through the Service's
LoadBalancer IP, or else a node's NodePort: the same path an outside user takes,
so the forward exercises the lab's data path instead of bypassing it. A socket
keeps the namespace it was created in, so only the socket() call runs inside
the client namespace.
"""
from __future__ import annotations

import socket
import threading

from trellis.kernel.netns import in_netns
from trellis.kube.client import KubeClient
from trellis.lab import topology


def target_for(client: KubeClient, ns: str, name: str, port: int) -> tuple[str, int]:
    """Where the client namespace reaches the Service's ``port``: LB IP, else a node's NodePort."""
    svc = client.get("v1", "services", name, ns)
    sp = next((p for p in svc["spec"].get("ports") or [] if p["port"] == port or p.get("name") == str(port)), None)
    if sp is None:
        raise ValueError(f"service {ns}/{name} has no port {port}")
    ingress = (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    if ingress and ingress[0].get("ip"):
        return ingress[0]["ip"], sp["port"]
    if sp.get("nodePort"):
        nodes, _ = client.list("v1", "nodes")
        for n in nodes:
            for a in n.get("status", {}).get("addresses") or []:
                if a["type"] == "InternalIP":
                    return a["address"], sp["nodePort"]
    raise ValueError(f"service {ns}/{name} is not reachable from outside the cluster "
                     "(type ClusterIP: make it a NodePort or LoadBalancer)")


def _pipe(a: socket.socket, b: socket.socket) -> None:
    try:
        while data := a.recv(65536):
            b.sendall(data)
    except OSError:
        pass
    finally:
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class PortForward:
    def __init__(self, lab: str, target: tuple[str, int], local_port: int) -> None:
        self.netns = f"{lab}-client"
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", local_port), reuse_port=False)
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()

    def _relay(self, conn: socket.socket) -> None:
        with in_netns(self.netns):
            up = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            up.settimeout(5)
            up.connect(self.target)
            up.settimeout(None)
        except OSError:
            conn.close()
            up.close()
            return
        t = threading.Thread(target=_pipe, args=(up, conn), daemon=True)
        t.start()
        _pipe(conn, up)
        t.join()
        conn.close()
        up.close()

    def serve(self) -> None:
        self.listener.settimeout(0.5)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()
        self.listener.close()

    def start(self) -> "PortForward":
        threading.Thread(target=self.serve, daemon=True, name="port-forward").start()
        return self

    def close(self) -> None:
        self.stop.set()


def open_forward(lab: str, ns: str, name: str, local_port: int, port: int) -> PortForward:
    cfg = topology.load(lab)
    client = cfg.client()
    try:
        target = target_for(client, ns, name, port)
    finally:
        client.close()
    return PortForward(lab, target, local_port)
