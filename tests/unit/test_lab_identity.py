"""Lab process identity and node heartbeats, without a lab (issue 15, item 7).

``lab_pids`` is what ``lab down`` kills: real processes with the marker in their environment
or the lab's directory in their arguments. ``stale_ready`` is the node lifecycle controller's
decision for one node.
"""
import datetime as dt
import os
import signal
import subprocess
import time

from trellis.lab import topology
from trellis.lab.nodelifecycle import stale_ready


def spawn(*argv: str, member: str | None = None) -> subprocess.Popen:
    env = {"PATH": os.environ["PATH"], **({topology.MEMBER_ENV: member} if member else {})}
    p = subprocess.Popen(["sh", "-c", "sleep 120; :", "sh", *argv], env=env,  # sh stays, with argv
                         start_new_session=True)
    for _ in range(1000):  # until the child has exec'd (before, /proc shows the parent's image)
        with open(f"/proc/{p.pid}/cmdline", "rb") as f:
            if f.read().startswith(b"sh\0"):
                return p
        time.sleep(0.005)
    raise AssertionError("sh did not start")


def test_lab_pids_match_the_lab_exactly(tmp_path):
    d = str(tmp_path / "barrel")
    procs = {
        "marker": spawn(member="barrel"),
        "dir-arg": spawn(d + "/nodes/node-1"),
        "dir-flag": spawn(f"--state-dir={d}"),
        "other-marker": spawn(member="barrelx"),
        "other-dir": spawn(d + "x/nodes/node-1"),
        "other-flag": spawn(f"--state-dir={d}x"),
        "prefix-marker": spawn(member="barre"),
    }
    try:
        found = set(topology.lab_pids("barrel", d))
        mine = {k for k, p in procs.items() if p.pid in found}
        assert mine == {"marker", "dir-arg", "dir-flag"}, mine
    finally:
        for p in procs.values():
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def node(ready: str = "True", beat: str = "2026-01-01T00:00:00Z") -> dict:
    return {"metadata": {"name": "n"}, "status": {"conditions": [
        {"type": "Ready", "status": ready, "lastHeartbeatTime": beat}]}}


def lease(renew: str) -> dict:
    return {"spec": {"holderIdentity": "n", "renewTime": renew}}


def test_ready_goes_unknown_only_after_the_grace():
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    fresh = lease("2026-01-01T00:00:00.500000Z")
    assert stale_ready(node(), fresh, t0 + dt.timedelta(seconds=40), 40) is None
    cond = stale_ready(node(), fresh, t0 + dt.timedelta(seconds=41), 40)
    assert cond["status"] == "Unknown" and cond["reason"] == "NodeStatusUnknown"
    # the lease decides, not the node status (which a dead kubelet's last update left fresh-looking)
    assert stale_ready(node(beat="2026-01-01T00:01:00Z"), fresh, t0 + dt.timedelta(seconds=60), 40) is not None
    # no lease: the condition's heartbeat; already Unknown: nothing to write
    assert stale_ready(node(), None, t0 + dt.timedelta(seconds=41), 40) is not None
    assert stale_ready(node("Unknown"), fresh, t0 + dt.timedelta(seconds=99), 40) is None
