"""The agent's side of trellis-cni: a unix socket, one JSON request and reply per connection.

trellis-cni relays the runtime's CNI_* variables and config (``trellis.cni.main``'s
wire format); ``handle`` takes them as ``{"command", "containerID", "netns", "ifName",
"args", "config"}`` and returns ``{"result": {...}}`` or ``{"error": {"code", "msg",
"details"}}`` with CNI error codes; the reply is the exit status and the text the
plugin prints. Each connection is served on its own thread, so parallel ADDs run in
parallel (the IPAM store serializes allocation itself).
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Callable

from trellis.agent.dataplane import CNIFailure, PodNetwork, Request
from trellis.cni.main import Failure, decode_request, parse_args, read_all
from trellis.kernel.netns import KernelError
from trellis.kube.events import WARNING, EventRecorder

log = logging.getLogger("trellis.agent.cni")


class CNIServer:
    def __init__(self, path: str, network: Callable[[], PodNetwork | None], status: Callable[[], str | None],
                 on_add: Callable[[str, str, str], None] | None = None,
                 on_failure: Callable[[dict, CNIFailure], None] | None = None) -> None:
        self.path, self.network, self.status = path, network, status
        self.on_add = on_add  # (namespace, pod, ip): runs before ADD answers (policy goes in first)
        self.on_failure = on_failure  # (CNI_ARGS, failure): a failure with a reason becomes an Event
        self.sock: socket.socket | None = None
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        os.chmod(self.path, 0o600)
        self.sock.listen(256)
        self._thread = threading.Thread(target=self._accept, args=(self.sock,), daemon=True, name="cni-accept")
        self._thread.start()

    def _accept(self, sock: socket.socket) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            if self.stopped.is_set():
                conn.close()
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(60)
            version, cmd = "1.0.0", ""
            try:
                env, raw = decode_request(read_all(conn))
                cmd = env.get("CNI_COMMAND", "")
                config = json.loads(raw) if raw.strip() else {}
                if not isinstance(config, dict):
                    raise ValueError("the network config is not a JSON object")
                version = config.get("cniVersion", version)
                reply = self.handle({"command": cmd, "containerID": env.get("CNI_CONTAINERID", ""),
                                     "netns": env.get("CNI_NETNS", ""), "ifName": env.get("CNI_IFNAME", ""),
                                     "args": parse_args(env.get("CNI_ARGS", "")), "config": config})
            except (ValueError, Failure) as e:
                reply = {"error": {"code": getattr(e, "code", 7), "msg": f"bad request from trellis-cni: {e}"}}
            except OSError as e:
                log.warning("CNI %s: reading the request: %s", cmd or "request", e)
                return
            if "error" in reply:
                err = {"cniVersion": version, **{k: v for k, v in reply["error"].items() if v != ""}}
                text, status = json.dumps(err) + "\n", 1
            elif cmd == "ADD":
                text, status = json.dumps({**reply["result"], "cniVersion": version}) + "\n", 0
            else:
                text, status = "", 0
            try:
                conn.sendall(f"{status}\n{text}".encode())
            except OSError as e:
                log.warning("CNI %s: the plugin went away before the answer: %s", cmd, e)

    def handle(self, msg: dict) -> dict:
        cmd = msg.get("command", "")
        try:
            if cmd == "STATUS":
                why = self.status()
                if why:
                    raise CNIFailure(50, f"the trellis agent is not ready: {why}")
                return {"result": {}}
            net = self.network()
            if net is None:
                raise CNIFailure(11, f"the trellis agent is not ready yet: {self.status()}", "try again later")
            req = Request(cmd, msg.get("containerID", ""), msg.get("netns", ""), msg.get("ifName", ""),
                          msg.get("args") or {}, msg.get("config") or {})
            if cmd == "ADD":
                result = net.add(req)
                ns, pod = req.args.get("K8S_POD_NAMESPACE"), req.args.get("K8S_POD_NAME")
                if self.on_add:  # without K8S_POD_* args: a container no Kubernetes policy can select
                    try:
                        self.on_add(ns or "", pod or "", result["ips"][0]["address"].split("/")[0])
                    except KernelError as e:
                        # the pod stays fail-closed (not in the policy's known set) until the next sync
                        log.warning("ADD %s/%s: policy not installed yet: %s", ns, pod, e)
                return {"result": result}
            if cmd == "DEL":
                net.delete(req)
                return {"result": {}}
            if cmd == "CHECK":
                net.check(req)
                return {"result": {}}
            if cmd == "GC":
                valid = req.config.get("cni.dev/valid-attachments") or []
                keep = {(a.get("containerID"), a.get("ifname")) for a in valid}
                gone = net.gc(keep)
                return {"result": {"released": [r.ip for r in gone]}}
            raise CNIFailure(4, f"unknown CNI_COMMAND {cmd!r}")
        except CNIFailure as e:
            log.warning("%s %s: %s", cmd, msg.get("containerID", ""), e.msg)
            if e.reason and self.on_failure:
                self.on_failure(msg.get("args") or {}, e)
            return {"error": {"code": e.code, "msg": e.msg, "details": e.details}}
        except KernelError as e:
            log.warning("%s %s: %s", cmd, msg.get("containerID", ""), e)
            return {"error": {"code": 999, "msg": str(e)}}

    def stop(self) -> None:
        # NOTE: close() alone leaves accept() blocked on an fd number that the next socket
        # may reuse, and the old thread would then serve it: shut down first, then join.
        self.stopped.set()
        if self.sock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def pod_event(events: EventRecorder) -> Callable[[dict, CNIFailure], None]:
    """on_failure for CNIServer: a failure an operator must fix (a full pod block) is a Warning
    Event on the pod the runtime named in CNI_ARGS."""
    def record(args: dict, failure: CNIFailure) -> None:
        ns, name = args.get("K8S_POD_NAMESPACE"), args.get("K8S_POD_NAME")
        if ns and name:
            ref = {"kind": "Pod", "apiVersion": "v1", "namespace": ns, "name": name, "uid": args.get("K8S_POD_UID", "")}
            events.event(ref, WARNING, failure.reason, failure.msg)
    return record
