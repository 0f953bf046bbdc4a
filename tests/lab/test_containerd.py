"""A real container runtime with trellis-cni: containerd + ``ctr run --cni`` on a lab node.

The image is built here from Debian's busybox-static (an OCI layout imported with
``ctr images import``). containerd keeps every path under a temp dir. ctr reads
its CNI config only from /etc/cni/net.d and /opt/cni/bin, so it runs in a private
mount namespace with an overlay on /etc and a tmpfs on /opt: the host's files
are never touched.
"""
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time

import pytest

from conftest import needs_root
from helpers import deployment, running_pods, wait_for
from trellis.kube.client import KubeClient
from trellis.lab import topology
from trellis.manifests.workloads import AGENT_SOCKET

TOOLS = all(shutil.which(t) for t in ("containerd", "ctr", "runc", "busybox"))
pytestmark = [needs_root, pytest.mark.lab, pytest.mark.skipif(not TOOLS, reason="containerd, ctr, runc, busybox needed")]
IMAGE = "docker.io/library/busybox:trellis"
APPLETS = ["sh", "ip", "ping", "nc", "echo", "cat", "sleep", "hostname"]


def _blob(d: str, data: bytes) -> dict:
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(d, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def build_busybox_image(path: str) -> None:
    """An OCI image archive: one layer with busybox-static and applet links."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as t:
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            t.addfile(info)
        t.add(os.path.realpath(shutil.which("busybox")), arcname="bin/busybox")
        for a in APPLETS:
            info = tarfile.TarInfo(f"bin/{a}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            t.addfile(info)
    layer = layer_buf.getvalue()
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "blobs", "sha256"))
        lb = _blob(d, layer)
        config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
                  "rootfs": {"type": "layers", "diff_ids": [lb["digest"]]}}
        cb = _blob(d, json.dumps(config).encode())
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cb},
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **lb}]}
        mb = _blob(d, json.dumps(manifest).encode())
        index = {"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", **mb,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "trellis"}}]}
        with open(os.path.join(d, "index.json"), "w") as f:
            json.dump(index, f)
        with open(os.path.join(d, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with tarfile.open(path, "w") as t:
            for name in ("oci-layout", "index.json", "blobs"):
                t.add(os.path.join(d, name), arcname=name)


@pytest.fixture
def containerd(lab):
    d = tempfile.mkdtemp(prefix="trellis-ctrd-")
    run_containerd_existed = os.path.exists("/run/containerd")
    sock = os.path.join(d, "containerd.sock")
    with open(os.path.join(d, "config.toml"), "w") as f:
        f.write(f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
""")
    log = open(os.path.join(d, "containerd.log"), "w")
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{lab.name}-node-1", "--", "containerd", "--config",
                             os.path.join(d, "config.toml")], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: os.path.exists(sock), 20, "containerd's socket")
        yield d, sock
    finally:
        subprocess.run(["ctr", "-a", sock, "tasks", "kill", "-s", "KILL", "tctr"], capture_output=True)
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["pkill", "-f", f"containerd-shim.*{d}"], capture_output=True)
        subprocess.run(["umount", "-R", os.path.join(d, "state")], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)
        if not run_containerd_existed:
            shutil.rmtree("/run/containerd", ignore_errors=True)


def test_ctr_run_with_trellis_cni_reaches_pods_on_other_nodes(lab, containerd):
    d, sock = containerd
    kc = lab.client()
    kc.create("apps/v1", "deployments", deployment("target", 1, nodeName="node-2"), "default")
    target = running_pods(kc, "default", "app=target", 1)[0]
    image = os.path.join(d, "busybox.tar")
    build_busybox_image(image)
    imp = subprocess.run(["ctr", "-a", sock, "images", "import", "--all-platforms", image], capture_output=True,
                         text=True, timeout=60)
    assert imp.returncode == 0, imp.stderr
    conflist = {"cniVersion": "1.0.0", "name": "trellis", "plugins": [
        {"type": "trellis", "socket": AGENT_SOCKET}]}  # deploy/trellis.yaml's: in node-1's network namespace
    with open(os.path.join(d, "10-trellis.conflist"), "w") as f:
        json.dump(conflist, f)
    cni = shutil.which("trellis-cni") or os.path.join(os.path.dirname(os.sys.executable), "trellis-cni")
    os.makedirs(os.path.join(d, "etc-upper"))
    os.makedirs(os.path.join(d, "etc-work"))
    script = (f"mount -t overlay overlay -o lowerdir=/etc,upperdir={d}/etc-upper,workdir={d}/etc-work /etc && "
              f"mkdir -p /etc/cni/net.d && cp {d}/10-trellis.conflist /etc/cni/net.d/ && "
              f"mount -t tmpfs tmpfs /opt && mkdir -p /opt/cni/bin && ln -s {cni} /opt/cni/bin/trellis && "
              # ctr runs the CNI plugins itself: in node-1's network namespace, as a runtime on node-1 does
              f"exec nsenter --net=/run/netns/{lab.name}-node-1 -- ctr -a {sock} run --rm --cni --snapshotter native "
              f"{IMAGE} tctr "
              f"sh -c 'ip -4 -o addr show eth0; ping -c1 -W2 {target['status']['podIP']} && "
              f"echo hostname | nc -w 3 {target['status']['podIP']} 80'")
    t0 = time.monotonic()
    out = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr + open(os.path.join(d, "containerd.log")).read()[-2000:]
    assert "inet 10.244.1." in out.stdout and "/32" in out.stdout  # an address from node-1's block, by trellis
    assert "1 packets received" in out.stdout  # ICMP to a pod on node-2
    assert target["metadata"]["name"] in out.stdout  # TCP to it: the server answers with its pod name
    # --rm ran CNI DEL: the address is released
    ipam = os.path.join(topology.agent_state_dir(lab, "node-1"), "ipam", "10.244.1.0_24")
    held = [json.load(open(os.path.join(ipam, f)))["container_id"] for f in os.listdir(ipam) if f[0].isdigit()]
    assert not any(c.endswith("tctr") for c in held)
    assert time.monotonic() - t0 < 60
    assert not os.path.exists("/etc/cni") and not os.path.exists("/opt/cni")  # the host's files untouched
