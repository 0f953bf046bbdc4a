"""The policy controller's attachment book (issue 15, item 2): which addresses are ``known``
(policy in place, reachable) on a node after ADDs and DELs that name gone pods, name no pod,
or name a live pod they are not.

The controller is the agent's own; pod events arrive through its pod informer the way the
watch delivers them, and the table it would install is compiled with the real compiler
(``pnft.desired``): the ``known`` set is exactly the nft set the datapath checks.
"""
from __future__ import annotations


from trellis.agent.dataplane import Request
from trellis.agent.policy import PolicyController
from trellis.kube.client import ApiError
from trellis.policy import nftables as pnft

NODE = "node-1"


class Pods:
    """The API's pods for the controller's one direct read (an ADD the watch has not shown yet)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}

    def get(self, api_version, plural, name, ns=None):
        obj = self.objects.get(f"{ns}/{name}")
        if obj is None:
            raise ApiError(404, "NotFound", f'pods "{name}" not found')
        return obj


def pod(name: str, ip: str = "", uid: str = "", node: str = NODE) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"namespace": "default", "name": name, "uid": uid or f"uid-{name}", "resourceVersion": "1",
                         "labels": {"app": name}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"podIP": ip, "phase": "Running" if ip else "Pending"}}


def deliver(ctrl: PolicyController, api: Pods, typ: str, obj: dict) -> None:
    """What the informer's watch loop does with one event: cache, then handlers."""
    key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
    with ctrl.pods._lock:
        old = ctrl.pods.cache.get(key)
        if typ == "DELETED":
            ctrl.pods.cache.pop(key, None)
            api.objects.pop(key, None)
        else:
            ctrl.pods.cache[key] = obj
            api.objects[key] = obj
    ctrl.pods._emit(typ, obj, old)


def add(ctrl: PolicyController, cid: str, ip: str, name: str = "", uid: str = "") -> None:
    args = {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": name} if name else {}
    if uid:
        args["K8S_POD_UID"] = uid
    ctrl.pod_added(Request("ADD", cid, "/proc/self/ns/net", "eth0", args), ip)


def known(ctrl: PolicyController) -> set[str]:
    with ctrl.lock:
        return set(pnft.desired(ctrl.state, NODE).known)


def controller(held=None, grace: float = 30.0) -> tuple[PolicyController, Pods]:
    api = Pods()
    return PolicyController(api, NODE, "10.244.0.0/16", held=held, grace=grace), api


def test_an_address_of_a_pod_gone_before_its_add_serves_the_next_pod():
    """A pod force-deleted at creation: its ADD runs after the object is gone. The next pod
    given that address is known at once (it was unreachable until an agent restart)."""
    ctrl, api = controller()
    gone = pod("gone")
    deliver(ctrl, api, "ADDED", gone)
    deliver(ctrl, api, "DELETED", gone)
    add(ctrl, "c-gone", "10.244.1.5", "gone")          # the ADD after the force delete: 404
    assert "10.244.1.5" not in known(ctrl)
    ctrl.attachment_deleted("c-gone", "eth0")          # the kubelet's DEL (or none: see below)
    nxt = pod("next")
    deliver(ctrl, api, "ADDED", nxt)
    add(ctrl, "c-next", "10.244.1.5", "next")
    assert known(ctrl) == {"10.244.1.5"}
    deliver(ctrl, api, "MODIFIED", pod("next", "10.244.1.5"))
    assert known(ctrl) == {"10.244.1.5"}


def test_without_the_del_the_newer_attachment_owns_the_address():
    ctrl, api = controller()
    add(ctrl, "c-gone", "10.244.1.6", "gone")          # 404, and its DEL never comes
    deliver(ctrl, api, "ADDED", pod("next"))
    add(ctrl, "c-next", "10.244.1.6", "next")
    assert known(ctrl) == {"10.244.1.6"}
    assert [k for k in ctrl.book.by_key] == [("c-next", "eth0")]


def test_add_and_del_without_pod_names_leave_nothing_known():
    ctrl, api = controller()
    for i in range(20):
        add(ctrl, f"ctr-{i}", f"10.244.1.{100 + i}")
        assert f"10.244.1.{100 + i}" in known(ctrl)   # a container no policy selects: reachable
        ctrl.attachment_deleted(f"ctr-{i}", "eth0")
    assert known(ctrl) == set() and ctrl.state.unmanaged == set()


def test_an_add_naming_a_live_pod_cannot_take_it_out_of_policy():
    ctrl, api = controller()
    dns = pod("dns", "10.244.1.10")
    deliver(ctrl, api, "ADDED", pod("dns"))
    add(ctrl, "c-dns", "10.244.1.10", "dns", uid="uid-dns")
    deliver(ctrl, api, "MODIFIED", dns)
    assert known(ctrl) == {"10.244.1.10"}
    add(ctrl, "intruder", "10.244.1.11", "dns")                  # same names, no UID
    add(ctrl, "intruder-2", "10.244.1.12", "dns", uid="other")   # same names, another UID
    assert known(ctrl) == {"10.244.1.10"}
    assert ctrl.state.pods["default/dns"].ip == "10.244.1.10"
    ctrl.attachment_deleted("intruder", "eth0")
    ctrl.attachment_deleted("intruder-2", "eth0")
    assert known(ctrl) == {"10.244.1.10"}


def test_a_new_sandbox_of_a_pod_moves_its_address_before_the_status_does():
    ctrl, api = controller()
    deliver(ctrl, api, "ADDED", pod("web", "10.244.1.20"))
    add(ctrl, "sandbox-1", "10.244.1.20", "web")
    ctrl.attachment_deleted("sandbox-1", "eth0")                 # the sandbox died; status still says .20
    add(ctrl, "sandbox-2", "10.244.1.21", "web")
    assert known(ctrl) == {"10.244.1.21"}


def test_full_sync_drops_entries_of_gone_pods_and_of_attachments_ipam_released():
    held = {("c-a", "eth0"), ("c-b", "eth0"), ("c-x", "eth0")}
    ctrl, api = controller(held=lambda: held, grace=-1.0)  # every entry older than the grace
    deliver(ctrl, api, "ADDED", pod("a", "10.244.1.30"))
    add(ctrl, "c-a", "10.244.1.30", "a")
    add(ctrl, "c-b", "10.244.1.31")                              # no names
    add(ctrl, "c-x", "10.244.1.32", "never-seen")                # the watch never shows it
    held.discard(("c-b", "eth0"))                                # its DEL was missed; GC released it
    with ctrl.lock:
        ctrl.reconcile_book()
    assert sorted(ctrl.book.by_key) == [("c-a", "eth0")]
    assert known(ctrl) == {"10.244.1.30"}


def test_a_restarted_agent_rebuilds_the_book_from_ipam():
    from trellis.agent.attachments import Attachment
    ctrl, api = controller()
    deliver(ctrl, api, "ADDED", pod("a", "10.244.1.40"))
    ctrl.seed([Attachment("c-a", "eth0", "10.244.1.40", "default/a"), Attachment("ctr", "eth0", "10.244.1.41")])
    assert known(ctrl) == {"10.244.1.40", "10.244.1.41"}
