"""Lab lifecycle: up/down leave nothing behind, also after kill -9; labs side by side; bad input."""
import os
import signal
import subprocess
import time

import pytest

from conftest import needs_root, unique
from helpers import PY, deployment, running_pods, wait_for
from trellis.kernel import netns as kns
from trellis.kube.client import KubeClient
from trellis.lab import topology

pytestmark = [needs_root, pytest.mark.lab]


def netns_names() -> set[str]:
    return set(kns.list_names())


def root_state() -> tuple[str, str]:
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return addrs, " ".join(sorted(l.split(":")[1].strip() for l in links.splitlines()))


def lab_pids(name: str) -> list[int]:
    d = topology.lab_dir(name)
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if d.encode() in open(f"/proc/{p}/cmdline", "rb").read():
                    out.append(int(p))
            except OSError:
                pass
    return out


def test_up_down_leaves_nothing_even_after_kill_9():
    before_ns, before_root = netns_names(), root_state()
    name = unique("tk")
    try:
        cfg = topology.up(name, 2)
        c = cfg.client()
        c.create("apps/v1", "deployments", deployment("k", 3), "default")
        pods = running_pods(c, "default", "app=k", 3)
        # one namespace per pod: ours and cluster DNS's (which may still be starting); trellis' own
        # pods are hostNetwork (in the node's namespace)
        wait_for(lambda: len([n for n in netns_names() if n.startswith(f"{name}-p-")])
                 == len([p for p in c.list("v1", "pods")[0] if not p["spec"].get("hostNetwork")]) >= 3, 20,
                 "a namespace per pod")
        assert root_state() == before_root  # nothing in the root namespace but the 127.0.0.1 listener
        cfg_pids = topology.components(cfg)
        assert all(cfg_pids.values())
        for pid in cfg_pids.values():  # every lab process dies with -9; pods are orphaned
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)
        orphans = [p for n in netns_names() if n.startswith(f"{name}-p-") for p in kns.pids(n)]
        assert orphans, "pod processes should outlive their kubelet"
        assert pods
    finally:
        topology.down(name, force=True)
    assert netns_names() == before_ns
    assert not os.path.exists(topology.lab_dir(name))
    assert lab_pids(name) == []
    for pid in orphans:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"
    assert root_state() == before_root


def test_two_labs_side_by_side_and_cli():
    a, b = unique("ta"), unique("tb")
    env = dict(os.environ, TRELLIS_LAB=b)
    try:
        up = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "up", "--name", a, "--nodes", "1"],
                            capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        assert "nodes ready: 1/1" in up.stderr  # progress is shown
        up = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "up", "--nodes", "2"], env=env,
                            capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        ca, cb = topology.load(a).client(), topology.load(b).client()
        assert len(ca.list("v1", "nodes")[0]) == 1 and len(cb.list("v1", "nodes")[0]) == 2
        kc = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "kubeconfig"], env=env, capture_output=True,
                            text=True).stdout.strip()
        assert kc == topology.load(b).kubeconfig
        if subprocess.run(["which", "kubectl"], capture_output=True).returncode == 0:
            out = subprocess.run(["kubectl", "--kubeconfig", kc, "get", "nodes"], capture_output=True, text=True)
            assert out.stdout.count("Ready") == 2
        st = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "status", "--name", a], capture_output=True, text=True)
        assert st.returncode == 0 and "kubelet-node-1" in st.stdout and "running" in st.stdout
        # with neither --name nor TRELLIS_LAB, the lab is the one $KUBECONFIG belongs to (kubectl's habit)
        env_kc = {k: v for k, v in os.environ.items() if k != "TRELLIS_LAB"} | {"KUBECONFIG": kc}
        got = subprocess.run([PY, "-m", "trellis.cli.main", "get", "nodes"], env=env_kc, capture_output=True, text=True)
        assert got.returncode == 0 and got.stdout.count("node-") == 2, got.stdout + got.stderr
        st = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "status"], env=env_kc, capture_output=True, text=True)
        assert b in st.stdout, st.stdout
        # removing what is not there is an error, as kubectl delete
        for kind in ("group", "contract"):
            rm = subprocess.run([PY, "-m", "trellis.cli.main", kind, "rm", "--lab", a, "nosuch"], capture_output=True,
                                text=True)
            assert rm.returncode == 1 and "nosuch" in rm.stderr and "not found" in rm.stderr, rm.stdout + rm.stderr
        again = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "up", "--name", a], capture_output=True, text=True)
        assert again.returncode == 1 and "already exists" in again.stderr
        dn = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "down", "--name", a], capture_output=True, text=True)
        assert dn.returncode == 0
        assert len(cb.list("v1", "nodes")[0]) == 2  # the other lab is untouched
        assert not [n for n in netns_names() if n.startswith(f"{a}-")]
    finally:
        topology.down(a, force=True)
        topology.down(b, force=True)


@pytest.mark.parametrize("args,message", [
    (["--name", "Bad_Name"], "lab name 'Bad_Name'"),
    (["--nodes", "0"], "--nodes 0"),
])
def test_bad_input_is_named_and_leaves_nothing(args, message):
    before = netns_names()
    p = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "up", *args], capture_output=True, text=True)
    assert p.returncode == 1 and message in p.stderr
    assert netns_names() == before


def test_down_of_unknown_lab():
    p = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "down", "--name", "nosuchlab"], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "no lab named 'nosuchlab'" in p.stderr
    p = subprocess.run([PY, "-m", "trellis.cli.main", "lab", "down", "--name", "nosuchlab", "--force"],
                       capture_output=True, text=True)
    assert p.returncode == 0
