"""The ServiceAccounts controller of kube-controller-manager: every active namespace has a
ServiceAccount ``default``; a deleted one comes back."""
from __future__ import annotations

from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer, Reconciler

DEFAULT = "default"


class ServiceAccountsController(Reconciler):
    name = "serviceaccounts"

    def __init__(self, client: KubeClient, namespaces: Informer, accounts: Informer) -> None:
        super().__init__()
        self.client, self.namespaces, self.accounts = client, namespaces, accounts
        namespaces.add_handler(lambda t, o, old: self.queue.add(o["metadata"]["name"]))
        accounts.add_handler(lambda t, o, old: t == "DELETED" and o["metadata"]["name"] == DEFAULT
                             and self.queue.add(o["metadata"]["namespace"]))

    def sync(self, ns: str) -> None:
        obj = self.namespaces.get("", ns)
        if obj is None or obj["metadata"].get("deletionTimestamp") or self.accounts.get(ns, DEFAULT) is not None:
            return
        try:
            self.client.create("v1", "serviceaccounts", {"apiVersion": "v1", "kind": "ServiceAccount",
                                                         "metadata": {"name": DEFAULT, "namespace": ns}}, ns)
        except ApiError as e:
            if e.code not in (409, 403, 404):  # exists already / namespace terminating or gone
                raise
