"""Every `kubectl create` generator (protobuf bodies) against the lab API server: what is stored is
what kubectl meant, as `--dry-run=client -o json` shows it."""
import base64
import json
import os
import subprocess

import pytest

from conftest import needs_kubectl

pytestmark = needs_kubectl

GENERATORS = [
    ("deployment", "d1", ["--image=nginx", "--replicas=2", "--port=80"]),
    ("deployment", "d0", ["--image=nginx", "--replicas=0"]),  # a pointer field's zero is kept
    ("namespace", "n1", []),
    ("configmap", "c1", ["--from-literal=a=b", "--from-literal=empty="]),
    ("secret", "s1", ["generic", "--from-literal=a=b", "--type=Opaque"]),
    ("secret", "r1", ["docker-registry", "--docker-server=x", "--docker-username=u", "--docker-password=p"]),
    ("service", "sv1", ["clusterip", "--tcp=80:8080", "--tcp=53:dns"]),
    ("service", "sv2", ["nodeport", "--tcp=80:8080", "--node-port=30099"]),
    ("service", "sv3", ["loadbalancer", "--tcp=80:8080"]),
    ("service", "sv4", ["externalname", "--external-name=a.example"]),
    ("service", "sv5", ["clusterip", "--clusterip=None"]),
    ("job", "j1", ["--image=busybox", "--", "sh", "-c", "echo hi"]),
    ("cronjob", "cj1", ["--image=busybox", "--schedule=*/5 * * * *", "--restart=OnFailure", "--", "date"]),
    ("serviceaccount", "sa1", []),
    ("role", "r1", ["--verb=get,list", "--resource=pods,deployments.apps", "--resource-name=x"]),
    ("rolebinding", "rb1", ["--role=r1", "--user=alice", "--serviceaccount=default:sa1", "--group=g"]),
    ("clusterrole", "cr1", ["--verb=get", "--non-resource-url=/logs"]),
    ("clusterrole", "cr2", ["--aggregation-rule=rbac.example.com/aggregate=true"]),
    ("clusterrolebinding", "crb1", ["--clusterrole=cr1", "--user=bob"]),
    ("quota", "q1", ["--hard=pods=3,cpu=1,memory=1Gi", "--scopes=BestEffort"]),
    ("pdb", "p1", ["--selector=app=a", "--min-available=50%"]),
    ("pdb", "p2", ["--selector=app=b", "--max-unavailable=1"]),
    ("priorityclass", "pc1", ["--value=1000", "--description=hi", "--preemption-policy=Never"]),
    ("priorityclass", "pc0", ["--value=-5", "--global-default=false"]),
    ("ingress", "i1", ["--class=default", "--rule=foo.com/bar=svc1:8080,tls=my-cert",
                       "--rule=foo.com/*=svc2:http", "--default-backend=defsvc:http",
                       "--annotation=a=b"]),
]

KINDS = {"quota": "resourcequota", "pdb": "poddisruptionbudget", "configmap": "configmap"}


@pytest.fixture
def kubectl(apiserver, tmp_path):
    env = dict(os.environ, KUBECONFIG=apiserver.kubeconfig(), HOME=str(tmp_path))

    def run(*args, check=True):
        p = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr}")
        return p
    return run


def subset(want, got, path="") -> list[str]:
    """Where ``got`` lacks what ``want`` has (the server may add defaults, never drop a field)."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return [f"{path}: {got!r} is not an object"]
        return [m for k, v in want.items() for m in subset(v, got.get(k), f"{path}.{k}")]
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return [f"{path}: {got!r} != {want!r}"]
        return [m for i, (a, b) in enumerate(zip(want, got)) for m in subset(a, b, f"{path}[{i}]")]
    return [] if want == got else [f"{path}: {got!r} != {want!r}"]


@pytest.mark.parametrize("what,name,args", GENERATORS, ids=[f"{g[0]}-{g[1]}" for g in GENERATORS])
def test_create_generator_stores_what_kubectl_meant(kubectl, tmp_path, what, name, args):
    sub, rest = (args[:1], args[1:]) if what in ("secret", "service") else ([], args)
    want = json.loads(kubectl("create", what, *sub, "--dry-run=client", "-o", "json", name, *rest).stdout)
    p = kubectl("create", what, *sub, name, *rest)
    assert "created" in p.stdout, p.stdout + p.stderr
    kind = KINDS.get(what, what)
    got = json.loads(kubectl("get", kind, name, "-o", "json").stdout)
    want.pop("status", None)
    want["metadata"].pop("creationTimestamp", None)
    for tmpl in (want.get("spec", {}).get("template"), want.get("spec", {}).get("jobTemplate")):
        if tmpl:
            tmpl["metadata"].pop("creationTimestamp", None)
            inner = tmpl.get("spec", {}).get("template")
            if inner:
                inner["metadata"].pop("creationTimestamp", None)
    assert subset(want, got) == []
    assert got["metadata"]["uid"] and got["metadata"]["creationTimestamp"]


def test_create_secret_tls_and_run_and_expose(kubectl, tmp_path):
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=lab"], check=True, capture_output=True)
    kubectl("create", "secret", "tls", "t1", f"--cert={cert}", f"--key={key}")
    got = json.loads(kubectl("get", "secret", "t1", "-o", "json").stdout)

    assert got["type"] == "kubernetes.io/tls"
    assert base64.b64decode(got["data"]["tls.crt"]) == cert.read_bytes()
    kubectl("run", "pp", "--image=busybox", "--env=A=1", "--port=80", "--labels=x=y", "--restart=Never",
            "--", "sleep", "1")
    pod = json.loads(kubectl("get", "pod", "pp", "-o", "json").stdout)
    c = pod["spec"]["containers"][0]
    assert (c["image"], c["args"], c["env"], c["ports"]) == ("busybox", ["sleep", "1"], [{"name": "A", "value": "1"}],
                                                             [{"containerPort": 80, "protocol": "TCP"}])
    assert pod["metadata"]["labels"] == {"x": "y"} and pod["spec"]["restartPolicy"] == "Never"
    kubectl("create", "deployment", "web", "--image=nginx", "--port=80")
    kubectl("expose", "deployment", "web", "--port=8080", "--target-port=80", "--name=web-svc", "--type=NodePort")
    svc = json.loads(kubectl("get", "svc", "web-svc", "-o", "json").stdout)
    assert svc["spec"]["selector"] == {"app": "web"} and svc["spec"]["ports"][0]["targetPort"] == 80
    assert svc["spec"]["type"] == "NodePort" and 30000 <= svc["spec"]["ports"][0]["nodePort"] <= 32767
