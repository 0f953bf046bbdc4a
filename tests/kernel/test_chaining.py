"""trellis-cni first in a conflist, Debian's reference plugins chained after it (prevResult)."""
import json

import pytest

from conftest import needs_root
from nsutil import Spaces, sh
from trellis.agent.cniserver import CNIServer
from trellis.agent.dataplane import PodNetwork
from trellis.agent.ipam import Allocator, MemoryStore
from trellis.kernel.netns import in_netns
from trellis.lab.kubelet.cni import Attachment, CNIRuntime
from trellis.lab.topology import write_cni_launcher

pytestmark = needs_root
PLUGINS = {
    "tuning": {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.accept_redirects": "0"}},
    "bandwidth": {"type": "bandwidth", "ingressRate": 100_000_000, "ingressBurst": 1_000_000,
                  "egressRate": 100_000_000, "egressBurst": 1_000_000},
    "portmap": {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
}


@pytest.fixture
def node(tmp_path):
    sp = Spaces()
    n = sp.add("node")
    net = PodNetwork(Allocator("10.244.1.0/24", MemoryStore()), 1500, "10.244.0.0/16", netns=n)
    net.restore()
    sock = str(tmp_path / "agent.sock")
    srv = CNIServer(sock, lambda: net, lambda: None)
    srv.start()
    (tmp_path / "bin").mkdir()
    write_cni_launcher(str(tmp_path / "bin" / "trellis"))
    yield sp, n, net, sock, tmp_path
    srv.stop()
    sp.close()


def runtime(tmp_path, sock, chain):
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir(exist_ok=True)
    conf = {"cniVersion": "1.0.0", "name": "chain", "plugins": [{"type": "trellis", "socket": sock}] +
            [PLUGINS[p] for p in chain]}
    (conf_dir / "10-chain.conflist").write_text(json.dumps(conf))
    return CNIRuntime(str(conf_dir), [str(tmp_path / "bin"), "/usr/lib/cni"], str(tmp_path / "cache"))


def attachment(pod_ns):
    return Attachment("c1", f"/run/netns/{pod_ns}", "eth0",
                      {"IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "p"},
                      {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]})


def test_tuning_and_bandwidth_after_trellis(node):
    sp, n, net, sock, tmp = node
    pod = sp.add("pod")
    rt = runtime(tmp, sock, ["tuning", "bandwidth"])
    att = attachment(pod)
    with in_netns(n):  # a runtime calls plugins from the node's namespace
        res = rt.add(att)
        assert res["ips"][0]["address"] == "10.244.1.1/32"
        assert sh(pod, "sysctl", "-n", "net.ipv4.conf.eth0.accept_redirects").stdout.strip() == "0"  # tuning
        host_if = res["interfaces"][0]["name"]
        assert "tbf" in sh(n, "tc", "qdisc", "show", "dev", host_if).stdout  # bandwidth shaped the host veth
        rt.check(att)
        rt.delete(att)
    assert net.ipam.store.all() == []


def test_portmap_after_trellis_add_and_del(node):
    sp, n, net, sock, tmp = node
    pod = sp.add("pod")
    rt = runtime(tmp, sock, ["portmap"])
    att = attachment(pod)
    with in_netns(n):
        rt.add(att)
        rules = sh(n, "iptables-save", "-t", "nat").stdout
        assert "--dport 8080" in rules and "10.244.1.1:80" in rules  # the DNAT portmap made from prevResult
        rt.delete(att)
    assert "--dport 8080" not in sh(n, "iptables-save", "-t", "nat").stdout
    assert net.ipam.store.all() == []
