"""The service proxy compiler (pure): Services + EndpointSlices -> nft text, and minimal updates."""
from trellis.proxy import nftables as N
from trellis.proxy.model import service_ports

CIDR = "10.244.0.0/16"


def svc(name="web", type="ClusterIP", **spec):
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": type, "clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http",
                                **({"nodePort": 30080} if type != "ClusterIP" else {})}], **spec}}


def eps(*items, port=8080):
    return [{"addressType": "IPv4", "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
             "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": cond} for ip, node, cond in items]}]


READY = {"ready": True, "serving": True, "terminating": False}
TERMINATING = {"ready": False, "serving": True, "terminating": True}


def test_model_matches_slice_ports_by_name_and_prefers_ready_endpoints():
    [sp] = service_ports(svc(), eps(("10.244.1.5", "n1", READY), ("10.244.2.5", "n2", TERMINATING)))
    assert sp.key == "default/web/tcp/http"
    assert [e.ip for e in sp.usable()] == ["10.244.1.5"]
    # none ready: serving+terminating ones keep taking connections (no black hole during a rollout)
    [sp] = service_ports(svc(), eps(("10.244.2.5", "n2", TERMINATING)))
    assert [e.ip for e in sp.usable()] == ["10.244.2.5"]
    assert service_ports(svc(clusterIP="None", clusterIPs=["None"]), []) == []  # headless: DNS only
    assert service_ports({"metadata": {"name": "x", "namespace": "d"},
                          "spec": {"type": "ExternalName", "externalName": "a.b"}}, []) == []


def test_clusterip_service_renders_one_map_element_and_a_random_choice():
    [sp] = service_ports(svc(), eps(("10.244.1.5", "n1", READY), ("10.244.2.5", "n2", READY)))
    objs = N.compile_port(sp, "n1", CIDR)
    chain = N.chain_name("svc", sp.key)
    assert objs.elements == {("service-ips", "10.96.0.20 . tcp . 80"): f"goto {chain}"}
    assert objs.chains == {chain: ("meta mark set numgen random mod 2",
                                   "meta mark 0 meta l4proto tcp dnat ip to 10.244.1.5:8080",
                                   "meta l4proto tcp dnat ip to 10.244.2.5:8080")}


def test_no_endpoints_means_reject_not_silence():
    [sp] = service_ports(svc(type="NodePort"), [])
    objs = N.compile_port(sp, "n1", CIDR)
    assert objs.chains == {}
    assert objs.elements == {("no-endpoint-services", "10.96.0.20 . tcp . 80"): "goto reject-chain",
                             ("no-endpoint-nodeports", "tcp . 30080"): "goto reject-chain"}


def test_external_traffic_policy_local_uses_local_endpoints_and_keeps_source():
    s = svc(type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=31000)
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "172.31.0.200"}]}}
    [sp] = service_ports(s, eps(("10.244.1.5", "n1", READY), ("10.244.2.5", "n2", READY)))
    ext = N.chain_name("ext", sp.key)
    on_n1 = N.compile_port(sp, "n1", CIDR)
    assert on_n1.chains[ext] == (f"ip saddr {CIDR} goto {N.chain_name('svc', sp.key)}",
                                 f"fib saddr type local goto {N.chain_name('svc', sp.key)}",
                                 "meta l4proto tcp dnat ip to 10.244.1.5:8080")
    on_n3 = N.compile_port(sp, "n3", CIDR)  # no local endpoint: external traffic is dropped here
    assert on_n3.chains[ext][-1] == 'drop comment "no local endpoint"'
    assert on_n3.elements[("service-ips", "172.31.0.200 . tcp . 80")] == f"goto {ext}"
    assert on_n3.elements[("service-nodeports", "tcp . 30080")] == f"goto {ext}"
    # Cluster policy instead: external traffic is marked for masquerade
    [sp] = service_ports(svc(type="NodePort"), eps(("10.244.1.5", "n1", READY)))
    assert N.compile_port(sp, "n3", CIDR).chains[ext][0] == "ct mark set ct mark | 0x4000"


def test_internal_traffic_policy_local_has_no_endpoints_on_other_nodes():
    [sp] = service_ports(svc(internalTrafficPolicy="Local"), eps(("10.244.1.5", "n1", READY)))
    assert N.compile_port(sp, "n2", CIDR).elements == {
        ("no-endpoint-services", "10.96.0.20 . tcp . 80"): "goto reject-chain"}


def test_session_affinity_uses_one_dynamic_set_per_endpoint():
    s = svc(sessionAffinity="ClientIP", sessionAffinityConfig={"clientIP": {"timeoutSeconds": 30}})
    [sp] = service_ports(s, eps(("10.244.1.5", "n1", READY), ("10.244.2.5", "n2", READY)))
    objs = N.compile_port(sp, "n1", CIDR)
    assert len(objs.sets) == 2 and all("timeout 30s" in d for d in objs.sets.values())
    rules = objs.chains[N.chain_name("svc", sp.key)]
    assert rules[0].startswith("ip saddr @aff-") and rules[2] == "meta mark set numgen random mod 2"


def test_load_balancer_source_ranges_make_a_firewall_chain():
    s = svc(type="LoadBalancer", loadBalancerSourceRanges=["172.31.0.250/32"])
    s["status"] = {"loadBalancer": {"ingress": [{"ip": "172.31.0.200"}]}}
    [sp] = service_ports(s, eps(("10.244.1.5", "n1", READY)))
    objs = N.compile_port(sp, "n1", CIDR)
    fw = N.chain_name("fw", sp.key)
    assert objs.chains[fw] == ("ip saddr { 172.31.0.250/32 } return", 'drop comment "loadBalancerSourceRanges"')
    assert objs.elements[("firewall-ips", "172.31.0.200 . tcp . 80")] == f"jump {fw}"


def test_sctp_is_compiled_like_tcp_and_udp():
    s = svc()
    s["spec"]["ports"][0]["protocol"] = "SCTP"
    sl = eps(("10.244.1.5", "n1", READY))
    sl[0]["ports"][0]["protocol"] = "SCTP"
    [sp] = service_ports(s, sl)
    objs = N.compile_port(sp, "n1", CIDR)
    assert ("service-ips", "10.96.0.20 . sctp . 80") in objs.elements
    assert list(objs.chains.values()) == [("meta l4proto sctp dnat ip to 10.244.1.5:8080",)]


def test_endpoint_change_touches_only_that_service_chain():
    [a] = service_ports(svc(), eps(("10.244.1.5", "n1", READY), ("10.244.2.5", "n2", READY)))
    [b] = service_ports(svc(), eps(("10.244.1.5", "n1", READY)))
    old, new = N.compile_port(a, "n1", CIDR), N.compile_port(b, "n1", CIDR)
    chain = N.chain_name("svc", a.key)
    assert N.transaction([(old, new)]) == (
        f"flush chain inet trellis-proxy {chain}\n"
        f"add rule inet trellis-proxy {chain} meta l4proto tcp dnat ip to 10.244.1.5:8080\n")
    assert N.transaction([(new, new)]) == ""


def test_removing_a_service_deletes_elements_before_chains():
    [a] = service_ports(svc(), eps(("10.244.1.5", "n1", READY)))
    chain = N.chain_name("svc", a.key)
    assert N.transaction([(N.compile_port(a, "n1", CIDR), None)]) == (
        "delete element inet trellis-proxy service-ips { 10.96.0.20 . tcp . 80 }\n"
        f"flush chain inet trellis-proxy {chain}\n"
        f"delete chain inet trellis-proxy {chain}\n")


def test_full_sync_sweeps_chains_nobody_owns():
    text = N.full_sync(N.Objects(), {"svc-OLD-default/gone/tcp/80", "services"}, {"aff-OLD"}, CIDR)
    assert "delete chain inet trellis-proxy svc-OLD-default/gone/tcp/80" in text
    assert "delete chain inet trellis-proxy services" not in text  # fixed chains stay
    assert "delete set inet trellis-proxy aff-OLD" in text
    assert text.startswith("add table inet trellis-proxy\n")
