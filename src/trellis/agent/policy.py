"""The agent's policy controller: watches -> ``PolicyState`` -> ``table inet trellis-policy``.

Fail closed, in three places:

* On start, if the table is missing, a skeleton that rejects every new
  connection to or from this node's pods goes in before anything else; the
  first full sync (after every watch has listed) replaces it atomically. An
  agent that restarts keeps the table it left (and conntrack), so pods keep
  exactly their policy while it is away.
* A pod's address enters the ``known`` set only in the transaction that also
  installs its chains: until then the pod neither sends nor receives.
* CNI ADD compiles the new pod's policy before it returns (``pod_added``), so
  the pod never sees traffic its policy denies and gets what it allows at once.

Handlers update ``PolicyState`` and mark the loop dirty (agent/syncloop.py); its one worker
applies the changes incrementally (set elements, map entries, new chains); a full sync runs
first (once the watches have listed), after an error, and every ``resync`` seconds (5 minutes).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from typing import Callable

from trellis.agent import configcheck
from trellis.agent.attachments import Attachment, Attachments
from trellis.agent.syncloop import SyncLoop
from trellis.kernel import nft
from trellis.kube.events import WARNING, EventRecorder
from trellis.kernel.netns import KernelError
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer, obj_key
from trellis.names import CONFIG_NAME, CONFIG_NAMESPACES
from trellis.policy import model
from trellis.policy import nftables as pnft
from trellis.policy.engine import PolicyState

log = logging.getLogger("trellis.agent.policy")


class PolicyController:
    def __init__(self, client: KubeClient, node: str, cluster_cidr: str, netns: str | None = None,
                 resync: float = 300.0, pods: Informer | None = None, slices: Informer | None = None,
                 events: EventRecorder | None = None,
                 held: Callable[[], set[tuple[str, str]] | None] | None = None, grace: float = 30.0,
                 beat: float | None = None, optional_grace: float = 10.0) -> None:
        """``held``: the (container ID, ifname) attachments IPAM holds now (None: not known yet),
        for the full sync to drop book entries whose DEL was missed; ``grace``: how long an ADD
        may name a pod the watch does not show yet; ``optional_grace``: how long the first sync
        waits for the optional watches (CRDs) once the required ones have listed."""
        self.client, self.node, self.netns, self.resync = client, node, netns, resync
        self.cluster_cidr = cluster_cidr
        self.state = PolicyState()
        self.lock = threading.RLock()
        self.applied: pnft.Desired | None = None
        self.book = Attachments()                # what CNI ADD said, by container ID + ifname
        self.held, self.grace = held, grace
        self.pods = pods or Informer(client, "v1", "pods")
        self.namespaces = Informer(client, "v1", "namespaces")
        self.netpols = Informer(client, "networking.k8s.io/v1", "networkpolicies")
        self.groups = Informer(client, "trellis.dev/v1alpha1", "endpointgroups")
        self.contracts = Informer(client, "trellis.dev/v1alpha1", "contracts")
        # trellis-config where deploy/trellis.yaml puts it, else where older installs have it: one
        # informer per namespace (the agent may read that one ConfigMap there, nothing wider)
        self.configs = [Informer(client, "v1", "configmaps", ns=ns, field_selector=f"metadata.name={CONFIG_NAME}")
                        for ns in CONFIG_NAMESPACES]
        self.deployments = Informer(client, "apps/v1", "deployments")  # for their group annotation
        # the addresses behind Services: the only other nodes' pods this node DNATs to, so the only
        # ones whose ingress it judges (their chains are held here too)
        self.slices = slices or Informer(client, "discovery.k8s.io/v1", "endpointslices")
        self.slice_ips: dict[str, frozenset[str]] = {}
        self.endpoint_ips: frozenset[str] = frozenset()
        self.required = (self.pods, self.namespaces, self.netpols, self.slices)
        self.optional = (self.groups, self.contracts, *self.configs, self.deployments)  # CRDs may be missing on a real cluster
        self.synced = threading.Event()  # the first full sync is in: changes apply at once (CNI ADD)
        self.optional_grace = optional_grace
        self._listed_at: float | None = None  # when the required watches had all listed
        self._late: set[int] = set()          # optional watches given up on (ids; logged once)
        self.loop = SyncLoop("policy", self._sync, resync, beat, waiting=self._waiting)
        self.errors: dict[str, str] = {}          # object key -> why it is not enforced
        self.events = events
        self.config_reported: tuple[str, str] | None = None  # (uid, resourceVersion) last checked
        self.pods.add_handler(self._on_pod)
        self.namespaces.add_handler(lambda t, o, old: self._put("ns", t, o))
        self.netpols.add_handler(lambda t, o, old: self._put("netpol", t, o))
        self.groups.add_handler(lambda t, o, old: self._put("group", t, o))
        self.contracts.add_handler(lambda t, o, old: self._put("contract", t, o))
        for inf in self.configs:
            inf.add_handler(self._on_config)
        self.deployments.add_handler(lambda t, o, old: self._put("deployment", t, o))
        self.slices.add_handler(self._on_slice)

    # ---- events -------------------------------------------------------------------

    def _pod_info(self, obj: dict) -> model.PodInfo:
        info = model.pod_info(obj)
        if info.node == self.node and not info.host_network:
            ip = self.book.ip_for(info.key, obj["metadata"].get("uid", ""), info.ip)
            if ip != info.ip:
                info = replace(info, ip=ip)  # the status lags an ADD, or names an address now another's
        return info

    def _on_pod(self, typ: str, obj: dict, old: dict | None) -> None:
        key = obj_key(obj)
        with self.lock:
            if typ == "DELETED" or obj["metadata"].get("deletionTimestamp") and obj.get("status", {}).get(
                    "phase") in ("Succeeded", "Failed"):
                self.state.set_pod(None, key)
            else:
                self.state.set_pod(self._pod_info(obj))
        self._changed()

    def _on_slice(self, typ: str, obj: dict, old: dict | None) -> None:
        key = obj_key(obj)
        ips = frozenset() if typ == "DELETED" else frozenset(
            a for e in obj.get("endpoints") or [] for a in e.get("addresses") or [])
        with self.lock:
            if self.slice_ips.get(key, frozenset()) == ips:
                return
            self.slice_ips[key] = ips
            if not ips:
                del self.slice_ips[key]
            self.endpoint_ips = frozenset().union(*self.slice_ips.values())
        self._changed()

    def _put(self, kind: str, typ: str, obj: dict) -> None:
        key = obj_key(obj)
        with self.lock:
            gone = typ == "DELETED"
            try:
                if kind == "ns":
                    self.state.set_namespace(None if gone else model.ns_info(obj), obj["metadata"]["name"])
                elif kind == "netpol":
                    self.state.set_policy(key, None if gone else model.netpol(obj))
                elif kind == "group":
                    self.state.set_group(key, None if gone else model.group(obj))
                elif kind == "contract":
                    self.state.set_contract(key, None if gone else model.contract(obj))
                elif kind == "deployment":
                    self.state.set_deployment_group(key, "" if gone else model.group_hint(obj))
                elif kind == "config":
                    mode, err = ("cluster", None) if gone else model.mode_in_force(obj, self.state.mode)
                    self.state.set_mode(mode)
                    if err:
                        raise model.PolicyError(f"{err}; isolation mode {mode} stays")
                self.errors.pop(f"{kind}:{key}", None)
            except model.PolicyError as e:
                # NOTE: an object we cannot compile is left out (its previous version too):
                # for a NetworkPolicy that is fail-open for that policy, so it is logged loudly.
                self.errors[f"{kind}:{key}"] = str(e)
                log.error("%s %s is not enforced: %s", kind, key, e)
        self._changed()

    def _on_config(self, typ: str, obj: dict, old: dict | None) -> None:
        md = obj["metadata"]
        version = (md.get("uid", ""), md.get("resourceVersion", ""))
        if typ != "DELETED" and self.events is not None and version != self.config_reported:
            self.config_reported = version
            for problem in configcheck.problems(obj.get("data")):
                self.events.event(obj, WARNING, configcheck.INVALID_CONFIG, problem, kind="ConfigMap", api_version="v1")
        in_force = next((c for inf, ns in zip(self.configs, CONFIG_NAMESPACES) if (c := inf.get(ns, CONFIG_NAME))), None)
        self._put("config", "DELETED" if in_force is None else "MODIFIED", in_force or obj)

    def _changed(self) -> None:
        self.loop.mark_dirty()

    def pod_added(self, req, ip: str) -> None:
        """CNI ADD (``req``: the agent's ``Request``): record the attachment, then compile and
        install the policy of the pod it names before the pod is handed back."""
        ns, name = req.args.get("K8S_POD_NAMESPACE", ""), req.args.get("K8S_POD_NAME", "")
        key = f"{ns}/{name}" if ns and name else ""
        with self.lock:
            replaced = self.book.add(Attachment(req.container_id, req.ifname, ip, key, req.args.get("K8S_POD_UID", "")))
            touched = {a.pod for a in replaced if a.pod} | ({key} if key else set())
            if key and self.pods.get(ns, name) is None:
                try:
                    obj = self.client.get("v1", "pods", name, ns)
                except ApiError as e:
                    # gone already (force-deleted before its ADD ran), or unreadable: no policy
                    # names this address, so it stays closed; the full sync drops the entry
                    log.warning("CNI ADD for %s: cannot read the pod (%s); it stays closed", key, e)
                    obj = None
                if obj is not None and obj["spec"].get("nodeName") == self.node:
                    self.state.set_pod(self._pod_info(obj))
                touched.discard(key)
            self._refresh(touched)

    def attachment_deleted(self, container_id: str, ifname: str) -> None:
        """CNI DEL, or GC released it: the address is no longer that container's."""
        with self.lock:
            a = self.book.remove(container_id, ifname)
            if a is not None:
                self._refresh({a.pod} if a.pod else set())

    def seed(self, attachments: list[Attachment]) -> None:
        """After a restart: the book again from what IPAM holds (it outlives the agent)."""
        with self.lock:
            for a in attachments:
                self.book.add(a)
            self._refresh({a.pod for a in attachments if a.pod})

    def _refresh(self, pods: set[str]) -> None:
        """Re-derive the named pods and the unmanaged addresses from the book; apply now if synced."""
        for key in pods:
            ns, _, name = key.partition("/")
            obj = self.pods.get(ns, name)
            if obj is not None:
                self.state.set_pod(self._pod_info(obj))
        for other in [p for p in self.state.pods.values() if p.node == self.node and p.ip
                      and (o := self.book.owner(p.ip)) is not None and o.pod != p.key]:
            self.state.set_pod(replace(other, ip=""))  # its address is another attachment's now
        self.state.unmanaged = self.book.unmanaged()
        if self.synced.is_set():
            self._apply_changes()

    def reconcile_book(self) -> None:
        """Full sync: the book against the live pods and what IPAM holds (missed DELs, pods that
        went before or while their ADD ran), then every local pod re-derived."""
        live = {obj_key(p): p["metadata"].get("uid", "") for p in self.pods.items()}
        held = self.held() if self.held else None
        gone = self.book.reconcile(live, held, self.grace)
        for a in gone:
            log.info("attachment %s %s (%s, %s) is stale: dropped from policy", a.container_id, a.ifname, a.ip,
                     a.pod or "no pod")
        for p in self.pods.items():
            key = obj_key(p)
            if p["spec"].get("nodeName") == self.node and key in self.state.pods:
                info = self._pod_info(p)
                if self.state.pods[key] != info:
                    self.state.set_pod(info)
        self.state.unmanaged = self.book.unmanaged()

    # ---- applying -------------------------------------------------------------------

    def ensure_closed(self) -> None:
        """A missing table becomes the fail-closed skeleton; an existing one is kept as it is."""
        if nft.list_table("inet", pnft.TABLE, self.netns) is None:
            nft.apply(pnft.full(pnft.Desired(), self.cluster_cidr), "install the fail-closed policy skeleton", self.netns)
            log.info("no policy table yet: installed the fail-closed skeleton")

    def full_sync(self) -> None:
        with self.lock:
            self.reconcile_book()
            want = pnft.desired(self.state, self.node, self.endpoint_ips)
            nft.apply(pnft.full(want, self.cluster_cidr), "policy full sync", self.netns)
            self.applied = want

    def _apply_changes(self) -> None:
        want = pnft.desired(self.state, self.node, self.endpoint_ips)
        if self.applied is None:
            nft.apply(pnft.full(want, self.cluster_cidr), "policy full sync", self.netns)
        else:
            script = pnft.transaction(self.applied, want)
            if script:
                nft.apply(script, "policy update", self.netns)
        self.applied = want

    def _waiting(self) -> str:
        """The first sync waits for the required watches, then up to ``optional_grace`` for the
        optional ones (a real cluster may lack the CRDs: it goes on without them)."""
        behind = [inf.plural for inf in self.required if not inf.synced.is_set()]
        if behind:
            return f"waiting for {', '.join(behind)} to list"
        now = time.monotonic()
        if self._listed_at is None:
            self._listed_at = now
        late = [inf for inf in self.optional if not inf.synced.is_set() and id(inf) not in self._late]
        if late and now - self._listed_at < self.optional_grace:
            return f"waiting for {', '.join(inf.plural for inf in late)} to list"
        for inf in late:
            log.warning("%s not listed after %.0fs (CRD missing?); going on without it", inf.plural,
                        self.optional_grace)
            self._late.add(id(inf))
        return ""

    def _sync(self, full: bool) -> None:
        if full:
            self.full_sync()
            self.synced.set()
            log.info("policy full sync: %d local pods, %d chains, %d sets",
                     len(self.applied.known), len(self.applied.chains), len(self.applied.sets))
        else:
            with self.lock:
                self._apply_changes()

    def start_informers(self) -> None:
        for inf in (*self.required, *self.optional):
            if inf._thread is None:
                inf.start()

    def run(self, stop: threading.Event) -> None:
        try:
            self.ensure_closed()
        except KernelError as e:
            log.error("cannot install the policy skeleton: %s", e)
        self.start_informers()
        self.loop.run(stop)


def cleanup(netns: str | None = None) -> None:
    try:
        nft.apply(f"table inet {pnft.TABLE}\ndelete table inet {pnft.TABLE}\n", "remove the policy table", netns)
    except KernelError:
        pass
