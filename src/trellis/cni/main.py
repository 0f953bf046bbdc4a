"""trellis-cni: the CNI executable (spec 1.0.0 and 1.1.0). Standard library only.

Thin, as the runtime execs it per pod: read CNI_* from the environment and the
network config from stdin, ask the node agent over the unix socket named in
the config (``"socket"``), print its result or a CNI error. Error codes: 1
incompatible version, 4 bad environment, 7 bad config, 11 try again later (the
agent is not up), 50 plugin not available (STATUS).
"""
from __future__ import annotations

import json
import os
import socket
import sys
from typing import TextIO

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
DEFAULT_SOCKET = "/run/trellis/agent.sock"


class Failure(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


def parse_args(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, text.split(";")):
        k, sep, v = part.partition("=")
        if not sep:
            raise Failure(4, f"CNI_ARGS: {part!r} is not KEY=VALUE")
        out[k] = v
    return out


def read_message(sock: socket.socket) -> bytes:
    """One newline-terminated JSON message: the wire format between trellis-cni and the agent."""
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def ask_agent(path: str, msg: dict, timeout: float = 60) -> dict:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as e:
        raise Failure(11, f"the trellis agent is not reachable at {path}: {e.strerror or e}",
                      "try again later") from None
    with s:
        s.sendall(json.dumps(msg).encode() + b"\n")
        buf = read_message(s)
    if not buf:
        raise Failure(11, "the trellis agent closed the connection without an answer", "try again later")
    return json.loads(buf)


def run(env: dict[str, str], stdin: TextIO, stdout: TextIO) -> int:
    version = "1.1.0"
    try:
        cmd = env.get("CNI_COMMAND", "")
        if not cmd:
            raise Failure(4, "CNI_COMMAND is not set")
        raw = stdin.read()
        try:
            conf = json.loads(raw) if raw.strip() else {}
        except ValueError as e:
            raise Failure(7, f"network config is not valid JSON: {e}") from None
        if not isinstance(conf, dict):
            raise Failure(7, "network config must be a JSON object")
        version = conf.get("cniVersion", version)
        if cmd == "VERSION":
            stdout.write(json.dumps({"cniVersion": version, "supportedVersions": SUPPORTED}) + "\n")
            return 0
        if version not in SUPPORTED:
            raise Failure(1, f"cniVersion {version!r} is not supported (supported: {', '.join(SUPPORTED)})")
        for field in ("name", "type"):
            if not conf.get(field):
                raise Failure(7, f"network config: {field!r} is required")
        msg = {"command": cmd, "config": conf, "args": parse_args(env.get("CNI_ARGS", "")),
               "containerID": env.get("CNI_CONTAINERID", ""), "netns": env.get("CNI_NETNS", ""),
               "ifName": env.get("CNI_IFNAME", "")}
        if cmd in ("ADD", "DEL", "CHECK"):
            for var in ("CNI_CONTAINERID", "CNI_IFNAME") + (("CNI_NETNS",) if cmd != "DEL" else ()):
                if not env.get(var):
                    raise Failure(4, f"{var} is not set")
        elif cmd not in ("STATUS", "GC"):
            raise Failure(4, f"CNI_COMMAND {cmd!r} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC")
        try:
            reply = ask_agent(conf.get("socket") or DEFAULT_SOCKET, msg)
        except Failure as f:
            if cmd == "STATUS":
                raise Failure(50, f.msg) from None
            raise
        if "error" in reply:
            e = reply["error"]
            raise Failure(e.get("code", 999), e.get("msg", ""), e.get("details", ""))
        result = reply.get("result") or {}
        if cmd == "ADD":
            result["cniVersion"] = version
            stdout.write(json.dumps(result) + "\n")
        return 0
    except Failure as f:
        err = {"cniVersion": version, "code": f.code, "msg": f.msg}
        if f.details:
            err["details"] = f.details
        stdout.write(json.dumps(err) + "\n")
        return 1


def main() -> int:
    return run(dict(os.environ), sys.stdin, sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
