"""``trellis explain``, ``trellis group``, ``trellis contract`` (and ``trellis probe``, cli/probe.py).

explain walks one connection as the kernel does (``policy.paths``): entry node,
        the endpoints a Service may pick, the node that judges and the source it
        sees, then the layers, naming the object that allowed or denied it.
group / contract
        Contiv netctl-style verbs over the EndpointGroup and Contract CRDs.
"""
from __future__ import annotations

import sys

from trellis.cli import output
from trellis.kube import selectors
from trellis.kube.client import ApiError, KubeClient
from trellis.policy import live, model, paths

GV = "trellis.dev/v1alpha1"


# ---- explain ----------------------------------------------------------------------

def parse_port(text: str) -> tuple[str, int]:
    """``80/tcp``, ``53/udp``, ``80`` (TCP) or ``icmp`` -> (protocol, port)."""
    if text.lower() == "icmp":
        return "icmp", 0
    port_s, _, proto = text.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp") or not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise ValueError(f"{text!r}: write PORT/PROTO (e.g. 80/tcp, 53/udp) or icmp")
    return proto, int(port_s)


def resolve_source(world: paths.World, text: str, ns: str, outside_ip: str | None) -> paths.Client:
    st = world.state
    if text == "outside":
        if not outside_ip:
            raise ValueError("source 'outside': no lab client here; give the outside client's IP instead")
        return paths.Client(f"outside ({outside_ip})", outside_ip, "outside")
    if _is_ip(text):
        pod = st.pod_by_ip(text)
        if pod is not None:
            return paths.Client(pod.key, text, "pod", pod.node)
        node = world.node_by_ip(text)
        if node is not None:
            return paths.Client(f"node {node.name} ({text})", text, "host", node.name)
        return paths.Client(f"outside ({text})", text, "outside")
    if text in world.nodes:
        n = world.nodes[text]
        return paths.Client(f"node {n.name} ({n.ip})", n.ip, "host", n.name)
    pns, _, name = text.rpartition("/")
    pod = st.pods.get(f"{pns or ns}/{name}")
    if pod is None or not pod.ip:
        raise ValueError(f"source {text}: no pod {pns or ns}/{name} with an address "
                         "(give NAMESPACE/POD, POD, NODE, IP or 'outside')")
    return paths.Client(pod.key, pod.ip, "host" if pod.host_network else "pod", pod.node)


def _is_ip(text: str) -> bool:
    import ipaddress
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def resolve_targets(world: paths.World, client: paths.Client, text: str, ns: str, proto: str,
                    port: int) -> tuple[str, list[tuple[str, int]]]:
    """-> (label, [(address, port) the client may connect to])."""
    if text.startswith("svc/"):
        sns, _, name = text[4:].rpartition("/")
        sns = sns or ns
        sps = [sp for sp in world.ports if sp.namespace == sns and sp.name == name]
        if not sps:
            raise ValueError(f"{text}: no Service {sns}/{name} with an address (headless and ExternalName "
                             "Services are DNS only)")
        sp = next((p for p in sps if p.protocol == proto and p.port == port), None)
        if sp is None:
            have = ", ".join(f"{p.port}/{p.protocol}" for p in sps)
            raise ValueError(f"{text}: Service {sns}/{name} has no port {port}/{proto} (it has {have})")
        label = f"svc/{sns}/{name}"
        if client.kind != "outside":
            return label, [(ip, port) for ip in sp.cluster_ips]
        addrs = [(n.ip, sp.node_port) for n in sorted(world.nodes.values(), key=lambda n: n.name) if sp.node_port]
        addrs += [(ip, port) for ip in (*sp.lb_ips, *sp.external_ips)]
        if not addrs:
            raise ValueError(f"{text}: a ClusterIP Service is not reachable from outside the cluster "
                             "(no NodePort, LoadBalancer IP or external IP)")
        return label, addrs
    if text in world.nodes:
        return f"node {text}", [(world.nodes[text].ip, port)]
    if _is_ip(text):
        pod = world.state.pod_by_ip(text)
        return (pod.key if pod else text), [(text, port)]
    pns, _, name = text.rpartition("/")
    pod = world.state.pods.get(f"{pns or ns}/{name}")
    if pod is None or not pod.ip:
        raise ValueError(f"destination {text}: no pod {pns or ns}/{name} with an address "
                         "(give NAMESPACE/POD, POD, NODE, IP or svc/[NAMESPACE/]NAME)")
    return pod.key, [(pod.ip, port)]


def _through_ingress(client: KubeClient, world: paths.World, src: paths.Client, url: str, proto: str,
                     port: int) -> tuple[str, list[paths.Hop]]:
    """``http://HOST/PATH``: to the ingress controller's Service, then from the ingress pod to the
    backend pod its rules pick."""
    from urllib.parse import urlsplit

    from trellis.policy import ingress_paths
    u = urlsplit(url)
    if proto != "tcp" or not u.hostname:
        raise ValueError(f"{url}: an Ingress is reached over TCP (write 80/tcp or 443/tcp) at http://HOST/PATH")
    ns, name = live.INGRESS_SERVICE
    sp = next((p for p in world.ports if p.namespace == ns and p.name == name and p.port == port
               and p.protocol == "tcp"), None)
    if sp is None:
        raise ValueError(f"{url}: no Service {ns}/{name} with port {port}/tcp (is the ingress controller installed?)")
    front = [(ip, port) for ip in (sp.lb_ips if src.kind == "outside" else sp.cluster_ips)]
    if not front:
        raise ValueError(f"{url}: Service {ns}/{name} has no {'LoadBalancer' if src.kind == 'outside' else 'cluster'}"
                         " address yet")
    return url, ingress_paths.trace(world, src, live.ingress_plan(client), front, u.hostname, u.path or "/")


def cmd_explain(args, client: KubeClient, outside_ip: str | None = None) -> int:
    world, problems = live.world(client)
    ns = args.namespace or "default"
    proto, port = parse_port(args.port)
    src = resolve_source(world, args.src, ns, outside_ip)
    if args.dst.startswith(("http://", "https://")):
        label, hops = _through_ingress(client, world, src, args.dst, proto, port)
    else:
        label, addrs = resolve_targets(world, src, args.dst, ns, proto, port)
        hops = [h for ip, p in addrs for h in paths.trace(world, src, ip, proto, p)]
    what = "icmp" if proto == "icmp" else f"{port}/{proto}"
    allowed = all(h.outcome == paths.ALLOWED for h in hops)
    if args.output:
        output.dump({"source": src.label, "target": label, "port": what, "mode": world.state.mode,
                     "routing": world.mode, "verdict": paths.verdict(hops), "hops": [h.as_dict() for h in hops],
                     "problems": problems}, args.output)
    else:
        print(f"{src.label} -> {label} {what}: {paths.verdict(hops).upper()}")
        output.table(["VIA", "ENTRY", "ENDPOINT", "ON", "JUDGED AT", "SOURCE SEEN", "VERDICT"],
                     [[h.via, h.entry or "-", h.endpoint if h.endpoint == h.endpoint_ip or not h.endpoint_ip
                       else f"{h.endpoint} ({h.endpoint_ip}:{h.endpoint_port})", h.endpoint_node or "-",
                       h.judged_at or "-", h.source_seen, h.outcome] for h in hops])
        shown = set()
        for h in hops:
            key = (h.endpoint, h.source_seen, h.outcome, h.reason)
            if key in shown:
                continue
            shown.add(key)
            print(f"\n{h.endpoint}: {h.reason or h.outcome}" if not h.steps else f"\n{h.endpoint} "
                  f"(judged at {h.judged_at or h.endpoint_node or '-'}, source {h.source_seen}):")
            if h.steps:
                output.table(["DIRECTION", "LAYER", "VERDICT", "DECIDED BY"],
                             [[s.direction, s.layer, s.verdict, s.origin] for s in h.steps])
    output.warn_not_honoured(problems)
    return 0 if allowed else 3


# ---- groups and contracts ---------------------------------------------------------------

def label_selector(text: str | None) -> dict | None:
    if not text:
        return None
    reqs = selectors.parse_label_selector(text)
    out: dict = {}
    ops = {"in": "In", "notin": "NotIn", "exists": "Exists", "!": "DoesNotExist"}
    for r in reqs:
        if r.op == "=":
            out.setdefault("matchLabels", {})[r.key] = r.values[0]
        elif r.op in ops:
            e = {"key": r.key, "operator": ops[r.op]}
            if r.values:
                e["values"] = list(r.values)
            out.setdefault("matchExpressions", []).append(e)
        else:
            raise ValueError(f"--selector: {r.key}{r.op}: use key=value, key in (a,b), key, !key")
    return out


def _sel_text(sel: dict | None) -> str:
    if sel is None:
        return "<none>"
    return selectors.to_string(sel) or "<all>"


def _put_spec(client: KubeClient, kind: str, plural: str, name: str, ns: str, spec: dict) -> int:
    """Create the object, or replace the spec of the existing one (checked here first: errors name the field)."""
    obj = {"apiVersion": GV, "kind": kind, "metadata": {"name": name, "namespace": ns}, "spec": spec}
    problem = model.validate(kind, obj)
    if problem:
        raise ValueError(problem)
    try:
        client.create(GV, plural, obj, ns)
        print(f"{kind.lower()}.trellis.dev/{name} created")
    except ApiError as e:
        if e.code != 409:
            raise
        old = client.get(GV, plural, name, ns)
        old["spec"] = spec
        client.update(GV, plural, old, ns)
        print(f"{kind.lower()}.trellis.dev/{name} configured")
    return 0


def _remove(client: KubeClient, plural: str, kind: str, name: str, ns: str) -> int:
    if client.delete(GV, plural, name, ns) is None:
        print(f'Error from server (NotFound): {plural}.trellis.dev "{name}" not found in namespace {ns}',
              file=sys.stderr)
        return 1
    print(f'{kind}.trellis.dev "{name}" deleted')
    return 0


def cmd_group(args, client: KubeClient) -> int:
    ns = args.namespace or "default"
    if args.action == "create":
        spec: dict = {"intraGroup": args.intra}
        if args.selector:
            spec["podSelector"] = label_selector(args.selector)
        if args.namespace_selector:
            spec["namespaceSelector"] = label_selector(args.namespace_selector)
            spec.setdefault("podSelector", {})
        if args.description:
            spec["description"] = args.description
        return _put_spec(client, "EndpointGroup", "endpointgroups", args.name, ns, spec)
    if args.action == "rm":
        return _remove(client, "endpointgroups", "endpointgroup", args.name, ns)
    st, _, problems = live.load(client)
    output.warn_not_honoured(problems)
    items = client.list(GV, "endpointgroups", None if args.all_namespaces else ns)[0]
    if args.output:
        output.dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
        return 0
    count: dict[str, list[str]] = {}
    for p in st.pods.values():
        count.setdefault(st.group_of(p), []).append(p.name)
    provides: dict[str, list[str]] = {}
    for c in st.contracts.values():
        provides.setdefault(c.provider, []).append(c.name)
    rows = []
    for g in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        gid = f"epg:{g['metadata']['namespace']}/{g['metadata']['name']}"
        spec = g.get("spec") or {}
        sel = _sel_text(spec.get("podSelector"))
        if spec.get("namespaceSelector") is not None:
            sel += f" in ns {_sel_text(spec['namespaceSelector'])}"
        rows.append(([g["metadata"]["namespace"]] if args.all_namespaces else [])
                    + [g["metadata"]["name"], sel, spec.get("intraGroup", "allow"), len(count.get(gid, [])),
                       ",".join(sorted(provides.get(gid, []))) or "<none>"])
    if rows:
        output.table((["NAMESPACE"] if args.all_namespaces else []) + ["NAME", "SELECTOR", "INTRA-GROUP", "MEMBERS",
                                                                      "PROVIDES"], rows)
    else:
        print(f"No endpoint groups found in {ns} namespace." if not args.all_namespaces else "No endpoint groups found.")
    return 0


def parse_rule(text: str, action: str) -> dict:
    """``tcp/6379``, ``tcp/8000-8080``, ``udp``, ``any`` -> a Contract rule."""
    if text == "any":
        return {"action": action}
    proto, _, ports = text.partition("/")
    if proto.upper() not in model.PROTOCOLS:
        raise ValueError(f"--{action} {text!r}: write PROTO[/PORT[-PORT]] with PROTO tcp, udp or sctp, or 'any'")
    rule: dict = {"action": action, "protocol": proto.upper()}
    if ports:
        rule["ports"] = [int(p) if p.isdigit() else p for p in ports.split(",")]
    return rule


def cmd_contract(args, client: KubeClient) -> int:
    ns = args.namespace or "default"
    if args.action == "create":
        rules = [parse_rule(r, "deny") for r in args.deny or []] + [parse_rule(r, "allow") for r in args.allow or []]
        spec: dict = {"provider": args.provider, "consumers": args.consumer or [],
                      "rules": rules or [{"action": "allow"}]}
        if args.consumer_cidr:
            spec["consumerIPBlocks"] = [{"cidr": c} for c in args.consumer_cidr]
        return _put_spec(client, "Contract", "contracts", args.name, ns, spec)
    if args.action == "rm":
        return _remove(client, "contracts", "contract", args.name, ns)
    output.warn_not_honoured(live.load(client)[2])
    items = client.list(GV, "contracts", None if args.all_namespaces else ns)[0]
    if args.output:
        output.dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output)
        return 0
    rows = []
    for c in sorted(items, key=lambda o: (o["metadata"]["namespace"], o["metadata"]["name"])):
        spec = c.get("spec") or {}
        consumers = list(spec.get("consumers") or []) + [b.get("cidr", "") for b in spec.get("consumerIPBlocks") or []]
        rules = []
        for r in spec.get("rules") or [{"action": "allow"}]:
            what = (r.get("protocol") or "any").lower()
            if r.get("ports"):
                what += "/" + ",".join(str(p) for p in r["ports"])
            rules.append(f"{r.get('action', 'allow')} {what}")
        rows.append(([c["metadata"]["namespace"]] if args.all_namespaces else [])
                    + [c["metadata"]["name"], spec.get("provider", ""), ",".join(consumers), "; ".join(rules)])
    if rows:
        output.table((["NAMESPACE"] if args.all_namespaces else []) + ["NAME", "PROVIDER", "CONSUMERS", "RULES"], rows)
    else:
        print(f"No contracts found in {ns} namespace." if not args.all_namespaces else "No contracts found.")
    return 0


# ---- parser --------------------------------------------------------------------------

def add_parsers(sub, common, client_for, lab_dir_for, outside_ip_for=lambda a: None) -> None:
    from trellis.cli import probe
    probe.add_parser(sub, common, client_for, lab_dir_for)

    ex = sub.add_parser("explain", help="where one connection goes, and which layer and object allow or deny it",
                        description="Walk a new connection SRC -> DST PORT/PROTO as the kernel does: the node it "
                        "enters by, the endpoint(s) a Service may pick, the node that judges it and the source it "
                        "sees, then the policy layers (egress at the client's node; isolation, endpoint groups, "
                        "NetworkPolicy for ingress). Exit 0 allowed, 3 denied or not delivered.")
    common(ex)
    ex.add_argument("src", help="NAMESPACE/POD, POD (in -n), NODE, IP, or 'outside' (the lab's client)")
    ex.add_argument("dst", help="NAMESPACE/POD, POD, NODE, IP, svc/[NAMESPACE/]NAME (from outside: its NodePorts "
                    "on every node, LoadBalancer and external IPs), or http://HOST/PATH (through the Ingress: to "
                    "the ingress pod, then from it to the backend pod)")
    ex.add_argument("port", help="PORT/PROTO (e.g. 6379/tcp; a NodePort's number when DST is a node) or icmp")
    ex.add_argument("-o", "--output", choices=["json", "yaml"])
    ex.set_defaults(fn=lambda a: cmd_explain(a, client_for(a), outside_ip_for(a)))

    gp = sub.add_parser("group", help="endpoint groups (Contiv/ACI EPGs): create, ls, rm")
    gsub = gp.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = gsub.add_parser("create", help="create or update an endpoint group")
    common(c)
    c.add_argument("name")
    c.add_argument("--selector", help="members: pods with these labels (key=value,...); pods labelled "
                   f"{model.GROUP_LABEL}=NAME are members anyway")
    c.add_argument("--namespace-selector", help="take members from namespaces with these labels")
    c.add_argument("--intra", choices=["allow", "deny"], default="allow", help="traffic between members")
    c.add_argument("--description")
    ls = gsub.add_parser("ls", help="list endpoint groups with their members and contracts")
    common(ls)
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.add_argument("-o", "--output", choices=["json", "yaml"])
    rm = gsub.add_parser("rm", help="delete an endpoint group")
    common(rm)
    rm.add_argument("name")
    gp.set_defaults(fn=lambda a: cmd_group(a, client_for(a)))

    cp = sub.add_parser("contract", help="contracts between endpoint groups: create, ls, rm")
    csub = cp.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = csub.add_parser("create", help="create or update a contract",
                        description="Let consumer groups (or CIDRs) reach a provider group. Groups: NAME, "
                        "NAMESPACE/NAME, namespace:NS, deployment:[NS/]NAME. Deny rules win over allow rules.")
    common(c)
    c.add_argument("name")
    c.add_argument("--provider", required=True, help="the group that offers the service")
    c.add_argument("--consumer", action="append", help="a consumer group (repeat)")
    c.add_argument("--consumer-cidr", action="append", help="a consumer address block (repeat)")
    c.add_argument("--allow", action="append", help="PROTO[/PORTS] or any, e.g. tcp/6379 (repeat)")
    c.add_argument("--deny", action="append", help="PROTO[/PORTS] or any (repeat)")
    ls = csub.add_parser("ls", help="list contracts")
    common(ls)
    ls.add_argument("-A", "--all-namespaces", action="store_true")
    ls.add_argument("-o", "--output", choices=["json", "yaml"])
    rm = csub.add_parser("rm", help="delete a contract")
    common(rm)
    rm.add_argument("name")
    cp.set_defaults(fn=lambda a: cmd_contract(a, client_for(a)))
