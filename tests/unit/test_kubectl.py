"""The installed kubectl against the lab API server: the verbs users run."""
import json
import os
import subprocess
import textwrap

import pytest

from conftest import needs_kubectl

pytestmark = needs_kubectl

MANIFEST = textwrap.dedent("""\
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: web, labels: {app: web}}
    spec:
      replicas: 2
      selector: {matchLabels: {app: web}}
      template:
        metadata: {labels: {app: web}}
        spec:
          containers:
          - name: web
            image: nginx
            env: [{name: COLOR, value: blue}]
            ports: [{containerPort: 80, name: http}]
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      type: NodePort
      selector: {app: web}
      ports: [{port: 80, targetPort: http}]
    ---
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny-all}
    spec:
      podSelector: {}
    """)


@pytest.fixture
def kubectl(apiserver, tmp_path):
    kc = apiserver.kubeconfig()
    env = dict(os.environ, KUBECONFIG=kc, HOME=str(tmp_path))  # own discovery cache per test

    def run(*args, check=True, input=None):
        p = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, input=input, timeout=60)
        if check and p.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {p.stderr}")
        return p
    return run


def test_apply_reapply_and_delete(kubectl, tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(MANIFEST)
    out = kubectl("apply", "-f", str(f)).stdout
    assert "deployment.apps/web created" in out and "service/web created" in out
    assert "networkpolicy.networking.k8s.io/deny-all created" in out
    f.write_text(MANIFEST.replace("replicas: 2", "replicas: 4").replace("value: blue", "value: green"))
    out = kubectl("apply", "-f", str(f)).stdout
    assert "deployment.apps/web configured" in out and "service/web unchanged" in out
    d = json.loads(kubectl("get", "deploy", "web", "-o", "json").stdout)
    assert d["spec"]["replicas"] == 4
    assert d["spec"]["template"]["spec"]["containers"][0]["env"] == [{"name": "COLOR", "value": "green"}]
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx"
    assert d["metadata"]["generation"] == 2
    out = kubectl("delete", "-f", str(f)).stdout
    assert 'deployment.apps "web" deleted' in out
    assert kubectl("get", "deploy", "web", check=False).returncode != 0


def test_get_tables_and_output_formats(kubectl, client):
    kubectl("apply", "-f", "-", input=MANIFEST)
    client.create("v1", "pods", {"metadata": {"name": "p1", "labels": {"app": "web"}}, "spec": {
        "nodeName": "node-1", "containers": [{"name": "c", "image": "busybox"}]}}, "default")
    client.patch("v1", "pods", "p1", {"status": {"phase": "Running", "podIP": "10.244.1.5"}}, "default", sub="status")
    wide = kubectl("get", "pods", "-o", "wide").stdout.splitlines()
    header = wide[0].split()
    assert header[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] and "IP" in header and "NODE" in header
    row = wide[1].split()
    assert row[0] == "p1" and row[2] == "Running" and "10.244.1.5" in row and "node-1" in row
    svc = kubectl("get", "svc").stdout
    assert "NodePort" in svc and "80:" in svc
    assert "deny-all" in kubectl("get", "netpol").stdout
    assert kubectl("get", "deploy").stdout.split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    y = kubectl("get", "svc", "web", "-o", "yaml").stdout
    assert "clusterIP: 10.96." in y and "kind: Service" in y
    j = json.loads(kubectl("get", "pods", "-o", "json").stdout)
    assert [i["metadata"]["name"] for i in j["items"]] == ["p1"]
    assert "default" in kubectl("get", "ns").stdout
    assert kubectl("get", "pods", "-A").stdout.splitlines()[0].split()[0] == "NAMESPACE"


def test_scale_label_annotate_describe(kubectl, client):
    kubectl("apply", "-f", "-", input=MANIFEST)
    assert "scaled" in kubectl("scale", "deploy", "web", "--replicas=5").stdout
    assert client.get("apps/v1", "deployments", "web", "default")["spec"]["replicas"] == 5
    kubectl("label", "deploy", "web", "team=net")
    kubectl("annotate", "svc", "web", "owner=trellis")
    assert client.get("apps/v1", "deployments", "web", "default")["metadata"]["labels"]["team"] == "net"
    assert client.get("v1", "services", "web", "default")["metadata"]["annotations"]["owner"] == "trellis"
    kubectl("label", "deploy", "web", "team-")
    assert "team" not in client.get("apps/v1", "deployments", "web", "default")["metadata"]["labels"]
    ns = kubectl("describe", "namespace", "default").stdout
    assert "Name:" in ns and "Active" in ns
    client.create("v1", "pods", {"metadata": {"name": "dp"}, "spec": {
        "containers": [{"name": "c", "image": "busybox", "env": [{"name": "K", "value": "V"}]}]}}, "default")
    desc = kubectl("describe", "pod", "dp").stdout
    assert "Name:" in desc and "dp" in desc and "busybox" in desc and "K:" in desc


def test_errors_reach_the_user(kubectl):
    p = kubectl("get", "pod", "nope", check=False)
    assert p.returncode != 0 and 'pods "nope" not found' in p.stderr
    bad = MANIFEST.split("---")[1].replace("port: 80,", "port: 99999,")
    p = kubectl("apply", "-f", "-", input=bad, check=False)
    assert p.returncode != 0 and "spec.ports[0].port" in p.stderr


def test_explain_reads_the_served_schemas_and_apply_patches_with_their_merge_keys(kubectl):
    """OpenAPI v3 with the kinds' schemas: kubectl explain works for built-in kinds, and kubectl
    apply with those schemas served still removes list entries by merge key and clears
    rollingUpdate when the strategy becomes Recreate (retainKeys)."""
    out = kubectl("explain", "pod.spec.hostNetwork").stdout
    assert "FIELD: hostNetwork <boolean>" in out
    out = kubectl("explain", "deployment.spec.template.spec.containers.ports").stdout
    assert "<[]ContainerPort>" in out and "containerPort\t<integer>" in out
    assert "<Object>" not in kubectl("explain", "networkpolicy.spec.ingress").stdout.split("FIELDS:")[0]
    first = textwrap.dedent("""\
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: ap}
        spec:
          selector: {matchLabels: {app: ap}}
          template:
            metadata: {labels: {app: ap}}
            spec:
              containers:
              - {name: a, image: agnhost, env: [{name: "X", value: "1"}, {name: "Y", value: "2"}],
                 ports: [{containerPort: 80}, {containerPort: 81}]}
              - {name: b, image: busybox}
        """)
    second = first.replace(', {name: "Y", value: "2"}', "").replace(", {containerPort: 81}", "").replace(
        "      - {name: b, image: busybox}\n", "").replace("spec:\n  selector", "spec:\n  strategy: {type: Recreate}\n  selector")
    kubectl("apply", "-f", "-", input=first)
    kubectl("apply", "-f", "-", input=second)
    dep = json.loads(kubectl("get", "deployment", "ap", "-o", "json").stdout)
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["name"] == "a" and c["env"] == [{"name": "X", "value": "1"}]
    assert [p["containerPort"] for p in c["ports"]] == [80]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}


def test_explain_a_custom_resource(kubectl):
    crd = textwrap.dedent("""\
        apiVersion: apiextensions.k8s.io/v1
        kind: CustomResourceDefinition
        metadata: {name: widgets.example.com}
        spec:
          group: example.com
          names: {kind: Widget, plural: widgets, singular: widget}
          scope: Namespaced
          versions:
          - name: v1
            served: true
            storage: true
            schema:
              openAPIV3Schema:
                type: object
                properties:
                  spec:
                    type: object
                    properties:
                      size: {type: integer, description: how big}
        """)
    kubectl("apply", "-f", "-", input=crd)
    out = kubectl("explain", "widgets.spec.size").stdout
    assert "FIELD: size <integer>" in out and "how big" in out
