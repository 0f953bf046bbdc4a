"""Tell the user what policy trellis cannot honour, on the objects themselves.

The agents leave out what does not compile and keep the isolation mode in force
when trellis-config asks for an unknown one; only a log line on every node would
say so. This controller (one per cluster, so one Event per problem rather than one
per node) computes ``policy.audit.problems`` from the same objects and writes each
new problem as a Warning Event on the object, so ``kubectl describe`` and
``kubectl get events`` show it. It also records the isolation mode in force on the
ConfigMap (annotation ``trellis.dev/isolation-mode-in-force``), so an agent that
starts while the ConfigMap holds an invalid mode keeps the mode the cluster had.
"""
from __future__ import annotations

import logging
import socket

from trellis.kube.client import ApiError, KubeClient
from trellis.kube.events import WARNING, EventRecorder
from trellis.kube.informer import Informer, Reconciler
from trellis.names import CONFIG_NAME, CONFIG_NAMESPACES
from trellis.policy import audit, model

log = logging.getLogger("trellis.controller.policy")
COMPONENT = "trellis-controller"


class PolicyAudit(Reconciler):
    name = "policy-audit"

    def __init__(self, client: KubeClient, events: EventRecorder | None = None) -> None:
        super().__init__()
        self.client = client
        self.informers = {
            "namespaces": Informer(client, "v1", "namespaces"),
            "deployments": Informer(client, "apps/v1", "deployments"),
            "pods": Informer(client, "v1", "pods"),
            "groups": Informer(client, audit.GV, "endpointgroups"),
            "contracts": Informer(client, audit.GV, "contracts"),
            "netpols": Informer(client, "networking.k8s.io/v1", "networkpolicies"),
            # trellis-config where it is looked for, trellis-system's first (names.CONFIG_NAMESPACES)
            **{f"config:{ns}": Informer(client, "v1", "configmaps", ns=ns, field_selector=f"metadata.name={CONFIG_NAME}")
               for ns in CONFIG_NAMESPACES},
        }
        for inf in self.informers.values():
            inf.add_handler(lambda t, o, old: self.queue.add("all"))
        self.reported: set[tuple] = set()   # problems already written as Events
        self.host = socket.gethostname()
        self.events = events or EventRecorder(client, COMPONENT, self.host)

    def start(self) -> None:
        for inf in self.informers.values():
            inf.start()

    def sync(self, key: str) -> None:
        inf = self.informers
        config = next((cm for ns in CONFIG_NAMESPACES for cm in inf[f"config:{ns}"].items()), None)
        found = audit.problems(namespaces=inf["namespaces"].items(), deployments=inf["deployments"].items(),
                               pods=inf["pods"].items(), groups=inf["groups"].items(),
                               contracts=inf["contracts"].items(), netpols=inf["netpols"].items(), config=config)
        now = {(p.uid, p.where, p.reason, p.message): p for p in found}
        for k, p in now.items():
            if k not in self.reported:
                self.event(p)
                self.reported.add(k)
        self.reported &= set(now)   # a problem that comes back is reported again
        if config is not None:
            self.record_mode(config)

    def event(self, p: audit.Problem) -> None:
        log.warning("%s not honoured (%s): %s", p.where, p.reason, p.message)
        ref = {"apiVersion": p.api_version, "kind": p.kind, "name": p.name, "namespace": p.namespace, "uid": p.uid}
        self.events.event(ref, WARNING, p.reason, p.message)

    def record_mode(self, cm: dict) -> None:
        mode, err = model.mode_in_force(cm)
        if err:
            return
        if (cm["metadata"].get("annotations") or {}).get(model.MODE_IN_FORCE_ANNOTATION) != mode:
            try:
                self.client.patch("v1", "configmaps", CONFIG_NAME, {"metadata": {"annotations": {
                    model.MODE_IN_FORCE_ANNOTATION: mode}}}, cm["metadata"]["namespace"])
            except ApiError as e:
                log.info("cannot record the isolation mode in force: %s", e)
