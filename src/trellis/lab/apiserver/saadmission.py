"""The ServiceAccount admission plugin's token volume: a new pod gets a projected volume
``kube-api-access-<suffix>`` (a token for its ServiceAccount, the cluster CA from the
namespace's ConfigMap kube-root-ca.crt, its namespace) mounted read-only at
/var/run/secrets/kubernetes.io/serviceaccount in every container, unless the pod sets
``automountServiceAccountToken: false`` or already mounts something there, as upstream."""
from __future__ import annotations

import secrets

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apimachinery rand.String alphabet


def api_access_volume(name: str) -> dict:
    return {"name": name, "projected": {"defaultMode": 0o644, "sources": [
        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}


def mount_token(spec: dict) -> None:
    """Add the token volume to a new pod's ``spec`` (in place)."""
    if spec.get("automountServiceAccountToken") is False:
        return
    containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
    if any(vm.get("mountPath", "").rstrip("/") == MOUNT_PATH for c in containers for vm in c.get("volumeMounts") or []):
        return
    name = "kube-api-access-" + "".join(secrets.choice(_ALPHABET) for _ in range(5))
    spec.setdefault("volumes", []).append(api_access_volume(name))
    for c in containers:
        c.setdefault("volumeMounts", []).append({"name": name, "readOnly": True, "mountPath": MOUNT_PATH})

