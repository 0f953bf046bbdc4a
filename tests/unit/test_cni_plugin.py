"""trellis-cni as the runtime runs it: a process, CNI_* env, config on stdin, JSON on stdout."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from trellis.agent.cniserver import CNIServer

CNI = [sys.executable, "-m", "trellis.cni.main"]


def run_cni(env: dict, conf) -> tuple[int, dict]:
    stdin = conf if isinstance(conf, str) else json.dumps(conf)
    p = subprocess.run(CNI, input=stdin, capture_output=True, text=True, env={"PATH": os.environ["PATH"], **env},
                       timeout=30)
    return p.returncode, json.loads(p.stdout)


@pytest.fixture
def sock_dir():
    d = tempfile.mkdtemp(prefix="trellis-cni-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def conf(sock, version="1.0.0"):
    return {"cniVersion": version, "name": "trellis", "type": "trellis", "socket": sock}


ADD_ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/none", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni", "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p"}


def test_version(sock_dir):
    rc, out = run_cni({"CNI_COMMAND": "VERSION"}, conf("x", "1.1.0"))
    assert rc == 0 and "1.1.0" in out["supportedVersions"] and "1.0.0" in out["supportedVersions"]


@pytest.mark.parametrize("env,config,code,text", [
    ({}, None, 4, "CNI_COMMAND"),
    ({**ADD_ENV, "CNI_CONTAINERID": ""}, None, 4, "CNI_CONTAINERID"),
    ({**ADD_ENV, "CNI_NETNS": ""}, None, 4, "CNI_NETNS"),
    ({**ADD_ENV, "CNI_ARGS": "broken"}, None, 4, "CNI_ARGS"),
    (ADD_ENV, "{not json", 7, "not valid JSON"),
    (ADD_ENV, {"cniVersion": "1.0.0", "type": "trellis"}, 7, "'name'"),
    (ADD_ENV, {"cniVersion": "9.9.9", "name": "n", "type": "trellis"}, 1, "9.9.9"),
    ({**ADD_ENV, "CNI_COMMAND": "FROB"}, None, 4, "FROB"),
])
def test_errors_have_spec_codes(sock_dir, env, config, code, text):
    rc, out = run_cni(env, conf(os.path.join(sock_dir, "s")) if config is None else config)
    assert rc == 1 and out["code"] == code and text in out["msg"], out


def test_agent_down_means_try_again_later(sock_dir):
    rc, out = run_cni(ADD_ENV, conf(os.path.join(sock_dir, "nobody-listens")))
    assert rc == 1 and out["code"] == 11 and "not reachable" in out["msg"]
    rc, out = run_cni({"CNI_COMMAND": "STATUS"}, conf(os.path.join(sock_dir, "nobody-listens"), "1.1.0"))
    assert rc == 1 and out["code"] == 50


def test_agent_not_ready_yet(sock_dir):
    """STATUS answers 50 (CNI 1.1 "plugin not available") naming the controllers that have not
    synced and why, from the agent's controller statuses; success once all have."""
    from trellis.agent import health
    from trellis.agent.syncloop import SyncStatus
    statuses = [SyncStatus("routing", waiting="waiting for a pod CIDR"), SyncStatus("proxy", synced=True, syncs=1),
                SyncStatus("policy", failing=True, last_error="nft: table busy", last_error_at=5.0, errors=1)]
    path = os.path.join(sock_dir, "agent.sock")
    srv = CNIServer(path, lambda: None, lambda: health.not_ready(statuses))
    srv.start()
    try:
        rc, out = run_cni(ADD_ENV, conf(path))
        assert rc == 1 and out["code"] == 11 and "waiting for a pod CIDR" in out["details"]
        rc, out = run_cni({"CNI_COMMAND": "STATUS"}, conf(path, "1.1.0"))
        assert rc == 1 and out["code"] == 50, out
        assert out["msg"] == "the trellis agent is not ready: routing, policy not synced yet"
        assert out["details"] == "routing: waiting for a pod CIDR; policy: sync failed: nft: table busy"
        statuses[:] = [SyncStatus(n, synced=True, syncs=1) for n in ("routing", "proxy", "policy")]
        p = subprocess.run(CNI, input=json.dumps(conf(path, "1.1.0")), capture_output=True, text=True, timeout=30,
                           env={"PATH": os.environ["PATH"], "CNI_COMMAND": "STATUS"})
        assert (p.returncode, p.stdout) == (0, ""), p.stdout
    finally:
        srv.stop()


def test_agent_that_drops_the_connection_means_try_again_later(sock_dir):
    import socket
    import threading
    import time
    path = os.path.join(sock_dir, "rude.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)

    def close_unread():
        c, _ = srv.accept()
        time.sleep(0.3)
        c.close()  # the request unread: the plugin's side of a unix socket sees a reset
    t = threading.Thread(target=close_unread)
    t.start()
    try:
        rc, out = run_cni(ADD_ENV, conf(path))
    finally:
        t.join(5)
        srv.close()
    assert rc == 1 and out["code"] == 11 and "did not answer" in out["msg"] and out["cniVersion"] == "1.0.0", out


def test_agent_answers_a_config_that_is_not_an_object_with_code_7():
    import socket
    from trellis.cni.main import encode_request
    server = CNIServer("/nonexistent", lambda: None, lambda: "not used")
    a, b = socket.socketpair()
    with a:
        a.sendall(encode_request(ADD_ENV, "[1, 2]"))
        a.shutdown(socket.SHUT_WR)
        server._serve(b)
        status, _, text = a.recv(65536).decode().partition("\n")
    assert status == "1" and json.loads(text)["code"] == 7 and "not a JSON object" in json.loads(text)["msg"]
