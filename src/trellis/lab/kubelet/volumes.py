"""A pod's volumes on its node, and the mounts each container gets.

``materialize`` writes what a volume holds under ``<pod dir>/volumes/<name>`` (configMap,
secret, downwardAPI and projected files, with the ServiceAccount token asked of the
TokenRequest API; emptyDir is a directory) or finds it on the node (hostPath).
``container_mounts`` turns a container's volumeMounts into the bind mounts containerinit
makes. A volume that cannot be set up raises ``VolumeError`` naming it, as the kubelet's
``MountVolume.SetUp failed`` events do; the pod stays ContainerCreating until it can.

The lab's nodes share one machine, so a hostPath is the *node's* view of the host: the
kernel's own trees (/proc, /sys, /dev, /run/netns, /lib/modules) are the machine's, any other
path lives under the node's root directory (``<lab>/nodes/<node>/root``). Two nodes' agents
writing /var/lib/trellis/agent do not share it, as on two machines.
"""
from __future__ import annotations

import base64
import os
import shutil
import stat
import time
from dataclasses import dataclass
from typing import Callable

SA_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
MACHINE_PATHS = ("/proc", "/sys", "/dev", "/run/netns", "/lib/modules")
REFRESH_AT = 0.8  # of a token's lifetime: when the kubelet asks for a new one, as upstream


class VolumeError(RuntimeError):
    pass


def node_path(node_root: str, path: str) -> str:
    """Where hostPath ``path`` is for the node rooted at ``node_root``."""
    p = os.path.normpath("/" + path.lstrip("/"))
    if p == "/var/run" or p.startswith("/var/run/"):
        p = "/run" + p[len("/var/run"):]
    if any(p == m or p.startswith(m + "/") for m in MACHINE_PATHS):
        return p
    return os.path.join(node_root, p.lstrip("/"))


def host_path(vol: dict, node_root: str) -> str:
    hp = vol["hostPath"]
    path, typ = node_path(node_root, hp.get("path", "")), hp.get("type") or ""
    checks = {"Directory": stat.S_ISDIR, "File": stat.S_ISREG, "Socket": stat.S_ISSOCK,
              "CharDevice": stat.S_ISCHR, "BlockDevice": stat.S_ISBLK}
    if typ in ("DirectoryOrCreate", ""):
        if not os.path.exists(path):
            os.makedirs(path, mode=0o755, exist_ok=True)
    elif typ == "FileOrCreate":
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "a").close()
    elif typ in checks:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise VolumeError(f'hostPath type check failed: {hp.get("path")} does not exist') from None
        if not checks[typ](mode):
            raise VolumeError(f'hostPath type check failed: {hp.get("path")} is not a {typ}')
    else:
        raise VolumeError(f"hostPath type {typ!r} is not one Kubernetes knows")
    return path


Getter = Callable[[str, str], dict | None]              # (plural, name) -> object in the pod's namespace
TokenFn = Callable[[dict], tuple[str, float]]          # serviceAccountToken source -> (token, expiry epoch)


@dataclass
class Files:
    """Files for one volume: relative path -> (bytes, mode)."""
    items: dict


def _keyed(data: dict[str, bytes], items: list[dict] | None, default_mode: int, what: str) -> dict:
    out = {}
    if items:
        for it in items:
            if it["key"] not in data:
                raise VolumeError(f"{what}: key {it['key']!r} is not in it")
            out[it["path"]] = (data[it["key"]], it.get("mode", default_mode))
    else:
        out = {k: (v, default_mode) for k, v in data.items()}
    return out


def _configmap(src: dict, get: Getter, mode: int) -> dict:
    cm = get("configmaps", src.get("name", ""))
    if cm is None:
        if src.get("optional"):
            return {}
        raise VolumeError(f'configmap "{src.get("name")}" not found')
    data = {k: v.encode() for k, v in (cm.get("data") or {}).items()}
    data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return _keyed(data, src.get("items"), mode, f'configmap "{src.get("name")}"')


def _secret(src: dict, get: Getter, mode: int) -> dict:
    name = src.get("secretName") or src.get("name", "")
    sec = get("secrets", name)
    if sec is None:
        if src.get("optional"):
            return {}
        raise VolumeError(f'secret "{name}" not found')
    data = {k: base64.b64decode(v) for k, v in (sec.get("data") or {}).items()}
    data.update({k: v.encode() for k, v in (sec.get("stringData") or {}).items()})
    return _keyed(data, src.get("items"), mode, f'secret "{name}"')


def field_value(pod: dict, path: str) -> str:
    md = pod["metadata"]
    if path in ("metadata.labels", "metadata.annotations"):
        d = md.get(path.split(".")[1]) or {}
        return "".join(f'{k}="{v}"\n' for k, v in sorted(d.items()))
    table = {"metadata.name": md.get("name", ""), "metadata.namespace": md.get("namespace", ""),
             "metadata.uid": md.get("uid", ""), "spec.nodeName": pod["spec"].get("nodeName", ""),
             "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "")}
    if path not in table:
        for k in ("labels", "annotations"):
            prefix = f"metadata.{k}['"
            if path.startswith(prefix) and path.endswith("']"):
                return (md.get(k) or {}).get(path[len(prefix):-2], "")
        raise VolumeError(f"downwardAPI: fieldPath {path!r} is not supported")
    return table[path]


def _downward(src: dict, pod: dict, mode: int) -> dict:
    out = {}
    for it in src.get("items") or []:
        if it.get("fieldRef"):
            value = field_value(pod, it["fieldRef"]["fieldPath"])
        elif it.get("resourceFieldRef"):
            ref = it["resourceFieldRef"]
            c = next((c for c in pod["spec"]["containers"] if c["name"] == ref.get("containerName")),
                     pod["spec"]["containers"][0])
            kind, _, res = ref["resource"].partition(".")
            value = str(((c.get("resources") or {}).get(kind) or {}).get(res, "0"))
        else:
            raise VolumeError(f"downwardAPI item {it.get('path')!r}: needs fieldRef or resourceFieldRef")
        out[it["path"]] = (value.encode(), it.get("mode", mode))
    return out


def volume_files(vol: dict, pod: dict, get: Getter, token: TokenFn) -> tuple[dict, float | None]:
    """The files of a configMap/secret/downwardAPI/projected volume; -> (files, refresh-by epoch)."""
    refresh = None
    if "configMap" in vol:
        return _configmap(vol["configMap"], get, vol["configMap"].get("defaultMode", 0o644)), None
    if "secret" in vol:
        return _secret(vol["secret"], get, vol["secret"].get("defaultMode", 0o644)), None
    if "downwardAPI" in vol:
        return _downward(vol["downwardAPI"], pod, vol["downwardAPI"].get("defaultMode", 0o644)), None
    proj = vol["projected"]
    mode, out = proj.get("defaultMode", 0o644), {}
    for src in proj.get("sources") or []:
        if "serviceAccountToken" in src:
            sat = src["serviceAccountToken"]
            tok, exp = token(sat)
            out[sat.get("path", "token")] = (tok.encode(), sat.get("mode", mode))
            now = time.time()
            at = now + (exp - now) * REFRESH_AT
            refresh = at if refresh is None else min(refresh, at)
        elif "configMap" in src:
            out.update(_configmap(src["configMap"], get, mode))
        elif "secret" in src:
            out.update(_secret(src["secret"], get, mode))
        elif "downwardAPI" in src:
            out.update(_downward(src["downwardAPI"], pod, mode))
    return out, refresh


def write_files(d: str, files: dict, owner: tuple[int, int] | None = None) -> None:
    """Replace ``d``'s contents by ``files`` at once for readers: a new ``..data`` directory,
    then one rename of the ``..data`` link (the kubelet's AtomicWriter layout)."""
    os.makedirs(d, exist_ok=True)
    stamp = f"..{time.time_ns()}"
    new = os.path.join(d, stamp)
    os.makedirs(new)
    for rel, (data, mode) in files.items():
        p = os.path.join(new, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
        if owner:
            os.chown(p, *owner)
    tmp = os.path.join(d, "..data_tmp")
    if os.path.lexists(tmp):
        os.remove(tmp)
    os.symlink(stamp, tmp)
    old = os.readlink(os.path.join(d, "..data")) if os.path.islink(os.path.join(d, "..data")) else None
    os.rename(tmp, os.path.join(d, "..data"))
    for rel in {r.split("/", 1)[0] for r in files}:
        link = os.path.join(d, rel)
        if not os.path.lexists(link):
            os.symlink(os.path.join("..data", rel), link)
    if old and old != stamp:
        shutil.rmtree(os.path.join(d, old), ignore_errors=True)


class PodVolumes:
    """The volumes of one pod: set up once before its containers start, tokens kept fresh."""

    def __init__(self, pod: dict, pod_dir: str, node_root: str, get: Getter, token: TokenFn) -> None:
        self.pod, self.dir, self.node_root, self.get, self.token = pod, os.path.join(pod_dir, "volumes"), \
            node_root, get, token
        self.paths: dict[str, str] = {}
        self.refresh: dict[str, float] = {}

    def setup(self) -> None:
        for vol in self.pod["spec"].get("volumes") or []:
            name = vol["name"]
            try:
                self.paths[name] = self._one(vol)
            except VolumeError as e:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from None

    def _one(self, vol: dict) -> str:
        d = os.path.join(self.dir, vol["name"])
        if "emptyDir" in vol:
            os.makedirs(d, exist_ok=True)
            os.chmod(d, 0o777)
            return d
        if "hostPath" in vol:
            return host_path(vol, self.node_root)
        if any(k in vol for k in ("configMap", "secret", "downwardAPI", "projected")):
            files, refresh = volume_files(vol, self.pod, self.get, self.token)
            write_files(d, files)
            if refresh:
                self.refresh[vol["name"]] = refresh
            return d
        kinds = sorted(set(vol) - {"name"})
        raise VolumeError(f"volume type {', '.join(kinds) or '(none)'} is not supported in the lab")

    def keep_fresh(self) -> None:
        """Renew the tokens (and the rest of their volume) due for renewal."""
        for vol in self.pod["spec"].get("volumes") or []:
            due = self.refresh.get(vol["name"])
            if due is not None and time.time() >= due:
                files, refresh = volume_files(vol, self.pod, self.get, self.token)
                write_files(os.path.join(self.dir, vol["name"]), files)
                self.refresh[vol["name"]] = refresh or due + 3600

    def mounts(self, container: dict) -> list[dict]:
        out = []
        for vm in container.get("volumeMounts") or []:
            src = self.paths.get(vm["name"])
            if src is None:
                raise VolumeError(f'container {container["name"]}: volumeMount "{vm["name"]}" names no volume')
            if vm.get("subPath"):
                src = os.path.join(src, vm["subPath"])
                if not os.path.exists(src):
                    os.makedirs(src, exist_ok=True)
            out.append({"source": src, "target": vm["mountPath"], "readOnly": bool(vm.get("readOnly")),
                        "propagation": vm.get("mountPropagation") or "None"})
        return out
