"""The real kubectl attaching to a container's first process: a shell on a terminal, a ticker's output."""
import subprocess

import pytest

from conftest import module_lab, needs_kubectl, needs_root
from helpers import running_pods, wait_for
from test_kubectl_streams import Terminal, env, kc, kubectl  # noqa: F401 - fixtures

pytestmark = [needs_root, needs_kubectl, pytest.mark.lab]

slab = module_lab("ka", 2)
TICKER = "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done"


def pod(name, container, **spec):
    return {"metadata": {"name": name, "labels": {"app": name}},
            "spec": {"nodeName": "node-2", "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [dict({"name": "main", "image": "busybox"}, **container)], **spec}}


def terminated(kc, name):
    def check():
        st = (kc.get("v1", "pods", name, "default").get("status") or {}).get("containerStatuses") or [{}]
        return st[0].get("state", {}).get("terminated")
    return wait_for(check, 20, f"{name}'s container to terminate")


def test_attach_it_to_a_shell_on_a_terminal(env, kc):
    kc.create("v1", "pods", pod("shell", {"command": ["sh"], "stdin": True, "tty": True}), "default")
    running_pods(kc, "default", "app=shell", 1)
    t = Terminal(env, "attach", "-it", "shell")
    t.resize(33, 111)
    # the shell is the container's PID 1, started by the kubelet, not a new process; the first lines
    # may come before kubectl put its terminal in raw mode
    t.ask_until("echo pid-$$", "pid-1\r", "the shell's answer")
    t.ask_until("stty size", "33 111", "the terminal size")
    t.send("exit 3\r")
    assert t.wait() == 0  # upstream: the attach ends with Success; the code is the container's status
    assert terminated(kc, "shell")["exitCode"] == 3


def lines(proc, n):
    got = []
    while len(got) < n:
        line = proc.stdout.readline()
        assert line, f"kubectl attach ended after {got!r}: {proc.stderr.read()}"
        got.append(line.strip())
    return got


def test_attach_follows_new_output_in_several_sessions_and_detaches(env, kc):
    kc.create("v1", "pods", pod("ticker", {"command": ["sh", "-c", TICKER]}), "default")
    running_pods(kc, "default", "app=ticker", 1)
    wait_for(lambda: "tick-20" in kubectl(env, "logs", "ticker").stdout, 20, "20 ticks in the log")
    sessions = [subprocess.Popen(["kubectl", "attach", "ticker"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, env=env) for _ in range(2)]
    try:
        for s in sessions:
            seen = [int(x.removeprefix("tick-")) for x in lines(s, 5) if x.startswith("tick-")]
            assert len(seen) >= 4 and seen == sorted(seen) and seen[0] >= 20  # from attaching on, not the start
            assert seen[-1] - seen[0] == len(seen) - 1  # every line, in order
    finally:
        for s in sessions:
            s.terminate()
            s.wait(10)
    # detaching left the container running: it goes on ticking, never restarted
    after = kubectl(env, "logs", "ticker").stdout.split()[-1]
    wait_for(lambda: kubectl(env, "logs", "ticker").stdout.split()[-1] != after, 10, "ticks after the detach")
    st = kc.get("v1", "pods", "ticker", "default")["status"]["containerStatuses"][0]
    assert "running" in st["state"] and st["restartCount"] == 0


def test_attach_stdin_pipe_without_tty(env, kc):
    kc.create("v1", "pods", pod("reader", {"command": ["sh", "-c", "while read l; do echo got-$l; done; "
                                                                  "echo stdin-closed; exit 4"],
                                           "stdin": True, "stdinOnce": True}), "default")
    running_pods(kc, "default", "app=reader", 1)
    p = kubectl(env, "attach", "-i", "reader", input="one\ntwo\n")
    assert p.returncode == 0, p.stderr
    assert "got-one" in p.stdout and "got-two" in p.stdout and "stdin-closed" in p.stdout  # stdinOnce: EOF
    assert terminated(kc, "reader")["exitCode"] == 4


def test_attach_i_to_a_container_without_stdin(env, kc):
    kc.create("v1", "pods", pod("nostdin", {"command": ["sh", "-c", "sleep 1; echo done-now"]}), "default")
    running_pods(kc, "default", "app=nostdin", 1)
    p = kubectl(env, "attach", "-i", "nostdin", input="ignored\n")
    assert p.returncode == 0, p.stderr
    assert "done-now" in p.stdout and "ignored" not in p.stdout
