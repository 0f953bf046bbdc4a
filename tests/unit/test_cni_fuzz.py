"""CNI fuzz (issue 15): thousands of malformed or hostile plugin inputs, each answered with CNI
error JSON carrying a spec code, none changing the agent's state.

The plugin runs in-process (``trellis.cni.main.run``, the function ``main`` calls) against a
real agent CNI server with a disk IPAM store that holds three live attachments, and the
agent's policy book. No input names a usable network namespace, so no ADD may succeed; a DEL
names a container nobody holds. After every input the store's files, the book and the
unmanaged set are what they were. A few inputs go through the real executable too (bytes on
stdin that are not UTF-8).
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from trellis.agent.attachments import Attachment
from trellis.agent.cniserver import CNIServer
from trellis.agent.dataplane import PodNetwork
from trellis.agent.ipam import Allocator, DiskStore, Reservation
from trellis.agent.policy import PolicyController
from trellis.cni.main import SUPPORTED, run
from trellis.kernel.netns import netns_path_problem

SPEC_CODES = {1, 3, 4, 7, 11, 50}
LIVE = [("live-a", "eth0", "10.244.9.10", "default/dns-1"), ("live-b", "eth0", "10.244.9.11", "default/web-1"),
        ("live-c", "net1", "10.244.9.12", "")]
EXAMPLES = int(os.environ.get("TRELLIS_FUZZ_EXAMPLES", "2200"))


class Agent:
    """A real agent CNI server over a disk store; the node's own namespace is a throwaway one
    when we are root (DEL deletes links there), else absent (every kernel call fails)."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="trellis-fuzz-")
        self.node_ns = f"trellis-fuzz-{os.getpid()}"
        self.own_ns = os.geteuid() == 0 and subprocess.run(["ip", "netns", "add", self.node_ns]).returncode == 0
        store = DiskStore(os.path.join(self.dir, "ipam"))
        for cid, ifname, ip, pod in LIVE:
            # the test's own network namespace stands for the live pods' (a real netns, never entered)
            assert store.reserve(Reservation(ip, cid, ifname, pod, "/proc/self/ns/net"))
        self.net = PodNetwork(Allocator("10.244.9.0/24", store), 1450, "10.244.0.0/16", netns=self.node_ns)
        self.policy = PolicyController(None, "node-1", "10.244.0.0/16")
        self.policy.seed([Attachment(c, i, ip, pod) for c, i, ip, pod in LIVE])
        self.sock = os.path.join(self.dir, "agent.sock")
        self.server = CNIServer(self.sock, lambda: self.net, lambda: None,
                                on_add=self.policy.pod_added, on_del=self.policy.attachment_deleted)
        self.server.start()
        self.fifo = os.path.join(self.dir, "fifo")
        os.mkfifo(self.fifo)
        self.plain = os.path.join(self.dir, "plain")
        open(self.plain, "w").close()

    def snapshot(self) -> tuple:
        ipam = self.net.ipam.store
        files = []
        for root, _, names in os.walk(ipam.dir):
            for n in sorted(names):
                p = os.path.join(root, n)
                if n in ("lock", "last_reserved"):
                    continue
                files.append((p, os.readlink(p) if os.path.islink(p) else open(p).read()))
        with self.policy.lock:
            book = sorted((k, a.ip, a.pod) for k, a in self.policy.book.by_key.items())
            return sorted(files), book, sorted(self.policy.state.unmanaged)

    def close(self) -> None:
        self.server.stop()
        if self.own_ns:
            subprocess.run(["ip", "netns", "del", self.node_ns])
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def agent():
    quiet = logging.getLogger("trellis")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # every refused input is a warning: thousands of lines
    a = Agent()
    yield a
    a.close()
    quiet.setLevel(level)


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
json_leaf = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | text
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(text, c, max_size=4),
                        max_leaves=12)
attachment = st.fixed_dictionaries({}, optional={"containerID": json_any | st.sampled_from([c for c, *_ in LIVE]),
                                                 "ifname": json_any | st.just("eth0")})
valid_attachments = (st.lists(attachment, max_size=4) | json_any
                     | st.lists(st.sampled_from([{"containerID": c, "ifname": i} for c, i, *_ in LIVE]), max_size=2))


@st.composite
def config(draw, sock: str) -> bytes:
    kind = draw(st.sampled_from(["mutated"] * 6 + ["deep", "bytes", "json"]))
    if kind == "deep":
        n = draw(st.integers(500, 20000))
        opener = draw(st.sampled_from(["[", '{"a":']))
        return (opener * n + "1" + ("]" if opener == "[" else "}") * n).encode()
    if kind == "bytes":
        raw = draw(st.binary(max_size=200))
        bad = draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80", b"\x80"]))
        return b'{"cniVersion": "1.0.0", "name": "' + raw + bad + b'", "type": "trellis"}'
    if kind == "json":
        return json.dumps(draw(json_any)).encode()
    conf = {"cniVersion": draw(st.sampled_from(SUPPORTED) | json_any), "name": "trellis", "type": "trellis",
            "socket": sock}
    for field in draw(st.sets(st.sampled_from(["cniVersion", "name", "type", "socket", "prevResult",
                                              "cni.dev/valid-attachments", "extra"]), max_size=4)):
        if field == "cni.dev/valid-attachments":
            conf[field] = draw(valid_attachments)
        elif field == "prevResult":
            conf[field] = draw(json_any | st.fixed_dictionaries({"ips": json_any}))
        elif draw(st.booleans()):
            conf.pop(field, None)
        else:
            conf[field] = draw(json_any)
    return json.dumps(conf).encode()


def env_strategy(a: Agent):
    netns = st.sampled_from([a.fifo, a.plain, a.dir, "/dev/null", "/proc/self/ns/uts", "/nonexistent/netns", ""]) \
        | text.filter(lambda p: netns_path_problem(p) is not None if p else True)
    args = st.sampled_from(["", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=dns-1", "IgnoreUnknown=1",
                            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-1;K8S_POD_UID=x", "broken", "=;=;"]) | text
    container = st.sampled_from([c for c, *_ in LIVE]) | text
    return st.fixed_dictionaries({
        "CNI_COMMAND": st.sampled_from(["ADD", "CHECK", "GC", "DEL", "STATUS", "VERSION", "", "add"]) | text,
        "CNI_CONTAINERID": container, "CNI_NETNS": netns, "CNI_IFNAME": st.sampled_from(["eth0", "net1", ""]) | text,
        "CNI_ARGS": args, "CNI_PATH": st.just("/usr/lib/cni")})


def invoke(env: dict, stdin: bytes) -> tuple[int, str]:
    out = io.StringIO()
    rc = run({k: v for k, v in env.items() if v}, io.TextIOWrapper(io.BytesIO(stdin)), out)
    return rc, out.getvalue()


def check_answer(a: Agent, env: dict, stdin: bytes, before: tuple) -> None:
    rc, out = invoke(env, stdin)
    cmd = env.get("CNI_COMMAND")
    if rc == 0:
        assert cmd in ("VERSION", "STATUS", "DEL", "GC"), (env, stdin[:200], out)
        if cmd == "DEL":
            assert env["CNI_CONTAINERID"] not in [c for c, *_ in LIVE], "a DEL of a live attachment is not fuzz"
    else:
        assert rc == 1, (env, stdin[:200], out)
        err = json.loads(out)
        assert isinstance(err["msg"], str) and isinstance(err["cniVersion"], str), err
        # a DEL may fail on the node's namespace when it is absent (unprivileged run): generic 999
        allowed = SPEC_CODES | ({999} if cmd == "DEL" and not a.own_ns else set())
        assert err["code"] in allowed, (env, stdin[:200], err)
    assert a.snapshot() == before, (env, stdin[:200], out)


def test_fuzz_inputs_get_spec_codes_and_change_nothing(agent):
    before = agent.snapshot()
    assert len(before[0]) == 6 and len(before[1]) == 3 and before[2] == ["10.244.9.12"]
    seen = {"n": 0}
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(env=env_strategy(agent), stdin=config(agent.sock))
    def one(env, stdin):
        if env["CNI_COMMAND"] == "DEL" and env["CNI_CONTAINERID"] in [c for c, *_ in LIVE]:
            env = {**env, "CNI_CONTAINERID": "fuzz-" + env["CNI_CONTAINERID"]}  # DEL of a live one is a real DEL
        seen["n"] += 1
        check_answer(agent, env, stdin, before)

    one()
    took = time.monotonic() - started
    assert seen["n"] >= min(EXAMPLES, 2000), seen
    print(f"\n{seen['n']} CNI inputs in {took:.1f}s, every answer a spec code, state unchanged")


@pytest.mark.parametrize("case", ["fifo", "plain", "dir", "uts"])
def test_repeat_add_with_a_bad_netns_keeps_the_live_attachment(agent, case):
    """Item 3 and 4: the live container's ADD again, CNI_NETNS not a network namespace: 4 at
    once (a FIFO used to block the handler with an address held), the attachment untouched."""
    before = agent.snapshot()
    path = {"fifo": agent.fifo, "plain": agent.plain, "dir": agent.dir, "uts": "/proc/self/ns/uts"}[case]
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "live-a", "CNI_NETNS": path, "CNI_IFNAME": "eth0",
           "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=dns-1"}
    t = time.monotonic()
    rc, out = invoke(env, json.dumps({"cniVersion": "1.0.0", "name": "n", "type": "trellis",
                                      "socket": agent.sock}).encode())
    assert rc == 1 and json.loads(out)["code"] == 4 and time.monotonic() - t < 2, out
    assert agent.snapshot() == before


@pytest.mark.parametrize("valid", [None, "missing", [], {}, "all", [{"containerID": "live-a"}],
                                   [{"containerID": 5, "ifname": "eth0"}], [None], [["live-a", "eth0"]]])
def test_gc_refuses_a_malformed_attachment_list(agent, valid):
    """Item 1: a GC whose list is missing, null, empty or malformed is 7; nothing is released."""
    before = agent.snapshot()
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "trellis", "socket": agent.sock}
    if valid != "missing":
        conf["cni.dev/valid-attachments"] = valid
    rc, out = invoke({"CNI_COMMAND": "GC", "CNI_PATH": "/usr/lib/cni"}, json.dumps(conf).encode())
    assert rc == 1 and json.loads(out)["code"] == 7, out
    assert agent.snapshot() == before


def test_gc_never_releases_a_live_attachment(agent):
    """A well-formed list that forgets live attachments: their namespaces exist, so they stay."""
    before = agent.snapshot()
    conf = {"cniVersion": "1.1.0", "name": "n", "type": "trellis", "socket": agent.sock,
            "cni.dev/valid-attachments": [{"containerID": "someone-else", "ifname": "eth0"}]}
    rc, out = invoke({"CNI_COMMAND": "GC", "CNI_PATH": "/usr/lib/cni"}, json.dumps(conf).encode())
    assert rc == 0, out
    assert agent.snapshot() == before


@pytest.mark.parametrize("stdin", [b'{"cniVersion": "1.0.0", "name": "\xff\xfe", "type": "trellis"}',
                                   b"[" * 100000 + b"]" * 100000,
                                   b'{"cniVersion": "1.0.0", "name": "n", "type": "trellis", "socket": 7}',
                                   b'{"cniVersion": ["1.0.0"], "name": "n", "type": "trellis"}'])
def test_the_executable_answers_json_for_bytes_it_cannot_read(stdin):
    """Through the real executable: bytes that are not UTF-8 and deep nesting used to be tracebacks."""
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c", "CNI_NETNS": "/nonexistent",
           "CNI_IFNAME": "eth0"}
    p = subprocess.run([sys.executable, "-m", "trellis.cni.main"], input=stdin, capture_output=True, env=env,
                       timeout=30)
    assert p.returncode == 1 and p.stderr == b"", p.stderr[-500:]
    assert json.loads(p.stdout)["code"] == 7



@pytest.mark.parametrize("prev", ["garbage", [1], {"ips": "x"}, {"ips": [{"address": 5}]}, {"ips": [None]}])
def test_check_with_a_malformed_prev_result_is_a_config_error(agent, prev):
    """CHECK of a live attachment whose prevResult is not a result: 7 (it was 11, the handler crashed)."""
    before = agent.snapshot()
    conf = {"cniVersion": "1.0.0", "name": "n", "type": "trellis", "socket": agent.sock, "prevResult": prev}
    env = {"CNI_COMMAND": "CHECK", "CNI_CONTAINERID": "live-a", "CNI_NETNS": "/proc/self/ns/net", "CNI_IFNAME": "eth0"}
    rc, out = invoke(env, json.dumps(conf).encode())
    assert rc == 1 and json.loads(out)["code"] == 7 and "prevResult" in json.loads(out)["msg"], out
    assert agent.snapshot() == before
