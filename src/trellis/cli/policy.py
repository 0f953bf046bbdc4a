"""``trellis probe``, ``trellis explain``, ``trellis group``, ``trellis contract``.

probe   real connections from inside every selected pod to every selected pod
        (and Service), printed as truth tables per port/protocol ("." reaches,
        "X" does not), optionally compared with an expected table and with
        what ``explain`` computes from the compiled policy model.
explain walks one connection through the layers, as the datapath does, and
        names the object that allowed or denied it.
group / contract
        Contiv netctl-style verbs over the EndpointGroup and Contract CRDs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import yaml

from trellis.cli import output
from trellis.kube import selectors
from trellis.kube.client import ApiError, KubeClient
from trellis.policy import engine, live, model

GV = "trellis.dev/v1alpha1"


# ---- probe ------------------------------------------------------------------------

class Target:
    def __init__(self, label: str, ip: str, ports: dict[tuple[str, int], int] | None = None, dnat: bool = False):
        self.label, self.ip, self.dnat = label, ip, dnat
        self.ports = ports  # Service: (proto, port) -> its port; None: a pod, any port


def pod_argv(lab_dir: str, pod: dict, cmd: list[str]) -> list[str] | None:
    """nsenter into a lab pod's network namespace (None: not running)."""
    uid, node = pod["metadata"]["uid"], pod["spec"].get("nodeName") or "-"
    try:
        with open(os.path.join(lab_dir, "nodes", node, "pods", uid, "sandbox.json")) as f:
            pid = json.load(f)["pid"]
    except (OSError, ValueError, KeyError):
        return None
    return ["nsenter", "-t", str(pid), "-n", "--", *cmd]  # hostNetwork: the node's namespace


def probe_matrix(client: KubeClient, lab_dir: str, namespaces: list[str] | None, selector: str | None,
                 ports: list[int], protocols: list[str], services: bool = False, timeout: float = 1.0,
                 sources: list[dict] | None = None, pod_targets: bool = True) -> tuple[dict, list[str], list[str], dict]:
    """-> ({"TCP/80": {src: {dst: bool}}}, source labels, target labels, {label: Target})."""
    pods = []
    for p in client.list("v1", "pods", None, label_selector=selector)[0]:
        ns = p["metadata"]["namespace"]
        if (namespaces is None and ns in model.SYSTEM_NAMESPACES) or (namespaces and ns not in namespaces):
            continue
        if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP") \
                and not p["metadata"].get("deletionTimestamp"):
            pods.append(p)
    pods.sort(key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"]))
    label = lambda p: f"{p['metadata']['namespace']}/{p['metadata']['name']}"  # noqa: E731
    targets = {label(p): Target(label(p), p["status"]["podIP"]) for p in pods
               if pod_targets and not p["spec"].get("hostNetwork")}
    if services:
        for s in client.list("v1", "services")[0]:
            ns = s["metadata"]["namespace"]
            ip = s["spec"].get("clusterIP")
            if (namespaces and ns not in namespaces) or (namespaces is None and ns in model.SYSTEM_NAMESPACES) \
                    or not ip or ip == "None" or s["spec"].get("type") == "ExternalName" or ns == "default" \
                    and s["metadata"]["name"] == "kubernetes":
                continue
            sp = {(p.get("protocol", "TCP").lower(), p["port"]): p["port"] for p in s["spec"].get("ports") or []}
            lab = f"svc/{ns}/{s['metadata']['name']}"
            targets[lab] = Target(lab, ip, sp, dnat=True)
    srcs = sources if sources is not None else pods
    cells = [(proto, port) for proto in protocols for port in ports]

    def run(src: dict) -> tuple[str, dict]:
        want = []
        for t in targets.values():
            for proto, port in cells:
                if t.ports is None or (proto, port) in t.ports:
                    want.append(f"{t.ip}:{port}/{proto}")
        argv = pod_argv(lab_dir, src, [sys.executable, "-m", "trellis.lab.images.agnhost", "matrix",
                                       "--timeout", str(timeout), *want])
        if argv is None:
            return label(src), {}
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60 + timeout * len(want) / 16)
        try:
            return label(src), json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return label(src), {}

    with ThreadPoolExecutor(8) as pool:
        answers = dict(pool.map(run, srcs))
    result: dict = {}
    for proto, port in cells:
        tab = result.setdefault(f"{proto.upper()}/{port}", {})
        for s in srcs:
            row = tab.setdefault(label(s), {})
            for t in targets.values():
                if t.ports is None or (proto, port) in t.ports:
                    row[t.label] = bool(answers[label(s)].get(f"{t.ip}:{port}/{proto}"))
    return result, [label(s) for s in srcs], list(targets), targets


def explain_matrix(client: KubeClient, result: dict, sources: list[dict], targets: dict) -> dict:
    """What the compiled model says for every cell of a probe."""
    st, node_ips, _ = live.load(client)
    src_ip = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p["status"]["podIP"] for p in sources}
    out: dict = {}
    for key, tab in result.items():
        proto, port = key.split("/")
        for src, row in tab.items():
            for dst, _ in row.items():
                t = targets[dst]
                ips = [t.ip]
                if t.dnat:  # a Service: explain every endpoint it may pick; it reaches if any is allowed
                    ns, name = dst.split("/")[1:]
                    ips = _endpoint_ips(client, ns, name, proto, int(port)) or ["-"]
                ok = any(engine.explain(st, src_ip[src], ip, proto, int(port), t.dnat, node_ips)[0] == engine.ALLOW
                         for ip in ips if ip != "-")
                out.setdefault(key, {}).setdefault(src, {})[dst] = ok
    return out


def _endpoint_ips(client: KubeClient, ns: str, name: str, proto: str, port: int) -> list[str]:
    svc = client.get("v1", "services", name, ns)
    pname = next((p.get("name", "") for p in svc["spec"].get("ports") or []
                  if p["port"] == port and p.get("protocol", "TCP").lower() == proto), None)
    slices = client.list("discovery.k8s.io/v1", "endpointslices", ns,
                         label_selector=f"kubernetes.io/service-name={name}")[0]
    return [a for s in slices if any(p.get("name", "") == pname for p in s.get("ports") or [])
            for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready", True)
            for a in e.get("addresses") or []]


def render_matrix(result: dict, srcs: list[str], dsts: list[str], expected: dict | None = None,
                  explained: dict | None = None, out=None) -> tuple[int, int]:
    """Truth tables; returns (cells differing from expected, cells where explain disagrees)."""
    out = out or sys.stdout
    bad = disagree = 0
    for key, tab in result.items():
        cols = [d for d in dsts if any(d in tab.get(s, {}) for s in srcs)]
        rows = []
        for s in srcs:
            cells = []
            for d in cols:
                if d not in tab.get(s, {}):
                    cells.append("-")
                    continue
                got = tab[s][d]
                c = "." if got else "X"
                if expected is not None:
                    want = expected.get(key, {}).get(s, {}).get(d)
                    if want is not None and bool(want) != got:
                        c += "!"
                        bad += 1
                if explained is not None and explained.get(key, {}).get(s, {}).get(d) is not None \
                        and explained[key][s][d] != got:
                    c += "?"
                    disagree += 1
                cells.append(c)
            rows.append([s] + cells)
        output.table([key] + cols, rows, out)
        out.write("\n")
    return bad, disagree


def cmd_probe(args, client: KubeClient, lab_dir: str) -> int:
    nss = [n for n in (args.namespaces or "").split(",") if n] or None
    protocols = [p.lower() for p in args.protocols.split(",")]
    for p in protocols:
        if p not in ("tcp", "udp", "sctp"):
            raise ValueError(f"--protocols: {p!r} is not tcp, udp or sctp")
    if "sctp" in protocols:
        print("note: this kernel has no SCTP sockets; SCTP is checked in the ruleset, not probed", file=sys.stderr)
        protocols.remove("sctp")
    ports = [int(p) for p in args.ports.split(",")]
    expected = None
    if args.expect:
        with open(args.expect) as f:
            expected = yaml.safe_load(f)
    srcs_all = [p for p in client.list("v1", "pods", None, label_selector=args.selector)[0]]
    result, srcs, dsts, targets = probe_matrix(client, lab_dir, nss, args.selector, ports, protocols,
                                               args.services, args.timeout)
    explained = None
    if args.explain:
        by_label = {f"{p['metadata']['namespace']}/{p['metadata']['name']}": p for p in srcs_all}
        explained = explain_matrix(client, result, [by_label[s] for s in srcs], targets)
    if args.output:
        output.dump({"observed": result, **({"explained": explained} if explained else {})}, args.output)
        bad = disagree = 0
        if expected:
            bad = sum(1 for k, t in result.items() for s, r in t.items() for d, v in r.items()
                      if expected.get(k, {}).get(s, {}).get(d) not in (None, v))
    else:
        bad, disagree = render_matrix(result, srcs, dsts, expected, explained)
        n = sum(len(r) for t in result.values() for r in t.values())
        print(f"{n} connections probed ('.' reaches, 'X' does not"
              + (", '!' differs from the expectation" if expected else "")
              + (", '?' differs from trellis explain" if explained else "") + ")")
        if expected is not None:
            print(f"{bad} cells differ from {args.expect}")
        if explained is not None:
            print(f"{disagree} cells where trellis explain disagrees with the probe")
    return 1 if bad or disagree else 0


# ---- explain ----------------------------------------------------------------------

def _resolve(client: KubeClient, st: engine.PolicyState, text: str, ns: str) -> tuple[str, str, bool]:
    """-> (label, ip, via a Service)."""
    if text.replace(".", "").isdigit():
        pod = st.pod_by_ip(text)
        return (pod.key if pod else text), text, False
    if text.startswith("svc/"):
        rest = text[4:]
        sns, _, name = rest.rpartition("/")
        return f"svc/{sns or ns}/{name}", "", True
    pns, _, name = text.rpartition("/")
    pod = st.pods.get(f"{pns or ns}/{name}")
    if pod is None or not pod.ip:
        raise ValueError(f"{text}: no pod {pns or ns}/{name} with an address (give NAMESPACE/POD, POD, IP or svc/NAME)")
    return pod.key, pod.ip, False


def cmd_explain(args, client: KubeClient) -> int:
    st, node_ips, problems = live.load(client)
    ns = args.namespace or "default"
    port_s, _, proto = args.port.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp") or not port_s.isdigit():
        raise ValueError(f"{args.port!r}: write PORT/PROTO, e.g. 80/tcp")
    src_label, src_ip, _ = _resolve(client, st, args.src, ns)
    dst_label, dst_ip, via = _resolve(client, st, args.dst, ns)
    dsts = [dst_ip]
    if via:
        _, sns, sname = dst_label.split("/")
        dsts = _endpoint_ips(client, sns, sname, proto, int(port_s))
        if not dsts:
            print(f"{dst_label} has no ready endpoint for {port_s}/{proto}: the connection is rejected by the proxy")
            return 1
    results = []
    for ip in dsts:
        verdict, steps = engine.explain(st, src_ip, ip, proto, int(port_s), via, node_ips)
        pod = st.pod_by_ip(ip)
        results.append({"destination": pod.key if pod else ip, "address": ip, "verdict": verdict,
                        "steps": [s.__dict__ for s in steps]})
    if args.output:
        output.dump({"source": src_label, "target": dst_label, "port": f"{port_s}/{proto}", "mode": st.mode,
                     "results": results, "problems": problems}, args.output)
    else:
        for r in results:
            print(f"{src_label} -> {r['destination']} ({r['address']}) {port_s}/{proto}"
                  + (f" via {dst_label}" if via else "") + f": {r['verdict'].upper()}")
            output.table(["DIRECTION", "LAYER", "VERDICT", "DECIDED BY"],
                         [[s["direction"], s["layer"], s["verdict"], s["origin"]] for s in r["steps"]])
        for p in problems:
            print(f"warning: not enforced: {p}", file=sys.stderr)
    return 0 if all(r["verdict"] == engine.ALLOW for r in results) else 3


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
        client.delete(GV, "endpointgroups", args.name, ns)
        print(f'endpointgroup.trellis.dev "{args.name}" deleted')
        return 0
    st, _, _ = live.load(client)
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
        client.delete(GV, "contracts", args.name, ns)
        print(f'contract.trellis.dev "{args.name}" deleted')
        return 0
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

def add_parsers(sub, common, client_for, lab_dir_for) -> None:
    pr = sub.add_parser("probe", help="reachability matrix: real connections between selected pods (and Services)",
                        description="Connect from inside every selected pod to every selected pod (and Service) "
                        "and print one truth table per port/protocol.")
    common(pr)
    pr.add_argument("--namespaces", help="comma-separated namespaces (default: all but kube-system)")
    pr.add_argument("-l", "--selector", help="only pods with these labels")
    pr.add_argument("--ports", default="80", help="comma-separated ports (default 80)")
    pr.add_argument("--protocols", default="tcp", help="comma-separated: tcp,udp,sctp (default tcp)")
    pr.add_argument("--services", action="store_true", help="also probe the Services of these namespaces")
    pr.add_argument("--timeout", type=float, default=1.0, help="seconds per connection (default 1)")
    pr.add_argument("--expect", help="YAML/JSON file {PROTO/PORT: {SRC: {DST: true|false}}} to compare with")
    pr.add_argument("--explain", action="store_true", help="also compute every cell with trellis explain")
    pr.add_argument("-o", "--output", choices=["json", "yaml"])
    pr.set_defaults(fn=lambda a: cmd_probe(a, client_for(a), lab_dir_for(a)))

    ex = sub.add_parser("explain", help="which layer and object allow or deny one connection",
                        description="Walk a new connection SRC -> DST PORT/PROTO through the policy layers "
                        "(egress at the source, then isolation, endpoint groups, NetworkPolicy at the destination). "
                        "Exit 0 allowed, 3 denied.")
    common(ex)
    ex.add_argument("src", help="NAMESPACE/POD, POD (in -n) or IP")
    ex.add_argument("dst", help="NAMESPACE/POD, POD, IP or svc/[NAMESPACE/]NAME")
    ex.add_argument("port", help="PORT/PROTO, e.g. 6379/tcp")
    ex.add_argument("-o", "--output", choices=["json", "yaml"])
    ex.set_defaults(fn=lambda a: cmd_explain(a, client_for(a)))

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
