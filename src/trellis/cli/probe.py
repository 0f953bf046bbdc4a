"""``trellis probe``: real connections from inside pods (or from outside the cluster), as truth tables.

Every cell is what one new connection saw, in the words of the lab's test client:

  .  ok           connected (or an answer to a ping / datagram)
  X  denied       rejected by policy (ICMP administratively prohibited)
  r  refused      reached the host, but nothing listens there (TCP reset / port unreachable),
                  or a Service without endpoints rejected it
  t  timeout      dropped on the way (externalTrafficPolicy Local without a local endpoint, ...)
  u  unreachable  no route (pod and ClusterIP addresses from outside the cluster)

``--ingresses`` adds one target per host and path the ingress controller serves: an HTTP
request through the ingress Service. ``.`` an endpoint answered; ``r`` the controller says no
rule matches or the backend has no ready endpoint; when the ingress could connect to no
endpoint, the cell is what the ingress pod's own connections to those endpoints meet (``X``
the backend's policy, ``r`` nothing listens, ``t`` dropped): haproxy's 503 cannot tell.

``--explain`` computes every cell with the path model of ``trellis explain``
(``policy.paths``) and marks a cell ``?`` where the two disagree; a refused cell
that policy allows is counted as "no listener", not as a disagreement.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import yaml

from trellis.cli import output
from trellis.kube.client import KubeClient
from trellis.policy import ingress_paths, live, model, paths

SYMBOL = {"ok": ".", "denied": "X", "refused": "r", "timeout": "t", "unreachable": "u"}
LEGEND = "'.' reaches, 'X' denied by policy, 'r' refused (nothing listens), 't' timed out, 'u' unreachable"


@dataclass
class Target:
    label: str
    ip: str
    ports: dict[tuple[str, int], int] | None = None  # a Service: (proto, port) -> port; None: a pod (any port)
    url: str | None = None  # an Ingress host/path: the request sent to ``ip`` (the ingress Service)
    route: tuple[str, str] | None = None  # (host, path) of that request, for the path model

    def has(self, proto: str, port: int) -> bool:
        return (self.ports is None and (proto == "icmp" or port)) or (
            self.ports is not None and (proto, port) in self.ports)


@dataclass
class Source:
    label: str
    argv: list[str] | None           # how to run a command there (None: not running)
    client: paths.Client


@dataclass
class Probe:
    result: dict                     # {"TCP/80": {source: {target: outcome}}}
    sources: list[Source]
    targets: dict[str, Target]
    explained: dict | None = None    # {"TCP/80": {source: {target: [verdict, agrees]}}}
    cells: list[tuple[str, int]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what policy is not honoured as written
    ingress_plan: object = None      # what the ingress controller serves, when Ingresses are probed


def cell_key(proto: str, port: int) -> str:
    return "ICMP" if proto == "icmp" else f"{proto.upper()}/{port}"


def sandbox_argv(lab_dir: str, pod: dict, cmd: list[str]) -> list[str] | None:
    """nsenter into a lab pod's network namespace (None: not running). A hostNetwork pod's
    sandbox lives in its node's namespace, so the command runs there."""
    uid, node = pod["metadata"]["uid"], pod["spec"].get("nodeName") or "-"
    try:
        with open(os.path.join(lab_dir, "nodes", node, "pods", uid, "sandbox.json")) as f:
            pid = json.load(f)["pid"]
    except (OSError, ValueError, KeyError):
        return None
    return ["nsenter", "-t", str(pid), "-n", "--", *cmd]


def pod_label(p: dict) -> str:
    return f"{p['metadata']['namespace']}/{p['metadata']['name']}"


def running_pods(client: KubeClient, namespaces: list[str] | None, selector: str | None) -> list[dict]:
    out = []
    for p in client.list("v1", "pods", None, label_selector=selector)[0]:
        ns = p["metadata"]["namespace"]
        if (namespaces is None and ns in model.SYSTEM_NAMESPACES) or (namespaces and ns not in namespaces):
            continue
        if p.get("status", {}).get("phase") == "Running" and p["status"].get("podIP") \
                and not p["metadata"].get("deletionTimestamp"):
            out.append(p)
    return sorted(out, key=pod_label)


def pod_source(lab_dir: str, p: dict) -> Source:
    host = bool(p["spec"].get("hostNetwork"))
    c = paths.Client(pod_label(p), p["status"]["podIP"], "host" if host else "pod", p["spec"].get("nodeName") or "")
    return Source(c.label, sandbox_argv(lab_dir, p, ["{cmd}"]), c)


def outside_source(lab_dir: str) -> Source:
    from trellis.lab import topology
    name = os.path.basename(os.path.normpath(lab_dir))
    label = f"outside ({topology.CLIENT_IP})"
    return Source(label, ["nsenter", f"--net=/run/netns/{name}-client", "--", "{cmd}"],
                  paths.Client(label, topology.CLIENT_IP, "outside"))


def service_targets(client: KubeClient, namespaces: list[str] | None) -> dict[str, Target]:
    out = {}
    for s in client.list("v1", "services")[0]:
        ns, spec = s["metadata"]["namespace"], s["spec"]
        ip = spec.get("clusterIP")
        if (namespaces and ns not in namespaces) or (namespaces is None and ns in model.SYSTEM_NAMESPACES) \
                or not ip or ip == "None" or spec.get("type") == "ExternalName" \
                or (ns == "default" and s["metadata"]["name"] == "kubernetes"):
            continue
        ports = {(p.get("protocol", "TCP").lower(), p["port"]): p["port"] for p in spec.get("ports") or []}
        label = f"svc/{ns}/{s['metadata']['name']}"
        out[label] = Target(label, ip, ports)
    return out


def outside_targets(client: KubeClient, namespaces: list[str] | None) -> dict[str, Target]:
    """Every node's NodePorts and every LoadBalancer IP, as one target per entry point."""
    nodes = sorted((n["metadata"]["name"], next((a["address"] for a in n["status"].get("addresses") or []
                                                if a["type"] == "InternalIP"), ""))
                   for n in client.list("v1", "nodes")[0])
    out = {}
    for s in client.list("v1", "services")[0]:
        ns, spec = s["metadata"]["namespace"], s["spec"]
        if (namespaces and ns not in namespaces) or (namespaces is None and ns in model.SYSTEM_NAMESPACES):
            continue
        name = f"svc/{ns}/{s['metadata']['name']}"
        lbs = [i["ip"] for i in (s.get("status") or {}).get("loadBalancer", {}).get("ingress") or [] if i.get("ip")]
        for p in spec.get("ports") or []:
            proto = p.get("protocol", "TCP").lower()
            if p.get("nodePort") and spec.get("type") in ("NodePort", "LoadBalancer"):
                for node, ip in nodes:
                    label = f"{name} {node}:{p['nodePort']}"
                    out.setdefault(label, Target(label, ip, {})).ports[(proto, p["port"])] = p["nodePort"]
            for lb in lbs if spec.get("type") == "LoadBalancer" else []:
                label = f"{name} {lb}:{p['port']}"  # TCP and UDP on one port: one target, two cells
                out.setdefault(label, Target(label, lb, {})).ports[(proto, p["port"])] = p["port"]
    return out


def ingress_targets(plan, front: list[str], namespaces: list[str] | None) -> dict[str, Target]:
    """One target per host and path the ingress controller serves, asked at its Service's
    address (a wildcard host as ``probe.<domain>``, a rule without host by the address)."""
    out: dict[str, Target] = {}
    if not front:
        return out
    for vh in plan.vhosts:
        for r in vh.routes:
            ns = r.ingress.split("/", 1)[0]
            if (namespaces and ns not in namespaces) or (namespaces is None and ns in model.SYSTEM_NAMESPACES):
                continue
            host = "probe" + vh.host[1:] if vh.host.startswith("*.") else (vh.host or front[0])
            label = f"ing/{r.ingress} {host}{r.rule.path}"
            out[label] = Target(label, front[0], {("tcp", 80): 80}, f"http://{host}{r.rule.path}",
                                (host, r.rule.path))
    return out


def _want(t: Target, proto: str, port: int) -> str | None:
    """The agnhost ``matrix`` target for one cell of ``t`` (None: not a cell of it)."""
    if not t.has(proto, port):
        return None
    if t.url:
        return f"{t.url}@{t.ip}:{t.ports[(proto, port)]}"
    if proto == "icmp":
        return f"{t.ip}/icmp"
    return f"{t.ip}:{t.ports[(proto, port)] if t.ports else port}/{proto}"


def agnhost_matrix(src: Source, probes: list[str], timeout: float) -> dict:
    """One agnhost ``matrix`` run inside ``src``: {probe: [outcome, detail]} ({} if it cannot run)."""
    if src.argv is None or not probes:
        return {}
    cmd = [sys.executable, "-m", "trellis.lab.images.agnhost", "matrix", "--timeout", str(timeout), *probes]
    i = src.argv.index("{cmd}")
    r = subprocess.run(src.argv[:i] + cmd + src.argv[i + 1:], capture_output=True, text=True,
                       timeout=60 + (timeout / 16 + 1.05) * len(probes))  # timeouts are retried once a second
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def run_matrix(sources: list[Source], targets: dict[str, Target], cells: list[tuple[str, int]],
               timeout: float) -> dict:
    """One agnhost ``matrix`` run per source, all targets at once; -> {cell: {src: {dst: outcome}}}."""
    def run(src: Source) -> tuple[str, dict]:
        probes = sorted({w for t in targets.values() for proto, port in cells if (w := _want(t, proto, port))})
        return src.label, agnhost_matrix(src, probes, timeout)

    with ThreadPoolExecutor(8) as pool:
        answers = dict(pool.map(run, sources))
    result: dict = {}
    for proto, port in cells:
        tab = result.setdefault(cell_key(proto, port), {})
        for s in sources:
            row = tab.setdefault(s.label, {})
            for t in targets.values():
                w = _want(t, proto, port)
                if w is not None:
                    row[t.label] = (answers[s.label].get(w) or ["timeout", "not probed"])[0]
    return result


def resolve_upstream(result: dict, targets: dict[str, Target], plan, proxy: Source | None,
                     timeout: float) -> None:
    """Cells where the ingress connected to no endpoint (``upstream``) get what the kernel
    answers to that second leg: the same connections, from the ingress pod (denied by the
    backend's policy, refused because nothing listens, or timed out)."""
    from trellis.ingress.compile import select
    todo = [(row, dst) for tab in result.values() for row in tab.values() for dst, seen in row.items()
            if seen == "upstream"]
    if not todo:
        return
    eps: dict[str, list[str]] = {}
    for _, dst in todo:
        route = select(plan, *targets[dst].route)
        backend = route.backend if route else plan.default_backend
        eps[dst] = sorted(f"{ip}:{port}/tcp" for ip, port in (plan.backends[backend].endpoints if backend else ()))
    seen_by = agnhost_matrix(proxy, sorted({e for es in eps.values() for e in es}), timeout) if proxy else {}
    for row, dst in todo:
        words = {(seen_by.get(e) or ["timeout"])[0] for e in eps[dst]}
        row[dst] = next((w for w in ("denied", "refused", "timeout") if w in words), "timeout")


def explain_matrix(world: paths.World, probe: Probe) -> dict:
    """What the path model says for every probed cell: [its verdict word, does the probe agree]."""
    out: dict = {}
    by_label = {s.label: s for s in probe.sources}
    for key, tab in probe.result.items():
        proto, _, port_s = key.lower().partition("/")
        port = int(port_s or 0)
        for src, row in tab.items():
            for dst, seen in row.items():
                t = probe.targets[dst]
                connected_to = t.ports[(proto, port)] if t.ports else port  # a NodePort, or the port itself
                if t.route is not None:
                    hops = ingress_paths.trace(world, by_label[src].client, probe.ingress_plan,
                                               [(t.ip, connected_to)], *t.route)
                else:
                    hops = paths.trace(world, by_label[src].client, t.ip, proto, connected_to)
                out.setdefault(key, {}).setdefault(src, {})[dst] = [paths.verdict(hops), paths.agrees(hops, seen)]
    return out


def meets(want: bool | str, got: str) -> bool:
    """An expectation is an outcome word, or true (connects) / false (does not)."""
    return want == got if isinstance(want, str) else (got == "ok") == bool(want)


def render(probe: Probe, expected: dict | None = None, out=None) -> tuple[int, int, int]:
    """Truth tables; -> (cells differing from expected, cells explain disagrees with, refused cells
    that policy allows: no listener)."""
    out = out or sys.stdout
    bad = disagree = no_listener = 0
    dsts = list(probe.targets)
    for key, tab in probe.result.items():
        cols = [d for d in dsts if any(d in tab.get(s.label, {}) for s in probe.sources)]
        rows = []
        for s in probe.sources:
            cells = []
            for d in cols:
                got = tab.get(s.label, {}).get(d)
                if got is None:
                    cells.append("-")
                    continue
                c = SYMBOL.get(got, "?")
                if expected is not None:
                    want = expected.get(key, {}).get(s.label, {}).get(d)
                    if want is not None and not meets(want, got):
                        c += "!"
                        bad += 1
                if probe.explained is not None and d in probe.explained.get(key, {}).get(s.label, {}):
                    verdict, agrees = probe.explained[key][s.label][d]
                    if not agrees:
                        c += "?"
                        disagree += 1
                    elif got == "refused" and verdict == paths.ALLOWED:
                        no_listener += 1
                cells.append(c)
            rows.append([s.label] + cells)
        output.table([key] + cols, rows, out)
        out.write("\n")
    return bad, disagree, no_listener


def probe(client: KubeClient, lab_dir: str, namespaces: list[str] | None, selector: str | None, ports: list[int],
          protocols: list[str], services: bool = False, timeout: float = 1.0, pod_targets: bool = True,
          sources: list[dict] | None = None, from_outside: bool = False, explain: bool = False,
          ingresses: bool = False) -> Probe:
    pods = running_pods(client, namespaces, selector)
    cells = [(p, 0) if p == "icmp" else (p, port) for p in protocols for port in (ports if p != "icmp" else [0])]
    if from_outside:
        srcs = [outside_source(lab_dir)]
        targets = outside_targets(client, namespaces)
        # the (proto, port) pairs the Services have, of the protocols (and ports) asked for
        cells = [k for k in sorted({k for t in targets.values() for k in t.ports})
                 if k[0] in protocols and (not ports or k[1] in ports)]
    else:
        srcs = [pod_source(lab_dir, p) for p in (sources if sources is not None else pods)]
        targets = {pod_label(p): Target(pod_label(p), p["status"]["podIP"]) for p in pods
                   if pod_targets and not p["spec"].get("hostNetwork")}
        if services:
            targets.update(service_targets(client, namespaces))
    plan = None
    if ingresses:
        plan = live.ingress_plan(client)
        svc = client.get_or_none("v1", "services", live.INGRESS_SERVICE[1], live.INGRESS_SERVICE[0]) or {}
        front = ([i["ip"] for i in (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
                  if i.get("ip")] if from_outside else [svc.get("spec", {}).get("clusterIP")] if svc else [])
        targets.update(ingress_targets(plan, [ip for ip in front if ip], namespaces))
        if ("tcp", 80) not in cells:
            cells.append(("tcp", 80))
    result = run_matrix(srcs, targets, cells, timeout)
    if plan is not None:
        proxies = running_pods(client, [live.INGRESS_SERVICE[0]], "app.kubernetes.io/name=trellis-ingress")
        resolve_upstream(result, targets, plan, pod_source(lab_dir, proxies[0]) if proxies else None, timeout)
    pr = Probe(result, srcs, targets, None, cells, ingress_plan=plan)
    if explain:
        world, pr.problems = live.world(client)
        pr.explained = explain_matrix(world, pr)
    else:
        pr.problems = live.load(client)[2]
    return pr


def cmd_probe(args, client: KubeClient, lab_dir: str) -> int:
    nss = [n for n in (args.namespaces or "").split(",") if n] or None
    protocols = [p.lower() for p in args.protocols.split(",")]
    for p in protocols:
        if p not in ("tcp", "udp", "sctp", "icmp"):
            raise ValueError(f"--protocols: {p!r} is not tcp, udp, sctp or icmp")
    if "sctp" in protocols:
        print("note: this kernel has no SCTP sockets; SCTP is checked in the ruleset, not probed", file=sys.stderr)
        protocols.remove("sctp")
    try:
        ports = [int(p) for p in args.ports.split(",") if p] if args.ports else []
    except ValueError:
        raise ValueError(f"--ports {args.ports!r}: comma-separated numbers, e.g. 80,81") from None
    if not ports and not args.from_outside:
        ports = [80]
    expected = None
    if args.expect:
        with open(args.expect) as f:
            expected = yaml.safe_load(f)
    pr = probe(client, lab_dir, nss, args.selector, ports, protocols, args.services, args.timeout,
               from_outside=args.from_outside, explain=args.explain, ingresses=args.ingresses)
    if args.output:
        doc = {"observed": pr.result, "notHonoured": pr.problems}
        if pr.explained is not None:
            doc["explained"] = {k: {s: {d: v[0] for d, v in row.items()} for s, row in tab.items()}
                                for k, tab in pr.explained.items()}
            doc["disagreements"] = [f"{k} {s} -> {d}" for k, tab in pr.explained.items() for s, row in tab.items()
                                    for d, v in row.items() if not v[1]]
        output.dump(doc, args.output)
        bad, disagree, _ = render(pr, expected, out=open(os.devnull, "w"))
    else:
        bad, disagree, no_listener = render(pr, expected)
        n = sum(len(r) for t in pr.result.values() for r in t.values())
        print(f"{n} connections probed ({LEGEND}"
              + (", '!' differs from the expectation" if expected else "")
              + (", '?' differs from trellis explain" if pr.explained is not None else "") + ")")
        if expected is not None:
            print(f"{bad} cells differ from {args.expect}")
        if pr.explained is not None:
            print(f"{disagree} cells where trellis explain disagrees with the probe"
                  f" ({no_listener} refused cells policy allows: no listener)")
    output.warn_not_honoured(pr.problems)
    return 1 if bad or disagree else 0


def add_parser(sub, common, client_for, lab_dir_for) -> None:
    pr = sub.add_parser("probe", help="reachability matrix: real connections between pods, Services, from outside",
                        description="Connect from inside every selected pod to every selected pod (and Service) "
                        "and print one truth table per port/protocol. " + LEGEND + ".")
    common(pr)
    pr.add_argument("--namespaces", help="comma-separated namespaces (default: all but kube-system)")
    pr.add_argument("-l", "--selector", help="only pods with these labels")
    pr.add_argument("--ports", help="comma-separated ports (default 80; with --from-outside: every Service port)")
    pr.add_argument("--protocols", default="tcp", help="comma-separated: tcp,udp,sctp,icmp (default tcp)")
    pr.add_argument("--services", action="store_true", help="also probe the Services of these namespaces")
    pr.add_argument("--from-outside", action="store_true",
                    help="probe from the lab's client namespace (outside the cluster) to every node's NodePorts "
                    "and every LoadBalancer IP")
    pr.add_argument("--ingresses", action="store_true",
                    help="also request every host/path the ingress controller serves, through its Service (the "
                    "ClusterIP from pods, the LoadBalancer IP with --from-outside): '.' an endpoint answered, 'r' no "
                    "rule or no ready endpoint, 'X'/'r'/'t' what the ingress pod's connection to the endpoints met")
    pr.add_argument("--timeout", type=float, default=1.0, help="seconds per connection (default 1)")
    pr.add_argument("--expect", help="YAML/JSON file {PROTO/PORT: {SRC: {DST: true|false|OUTCOME}}} to compare with")
    pr.add_argument("--explain", action="store_true", help="also compute every cell with trellis explain")
    pr.add_argument("-o", "--output", choices=["json", "yaml"])
    pr.set_defaults(fn=lambda a: cmd_probe(a, client_for(a), lab_dir_for(a)))
