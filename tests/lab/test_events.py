"""Why something is stuck, end to end: Events from every lab and trellis component, shown by the real
kubectl; and cluster DNS to schema 1.1.0 asked by a real resolver inside a pod."""
import json
import os
import subprocess

import pytest

from conftest import module_lab, needs_kubectl, needs_root
from helpers import PY, pod_exec, wait_for
from trellis.kube.client import KubeClient
from trellis.lab import topology

pytestmark = [needs_root, needs_kubectl, pytest.mark.lab]


lab = module_lab("evd", 2)


@pytest.fixture(scope="module")
def kc(lab):
    c = lab.client()
    yield c
    c.close()


def kubectl(lab, *args) -> str:
    p = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, KUBECONFIG=lab.kubeconfig, HOME=lab.dir))
    assert p.returncode == 0, f"kubectl {' '.join(args)}: {p.stderr}"
    return p.stdout


def events(lab, ns: str, name: str, kind: str) -> list[dict]:
    doc = json.loads(kubectl(lab, "get", "events", "-n", ns, "-o", "json", "--field-selector",
                             f"involvedObject.name={name},involvedObject.kind={kind}"))
    return doc["items"]


def reasons(lab, ns, name, kind) -> dict[str, dict]:
    return {e["reason"]: e for e in events(lab, ns, name, kind)}


def busybox(name, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}], **spec}}


def test_a_normal_pod_is_scheduled_and_started(lab, kc):
    kc.create("v1", "pods", busybox("ok"), "default")
    want = {"Scheduled", "Pulled", "Created", "Started"}
    got = wait_for(lambda: (r := reasons(lab, "default", "ok", "Pod")) and want <= set(r) and r, 40,
                   "Scheduled/Pulled/Created/Started")
    node = kc.get("v1", "pods", "ok", "default")["spec"]["nodeName"]
    assert got["Scheduled"]["message"] == f"Successfully assigned default/ok to {node}"
    assert got["Scheduled"]["source"]["component"] == "default-scheduler"
    assert got["Started"]["source"] == {"component": "kubelet", "host": node}
    assert got["Started"]["involvedObject"]["fieldPath"] == "spec.containers{c}"
    out = kubectl(lab, "describe", "pod", "ok")
    ev = out[out.index("Events:"):]
    assert "Successfully assigned default/ok to" in ev and "Started container: c" in ev and "kubelet" in ev


def test_a_pod_without_a_sandbox_says_why_and_starts_once_fixed(lab, kc):
    """node-2's runtime picks a network config whose plugin cannot reach the agent: CNI ADD fails."""
    conf_dir = topology.cni_conf_dir(lab, "node-2")
    broken = os.path.join(conf_dir, "00-broken.conflist")
    missing = os.path.join(conf_dir, "missing.sock")
    with open(broken, "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "trellis", "plugins": [{"type": "trellis", "socket": missing}]}, f)
    try:
        kc.create("v1", "pods", busybox("stuck", nodeSelector={"kubernetes.io/hostname": "node-2"}), "default")
        ev = wait_for(lambda: reasons(lab, "default", "stuck", "Pod").get("FailedCreatePodSandBox"), 40,
                      "FailedCreatePodSandBox")
        assert ev["type"] == "Warning" and ev["source"] == {"component": "kubelet", "host": "node-2"}
        assert ev["message"].startswith("Failed to create pod sandbox: CNI ADD via plugin 'trellis' failed (code 11)")
        assert f"the trellis agent is not reachable at {missing}" in ev["message"]  # the plugin's own words
        wait_for(lambda: reasons(lab, "default", "stuck", "Pod")["FailedCreatePodSandBox"]["count"] >= 2, 30,
                 "the retry counted on the same event")
        out = kubectl(lab, "describe", "pod", "stuck")
        ev_text = out[out.index("Events:"):]
        assert "FailedCreatePodSandBox" in ev_text and "the trellis agent is not reachable" in ev_text
        table = kubectl(lab, "get", "events", "--field-selector", "reason=FailedCreatePodSandBox")
        assert "pod/stuck" in table and "Warning" in table
    finally:
        os.unlink(broken)
    wait_for(lambda: "Started" in reasons(lab, "default", "stuck", "Pod"), 40, "the pod starting once fixed")


def test_controllers_tell_what_they_did(lab, kc):
    kc.create("apps/v1", "deployments", {"metadata": {"name": "web"}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}}, "default")
    d = wait_for(lambda: reasons(lab, "default", "web", "Deployment").get("ScalingReplicaSet"), 30, "ScalingReplicaSet")
    assert d["message"].startswith("Scaled up replica set web-") and d["message"].endswith("from 0 to 2")
    rs = d["message"].split()[4]
    created = wait_for(lambda: [e for e in events(lab, "default", rs, "ReplicaSet") if e["reason"] == "SuccessfulCreate"],
                       30, "SuccessfulCreate")
    assert all(e["message"].startswith(f"Created pod: {rs}-") for e in created)
    assert "ScalingReplicaSet" in kubectl(lab, "describe", "deployment", "web")


def test_trellis_components_explain_what_they_cannot_do(lab, kc):
    # (policy trellis cannot honour: tests/lab/test_netpol.py, and tests/unit/test_event_recorder.py for an
    # object only a real cluster stores: the lab API admits only policy objects trellis compiles)
    # LoadBalancer IPAM: an address in no IPPool
    kc.create("v1", "services", {"metadata": {"name": "lb"}, "spec": {
        "type": "LoadBalancer", "loadBalancerIP": "172.31.0.99", "selector": {"app": "x"},
        "ports": [{"port": 80}]}}, "default")
    ev = wait_for(lambda: reasons(lab, "default", "lb", "Service").get("AllocationFailed"), 30, "AllocationFailed")
    assert "172.31.0.99 is in no IPPool" in ev["message"] and ev["source"]["component"] == "trellis-controller"
    assert "AllocationFailed" in kubectl(lab, "describe", "svc", "lb")
    # a typo in the trellis config: every agent says so on the ConfigMap
    kc.patch("v1", "configmaps", "trellis-config", {"data": {"isolationMod": "namespace"}}, "trellis-system")
    got = wait_for(lambda: [e for e in events(lab, "trellis-system", "trellis-config", "ConfigMap")
                            if e["reason"] == "InvalidConfig"], 30, "InvalidConfig")
    assert "unknown key 'isolationMod'" in got[0]["message"] and got[0]["source"]["component"] == "trellis-agent"
    assert "isolationMod" in kubectl(lab, "describe", "configmap", "-n", "trellis-system", "trellis-config")


def dig(lab, pod, name, qtype="A"):
    """A real resolver query from inside the pod's network namespace to the cluster DNS Service."""
    code = ("import sys,json;from dnslib import DNSRecord,RCODE,QTYPE;"
            "r=DNSRecord.parse(DNSRecord.question(sys.argv[1],sys.argv[2]).send('10.96.0.10',53,timeout=2));"
            "print(json.dumps([RCODE.get(r.header.rcode)]+[[str(a.rname),QTYPE.get(a.rtype),str(a.rdata)] for a in r.rr]))")
    out = pod_exec(lab.name, pod, PY, "-c", code, name, qtype)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_dns_schema_1_1_0_from_a_pod(lab, kc):
    kc.create("v1", "pods", busybox("asker"), "default")
    wait_for(lambda: kc.get("v1", "pods", "asker", "default")["status"].get("phase") == "Running", 40, "pod asker")
    assert dig(lab, "asker", "dns-version.cluster.local", "TXT") == [
        "NOERROR", ["dns-version.cluster.local.", "TXT", '"1.1.0"']]
    kc.create("v1", "services", {"metadata": {"name": "empty"}, "spec": {
        "clusterIP": "None", "selector": {"app": "nothing"}, "ports": [{"name": "http", "port": 80}]}}, "default")
    kc.create("v1", "services", {"metadata": {"name": "target"}, "spec": {
        "selector": {"app": "nothing"}, "ports": [{"name": "http", "port": 80}]}}, "default")
    kc.create("v1", "services", {"metadata": {"name": "alias"}, "spec": {
        "type": "ExternalName", "externalName": "target.default.svc.cluster.local"}}, "default")
    ip = kc.get("v1", "services", "target", "default")["spec"]["clusterIP"]
    wait_for(lambda: dig(lab, "asker", "alias.default.svc.cluster.local") == [
        "NOERROR", ["alias.default.svc.cluster.local.", "CNAME", "target.default.svc.cluster.local."],
        ["target.default.svc.cluster.local.", "A", ip]], 10, "CNAME and the target's A")
    # the pod's own stub resolver (getaddrinfo, search path) now gets an address through the alias
    out = pod_exec(lab.name, "asker", PY, "-c", "import socket;print(socket.getaddrinfo('alias', 80)[0][4][0])")
    assert out.returncode == 0 and out.stdout.strip() == ip, out.stderr
    assert dig(lab, "asker", "empty.default.svc.cluster.local") == ["NXDOMAIN"]
    assert dig(lab, "asker", "_http._tcp.empty.default.svc.cluster.local", "SRV") == ["NXDOMAIN"]
    assert dig(lab, "asker", "empty.default.svc.cluster.local", "SRV") == ["NXDOMAIN"]


def test_crash_loops_and_stops_are_told(lab, kc):
    kc.create("v1", "pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "crash"}, "spec": {
        "containers": [{"name": "c", "image": "busybox", "command": ["false"]}]}}, "default")
    ev = wait_for(lambda: reasons(lab, "default", "crash", "Pod").get("BackOff"), 40, "BackOff")
    assert ev["type"] == "Warning" and ev["message"].startswith("Back-off restarting failed container c in pod crash_default(")
    kc.create("v1", "pods", busybox("stopme", terminationGracePeriodSeconds=1), "default")
    wait_for(lambda: "Started" in reasons(lab, "default", "stopme", "Pod"), 40, "stopme started")
    kc.delete("v1", "pods", "stopme", "default")
    ev = wait_for(lambda: reasons(lab, "default", "stopme", "Pod").get("Killing"), 30, "Killing")
    assert ev["message"] == "Stopping container c" and ev["involvedObject"]["fieldPath"] == "spec.containers{c}"
