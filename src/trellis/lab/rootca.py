"""The root CA publisher of kube-controller-manager: every active namespace has a ConfigMap
``kube-root-ca.crt`` holding the cluster CA (``ca.crt``), which the projected ServiceAccount
volume puts beside a pod's token; one changed or deleted is put back."""
from __future__ import annotations

from trellis.kube.client import ApiError, KubeClient
from trellis.kube.informer import Informer, Reconciler

NAME = "kube-root-ca.crt"


class RootCAPublisher(Reconciler):
    name = "root-ca-cert-publisher"

    def __init__(self, client: KubeClient, namespaces: Informer, configmaps: Informer, ca_pem: str) -> None:
        super().__init__()
        self.client, self.namespaces, self.configmaps, self.ca = client, namespaces, configmaps, ca_pem
        namespaces.add_handler(lambda t, o, old: self.queue.add(o["metadata"]["name"]))
        configmaps.add_handler(lambda t, o, old: o["metadata"]["name"] == NAME
                               and self.queue.add(o["metadata"]["namespace"]))

    def sync(self, ns: str) -> None:
        obj = self.namespaces.get("", ns)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return
        cm = self.configmaps.get(ns, NAME)
        want = {"ca.crt": self.ca}
        try:
            if cm is None:
                self.client.create("v1", "configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                                        "metadata": {"name": NAME, "namespace": ns}, "data": want}, ns)
            elif cm.get("data") != want:
                self.client.patch("v1", "configmaps", NAME, {"data": want}, ns)
        except ApiError as e:
            if e.code not in (409, 403, 404):  # exists already / namespace terminating or gone
                raise
