"""A real agent in a throwaway node namespace, with its API server in that namespace too: CNI STATUS
answers 50 naming the controller that has not synced (routing: the node has no pod block yet),
/readyz and /statusz say the same, and once the node gets its block everything answers ready."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import needs_root, wait_until
from nsutil import PY, Spaces, sh

pytestmark = needs_root
PORT = 9753  # inside the node's namespace only


def cni_status(n: str, sock: str) -> tuple[int, dict | None]:
    conf = json.dumps({"cniVersion": "1.1.0", "name": "trellis", "type": "trellis", "socket": sock})
    p = subprocess.run(["ip", "netns", "exec", n, PY, "-m", "trellis.cni.main"], input=conf, capture_output=True,
                       text=True, timeout=30, env={"PATH": os.environ["PATH"], "CNI_COMMAND": "STATUS",
                                                   "CNI_PATH": "/nowhere"})
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None


def get(n: str, path: str) -> tuple[int, str]:
    p = sh(n, "curl", "-s", "-w", "\n%{http_code}", f"http://127.0.0.1:{PORT}{path}", check=False)
    body, _, code = p.stdout.rpartition("\n")
    return int(code or 0), body


@pytest.fixture
def node():
    sp, d = Spaces(), tempfile.mkdtemp(prefix="trellis-health-")
    try:
        n = sp.add("node")
        sh(n, "ip", "link", "set", "lo", "up")
        sh(n, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")  # no dummy module here
        sh(n, "ip", "link", "set", "eth0-peer", "up")
        sh(n, "ip", "addr", "add", "172.31.0.11/24", "dev", "eth0")
        sh(n, "ip", "link", "set", "eth0", "up")
        ready = os.path.join(d, "api-ready")
        log = open(os.path.join(d, "log"), "ab")
        os.makedirs(os.path.join(d, "api"))
        sp.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", n, PY, "-m", "trellis.lab.apiserver.server", "--state-dir",
             os.path.join(d, "api"), "--listen", "127.0.0.1:16443", "--ready-file", ready], stdout=log, stderr=log))
        wait_until("the API server", lambda: os.path.exists(ready) and open(ready).read(), timeout=20)
        url = "http://" + open(ready).read().split()[0]
        sock = os.path.join(d, "agent.sock")
        sp.procs.append(subprocess.Popen(
            ["ip", "netns", "exec", n, PY, "-m", "trellis.agent.main", "--node", "node-1", "--server", url,
             "--state-dir", os.path.join(d, "state"), "--socket", sock, "--metrics-port", str(PORT)],
            stdout=log, stderr=log))
        yield n, url, sock, d
    finally:
        sp.close()
        shutil.rmtree(d, ignore_errors=True)


def statuses(n: str) -> dict:
    code, body = get(n, "/statusz")
    return {c["controller"]: c for c in json.loads(body)["controllers"]} if code == 200 else {}


def test_cni_status_is_50_naming_the_unsynced_controller_until_the_agent_is_ready(node):
    n, url, sock, d = node
    # proxy, policy and LB sync against the empty API; routing waits for this node's pod block
    wait_until("all but routing synced", lambda: (s := statuses(n)) and sorted(k for k, v in s.items()
                                                                                 if not v["synced"]) == ["routing"],
               timeout=40)
    assert "pod CIDR" in statuses(n)["routing"]["waiting"]
    rc, err = cni_status(n, sock)
    assert rc == 1 and err["code"] == 50, err
    assert err["msg"] == "the trellis agent is not ready: routing not synced yet", err
    assert err["details"].startswith("routing: waiting for this node's pod CIDR"), err
    code, body = get(n, "/readyz?verbose")
    assert code == 503 and "[+]proxy ok" in body and "[-]routing failed: waiting for this node's pod CIDR" in body
    assert get(n, "/livez")[0] == 200  # waiting is not wedged

    node_obj = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "node-1", "annotations": {"trellis.dev/vtep-mac": "02:aa:00:00:00:01"}},
                "spec": {"podCIDR": "10.244.1.0/24"},
                "status": {"addresses": [{"type": "InternalIP", "address": "172.31.0.11"}]}}
    sh(n, PY, "-c", "import json, sys; from trellis.kube.client import KubeClient; c = KubeClient(sys.argv[1]); "
       "o = json.loads(sys.argv[2]); c.create('v1', 'nodes', o); "
       "c.patch('v1', 'nodes', 'node-1', {'status': o['status']}, sub='status')", url, json.dumps(node_obj))
    wait_until("/readyz", lambda: get(n, "/readyz")[0] == 200, timeout=20)
    assert cni_status(n, sock) == (0, None)
    code, body = get(n, "/readyz?verbose")
    assert body == "[+]routing ok\n[+]proxy ok\n[+]policy ok\n[+]lb ok\nreadyz check passed\n"
    s = statuses(n)
    assert all(v["synced"] and v["syncs"] >= 1 and v["last_sync_at"] <= time.time() for v in s.values())
    metrics = get(n, "/metrics")[1]
    assert 'trellis_agent_sync_errors_total{controller="routing",node="node-1"} 0.0' in metrics
    assert 'trellis_agent_sync_duration_seconds_count{controller="policy",node="node-1"}' in metrics
