"""The installed kubectl's server-side apply (managedFields) against the lab API server."""
import json

from conftest import needs_kubectl
from test_kubectl import MANIFEST, kubectl  # noqa: F401 - the fixture

pytestmark = needs_kubectl

DEPLOY = MANIFEST.split("---")[0]  # a Deployment "web": replicas 2, env COLOR, port 80 "http"


def manifest(replicas=2, env=True):
    text = DEPLOY.replace("replicas: 2", f"replicas: {replicas}")
    return text if env else "".join(line for line in text.splitlines(True) if "env:" not in line)


def managed(kubectl, name="web"):
    d = json.loads(kubectl("get", "deploy", name, "-o", "json", "--show-managed-fields").stdout)
    return d, {(m["manager"], m["operation"]): m["fieldsV1"] for m in d["metadata"]["managedFields"]}


def test_server_side_apply_creates_then_changes_and_removes_omitted_fields(kubectl):
    out = kubectl("apply", "--server-side", "-f", "-", input=manifest()).stdout
    assert "deployment.apps/web serverside-applied" in out
    d, owners = managed(kubectl)
    fields = owners[("kubectl", "Apply")]
    container = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]['k:{"name":"web"}']
    assert container["f:ports"] == {'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}, "f:name": {}}}
    assert container["f:env"] == {'k:{"name":"COLOR"}': {".": {}, "f:name": {}, "f:value": {}}}
    assert fields["f:spec"]["f:replicas"] == {} and fields["f:spec"]["f:selector"] == {}
    assert "f:strategy" not in fields["f:spec"]  # defaults are not the applier's
    assert d["spec"]["strategy"]["type"] == "RollingUpdate"
    kubectl("apply", "--server-side", "-f", "-", input=manifest(replicas=3, env=False))
    d, owners = managed(kubectl)
    assert d["spec"]["replicas"] == 3 and d["metadata"]["generation"] == 2
    assert "env" not in d["spec"]["template"]["spec"]["containers"][0]
    assert "kubectl" in kubectl("get", "deploy", "web", "-o", "yaml", "--show-managed-fields").stdout
    assert "managedFields" not in kubectl("get", "deploy", "web", "-o", "yaml").stdout  # kubectl hides them


def test_a_client_side_applied_value_conflicts_until_forced(kubectl):
    kubectl("apply", "-f", "-", input=manifest())
    _, owners = managed(kubectl)
    assert "f:replicas" in owners[("kubectl-client-side-apply", "Update")]["f:spec"]
    p = kubectl("apply", "--server-side", "-f", "-", input=manifest(replicas=5), check=False)
    assert p.returncode != 0
    assert ('Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using apps/v1: '
            ".spec.replicas") in p.stderr
    assert json.loads(kubectl("get", "deploy", "web", "-o", "json").stdout)["spec"]["replicas"] == 2
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest(replicas=5))
    d, owners = managed(kubectl)
    assert d["spec"]["replicas"] == 5 and "f:replicas" in owners[("kubectl", "Apply")]["f:spec"]
    assert not any("f:replicas" in f.get("f:spec", {}) for k, f in owners.items() if k != ("kubectl", "Apply"))


def test_field_managers_own_their_fields_and_dry_run_stores_nothing(kubectl):
    cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {%s}\n"
    kubectl("apply", "--server-side", "--field-manager=one", "-f", "-", input=cm % "a: '1'")
    kubectl("apply", "--server-side", "--field-manager=two", "-f", "-", input=cm % "b: '2'")
    p = kubectl("apply", "--server-side", "--field-manager=two", "-f", "-", input=cm % "a: '9'", check=False)
    assert p.returncode != 0 and 'conflict with "one" using v1: .data.a' in p.stderr
    out = kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=two", "-f", "-",
                  input=cm % "b: '3', c: '4'").stdout
    assert "(server dry run)" in out
    got = json.loads(kubectl("get", "cm", "cfg", "-o", "json", "--show-managed-fields").stdout)
    assert got["data"] == {"a": "1", "b": "2"}
    assert {m["manager"]: m["fieldsV1"] for m in got["metadata"]["managedFields"]} == {
        "one": {"f:data": {"f:a": {}}}, "two": {"f:data": {"f:b": {}}}}
    dry = json.loads(kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=two", "-o", "json",
                             "-f", "-", input=cm % "b: '3'").stdout)
    assert dry["data"] == {"a": "1", "b": "3"}
    kubectl("apply", "--server-side", "--field-manager=one", "-f", "-", input=cm % "")
    assert json.loads(kubectl("get", "cm", "cfg", "-o", "json").stdout)["data"] == {"b": "2"}


def test_other_writes_record_an_update_entry(kubectl):
    kubectl("create", "configmap", "made", "--from-literal=k=v")
    kubectl("label", "configmap", "made", "tier=db")
    got = json.loads(kubectl("get", "cm", "made", "-o", "json", "--show-managed-fields").stdout)
    owners = {m["manager"]: (m["operation"], m["fieldsV1"]) for m in got["metadata"]["managedFields"]}
    assert owners["kubectl-create"] == ("Update", {"f:data": {".": {}, "f:k": {}}})
    assert owners["kubectl-label"] == ("Update", {"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}})
