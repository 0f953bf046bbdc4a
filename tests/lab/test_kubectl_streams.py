"""The real kubectl's streaming verbs against a lab: exec (pipes and a TTY) and port-forward."""
import fcntl
import os
import pty
import select
import signal
import socket
import struct
import subprocess
import termios
import time
import urllib.request

import pytest

from conftest import module_lab, needs_kubectl, needs_root
from helpers import deployment, running_pods, wait_for
from trellis.kube.client import KubeClient

pytestmark = [needs_root, needs_kubectl, pytest.mark.lab]


slab = module_lab("kv", 2)


@pytest.fixture(scope="module")
def kc(slab):
    c = slab.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def env(slab, tmp_path_factory):
    return dict(os.environ, KUBECONFIG=slab.kubeconfig, HOME=str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="module")
def web(kc):
    """Two agnhost pods serving their name on 80 and 81, behind a ClusterIP Service."""
    kc.create("apps/v1", "deployments", deployment("web", 2, ports=((80, "TCP"), (81, "TCP"))), "default")
    kc.create("v1", "services", {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [
        {"name": "a", "port": 8080, "targetPort": 80}, {"name": "b", "port": 8081, "targetPort": 81}]}},
        "default")
    return running_pods(kc, "default", "app=web", 2)


def kubectl(env, *args, input=None, timeout=30):
    return subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, input=input,
                          timeout=timeout)


def test_exec_pipes_exit_code_and_pod_namespaces(env, web):
    name = web[0]["metadata"]["name"]
    p = kubectl(env, "exec", name, "--", "sh", "-c", "hostname; cat /proc/net/fib_trie | grep -c 10.244; "
                "echo to-stderr >&2; exit 3")
    assert p.returncode == 3, p.stderr
    out = p.stdout.split()
    assert out[0] == name  # the pod's UTS namespace
    assert int(out[1]) > 0  # the pod's network namespace has its 10.244 address
    assert "to-stderr" in p.stderr and "command terminated with exit code 3" in p.stderr
    assert kubectl(env, "exec", name, "--", "true").returncode == 0


def test_exec_stdin_reaches_eof(env, web):
    name = web[0]["metadata"]["name"]
    data = "".join(f"line {i}\n" for i in range(2000))
    p = kubectl(env, "exec", "-i", name, "--", "sh", "-c", "wc -l; echo done", input=data)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["2000", "done"]  # wc saw the end of stdin (v5 close signal)


def test_exec_unknown_container_and_missing_pod(env, web):
    name = web[0]["metadata"]["name"]
    p = kubectl(env, "exec", name, "-c", "nope", "--", "true")
    assert p.returncode != 0 and "container nope is not valid" in p.stderr
    p = kubectl(env, "exec", "no-such-pod", "--", "true")
    assert p.returncode != 0 and 'pods "no-such-pod" not found' in p.stderr


class Terminal:
    """kubectl run under a pseudo-terminal, as a user's shell runs it."""

    def __init__(self, env, *args):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # pragma: no cover - the child
            os.execvpe("kubectl", ["kubectl", *args], env)
        self.buf = b""

    def resize(self, rows, cols):
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.kill(self.pid, signal.SIGWINCH)

    def send(self, text):
        os.write(self.fd, text.encode())

    def expect(self, pattern, timeout=15):
        deadline = time.monotonic() + timeout
        while pattern.encode() not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} on the terminal; got {self.buf!r}"
            if select.select([self.fd], [], [], left)[0]:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:
                    chunk = b""
                assert chunk, f"terminal closed before {pattern!r}; got {self.buf!r}"
                self.buf += chunk
        i = self.buf.index(pattern.encode()) + len(pattern)
        seen, self.buf = self.buf[:i], self.buf[i:]
        return seen.decode(errors="replace")

    def ask_until(self, command, want, what, tries=20):
        """Send ``command`` until what it prints shows ``want``: for what kubectl delivers from its
        own goroutine (a resize) or before its terminal is raw. Each try ends with a fresh marker."""
        for i in range(tries):
            self.send(f"{command}; echo ask-$(({i}+1000))\r")
            if want in self.expect(f"ask-{i + 1000}"):
                return
        raise AssertionError(f"{what}: never {want!r} on the terminal")

    def wait(self, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.2)[0]:
                try:
                    self.buf += os.read(self.fd, 4096)
                except OSError:
                    pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"kubectl did not exit; terminal shows {self.buf!r}")


def test_exec_it_terminal_resize_and_exit_code(env, web):
    name = web[1]["metadata"]["name"]
    t = Terminal(env, "exec", "-it", name, "--", "sh")
    t.resize(33, 111)
    t.send("tty; stty size; echo mark-$((40+2))\r")
    seen = t.expect("mark-42")
    assert "/dev/pts/" in seen
    assert "33 111" in seen  # the size kubectl sent at start
    t.resize(40, 120)
    # kubectl forwards SIGWINCH from its own goroutine: the resize may reach the pty after the next
    # line of stdin, so ask until it has
    t.ask_until("stty size", "40 120", "the resize")
    t.send("exit 7\r")
    assert t.wait() == 7
    assert b"command terminated with exit code 7" in t.buf


def fetch(port, timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as r:
        return r.read().decode().strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def forward(env):
    procs = []

    def start(target, *ports):
        p = subprocess.Popen(["kubectl", "port-forward", "--address", "127.0.0.1", target, *ports],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        procs.append(p)
        lines = []
        for _ in ports:
            line = p.stdout.readline()
            lines.append(line)
            assert line.startswith("Forwarding from 127.0.0.1:"), "".join(lines) + p.stdout.read()
        return p
    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def listeners_on(pid):
    """The TCP listening addresses of a process (from /proc: its sockets' inodes in the tcp table)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        link = os.readlink(f"/proc/{pid}/fd/{fd}")
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in open(table).read().splitlines()[1:]:
            f = row.split()
            if f[3] == "0A" and f[9] in inodes:
                out.append(f[1])
    return out


def test_port_forward_pod_two_ports(env, web, forward):
    name = web[0]["metadata"]["name"]
    a, b = free_port(), free_port()
    p = forward(f"pod/{name}", f"{a}:80", f"{b}:81")
    assert fetch(a) == name and fetch(b) == name
    for _ in range(5):  # one WebSocket, a new pair of SPDY streams per connection
        assert fetch(a) == name
    assert all(addr.startswith("0100007F:") for addr in listeners_on(p.pid))  # only 127.0.0.1


def test_port_forward_service_resolves_target_ports(env, web, forward):
    names = {p["metadata"]["name"] for p in web}
    a, b = free_port(), free_port()
    forward("svc/web", f"{a}:8080", f"{b}:8081")
    got_a, got_b = fetch(a), fetch(b)
    assert got_a in names and got_b == got_a  # one pod of the Service, both of its ports


def test_port_forward_to_a_closed_port_reports_the_error(env, web, forward):
    name = web[0]["metadata"]["name"]
    a = free_port()
    p = forward(f"pod/{name}", f"{a}:9")
    with pytest.raises(OSError):
        fetch(a)
    out = p.stdout.readline() + p.stdout.readline()
    assert "connect: connection refused" in out, out


def test_port_forward_moves_a_megabyte_each_way(env, kc, forward):
    kc.create("v1", "pods", {"metadata": {"name": "echo", "labels": {"app": "echo"}}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "command": ["nc", "-l", "-p", "7000", "-e", "cat"]}]}}, "default")
    running_pods(kc, "default", "app=echo", 1)
    a = free_port()
    forward("pod/echo", f"{a}:7000")
    blob = os.urandom(1 << 20)
    with socket.create_connection(("127.0.0.1", a), timeout=10) as s:
        import threading
        t = threading.Thread(target=lambda: (s.sendall(blob), s.shutdown(socket.SHUT_WR)))
        t.start()
        got = bytearray()
        while chunk := s.recv(65536):
            got += chunk
        t.join()
    assert bytes(got) == blob


def parse_cpu(text):
    return int(text[:-1]) if text.endswith("m") else int(text) * 1000


def test_top_pods_and_nodes_measure_the_pods_processes(env, kc, web):
    kc.create("v1", "pods", {"metadata": {"name": "burn", "labels": {"app": "burn"}}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "command": ["sh", "-c", "while :; do :; done"]}]}}, "default")
    try:
        running_pods(kc, "default", "app=burn", 1)

        def rows():
            p = kubectl(env, "top", "pods", "--no-headers")
            got = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()} if p.returncode == 0 else {}
            return got if "burn" in got and parse_cpu(got["burn"][0]) > 300 else None
        got = wait_for(rows, 40, "kubectl top pods to show the busy pod")
        idle = web[0]["metadata"]["name"]
        assert parse_cpu(got[idle][0]) < 100  # the agnhost pods only wait for connections
        assert got[idle][1].endswith("Mi") and int(got[idle][1][:-2]) > 1  # python's resident memory
        p = kubectl(env, "top", "pod", "burn", "--containers", "--no-headers")
        assert p.returncode == 0 and p.stdout.split()[:2] == ["burn", "c"], p.stdout + p.stderr
        p = kubectl(env, "top", "nodes", "--no-headers")
        nodes = {line.split()[0]: line.split()[1:] for line in p.stdout.splitlines()}
        assert p.returncode == 0 and set(nodes) == {"node-1", "node-2"}, p.stdout + p.stderr
        burn_node = kc.get("v1", "pods", "burn", "default")["spec"]["nodeName"]
        assert parse_cpu(nodes[burn_node][0]) > 300 and nodes[burn_node][1].endswith("%")
    finally:
        kc.delete("v1", "pods", "burn", "default", grace_period=0)


def test_exec_ends_when_the_pod_goes(env, kc):
    kc.create("v1", "pods", {"metadata": {"name": "brief", "labels": {"app": "brief"}}, "spec": {
        "terminationGracePeriodSeconds": 1, "containers": [
            {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}, "default")
    running_pods(kc, "default", "app=brief", 1)
    p = subprocess.Popen(["kubectl", "exec", "brief", "--", "sh", "-c", "echo started; exec sleep 3600"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "started\n"
        kc.delete("v1", "pods", "brief", "default")
        assert p.wait(30) != 0  # the exec'd process died with the pod, and kubectl returned
    finally:
        if p.poll() is None:
            p.kill()
