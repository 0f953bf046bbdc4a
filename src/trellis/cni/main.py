"""trellis-cni: the CNI executable (spec 1.0.0 and 1.1.0). Standard library only.

Thin, as the runtime execs it for every ADD and DEL: check the CNI_* environment and
the network config, then relay both, as they are, to the node agent over the unix
socket named in the config (``"socket"``); the agent answers with the exit status and
the exact text to print. Error codes: 1 incompatible version, 4 bad environment, 7 bad
config, 11 try again later (the agent is not up), 50 plugin not available (STATUS).

Start-up is most of what a plugin costs, so the hot path imports only built-in and
C modules: ``_socket`` instead of ``socket`` and ``_json``'s scanner instead of ``json``
(their pure-Python layers pull in enum, re, selectors..., ~11 ms of a ~20 ms start),
``posix.environ`` instead of ``os`` (1.2 ms), no ``typing`` and no ``__future__``.
``json`` is imported only to print an error or VERSION.

Wire format, one request per connection: ``KEY=VALUE`` lines for the CNI_* variables,
an empty line, the config bytes; the plugin then shuts down its writing side. Reply:
the exit status on the first line, then what to print.
"""
import posix  # built in, already loaded: ``os`` would cost 1.2 ms at every exec
import sys

try:
    import _socket as socket_mod  # the C module: ``socket`` would import enum and selectors
except ImportError:  # pragma: no cover - not CPython
    import socket as socket_mod

SUPPORTED = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
DEFAULT_SOCKET = "/run/trellis/agent.sock"
ENV = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")


class Failure(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


class _Decoding:
    """What ``_json``'s C scanner reads from a ``json.JSONDecoder``."""
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


def loads(text: str):
    """``json.loads`` through the C scanner alone. Bad input goes to ``json.loads`` itself,
    for its error message (the C scanner needs ``json.decoder`` loaded to raise one)."""
    try:
        from _json import make_scanner
        body = text.strip(" \t\n\r")
        obj, end = make_scanner(_Decoding)(body, 0)
        if end == len(body):
            return obj
    except Exception:  # noqa: BLE001 - any failure: let json say what is wrong
        pass
    import json
    return json.loads(text)


def read_config(stdin) -> str:
    """The config as text. Bytes are read when the stream has them, so bytes that are not
    UTF-8 are a config error (7) rather than a decoding traceback."""
    buf = getattr(stdin, "buffer", None)
    try:
        return buf.read().decode() if buf is not None else stdin.read()
    except UnicodeDecodeError as e:
        raise Failure(7, f"network config is not UTF-8: byte {e.start}: {e.reason}") from None


def parse_args(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, text.split(";")):
        k, sep, v = part.partition("=")
        if not sep:
            raise Failure(4, f"CNI_ARGS: {part!r} is not KEY=VALUE")
        out[k] = v
    return out


def read_all(sock) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def encode_request(env: dict[str, str], config: str) -> bytes:
    head = "".join(f"{k}={env[k]}\n" for k in ENV if env.get(k))
    return (head + "\n" + config).encode()


def decode_request(data: bytes) -> tuple[dict[str, str], str]:
    head, _, config = data.decode().partition("\n\n")
    env = dict(line.split("=", 1) for line in head.split("\n") if "=" in line)
    return env, config


def socket_address(path: str) -> str:
    """``@name`` is an abstract socket (Linux): it lives in the network namespace, not in a file
    system, so the plugin run by the runtime in the node's namespace and the hostNetwork agent
    meet there whatever each one's mount namespace shows."""
    return "\0" + path[1:] if path.startswith("@") else path


def ask_agent(path: str, request: bytes, timeout: float = 60) -> tuple[int, str]:
    s = socket_mod.socket(socket_mod.AF_UNIX, socket_mod.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        try:
            s.connect(socket_address(path))
        except OSError as e:
            raise Failure(11, f"the trellis agent is not reachable at {path}: {e.strerror or e}",
                          "try again later") from None
        try:
            s.sendall(request)
            s.shutdown(socket_mod.SHUT_WR)
            reply = read_all(s).decode()
        except OSError as e:  # a timeout too: the agent took longer than the runtime should wait
            raise Failure(11, f"the trellis agent at {path} did not answer: {e.strerror or e}",
                          "try again later") from None
    finally:
        s.close()
    status, sep, text = reply.partition("\n")
    if not sep or not status.isdigit():
        raise Failure(11, "the trellis agent closed the connection without an answer", "try again later")
    return int(status), text


def run(env: dict[str, str], stdin, stdout) -> int:
    version = "1.1.0"
    try:
        cmd = env.get("CNI_COMMAND", "")
        if not cmd:
            raise Failure(4, "CNI_COMMAND is not set")
        raw = read_config(stdin)
        try:
            conf = loads(raw) if raw.strip() else {}
        except RecursionError:
            raise Failure(7, "network config is nested too deeply") from None
        except ValueError as e:
            raise Failure(7, f"network config is not valid JSON: {e}") from None
        if not isinstance(conf, dict):
            raise Failure(7, "network config must be a JSON object")
        if not isinstance(conf.get("cniVersion", version), str):
            raise Failure(7, f"network config: 'cniVersion' must be a string, not {conf['cniVersion']!r:.60}")
        version = conf.get("cniVersion", version)
        if cmd == "VERSION":
            import json
            stdout.write(json.dumps({"cniVersion": version, "supportedVersions": SUPPORTED}) + "\n")
            return 0
        if version not in SUPPORTED:
            raise Failure(1, f"cniVersion {version!r} is not supported (supported: {', '.join(SUPPORTED)})")
        for field in ("name", "type"):
            if not conf.get(field):
                raise Failure(7, f"network config: {field!r} is required")
            if not isinstance(conf[field], str):
                raise Failure(7, f"network config: {field!r} must be a string, not {conf[field]!r:.60}")
        sock = conf.get("socket", DEFAULT_SOCKET)
        if not isinstance(sock, str) or not sock or "\0" in sock:
            raise Failure(7, f"network config: 'socket' must be the path of a unix socket (or @name, an abstract "
                          f"one), not {sock!r:.60}")
        parse_args(env.get("CNI_ARGS", ""))
        if cmd in ("ADD", "DEL", "CHECK"):
            for var in ("CNI_CONTAINERID", "CNI_IFNAME") + (("CNI_NETNS",) if cmd != "DEL" else ()):
                if not env.get(var):
                    raise Failure(4, f"{var} is not set")
        elif cmd not in ("STATUS", "GC"):
            raise Failure(4, f"CNI_COMMAND {cmd!r} is not one of ADD, DEL, CHECK, VERSION, STATUS, GC")
        for var in ENV:
            if "\n" in env.get(var, ""):
                raise Failure(4, f"{var} holds a newline")
        try:
            status, text = ask_agent(sock, encode_request(env, raw))
        except Failure as f:
            if cmd == "STATUS":
                raise Failure(50, f.msg) from None
            raise
        stdout.write(text)
        return status
    except Exception as e:  # noqa: BLE001 - the runtime must always get CNI error JSON, never a traceback
        f = e if isinstance(e, Failure) else Failure(999, f"trellis-cni: internal error: {type(e).__name__}: {e}")
        import json
        err = {"cniVersion": version if isinstance(version, str) else "1.1.0", "code": f.code, "msg": f.msg}
        if f.details:
            err["details"] = f.details
        stdout.write(json.dumps(err) + "\n")
        return 1


def main() -> None:
    """Run, then leave without the interpreter's teardown (module and GC clean-up, ~1.5 ms
    of every exec): stdout is flushed by hand, and nothing else needs a goodbye."""
    env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in posix.environ.items()}
    code = run(env, sys.stdin, sys.stdout)
    sys.stdout.flush()
    posix._exit(code)


if __name__ == "__main__":
    main()
