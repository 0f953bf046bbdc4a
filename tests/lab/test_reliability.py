"""Reliability in a lab (issue 15, item 7 and the force-delete race of item 2).

* A kubelet killed with -9 and restarted adopts its node's running pods: same address, same
  sandbox and container processes, RESTARTS 0, still reachable.
* A dead kubelet's node goes Ready=Unknown once its Lease is older than the grace period,
  and Ready again when the kubelet returns.
* Pods force-deleted at creation (their ADD may run after the object is gone) leave no
  stale policy entry: the pods created after them on that node are all reachable.
* ``lab down`` takes exactly its own processes: a process of lab ``<name>x`` survives, and
  no process of the lab (sandboxes included) is left.
"""
import json
import os
import signal
import subprocess

import pytest

from conftest import ROOT, unique
from helpers import connect, deployment, running_pods, wait_for
from trellis.kube.client import KubeClient
from trellis.lab import topology

pytestmark = pytest.mark.lab
GRACE = 8


@pytest.fixture(scope="module")
def lab():
    if not ROOT:
        pytest.skip("needs root")
    name = unique("rel")
    os.environ["TRELLIS_NODE_MONITOR_GRACE"] = str(GRACE)
    try:
        cfg = topology.up(name, 2)
    finally:
        os.environ.pop("TRELLIS_NODE_MONITOR_GRACE", None)
    try:
        yield cfg
    finally:
        topology.down(name, force=True)


def kill_kubelet(cfg, node: str) -> None:
    pid = topology.components(cfg)[f"kubelet-{node}"]
    assert pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: topology.components(cfg)[f"kubelet-{node}"] is None, 10, f"kubelet of {node} to die")


def log_lines(cfg, node: str, text: str) -> list[str]:
    with open(os.path.join(cfg.dir, "logs", f"kubelet-{node}.log")) as f:
        return [line for line in f if text in line]


def ready_status(c: KubeClient, node: str) -> str:
    n = c.get("v1", "nodes", node)
    return next(x["status"] for x in n["status"]["conditions"] if x["type"] == "Ready")


def pod_processes(cfg, pod: dict) -> tuple[int, int]:
    d = os.path.join(cfg.dir, "nodes", pod["spec"]["nodeName"], "pods", pod["metadata"]["uid"])
    with open(os.path.join(d, "sandbox.json")) as f:
        sandbox = json.load(f)["pid"]
    with open(os.path.join(d, "c.pid.json")) as f:
        container = json.load(f)["pid"]
    return sandbox, container


def test_kubelet_restart_adopts_running_pods(lab):
    c = lab.client()
    c.create("apps/v1", "deployments", deployment("adopt", 2, nodeSelector={"kubernetes.io/hostname": "node-1"}),
             "default")
    c.create("apps/v1", "deployments", deployment("peer", 1, nodeSelector={"kubernetes.io/hostname": "node-2"}),
             "default")
    pods = running_pods(c, "default", "app=adopt", 2)
    peer = running_pods(c, "default", "app=peer", 1)[0]["metadata"]["name"]
    before = {p["metadata"]["name"]: (p["status"]["podIP"], pod_processes(lab, p)) for p in pods}
    started = len(log_lines(lab, "node-1", "pods adopted"))
    kill_kubelet(lab, "node-1")
    topology.start_kubelet(lab, 1)
    wait_for(lambda: len(log_lines(lab, "node-1", "pods adopted")) > started, 30, "the new kubelet to start")
    assert ", 0 started afresh" in log_lines(lab, "node-1", "pods adopted")[-1]  # ours and DNS, all adopted
    after = running_pods(c, "default", "app=adopt", 2)
    for p in after:
        name = p["metadata"]["name"]
        assert (p["status"]["podIP"], pod_processes(lab, p)) == before[name], name
        assert p["status"]["containerStatuses"][0]["restartCount"] == 0
        for pid in before[name][1]:
            assert os.path.exists(f"/proc/{pid}"), (name, pid)
        r = connect(lab.name, peer, f"{p['status']['podIP']}:80")
        assert r.returncode == 0, r.stdout + r.stderr
    # a container that exits under the adopting kubelet is restarted by it, and counted
    victim = after[0]
    os.kill(before[victim["metadata"]["name"]][1][1], signal.SIGKILL)
    wait_for(lambda: c.get("v1", "pods", victim["metadata"]["name"], "default")["status"]["containerStatuses"][0]
             ["restartCount"] == 1, 30, "the adopted container's restart")
    c.delete("apps/v1", "deployments", "adopt", "default")
    c.delete("apps/v1", "deployments", "peer", "default")


def test_a_dead_kubelet_makes_its_node_unknown(lab):
    c = lab.client()
    lease = c.get("coordination.k8s.io/v1", "leases", "node-2", "kube-node-lease")
    assert lease["spec"]["holderIdentity"] == "node-2" and lease["spec"]["renewTime"]
    assert ready_status(c, "node-2") == "True"
    kill_kubelet(lab, "node-2")
    wait_for(lambda: ready_status(c, "node-2") == "Unknown", GRACE + 20, "node-2 Ready=Unknown")
    assert ready_status(c, "node-1") == "True"
    topology.start_kubelet(lab, 2)
    wait_for(lambda: ready_status(c, "node-2") == "True", 30, "node-2 Ready again")


def test_pods_force_deleted_at_creation_leave_no_stale_policy(lab):
    c = lab.client()
    c.create("apps/v1", "deployments", deployment("probe", 1, nodeSelector={"kubernetes.io/hostname": "node-2"}),
             "default")
    prober = running_pods(c, "default", "app=probe", 1)[0]["metadata"]["name"]
    spec = deployment("x", 1, nodeSelector={"kubernetes.io/hostname": "node-1"})["spec"]["template"]["spec"]
    for i in range(12):
        c.create("v1", "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"doomed-{i}"}, "spec": spec},
                 "default")
        c.delete("v1", "pods", f"doomed-{i}", "default", grace_period=0)
    wait_for(lambda: not [p for p in c.list("v1", "pods", "default")[0] if p["metadata"]["name"].startswith("doomed")],
             30, "the doomed pods to go")
    c.create("apps/v1", "deployments", {**deployment("after", 6, nodeSelector={"kubernetes.io/hostname": "node-1"})},
             "default")
    for p in running_pods(c, "default", "app=after", 6, timeout=60):
        r = connect(lab.name, prober, f"{p['status']['podIP']}:80")
        assert r.returncode == 0, (p["metadata"]["name"], p["status"]["podIP"], r.stdout + r.stderr)
    c.delete("apps/v1", "deployments", "after", "default")
    c.delete("apps/v1", "deployments", "probe", "default")


def test_lab_down_takes_exactly_its_own_processes(lab, tmp_path):
    """Runs last: takes the module's lab down."""
    other = lab.name + "x"
    decoys = [subprocess.Popen(["sleep", "300"], env={"PATH": os.environ["PATH"], topology.MEMBER_ENV: other},
                               start_new_session=True),
              subprocess.Popen(["sh", "-c", "sleep 300; :", "sh", os.path.join(topology.lab_dir(other), "state")],
                               start_new_session=True)]
    member = subprocess.Popen(["sleep", "300"], env={"PATH": os.environ["PATH"], topology.MEMBER_ENV: lab.name})
    sandboxes = topology.lab_pids(lab.name, lab.dir)
    assert member.pid in sandboxes and not {d.pid for d in decoys} & set(sandboxes)
    try:
        topology.down(lab.name)
        assert member.wait(10) is not None
        assert all(d.poll() is None for d in decoys), "lab down killed another lab's processes"
        assert topology.lab_pids(lab.name, lab.dir) == [], "a process of the lab survived lab down"
    finally:
        for d in decoys:
            os.killpg(d.pid, signal.SIGKILL) if d.poll() is None else None
            d.wait()
