"""The path model of trellis explain: entry node, endpoints, who judges and which source it sees."""
import pytest

from trellis.policy import model, paths
from trellis.policy.engine import PolicyState
from trellis.proxy.model import service_ports

NODES = {f"node-{i}": paths.NodeInfo(f"node-{i}", f"172.31.0.1{i}", f"10.244.{i}.0") for i in (1, 2, 3)}
OUT = paths.Client("outside", "172.31.0.250", "outside")


def pod(ns, name, ip, node, labels=None, host=False):
    return model.pod_info({"metadata": {"namespace": ns, "name": name, "labels": labels or {"app": name}},
                           "spec": {"nodeName": node, "hostNetwork": host, "containers": [{"name": "c"}]},
                           "status": {"podIP": ip}})


def svc(ns, name, eps, typ="ClusterIP", ip="10.96.0.50", node_port=0, etp="Cluster", lb=None, ranges=None,
        port=80, target=8080):
    spec = {"type": typ, "clusterIP": ip, "clusterIPs": [ip], "externalTrafficPolicy": etp,
            "ports": [{"port": port, "targetPort": target, "protocol": "TCP", **({"nodePort": node_port}
                                                                                  if node_port else {})}]}
    if ranges:
        spec["loadBalancerSourceRanges"] = ranges
    obj = {"metadata": {"namespace": ns, "name": name}, "spec": spec,
           "status": {"loadBalancer": {"ingress": [{"ip": lb}]}} if lb else {}}
    sl = {"metadata": {"namespace": ns, "name": name + "-x", "labels": {"kubernetes.io/service-name": name}},
          "addressType": "IPv4", "ports": [{"name": "", "port": target, "protocol": "TCP"}],
          "endpoints": [{"addresses": [ip_], "nodeName": n, "conditions": {"ready": True}} for ip_, n in eps]}
    return service_ports(obj, [sl])


@pytest.fixture
def world():
    st = PolicyState()
    st.set_namespace(model.ns_info({"metadata": {"name": "x", "annotations": {"trellis.dev/isolated": "true"}}}))
    st.set_namespace(model.ns_info({"metadata": {"name": "y"}}))
    st.set_pod(pod("x", "a", "10.244.2.5", "node-2"))
    st.set_pod(pod("y", "c", "10.244.1.5", "node-1"))
    st.set_pod(pod("y", "h", "172.31.0.13", "node-3", host=True))
    ports = (svc("x", "a", [("10.244.2.5", "node-2")], "NodePort", node_port=30080)
             + svc("x", "local", [("10.244.2.5", "node-2")], "NodePort", "10.96.0.51", 30081, "Local")
             + svc("x", "lb", [("10.244.2.5", "node-2")], "LoadBalancer", "10.96.0.52", 30082, lb="172.31.0.200",
                   ranges=["192.168.0.0/16"])
             + svc("x", "empty", [], ip="10.96.0.53"))
    return paths.World(st, NODES, ports, {"172.31.0.200": "node-1"})


def test_pod_through_clusterip_to_an_isolated_namespace_is_judged_at_its_own_node(world):
    (h,) = paths.trace(world, paths.Client("y/c", "10.244.1.5", "pod", "node-1"), "10.96.0.50", "tcp", 80)
    assert (h.entry, h.judged_at, h.endpoint, h.endpoint_node, h.endpoint_port) == ("node-1", "node-1", "x/a",
                                                                                     "node-2", 8080)
    assert h.outcome == paths.ALLOWED and "reached through a Service" in h.reason
    (d,) = paths.trace(world, paths.Client("y/c", "10.244.1.5", "pod", "node-1"), "10.244.2.5", "tcp", 8080)
    assert (d.judged_at, d.outcome) == ("node-2", paths.DENIED)


def test_outside_through_every_nodeport_sees_the_real_client(world):
    world.state.set_policy("x/np", model.netpol({"metadata": {"namespace": "x", "name": "np"}, "spec": {
        "podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "172.31.0.250/32"}}]}]}}))
    for n in NODES.values():
        (h,) = paths.trace(world, OUT, n.ip, "tcp", 30080)
        assert (h.entry, h.judged_at, h.source_seen, h.outcome) == (n.name, n.name, "172.31.0.250", paths.ALLOWED)
    other = paths.Client("o", "172.31.0.99", "outside")
    assert {paths.trace(world, other, n.ip, "tcp", 30080)[0].outcome for n in NODES.values()} == {paths.DENIED}


def test_local_traffic_policy_drops_at_nodes_without_an_endpoint(world):
    got = {n.name: paths.trace(world, OUT, n.ip, "tcp", 30081)[0].outcome for n in NODES.values()}
    assert got == {"node-1": paths.DROPPED, "node-2": paths.ALLOWED, "node-3": paths.DROPPED}
    # pods are not external: every endpoint, from any node
    c = paths.Client("y/c", "10.244.1.5", "pod", "node-1")
    assert paths.trace(world, c, "172.31.0.11", "tcp", 30081)[0].outcome == paths.ALLOWED


def test_loadbalancer_enters_at_its_announcer_and_source_ranges_apply(world):
    (h,) = paths.trace(world, OUT, "172.31.0.200", "tcp", 80)
    assert h.entry == "node-1" and h.outcome == paths.DROPPED and "loadBalancerSourceRanges" in h.reason
    (ok,) = paths.trace(world, paths.Client("o", "192.168.1.1", "outside"), "172.31.0.200", "tcp", 80)
    assert (ok.entry, ok.outcome) == ("node-1", paths.ALLOWED)


def test_no_endpoints_is_a_rejection_and_addresses_inside_are_not_routed_from_outside(world):
    c = paths.Client("y/c", "10.244.1.5", "pod", "node-1")
    assert paths.trace(world, c, "10.96.0.53", "tcp", 80)[0].outcome == paths.NO_ENDPOINTS
    assert paths.trace(world, OUT, "10.244.2.5", "tcp", 8080)[0].outcome == paths.UNREACHABLE
    assert paths.trace(world, OUT, "10.96.0.50", "tcp", 80)[0].outcome == paths.UNREACHABLE
    assert paths.trace(world, c, "10.96.0.50", "icmp", 0)[0].outcome == paths.DROPPED


def test_host_network_sources(world):
    h = paths.Client("y/h", "172.31.0.13", "host", "node-3")
    # directly to a pod on another node: judged there, seen as node-3's VTEP address (vxlan) or underlay (direct)
    (d,) = paths.trace(world, h, "10.244.2.5", "tcp", 8080)
    assert (d.judged_at, d.source_seen, d.outcome) == ("node-2", "10.244.3.0", paths.DENIED)
    world.mode = "direct"
    assert paths.trace(world, h, "10.244.2.5", "tcp", 8080)[0].source_seen == "172.31.0.13"
    # through the Service: judged at node-3 with the node's address, allowed by "reached through a Service"
    (s,) = paths.trace(world, h, "10.96.0.50", "tcp", 80)
    assert (s.judged_at, s.source_seen, s.outcome) == ("node-3", "172.31.0.13", paths.ALLOWED)
    # a pod's own node always reaches it
    own = paths.Client("n2", "172.31.0.12", "host", "node-2")
    assert paths.trace(world, own, "10.244.2.5", "tcp", 8080)[0].outcome == paths.ALLOWED


def test_a_pod_to_another_nodes_nodeport_is_masqueraded_by_its_node(world):
    world.state.set_policy("x/np", model.netpol({"metadata": {"namespace": "x", "name": "np"}, "spec": {
        "podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "172.31.0.11/32"}}]}]}}))
    c = paths.Client("y/c", "10.244.1.5", "pod", "node-1")
    (h,) = paths.trace(world, c, "172.31.0.12", "tcp", 30080)
    assert (h.entry, h.source_seen, h.outcome) == ("node-2", "172.31.0.11", paths.ALLOWED)


def test_agreement_allows_refused_when_policy_allows_and_nothing_listens(world):
    c = paths.Client("y/c", "10.244.1.5", "pod", "node-1")
    hops = paths.trace(world, c, "10.96.0.50", "tcp", 80)
    assert paths.agrees(hops, "ok") and paths.agrees(hops, "refused") and not paths.agrees(hops, "denied")
    denied = paths.trace(world, c, "10.244.2.5", "tcp", 8080)
    assert paths.agrees(denied, "denied") and not paths.agrees(denied, "refused")


def test_through_the_ingress_the_backend_sees_the_ingress_pod():
    """outside -> LB IP of the ingress Service -> ingress pod -> (a new connection) backend pod; the
    backend's policy judges the ingress pod, not the outside client; no rule and no endpoints are
    the controller's 404/503, not policy."""
    from ingress_objects import ingress, ingress_class, path
    from trellis.ingress.compile import compile_plan
    from trellis.policy import ingress_paths
    st = PolicyState()
    for ns in ("kube-system", "web"):
        st.set_namespace(model.ns_info({"metadata": {"name": ns}}))
    st.set_pod(pod("kube-system", "ing", "10.244.1.9", "node-1", {"app": "trellis-ingress"}))
    st.set_pod(pod("web", "echo", "10.244.2.7", "node-2", {"app": "echo"}))
    front = svc("kube-system", "trellis-ingress", [("10.244.1.9", "node-1")], "LoadBalancer", "10.96.0.60", 30090,
                lb="172.31.0.201", target=80)
    echo_obj = {"metadata": {"namespace": "web", "name": "echo"},
                "spec": {"clusterIP": "10.96.0.61", "ports": [{"port": 80, "targetPort": 3000, "protocol": "TCP"}]}}
    echo_slice = {"metadata": {"namespace": "web", "name": "echo-x", "labels": {"kubernetes.io/service-name": "echo"}},
                  "addressType": "IPv4", "ports": [{"name": "", "port": 3000, "protocol": "TCP"}],
                  "endpoints": [{"addresses": ["10.244.2.7"], "nodeName": "node-2", "conditions": {"ready": True}}]}
    world = paths.World(st, NODES, front, {"172.31.0.201": "node-3"})
    plan = compile_plan([ingress("i", [("echo.example", [path("/app", "echo")])], ns="web")], [ingress_class()],
                        {"web/echo": echo_obj}, {"web/echo": [echo_slice]}, {})
    hops = ingress_paths.trace(world, OUT, plan, [("172.31.0.201", 80)], "echo.example", "/app/x")
    (h,) = hops
    assert (h.endpoint, h.endpoint_port, h.source_seen, h.judged_at, h.outcome) == (
        "web/echo", 3000, "10.244.1.9", "node-2", paths.ALLOWED)
    assert "via kube-system/ing" in h.via
    # only the outside client is allowed into web: the ingress pod is not, so the request is denied
    st.set_policy("web/np", model.netpol({"metadata": {"namespace": "web", "name": "np"}, "spec": {
        "podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "172.31.0.250/32"}}]}]}}))
    (h,) = ingress_paths.trace(world, OUT, plan, [("172.31.0.201", 80)], "echo.example", "/app")
    assert h.outcome == paths.DENIED
    (h,) = ingress_paths.trace(world, OUT, plan, [("172.31.0.201", 80)], "other.example", "/")
    assert h.outcome == paths.NO_ENDPOINTS and "404" in h.reason
