"""The direct rtnetlink path of CNI ADD/DEL, against the kernel in throwaway namespaces."""
import os

import pytest

from conftest import needs_root
from nsutil import Spaces, sh
from trellis.kernel import netlink, rtnl

pytestmark = needs_root


@pytest.fixture
def spaces():
    sp = Spaces()
    yield sp
    sp.close()


def test_veth_into_a_pod_namespace_with_batched_setup(spaces):
    node, pod = spaces.add("node"), spaces.add("pod")
    sh(node, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")  # a host eth0 is no obstacle
    host, mac = netlink.create_pod_veth("tpdtest0", f"/run/netns/{pod}", "eth0", "10.244.7.9", 9000, 1410,
                                        "10.244.7.0/24", host_netns=node)
    assert host.name == "tpdtest0" and host.up and host.mtu == 9000 and host.kind == "veth"
    link = netlink.get_link("eth0", pod)
    assert link.mac == mac and link.up and link.mtu == 9000
    assert "inet 10.244.7.9/32" in sh(pod, "ip", "-4", "addr", "show", "dev", "eth0").stdout
    routes = sh(pod, "ip", "-4", "route").stdout
    assert "default via 169.254.1.1 dev eth0 mtu 1410" in routes and "169.254.1.1 dev eth0 scope link" in routes
    assert "10.244.7.0/24 via 169.254.1.1 dev eth0 \n" in routes
    assert f"169.254.1.1 dev eth0 lladdr {host.mac} PERMANENT" in sh(pod, "ip", "neigh").stdout
    assert "UP" in sh(pod, "ip", "link", "show", "lo").stdout
    netlink.replace_host_route("10.244.7.9/32", host, node)
    assert "10.244.7.9 dev tpdtest0 proto 201 scope link" in sh(node, "ip", "-4", "route").stdout
    assert netlink.delete_link("tpdtest0", node) is True
    assert netlink.delete_link("tpdtest0", node) is False  # gone is success
    assert netlink.get_link("eth0", pod) is None  # the peer went with it


def test_the_failing_request_of_a_batch_is_named(spaces):
    ns = spaces.add("batch")
    with rtnl.Rtnl(ns) as nl:
        lo = nl.get_link("lo")
        with pytest.raises(rtnl.NetlinkError) as e:
            nl.call(rtnl.set_up("lo", "set lo up"),
                    rtnl.add_address(lo.index, "10.1.2.3/32", "first address"),
                    rtnl.add_address(lo.index, "10.1.2.3/32", "the same address again"))
        assert "the same address again" in str(e.value) and ns in str(e.value) and "EEXIST" in str(e.value)
        # the requests before the failure took effect, in order
        assert "10.1.2.3/32" in sh(ns, "ip", "-4", "addr", "show", "dev", "lo").stdout
        with pytest.raises(rtnl.NetlinkError, match="create veth x+ .peer peer. in netns .*ERANGE"):
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                nl.add_veth("x" * 20, "peer", fd, 1500)  # too long a name
            finally:
                os.close(fd)


def test_the_kernels_own_reason_comes_along(spaces):
    ns = spaces.add("extack")
    with rtnl.Rtnl(ns) as nl:
        lo = nl.get_link("lo")
        with pytest.raises(rtnl.NetlinkError) as e:
            nl.call(rtnl.route("10.9.9.0/24", lo.index, "route via 10.1.1.1", gateway="10.1.1.1"))
    assert str(e.value) == (f"route via 10.1.1.1 in netns {ns}: ENETUNREACH Network is unreachable "
                            "(Nexthop has invalid gateway)")


def test_addresses_routes_and_neighbours_round_trip(spaces):
    ns = spaces.add("rt")
    sh(ns, "ip", "link", "add", "a0", "type", "veth", "peer", "name", "b0")
    sh(ns, "ip", "link", "set", "a0", "up")
    netlink.ensure_address("a0", "10.7.0.1/24", ns)
    netlink.ensure_address("a0", "10.7.0.1/24", ns)  # ensure: twice is once
    netlink.add_labelled_address("a0", "10.7.9.9/32", "a0:lb", ns, host_scope=True)
    assert sorted(netlink.addresses("a0", ns)) == ["10.7.0.1/24", "10.7.9.9/32"]
    assert netlink.addresses("a0", ns, label="a0:lb") == ["10.7.9.9/32"]
    assert "10.7.9.9/32 scope host a0:lb" in sh(ns, "ip", "-4", "addr", "show", "dev", "a0").stdout
    netlink.replace_route(netlink.Route("10.8.0.0/16", "a0", "10.7.0.254"), ns)
    netlink.replace_route(netlink.Route("10.9.0.0/16", "a0"), ns)
    assert set(netlink.owned_routes(ns)) == {netlink.Route("10.8.0.0/16", "a0", "10.7.0.254"),
                                            netlink.Route("10.9.0.0/16", "a0")}
    assert netlink.delete_route("10.8.0.0/16", ns) and not netlink.delete_route("10.8.0.0/16", ns)
    netlink.replace_neigh("a0", "10.7.0.254", "02:00:00:00:00:fe", ns)
    assert netlink.neighbours("a0", ns) == {"10.7.0.254": "02:00:00:00:00:fe"}
    netlink.delete_neigh("a0", "10.7.0.254", ns)
    netlink.delete_neigh("a0", "10.7.0.254", ns)  # gone is success
    assert netlink.neighbours("a0", ns) == {}
    netlink.delete_address("a0", "10.7.9.9/32", ns)
    netlink.delete_address("a0", "10.7.9.9/32", ns)
    netlink.delete_address("nosuch", "10.7.9.9/32", ns)
    assert netlink.addresses("a0", ns) == ["10.7.0.1/24"]
    assert {"a0", "b0", "lo"} <= set(netlink.list_links(ns))
