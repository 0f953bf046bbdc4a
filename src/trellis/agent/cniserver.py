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
import struct
import threading
from typing import Callable

from trellis.agent.dataplane import CNIFailure, PodNetwork, Request
from trellis.agent.health import NotReady
from trellis.cni.main import Failure, decode_request, parse_args, read_all
from trellis.kernel.netns import KernelError
from trellis.kube.events import WARNING, EventRecorder

log = logging.getLogger("trellis.agent.cni")


def valid_attachments(config: dict) -> set[tuple[str, str]]:
    """GC's ``cni.dev/valid-attachments``: the attachments to keep. Anything but a list of
    objects with a non-empty string containerID and ifname is refused (7): read loosely, a
    missing or garbled list would mean "keep nothing" and release every pod on the node."""
    key = "cni.dev/valid-attachments"
    valid = config.get(key)
    if not isinstance(valid, list):
        raise CNIFailure(7, f"GC: {key} must be a list of attachments, not {valid!r:.80}")
    if not valid:
        raise CNIFailure(7, f"GC: {key} is empty; refusing to release every attachment of the node")
    keep = set()
    for i, a in enumerate(valid):
        cid, ifname = (a.get("containerID"), a.get("ifname")) if isinstance(a, dict) else (None, None)
        if not (isinstance(cid, str) and cid and isinstance(ifname, str) and ifname):
            raise CNIFailure(7, f"GC: {key}[{i}] must be an object with a containerID and an ifname, not {a!r:.80}")
        keep.add((cid, ifname))
    return keep


def check_prev_result(config: dict) -> None:
    """CHECK's ``prevResult``, when given, is a result object whose ips are objects with an address."""
    prev = config.get("prevResult")
    if prev is None:
        return
    ips = prev.get("ips", []) if isinstance(prev, dict) else None
    if not isinstance(ips, list) or not all(isinstance(ip, dict) and isinstance(ip.get("address"), str)
                                              for ip in ips):
        raise CNIFailure(7, f"CHECK: prevResult must be a CNI result with ips [{{\"address\": ...}}], not {prev!r:.80}")


class CNIServer:
    def __init__(self, path: str, network: Callable[[], PodNetwork | None], status: Callable[[], NotReady | None],
                 on_add: Callable[[Request, str], None] | None = None,
                 on_del: Callable[[str, str], None] | None = None,
                 on_failure: Callable[[dict, CNIFailure], None] | None = None) -> None:
        self.path, self.network, self.status = path, network, status  # status: None once ready
        self.on_add = on_add  # (request, ip): runs before ADD answers (policy goes in first)
        self.on_del = on_del  # (container ID, ifname): after DEL, and for each attachment GC released
        self.on_failure = on_failure  # (CNI_ARGS, failure): a failure with a reason becomes an Event
        self.sock: socket.socket | None = None
        self.stopped = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def abstract(self) -> bool:
        """``@name``: an abstract socket, in the node's network namespace (``cni.main.socket_address``);
        it has no file mode, so only root (the runtime) may talk to it: checked per connection."""
        return self.path.startswith("@")

    def start(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.abstract:
            self.sock.bind("\0" + self.path[1:])
        else:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
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
            if self.abstract:
                _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
                if uid != 0:
                    log.warning("CNI request from uid %d refused: only root may ask", uid)
                    return
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
            except RecursionError:
                reply = {"error": {"code": 7, "msg": "bad request from trellis-cni: the config is nested too deeply"}}
            except (ValueError, Failure) as e:
                reply = {"error": {"code": getattr(e, "code", 7), "msg": f"bad request from trellis-cni: {e}"}}
            except OSError as e:
                log.warning("CNI %s: reading the request: %s", cmd or "request", e)
                return
            except Exception as e:  # noqa: BLE001 - a bug must still answer, or the plugin reports 11
                log.exception("CNI %s: unexpected error", cmd or "request")
                reply = {"error": {"code": 999, "msg": f"trellis agent: internal error in {cmd}: {type(e).__name__}: {e}"}}
            if not isinstance(version, str):
                version = "1.0.0"
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
            if cmd == "STATUS":  # CNI 1.1: 50, "plugin not available", until every controller synced
                why = self.status()
                if why is not None:
                    raise CNIFailure(50, f"the trellis agent is not ready: {why.msg}", why.details)
                return {"result": {}}
            net = self.network()
            if net is None:  # ADD needs the pod network only (policy keeps a new pod closed until it syncs)
                why = self.status()
                raise CNIFailure(11, f"the trellis agent is not ready yet: {why.msg if why else 'no pod network'}",
                                 (why.details if why else "") or "try again later")
            req = Request(cmd, msg.get("containerID", ""), msg.get("netns", ""), msg.get("ifName", ""),
                          msg.get("args") or {}, msg.get("config") or {})
            if cmd == "ADD":
                result = net.add(req)
                if self.on_add:  # policy goes in before the pod is handed back
                    try:
                        self.on_add(req, result["ips"][0]["address"].split("/")[0])
                    except KernelError as e:
                        # the pod stays fail-closed (not in the policy's known set) until the next sync
                        log.warning("ADD %s: policy not installed yet: %s", req.pod or req.container_id, e)
                return {"result": result}
            if cmd == "DEL":
                net.delete(req)
                if self.on_del:
                    self.on_del(req.container_id, req.ifname)
                return {"result": {}}
            if cmd == "CHECK":
                check_prev_result(req.config)
                net.check(req)
                return {"result": {}}
            if cmd == "GC":
                keep = valid_attachments(req.config)
                gone = net.gc(keep, keep_live=True)
                for r in gone:
                    if self.on_del:
                        self.on_del(r.container_id, r.ifname)
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
