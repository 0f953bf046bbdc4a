"""Pods are contained (issue 12.3): the runtime's default capabilities, their own PID namespace
and root (the machine read-only, /tmp their own, the lab's state hidden), volumes, the
ServiceAccount token with which the official client's in-cluster config works, and hostPath
as the node's view of the host. The privileged pod can do what the agent needs."""
import os
import sys

import pytest

from conftest import module_lab, needs_root
from helpers import running_pods, trellis, wait_for

pytestmark = [needs_root, pytest.mark.lab]
lab = module_lab("tc", 2)
SLEEP = ["sleep", "3600"]


@pytest.fixture(scope="module")
def kc(lab):
    c = lab.client()
    yield c
    c.close()


def pod(name, node, containers, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}},
            "spec": {"nodeName": node, "containers": containers, **spec}}


def sh(lab, name, script, container=None):
    return trellis(lab.name, "exec", "-n", "default", *(["-c", container] if container else []), name, "--",
                   "sh", "-c", script)


def test_an_unprivileged_pod_cannot_leave_its_namespaces_or_touch_the_machine(lab, kc):
    marker = f"/tmp/trellis-{lab.name}-escape"
    kc.create("v1", "pods", pod("plain", "node-2", [{"name": "c", "image": "busybox", "command": SLEEP}]), "default")
    running_pods(kc, "default", "test=plain", 1)
    checks = {
        "addr": "ip addr add 10.9.9.9/32 dev eth0",
        "route": "ip route add 10.99.0.0/24 dev eth0",
        "setns": "nsenter --net=/proc/self/ns/net true",
        "unshare": "unshare -n true",
        "mount": "mount -t tmpfs none /mnt",
        "etc": "touch /etc/trellis-escape",
        "usr": "touch /usr/trellis-escape",
    }
    for what, cmd in checks.items():
        p = sh(lab, "plain", cmd)
        assert p.returncode != 0, f"{what}: {cmd!r} succeeded in an unprivileged pod"
    p = sh(lab, "plain", f"touch {marker} && ls {marker} && echo $$ && cat /proc/1/cmdline | tr '\\0' ' ' "
                         f"&& ls {lab.dir} && grep CapBnd /proc/self/status")
    assert p.returncode == 0, p.stderr
    out = p.stdout.split("\n")
    assert out[0] == marker and not os.path.exists(marker)  # its /tmp is its own
    assert out[2].startswith("sleep 3600")  # PID 1 is the container's own first process
    # the lab's state (the API's database, the CA, other pods' volumes and tokens) is hidden: only
    # the directories down to the container's own working directory are there
    assert out[3:5] == ["nodes", "CapBnd:\t00000000a80425fb"], out  # and the 14 default capabilities
    assert not os.path.exists("/etc/trellis-escape") and not os.path.exists("/usr/trellis-escape")


def test_the_privileged_pod_and_added_capabilities_can(lab, kc):
    kc.create("v1", "pods", pod("priv", "node-1", [{"name": "c", "image": "busybox", "command": SLEEP,
                                                     "securityContext": {"privileged": True}}]), "default")
    kc.create("v1", "pods", pod("netadmin", "node-2", [{
        "name": "c", "image": "busybox", "command": SLEEP,
        "securityContext": {"capabilities": {"add": ["NET_ADMIN"], "drop": ["NET_RAW"]}}}]), "default")
    kc.create("v1", "pods", pod("user", "node-2", [{"name": "c", "image": "busybox", "command": SLEEP}],
                                securityContext={"runAsUser": 1000, "runAsGroup": 3000}), "default")
    for name in ("priv", "netadmin", "user"):
        running_pods(kc, "default", f"test={name}", 1)
    p = sh(lab, "priv", "nsenter --net=/proc/self/ns/net true && ip addr add 10.9.9.9/32 dev lo && echo ok")
    assert p.stdout.strip() == "ok", p.stderr
    p = sh(lab, "netadmin", "ip addr add 10.9.9.9/32 dev lo && echo ok; nsenter --net=/proc/self/ns/net true")
    assert p.stdout.strip() == "ok" and p.returncode != 0  # NET_ADMIN yes, SYS_ADMIN still no
    p = sh(lab, "user", "id -u; id -g; touch /etc/x")
    assert p.stdout.split()[:2] == ["1000", "3000"] and p.returncode != 0


def test_volumes_and_the_in_cluster_config_of_the_official_client(lab, kc):
    kc.create("v1", "configmaps", {"metadata": {"name": "cfg"}, "data": {"greeting": "hello"}}, "default")
    kc.create("v1", "secrets", {"metadata": {"name": "sec"}, "stringData": {"password": "s3cret"}}, "default")
    script = ("import time\nfrom kubernetes import client, config\nconfig.load_incluster_config()\n"
              "r = client.AuthenticationV1Api().create_self_subject_review(client.V1SelfSubjectReview())\n"
              "print('whoami', r.status.user_info.username, flush=True)\ntime.sleep(3600)\n")
    kc.create("v1", "pods", pod("vols", "node-1", [
        {"name": "c", "image": "busybox", "command": SLEEP, "volumeMounts": [
            {"name": "cfg", "mountPath": "/etc/config"}, {"name": "sec", "mountPath": "/etc/secret", "readOnly": True},
            {"name": "scratch", "mountPath": "/data"}, {"name": "info", "mountPath": "/etc/podinfo"}]},
        {"name": "client", "image": "python", "command": [sys.executable, "-c", script],
         "volumeMounts": [{"name": "scratch", "mountPath": "/shared"}]}],
        volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "sec", "secret": {"secretName": "sec"}},
                 {"name": "scratch", "emptyDir": {}},
                 {"name": "info", "downwardAPI": {"items": [{"path": "labels",
                                                             "fieldRef": {"fieldPath": "metadata.labels"}}]}}]),
        "default")
    running_pods(kc, "default", "test=vols", 1)
    p = sh(lab, "vols", "for f in /etc/config/greeting /etc/secret/password /etc/podinfo/labels; do cat $f; echo; done; "
                        "echo x > /data/f; "
                        "touch /etc/secret/new")
    assert p.stdout.split() == ["hello", "s3cret", 'test="vols"'] and p.returncode != 0  # readOnly holds
    assert sh(lab, "vols", "cat /shared/f", container="client").stdout == "x\n"  # emptyDir shared in the pod
    wait_for(lambda: "whoami system:serviceaccount:default:default" in kc.request(
        "GET", "/api/v1/namespaces/default/pods/vols/log", params={"container": "client"}), 30,
        "the official client to authenticate with the pod's token")


def test_hostpath_is_the_nodes_and_a_missing_volume_is_an_event(lab, kc):
    for node in ("node-1", "node-2"):
        kc.create("v1", "pods", pod(f"hp-{node}", node, [{
            "name": "c", "image": "busybox", "command": ["sh", "-c", f"echo {node} > /host/mark; sleep 3600"],
            "securityContext": {"privileged": True}, "volumeMounts": [{"name": "h", "mountPath": "/host"}]}],
            volumes=[{"name": "h", "hostPath": {"path": "/var/lib/trellis-demo", "type": "DirectoryOrCreate"}}]),
            "default")
    for node in ("node-1", "node-2"):
        running_pods(kc, "default", f"test=hp-{node}", 1)
        wait_for(lambda: sh(lab, f"hp-{node}", "cat /host/mark").stdout == f"{node}\n", 10, f"{node}'s own hostPath")
    assert not os.path.exists("/var/lib/trellis-demo")  # the machine's path is untouched
    kc.create("v1", "pods", pod("nocm", "node-1", [{"name": "c", "image": "busybox", "command": SLEEP,
                                                     "volumeMounts": [{"name": "v", "mountPath": "/v"}]}],
                                volumes=[{"name": "v", "configMap": {"name": "absent"}}]), "default")

    def failed_mount():
        items, _ = kc.list("v1", "events", "default", field_selector="involvedObject.name=nocm")
        return next((e for e in items if e["reason"] == "FailedMount"), None)
    ev = wait_for(failed_mount, 20, "a FailedMount event")
    assert 'configmap "absent" not found' in ev["message"] and 'volume "v"' in ev["message"]
    st = kc.get("v1", "pods", "nocm", "default")["status"]["containerStatuses"][0]["state"]
    assert st["waiting"]["reason"] == "ContainerCreating"


def test_init_containers_run_first_and_report_their_status(lab, kc):
    kc.create("v1", "pods", pod("inits", "node-2", [{"name": "c", "image": "busybox", "command": ["sh", "-c", "cat /w/f; sleep 3600"],
                                                      "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
                                initContainers=[{"name": "prep", "image": "busybox", "command": ["sh", "-c", "echo made > /w/f"],
                                                 "volumeMounts": [{"name": "w", "mountPath": "/w"}]}],
                                volumes=[{"name": "w", "emptyDir": {}}]), "default")
    p = running_pods(kc, "default", "test=inits", 1)[0]
    (st,) = p["status"]["initContainerStatuses"]
    assert st["name"] == "prep" and st["state"]["terminated"]["reason"] == "Completed" and st["ready"]
    assert next(c for c in p["status"]["conditions"] if c["type"] == "Initialized")["status"] == "True"
    wait_for(lambda: kc.request("GET", "/api/v1/namespaces/default/pods/inits/log",
                                params={"container": "c"}) == "made\n", 10, "the main container to see the init's file")
    assert kc.request("GET", "/api/v1/namespaces/default/pods/inits/log", params={"container": "prep"}) == ""
