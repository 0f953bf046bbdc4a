"""The pure parts of containment: privileges from a securityContext, volume files, hostPath mapping."""
import base64
import os

import pytest

from trellis.lab.kubelet import security, volumes


def priv(csc=None, psc=None):
    return security.privileges({"spec": {"securityContext": psc or {}}}, {"name": "c", "securityContext": csc or {}})


def test_default_capabilities_add_drop_and_privileged():
    p = priv()
    assert set(p.caps) == set(security.DEFAULT_CAPS) and len(p.caps) == 14
    argv = p.setpriv_argv()
    assert argv[0] == security.SETPRIV and "--inh-caps=-all" in argv and argv[-1] == "--"
    assert "+net_raw" in argv[-2] and "+net_admin" not in argv[-2] and argv[-2].startswith("--bounding-set=-all,")
    p = priv({"capabilities": {"add": ["NET_ADMIN"], "drop": ["NET_RAW", "CAP_KILL"]}})
    assert "NET_ADMIN" in p.caps and "NET_RAW" not in p.caps and "KILL" not in p.caps
    assert priv({"capabilities": {"drop": ["ALL"]}}).caps == ()
    assert priv({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}).caps == ("NET_BIND_SERVICE",)
    full = priv({"privileged": True})
    assert full.privileged and "SYS_ADMIN" in full.caps and full.setpriv_argv() == []


def test_users_groups_and_bad_values_name_the_field():
    p = priv({"runAsUser": 1000}, {"runAsUser": 5, "runAsGroup": 3000, "fsGroup": 2000})
    assert (p.uid, p.gid, p.groups) == (1000, 3000, (2000,))
    argv = p.setpriv_argv()
    assert "--reuid=1000" in argv and "--regid=3000" in argv and "--groups=2000" in argv
    with pytest.raises(security.SecurityError, match="runAsNonRoot"):
        priv({"runAsNonRoot": True})
    with pytest.raises(security.SecurityError, match=r"securityContext.runAsUser: must be a non-negative"):
        priv({"runAsUser": -1})
    with pytest.raises(security.SecurityError, match="unknown capability 'NET_WIZARD'"):
        priv({"capabilities": {"add": ["NET_WIZARD"]}})


def test_hostpath_is_the_nodes_view_but_the_kernels_trees():
    root = "/lab/nodes/node-1/root"
    assert volumes.node_path(root, "/var/lib/trellis/agent") == "/lab/nodes/node-1/root/var/lib/trellis/agent"
    assert volumes.node_path(root, "/var/run/trellis") == "/lab/nodes/node-1/root/run/trellis"
    assert volumes.node_path(root, "/var/run/netns") == "/run/netns"
    assert volumes.node_path(root, "/lib/modules") == "/lib/modules"
    assert volumes.node_path(root, "/../../etc/shadow") == "/lab/nodes/node-1/root/etc/shadow"


def test_hostpath_types(tmp_path):
    root = str(tmp_path)
    made = volumes.host_path({"hostPath": {"path": "/opt/cni/bin", "type": "DirectoryOrCreate"}}, root)
    assert os.path.isdir(made) and made.startswith(root)
    f = volumes.host_path({"hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}}, root)
    assert os.path.isfile(f)
    with pytest.raises(volumes.VolumeError, match="/etc/nothing does not exist"):
        volumes.host_path({"hostPath": {"path": "/etc/nothing", "type": "Directory"}}, root)
    with pytest.raises(volumes.VolumeError, match="is not a Socket"):
        volumes.host_path({"hostPath": {"path": "/opt/cni/bin", "type": "Socket"}}, root)
    with pytest.raises(volumes.VolumeError, match="'Dir'"):
        volumes.host_path({"hostPath": {"path": "/x", "type": "Dir"}}, root)


def test_volume_files_and_the_atomic_layout(tmp_path):
    objs = {("configmaps", "cfg"): {"data": {"a": "1", "b": "2"}},
            ("secrets", "sec"): {"data": {"p": base64.b64encode(b"s3cret").decode()}}}
    get = lambda plural, name: objs.get((plural, name))  # noqa: E731
    pod = {"metadata": {"name": "p", "namespace": "ns1", "labels": {"x": "y"}, "uid": "u1"},
           "spec": {"containers": [{"name": "c"}]}}
    files, _ = volumes.volume_files({"configMap": {"name": "cfg", "items": [{"key": "b", "path": "sub/b.txt"}]}},
                                    pod, get, None)
    assert files == {"sub/b.txt": (b"2", 0o644)}
    with pytest.raises(volumes.VolumeError, match='configmap "nope" not found'):
        volumes.volume_files({"configMap": {"name": "nope"}}, pod, get, None)
    assert volumes.volume_files({"configMap": {"name": "nope", "optional": True}}, pod, get, None)[0] == {}
    files, refresh = volumes.volume_files({"projected": {"sources": [
        {"serviceAccountToken": {"path": "token"}}, {"secret": {"name": "sec"}},
        {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                   {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}},
        pod, get, lambda src: ("tok", 10_000_000_000.0))
    assert files["token"][0] == b"tok" and files["p"][0] == b"s3cret"
    assert files["labels"][0] == b'x="y"\n' and files["ns"][0] == b"ns1" and refresh is not None
    d = str(tmp_path / "v")
    volumes.write_files(d, {"a": (b"1", 0o600)})
    first = os.readlink(os.path.join(d, "..data"))
    volumes.write_files(d, {"a": (b"2", 0o600)})
    assert open(os.path.join(d, "a")).read() == "2" and os.readlink(os.path.join(d, "..data")) != first
    assert not os.path.exists(os.path.join(d, first))  # the old generation is gone
    assert oct(os.stat(os.path.join(d, "a")).st_mode & 0o777) == "0o600"


def test_the_serviceaccount_admission_mounts_the_token_unless_told_not_to():
    from trellis.lab.apiserver import saadmission
    spec = {"containers": [{"name": "a"}], "initContainers": [{"name": "i"}]}
    saadmission.mount_token(spec)
    (vol,) = spec["volumes"]
    assert vol["name"].startswith("kube-api-access-") and len(vol["name"]) == len("kube-api-access-") + 5
    assert [s for src in vol["projected"]["sources"] for s in src] == ["serviceAccountToken", "configMap",
                                                                       "downwardAPI"]
    for c in spec["containers"] + spec["initContainers"]:
        assert c["volumeMounts"] == [{"name": vol["name"], "readOnly": True, "mountPath": saadmission.MOUNT_PATH}]
    off = {"automountServiceAccountToken": False, "containers": [{"name": "a"}]}
    saadmission.mount_token(off)
    assert "volumes" not in off
    own = {"containers": [{"name": "a", "volumeMounts": [{"name": "t", "mountPath": saadmission.MOUNT_PATH + "/"}]}]}
    saadmission.mount_token(own)
    assert "volumes" not in own
