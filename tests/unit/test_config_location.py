"""Where trellis-config is read: trellis-system's (what deploy/trellis.yaml installs) first, else
kube-system's (labs and clusters set up before the manifest), by explain/probe and by the
controller's policy audit, which records the mode in force on the one it read."""
from __future__ import annotations

from trellis.controller.policyaudit import PolicyAudit
from trellis.kube.events import EventRecorder
from trellis.policy import live, model


class _Cache:
    def __init__(self, objs=()):
        self.objs = list(objs)

    def items(self):
        return list(self.objs)


def config_map(client, ns, mode):
    return client.create("v1", "configmaps", {"metadata": {"name": "trellis-config", "namespace": ns},
                                              "data": {"isolationMode": mode}}, ns)


def test_trellis_system_first_then_kube_system(client):
    assert live.config(client) is None
    config_map(client, "kube-system", "namespace")
    assert live.config(client)["metadata"]["namespace"] == "kube-system"
    client.create("v1", "namespaces", {"metadata": {"name": "trellis-system"}})
    config_map(client, "trellis-system", "deployment")
    cm = live.config(client)
    assert cm["metadata"]["namespace"] == "trellis-system" and cm["data"]["isolationMode"] == "deployment"
    assert live.load(client)[0].mode == "deployment"


def test_the_audit_records_the_mode_on_the_config_it_read(client):
    client.create("v1", "namespaces", {"metadata": {"name": "trellis-system"}})
    legacy, current = config_map(client, "kube-system", "namespace"), config_map(client, "trellis-system", "deployment")
    audit = PolicyAudit(client, EventRecorder(client, "trellis-controller"))
    audit.informers = {k: _Cache() for k in audit.informers}
    audit.informers["config:kube-system"] = _Cache([legacy])
    audit.sync("all")
    assert client.get("v1", "configmaps", "trellis-config", "kube-system")["metadata"]["annotations"] == {
        model.MODE_IN_FORCE_ANNOTATION: "namespace"}
    audit.informers["config:trellis-system"] = _Cache([current])
    audit.sync("all")
    ann = client.get("v1", "configmaps", "trellis-config", "trellis-system")["metadata"]["annotations"]
    assert ann == {model.MODE_IN_FORCE_ANNOTATION: "deployment"}


def test_lab_up_isolation_mode_writes_where_the_readers_look(client):
    from trellis.cli.main import set_isolation_mode
    set_isolation_mode(client, "namespace")  # neither exists: made in kube-system, as labs keep it
    assert client.get("v1", "configmaps", "trellis-config", "kube-system")["data"] == {"isolationMode": "namespace"}
    client.create("v1", "namespaces", {"metadata": {"name": "trellis-system"}})
    config_map(client, "trellis-system", "cluster")
    set_isolation_mode(client, "deployment")
    assert live.config(client)["data"]["isolationMode"] == "deployment"
    assert client.get("v1", "configmaps", "trellis-config", "kube-system")["data"] == {"isolationMode": "namespace"}
