"""A 3-node lab end to end: nodes, scheduling, pods in namespaces, probes, restarts, exec, logs."""
import ipaddress
import json
import subprocess

import pytest

from conftest import needs_root
from helpers import AGNHOST, PY, connect, deployment, pod_exec, running_pods, trellis, wait_for
from trellis.kube.client import KubeClient

pytestmark = [needs_root, pytest.mark.lab]


@pytest.fixture(scope="module")
def kc(lab):
    c = lab.client()
    yield c
    c.close()


def pod(name, image="busybox", command=None, **spec):
    c = {"name": "c", "image": image}
    if command:
        c["command"] = command
    c.update(spec.pop("container", {}))
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"test": name}},
            "spec": {"containers": [c], **spec}}


def test_nodes_register_with_underlay_addresses(lab, kc):
    nodes, _ = kc.list("v1", "nodes")
    assert sorted(n["metadata"]["name"] for n in nodes) == ["node-1", "node-2", "node-3"]
    for n in nodes:
        i = int(n["metadata"]["name"].split("-")[1])
        addrs = {a["type"]: a["address"] for a in n["status"]["addresses"]}
        assert addrs == {"InternalIP": f"172.31.0.{10 + i}", "Hostname": n["metadata"]["name"]}
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
        assert n["status"]["capacity"]["pods"] == "110"
    spaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for role in ("underlay", "master", "node-1", "node-2", "node-3", "client"):
        assert f"{lab.name}-{role}" in spaces
    # the client reaches nodes over the underlay switch
    p = subprocess.run(["ip", "netns", "exec", f"{lab.name}-client", "ping", "-c1", "-W2", "172.31.0.12"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_heartbeats_keep_nodes_fresh(kc):
    first = kc.get("v1", "nodes", "node-1")["status"]["conditions"][0]["lastHeartbeatTime"]
    wait_for(lambda: kc.get("v1", "nodes", "node-1")["status"]["conditions"][0]["lastHeartbeatTime"] != first,
             12, "a newer heartbeat")


def test_deployment_pods_spread_get_ips_and_talk_on_a_node(lab, kc):
    kc.create("apps/v1", "deployments", deployment("web", 6), "default")
    pods = running_pods(kc, "default", "app=web", 6)
    by_node = {}
    for p in pods:
        name, node, ip = p["metadata"]["name"], p["spec"]["nodeName"], p["status"]["podIP"]
        parts = name.split("-")
        assert parts[0] == "web" and len(parts) == 3 and len(parts[2]) == 5
        i = int(node.split("-")[1])
        assert ipaddress.ip_address(ip) in ipaddress.ip_network(f"10.244.{i}.0/24")
        assert p["status"]["hostIP"] == f"172.31.0.{10 + i}"
        by_node.setdefault(node, []).append(p)
    assert sorted(len(v) for v in by_node.values()) == [2, 2, 2]  # spread evenly
    a, b = by_node["node-1"]
    out = connect(lab.name, a["metadata"]["name"], f"{b['status']['podIP']}:80")
    assert out.returncode == 0 and out.stdout.strip() == b["metadata"]["name"], out
    out = connect(lab.name, a["metadata"]["name"], f"{b['status']['podIP']}:81", "udp")
    assert out.returncode == 0 and out.stdout.strip() == b["metadata"]["name"], out
    ping = pod_exec(lab.name, a["metadata"]["name"], "busybox", "ping", "-c1", "-W2", b["status"]["podIP"])
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_pod_identity_hostname_hosts_resolv(lab, kc):
    p = running_pods(kc, "default", "app=web", 6)[0]
    name, ip = p["metadata"]["name"], p["status"]["podIP"]
    assert pod_exec(lab.name, name, "hostname").stdout.strip() == name
    hosts = pod_exec(lab.name, name, "cat", "/etc/hosts").stdout
    assert f"{ip}\t{name}" in hosts
    resolv = pod_exec(lab.name, name, "cat", "/etc/resolv.conf").stdout
    assert "nameserver 10.96.0.10" in resolv
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv
    addr = pod_exec(lab.name, name, "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"inet {ip}/" in addr  # the pod sees its own IP
    assert open("/etc/hostname").read().strip() != name  # the machine's own identity is untouched


def test_exec_returns_the_exit_code(lab, kc):
    p = running_pods(kc, "default", "app=web", 6)[0]
    assert pod_exec(lab.name, p["metadata"]["name"], "sh", "-c", "exit 7").returncode == 7
    assert pod_exec(lab.name, p["metadata"]["name"], "true").returncode == 0


def test_scale_down_and_template_change_replace_pods(kc):
    kc.patch("apps/v1", "deployments", "web", {"spec": {"replicas": 2}}, "default")
    old = running_pods(kc, "default", "app=web", 2)
    kc.patch("apps/v1", "deployments", "web", {"spec": {"template": {"metadata": {"annotations": {"v": "2"}}}}},
             "default")
    new = running_pods(kc, "default", "app=web", 2, timeout=40)
    new = wait_for(lambda: (lambda ps: ps if not {p["metadata"]["name"] for p in ps} &
                            {p["metadata"]["name"] for p in old} else None)(running_pods(kc, "default", "app=web", 2)),
                   30, "replacement pods")
    assert {p["metadata"]["name"].rsplit("-", 1)[0] for p in new} != {p["metadata"]["name"].rsplit("-", 1)[0] for p in old}
    rsets, _ = kc.list("apps/v1", "replicasets", "default")
    assert sorted(r["spec"]["replicas"] for r in rsets if r["metadata"]["name"].startswith("web-")) == [0, 2]


def test_probes_feed_readiness_and_liveness_restarts(lab, kc):
    never = pod("not-ready", AGNHOST, container={"ports": [{"containerPort": 80}], "readinessProbe": {
        "tcpSocket": {"port": 8080}, "periodSeconds": 1, "failureThreshold": 1}})
    kc.create("v1", "pods", never, "default")
    http = pod("http-ready", AGNHOST, container={"ports": [{"containerPort": 80}], "readinessProbe": {
        "httpGet": {"port": 80, "path": "/"}, "periodSeconds": 1}})
    kc.create("v1", "pods", http, "default")
    execp = pod("exec-live", "busybox", ["sh", "-c", "touch /tmp/trellis-live-$HOSTNAME; sleep 3600"],
                container={"livenessProbe": {"exec": {"command": ["sh", "-c", "test -e /nonexistent"]},
                                             "periodSeconds": 1, "failureThreshold": 2}})
    kc.create("v1", "pods", execp, "default")
    running_pods(kc, "default", "test=http-ready", 1)
    nr = wait_for(lambda: (lambda p: p if p["status"].get("phase") == "Running" else None)(
        kc.get("v1", "pods", "not-ready", "default")), 20, "not-ready running")
    assert not nr["status"]["containerStatuses"][0]["ready"]
    assert {c["type"]: c["status"] for c in nr["status"]["conditions"]}["Ready"] == "False"
    wait_for(lambda: kc.get("v1", "pods", "exec-live", "default")["status"].get("containerStatuses", [{}])[0]
             .get("restartCount", 0) >= 1, 30, "a liveness restart")


def test_restart_policies(kc):
    kc.create("v1", "pods", pod("crash", "busybox", ["sh", "-c", "echo bye; exit 3"]), "default")
    kc.create("v1", "pods", pod("once", "busybox", ["sh", "-c", "exit 0"], restartPolicy="OnFailure"), "default")
    kc.create("v1", "pods", pod("fail", "busybox", ["sh", "-c", "exit 2"], restartPolicy="Never"), "default")
    cs = wait_for(lambda: (lambda s: s if s.get("restartCount", 0) >= 2 else None)(
        (kc.get("v1", "pods", "crash", "default")["status"].get("containerStatuses") or [{}])[0]), 30, "restarts")
    assert cs["lastState"]["terminated"]["exitCode"] == 3
    wait_for(lambda: kc.get("v1", "pods", "once", "default")["status"]["phase"] == "Succeeded", 20, "Succeeded")
    wait_for(lambda: kc.get("v1", "pods", "fail", "default")["status"]["phase"] == "Failed", 20, "Failed")
    # (a container that has just restarted may not have written yet: wait for its line)
    wait_for(lambda: "bye" in kc.request("GET", "/api/v1/namespaces/default/pods/crash/log"), 10, "the crash's log")


def test_node_selector_node_name_and_host_network(lab, kc):
    kc.patch("v1", "nodes", "node-3", {"metadata": {"labels": {"disk": "ssd"}}})
    kc.create("v1", "pods", pod("picky", AGNHOST, nodeSelector={"disk": "ssd"},
                                container={"ports": [{"containerPort": 80}]}), "default")
    kc.create("v1", "pods", pod("pinned", AGNHOST, nodeName="node-2",
                                container={"ports": [{"containerPort": 80}]}), "default")
    kc.create("v1", "pods", pod("hostnet", AGNHOST, hostNetwork=True,
                                container={"ports": [{"containerPort": 8081}]}), "default")
    kc.create("v1", "pods", pod("nowhere", nodeSelector={"disk": "tape"}), "default")
    assert running_pods(kc, "default", "test=picky", 1)[0]["spec"]["nodeName"] == "node-3"
    assert running_pods(kc, "default", "test=pinned", 1)[0]["spec"]["nodeName"] == "node-2"
    hn = running_pods(kc, "default", "test=hostnet", 1)[0]
    assert hn["status"]["podIP"] == hn["status"]["hostIP"]
    # hostNetwork: the server listens in the node's namespace, on the node's address
    # (Running is the process started, not yet listening: wait for the answer)
    def answer() -> bool:
        return subprocess.run(["ip", "netns", "exec", f"{lab.name}-client", PY, "-m", "trellis.lab.images.agnhost",
                               "connect", f"{hn['status']['hostIP']}:8081"], capture_output=True, text=True,
                              timeout=10).stdout.strip() == "hostnet"
    wait_for(answer, 10, "the hostNetwork pod to answer on the node's address")
    nowhere = wait_for(lambda: (lambda p: p if p["status"].get("conditions") else None)(
        kc.get("v1", "pods", "nowhere", "default")), 10, "an Unschedulable condition")
    assert nowhere["status"]["conditions"][0]["reason"] == "Unschedulable" and not nowhere["spec"].get("nodeName")


def test_images_redis_and_service_env(lab, kc):
    kc.create("v1", "services", {"metadata": {"name": "redis-master"}, "spec": {
        "selector": {"test": "redis"}, "ports": [{"port": 6379}]}}, "default")
    kc.create("v1", "pods", pod("redis", "gcr.io/google_containers/redis:e2e",
                                container={"ports": [{"containerPort": 6379}]}), "default")
    r = running_pods(kc, "default", "test=redis", 1)[0]
    kc.create("v1", "pods", pod("envcheck", "busybox", ["sleep", "3600"], container={"env": [
        {"name": "ME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "GREETING", "value": "hi $(ME)"}]}), "default")
    e = running_pods(kc, "default", "test=envcheck", 1)[0]
    env = pod_exec(lab.name, "envcheck", "env").stdout
    svc_ip = kc.get("v1", "services", "redis-master", "default")["spec"]["clusterIP"]
    assert f"REDIS_MASTER_SERVICE_HOST={svc_ip}" in env and "REDIS_MASTER_SERVICE_PORT=6379" in env
    assert "GREETING=hi envcheck" in env
    if e["spec"]["nodeName"] == r["spec"]["nodeName"]:
        out = pod_exec(lab.name, "envcheck", "redis-cli", "-h", r["status"]["podIP"], "ping").stdout
        assert out.strip() == "PONG"
    out = pod_exec(lab.name, "redis", "redis-cli", "ping").stdout
    assert out.strip() == "PONG"


def test_cli_get_and_errors(lab):
    out = trellis(lab.name, "get", "pods", "-o", "wide")
    assert out.returncode == 0 and out.stdout.splitlines()[0].split()[:2] == ["NAME", "READY"]
    out = trellis(lab.name, "get", "nodes", "-o", "json")
    assert len(json.loads(out.stdout)["items"]) == 3
    out = trellis(lab.name, "get", "pod", "ghost")
    assert out.returncode == 1 and 'pods "ghost" not found' in out.stderr
    out = trellis(lab.name, "get", "frobs")
    assert out.returncode == 1 and "frobs" in out.stderr


def test_deleting_pods_removes_their_namespaces(lab, kc):
    before = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    kc.delete("apps/v1", "deployments", "web", "default")
    wait_for(lambda: not kc.list("v1", "pods", "default", label_selector="app=web")[0], 30, "pods gone")
    after = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    gone = {n for n in before - after if n.startswith(f"{lab.name}-p-")}
    assert len(gone) == 2


def test_every_namespace_has_a_default_service_account_whose_tokens_authenticate(lab, kc, tmp_path):
    """kube-controller-manager's ServiceAccounts controller: a new namespace gets `default`,
    `kubectl create token` signs for it on the secure port, and the token dies with the account
    (which comes back, with a new uid)."""
    import ssl

    import httpx

    from conftest import kubectl_runner
    from trellis.lab.pki import LabPKI
    kubectl = kubectl_runner(lab.kubeconfig, str(tmp_path))
    kc.create("v1", "namespaces", {"metadata": {"name": "sa-test"}})
    sa = wait_for(lambda: kc.get_or_none("v1", "serviceaccounts", "default", "sa-test"), 10, "the default account")
    made = kc.create("v1", "pods", pod("runs-as"), "sa-test")  # the ServiceAccount admission plugin
    assert made["spec"]["serviceAccountName"] == "default" and made["spec"]["serviceAccount"] == "default"
    token = kubectl("create", "token", "default", "-n", "sa-test").stdout.strip()
    ctx = ssl.create_default_context(cafile=LabPKI(lab.dir).ca.cert)

    def whoami():
        r = httpx.post(f"{lab.api_url}/apis/authentication.k8s.io/v1/selfsubjectreviews", verify=ctx,
                       headers={"Authorization": f"Bearer {token}"}, json={"apiVersion": "authentication.k8s.io/v1",
                                                                         "kind": "SelfSubjectReview"})
        status = r.json().get("status")  # a review's status, or "Failure" in a 401's Status
        return r.status_code, status.get("userInfo", {}).get("username") if isinstance(status, dict) else None
    assert whoami() == (201, "system:serviceaccount:sa-test:default")
    kc.delete("v1", "serviceaccounts", "default", "sa-test")
    again = wait_for(lambda: (o := kc.get_or_none("v1", "serviceaccounts", "default", "sa-test"))
                     and o["metadata"]["uid"] != sa["metadata"]["uid"] and o, 10, "the account back")
    assert again["metadata"]["name"] == "default"
    assert whoami()[0] == 401
    kc.delete("v1", "namespaces", "sa-test")
