"""The ``trellis`` command: lab lifecycle, and kubectl-like verbs for users without kubectl."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import yaml

from trellis.cli import output
from trellis.kernel.netns import KernelError
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.discovery import Discovery, apply
from trellis.lab import topology

DEFAULT_LAB = "trellis"


def lab_name(args) -> str:
    """--lab/--name, else $TRELLIS_LAB, else the lab whose kubeconfig $KUBECONFIG is, else 'trellis'."""
    named = getattr(args, "lab", None) or os.environ.get("TRELLIS_LAB")
    if named:
        return named
    kubeconfig = getattr(args, "kubeconfig", None) or os.environ.get("KUBECONFIG")
    return (topology.lab_of_kubeconfig(kubeconfig) if kubeconfig else None) or DEFAULT_LAB


def progress(msg: str) -> None:
    sys.stderr.write(f"  {time.strftime('%H:%M:%S')}  {msg}\n")
    sys.stderr.flush()


def client_for(args) -> KubeClient:
    if getattr(args, "kubeconfig", None):
        return KubeClient.from_kubeconfig(args.kubeconfig)
    name = getattr(args, "lab", None) or os.environ.get("TRELLIS_LAB")
    if name is None and os.environ.get("KUBECONFIG"):
        return KubeClient.from_kubeconfig(os.environ["KUBECONFIG"])
    return topology.load(name or DEFAULT_LAB).client()


# ---- lab ----------------------------------------------------------------------

def cmd_lab_up(args) -> int:
    t0 = time.monotonic()
    cfg = topology.up(lab_name(args), args.nodes, args.cni, progress, args.timeout, args.routing)
    if args.isolation_mode != "cluster":
        set_isolation_mode(cfg.client(), args.isolation_mode)
        progress(f"isolation mode: {args.isolation_mode}")
    progress(f"lab {cfg.name!r} is up with {cfg.nodes} nodes in {time.monotonic() - t0:.1f}s")
    print(f"kubectl --kubeconfig {cfg.kubeconfig} get nodes -o wide")
    return 0


def set_isolation_mode(client: KubeClient, mode: str) -> None:
    """The cluster's trellis config, key isolationMode: ConfigMap trellis-config where the readers look
    first (trellis-system, else kube-system: names.CONFIG_NAMESPACES); made in kube-system when neither is."""
    from trellis.names import CONFIG_NAME, CONFIG_NAMESPACES
    for ns in CONFIG_NAMESPACES:
        try:
            client.patch("v1", "configmaps", CONFIG_NAME, {"data": {"isolationMode": mode}}, ns)
            return
        except ApiError as e:
            if e.code != 404:
                raise
    ns = CONFIG_NAMESPACES[-1]
    client.create("v1", "configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                       "metadata": {"name": CONFIG_NAME, "namespace": ns},
                                       "data": {"isolationMode": mode}}, ns)


def cmd_lab_down(args) -> int:
    names = topology.list_labs() if args.all else [lab_name(args)]
    if args.mine:
        names = [n for n in names if n in topology.labs_started_by(topology.this_installation())]
    for name in names:
        removed = topology.down(name, args.force, progress)
        progress(f"lab {name!r} removed ({len(removed)} namespaces and directories)")
    return 0


def cmd_lab_status(args) -> int:
    cfg = topology.load(lab_name(args))
    comps = topology.components(cfg)
    spaces = topology.owned_netns(cfg.name)
    info = {"name": cfg.name, "nodes": cfg.nodes, "cni": cfg.cni, "api": cfg.api_url,
            "kubeconfig": cfg.kubeconfig, "namespaces": len(spaces),
            "components": {k: {"pid": v, "running": v is not None} for k, v in comps.items()}}
    if args.output in ("json", "yaml"):
        output.dump(info, args.output)
        return 0
    up = all(v is not None for v in comps.values())
    print(f"lab {cfg.name}: {'up' if up else 'DEGRADED'}   nodes {cfg.nodes}   cni {cfg.cni}   api {cfg.api_url}")
    rows = []
    for comp, pid in comps.items():
        where = "root (127.0.0.1)" if comp == "apiserver" else (
            cfg.ns("master") if comp == "controller-manager"
            else cfg.ns(comp.split("-", 1)[1]))
        rows.append([comp, where, pid or "-", "running" if pid else "NOT RUNNING"])
    output.table(["COMPONENT", "NETNS", "PID", "STATUS"], rows)
    return 0 if up else 1


def cmd_lab_list(args) -> int:
    rows = []
    for name in topology.list_labs():
        cfg = topology.load(name)
        comps = topology.components(cfg)
        state = "up" if all(comps.values()) else "degraded"
        rows.append([name, cfg.nodes, cfg.cni, cfg.api_url, state])
    if rows:
        output.table(["NAME", "NODES", "CNI", "API", "STATE"], rows)
    else:
        print("no labs")
    return 0


def cmd_lab_kubeconfig(args) -> int:
    print(topology.load(lab_name(args)).kubeconfig)
    return 0


# ---- objects ------------------------------------------------------------------

def load_manifests(path: str) -> list[dict]:
    files = []
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith((".yaml", ".yml", ".json")))
    elif path == "-":
        files = ["-"]
    else:
        files = [path]
    docs = []
    for fn in files:
        text = sys.stdin.read() if fn == "-" else open(fn).read()
        try:
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                docs.extend(doc.get("items", []) if doc.get("kind", "").endswith("List") else [doc])
        except yaml.YAMLError as e:
            raise ValueError(f"{fn}: not valid YAML: {e}") from None
    return docs


def cmd_apply(args) -> int:
    client = client_for(args)
    disc = Discovery(client)
    rc = 0
    for obj in load_manifests(args.filename):
        try:
            res, name, what = apply(client, disc, obj, args.namespace or "default")
            print(f"{res.display}/{name} {what}")
        except (ApiError, ValueError) as e:
            print(f"error: {getattr(e, 'message', e)}", file=sys.stderr)
            rc = 1
    return rc


def cmd_get(args) -> int:
    client = client_for(args)
    disc = Discovery(client)
    res = disc.resolve(args.kind)
    ns = None if args.all_namespaces or not res.namespaced else (args.namespace or "default")
    from trellis.kube.client import resource_path
    path = resource_path(res.api_version, res.plural, ns, args.name)
    params = {"labelSelector": args.selector} if args.selector else None
    if args.output in ("yaml", "json"):
        doc = client.request("GET", path, params=params)
        if not args.name:
            doc = {"apiVersion": "v1", "kind": "List", "items": [
                dict(o, apiVersion=res.api_version, kind=res.kind) for o in doc.get("items", [])],
                "metadata": {"resourceVersion": ""}}
        output.dump(doc, args.output)
        return 0
    r = client.http.get(path, params=params, headers={
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    if r.status_code >= 400:
        raise ApiError(r.status_code, "", r.json().get("message", r.text))
    n = output.server_table(r.json(), args.output == "wide", args.all_namespaces and res.namespaced)
    if n == 0:
        where = "" if not res.namespaced or args.all_namespaces else f" in {ns} namespace"
        print(f"No resources found{where}.", file=sys.stderr)
    return 0


def cmd_delete(args) -> int:
    client = client_for(args)
    disc = Discovery(client)
    targets = []
    if args.filename:
        for obj in load_manifests(args.filename):
            res = disc.by_kind(obj["apiVersion"], obj["kind"])
            targets.append((res, obj["metadata"]["name"], obj["metadata"].get("namespace")))
    elif args.kind and args.names:
        res = disc.resolve(args.kind)
        targets = [(res, n, None) for n in args.names]
    else:
        print("error: give KIND NAME... or -f FILE", file=sys.stderr)
        return 2
    rc = 0
    for res, name, ns in targets:
        ns = (ns or args.namespace or "default") if res.namespaced else None
        if client.delete(res.api_version, res.plural, name, ns) is None:
            print(f'Error from server (NotFound): {res.plural} "{name}" not found', file=sys.stderr)
            rc = 1
        else:
            print(f'{res.display} "{name}" deleted')
    return rc


def cmd_exec(args) -> int:
    cfg = topology.load(lab_name(args))
    client = cfg.client()
    pod = client.get("v1", "pods", args.pod, args.namespace or "default")
    node, uid = pod["spec"].get("nodeName"), pod["metadata"]["uid"]
    pod_dir = os.path.join(cfg.dir, "nodes", node or "-", "pods", uid)
    containers = [c["name"] for c in pod["spec"]["containers"]]
    container = args.container or containers[0]
    try:
        with open(os.path.join(pod_dir, "sandbox.json")) as f:
            pid = json.load(f)["pid"]
        with open(os.path.join(pod_dir, f"{container}.env.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError, KeyError):
        print(f"error: pod {args.pod} has no running container {container!r} (is it Running?)", file=sys.stderr)
        return 1
    if not args.command:
        print("error: give a command after --", file=sys.stderr)
        return 2
    if not (meta.get("enter") or {}).get("pid") or not os.path.exists(f"/proc/{pid}/ns/net"):
        print(f"error: pod {args.pod} has no running container {container!r} (is it Running?)", file=sys.stderr)
        return 1
    # the container's namespaces (also for hostNetwork pods: never the one `trellis exec` runs in)
    # and its privileges
    from trellis.lab.kubelet.runtime import enter_argv
    argv = enter_argv(meta["enter"], args.command)
    import subprocess
    return subprocess.call(argv, env=meta["env"])


def cmd_logs(args) -> int:
    client = client_for(args)
    from trellis.kube.client import resource_path
    params = {k: v for k, v in (("container", args.container), ("tailLines", args.tail)) if v}
    text = client.request("GET", resource_path("v1", "pods", args.namespace or "default", args.pod, "log"),
                          params=params)
    sys.stdout.write(text if isinstance(text, str) else json.dumps(text))
    return 0


def cmd_port_forward(args) -> int:
    from trellis.lab import portforward
    kind, _, name = args.target.partition("/")
    if kind not in ("svc", "service", "services") or not name:
        raise ValueError(f"target {args.target!r}: use svc/NAME (a Service of type NodePort or LoadBalancer)")
    local, _, remote = args.ports.partition(":")
    if not local.isdigit() or not (remote or local).isdigit():
        raise ValueError(f"ports {args.ports!r}: use LOCAL:REMOTE, e.g. 8080:80")
    ns = args.namespace or kubeconfig_namespace(args)
    fwd = portforward.open_forward(lab_name(args), ns, name, int(local), int(remote or local))
    print(f"Forwarding from 127.0.0.1:{fwd.port} -> svc/{name} port {remote or local} "
          f"(via {fwd.target[0]}:{fwd.target[1]} from {fwd.netns}); Ctrl-C to stop", flush=True)
    try:
        fwd.serve()
    except KeyboardInterrupt:
        pass
    return 0


def kubeconfig_namespace(args) -> str:
    """The namespace of the kubeconfig's current context (as kubectl defaults -n), else 'default'."""
    path = getattr(args, "kubeconfig", None) or os.environ.get("KUBECONFIG")
    if not path:
        try:
            path = topology.load(lab_name(args)).kubeconfig
        except topology.LabError:
            return "default"
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f) or {}
        ctx = next(c["context"] for c in cfg.get("contexts") or [] if c["name"] == cfg.get("current-context"))
        return ctx.get("namespace") or "default"
    except (OSError, StopIteration, KeyError, TypeError, yaml.YAMLError):
        return "default"


def cmd_demo(args) -> int:
    from trellis.lab import demo
    return demo.run(lab_name(args), args.nodes, progress)


# ---- parser -------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trellis", description="trellis: Kubernetes pod networking with "
                                "policy-based security. A lab cluster runs on this machine in network namespaces.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def lab_arg(sp, flag="--lab"):
        # every command takes both spellings: `trellis lab up --name x` and `trellis demo --lab x`
        sp.add_argument("--lab", "--name", dest="lab",
                        help=f"lab name (default: $TRELLIS_LAB, the lab of $KUBECONFIG, or {DEFAULT_LAB!r})")

    lab = sub.add_parser("lab", help="create, inspect and remove lab clusters")
    lsub = lab.add_subparsers(dest="labcmd", required=True, metavar="LABCOMMAND")
    up = lsub.add_parser("up", help="start a lab cluster and wait until every node is Ready")
    lab_arg(up, "--name")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--cni", default="trellis", choices=list(topology.CNIS),
                    help="pod network: trellis (installed from its manifest, as on a cluster; default), none "
                         "(as kubeadm leaves a cluster: nodes NotReady until you `kubectl apply -f "
                         "deploy/trellis.yaml`), or Debian's reference bridge+host-local")
    up.add_argument("--routing", default="vxlan", choices=["vxlan", "direct"],
                    help="between nodes (trellis CNI): vxlan overlay (default) or direct routes on the underlay")
    up.add_argument("--timeout", type=float, default=120, help="seconds to wait for readiness")
    up.add_argument("--isolation-mode", default="cluster", choices=["cluster", "namespace", "deployment"],
                    help="policy isolation mode (ACI): cluster (Kubernetes default), namespace or deployment")
    up.set_defaults(fn=cmd_lab_up)
    dn = lsub.add_parser("down", help="remove a lab: processes, namespaces, files")
    lab_arg(dn, "--name")
    dn.add_argument("--force", action="store_true", help="also remove leftovers found by name when state is gone")
    dn.add_argument("--all", action="store_true", help="remove every lab on this machine")
    dn.add_argument("--mine", action="store_true", help="only labs this trellis installation (checkout) started")
    dn.set_defaults(fn=cmd_lab_down)
    st = lsub.add_parser("status", help="show a lab's components")
    lab_arg(st, "--name")
    st.add_argument("-o", "--output", choices=["json", "yaml"])
    st.set_defaults(fn=cmd_lab_status)
    ls = lsub.add_parser("list", help="list labs on this machine")
    ls.set_defaults(fn=cmd_lab_list)
    an = lsub.add_parser("add-node", help="a new node joins the lab")
    lab_arg(an, "--name")
    an.set_defaults(fn=lambda a: print(topology.add_node(lab_name(a), progress)) or 0)
    rn = lsub.add_parser("remove-node", help="a node leaves the lab (its Node object is deleted)")
    lab_arg(rn, "--name")
    rn.add_argument("node", help="e.g. node-2")
    rn.set_defaults(fn=lambda a: topology.remove_node(lab_name(a), a.node, progress) or 0)
    kc = lsub.add_parser("kubeconfig", help="print the path of the lab's kubeconfig")
    lab_arg(kc, "--name")
    kc.set_defaults(fn=cmd_lab_kubeconfig)

    def common(sp):
        lab_arg(sp)
        sp.add_argument("--kubeconfig", help="talk to the cluster of this kubeconfig instead of a lab")
        sp.add_argument("-n", "--namespace", help="namespace (default: default)")

    ap = sub.add_parser("apply", help="create or update objects from YAML/JSON files")
    common(ap)
    ap.add_argument("-f", "--filename", required=True, help="file, directory or - for stdin")
    ap.set_defaults(fn=cmd_apply)
    g = sub.add_parser("get", help="list objects as a table, or print them as YAML/JSON")
    common(g)
    g.add_argument("kind", help="pods, svc, deploy, nodes, netpol, ...")
    g.add_argument("name", nargs="?")
    g.add_argument("-A", "--all-namespaces", action="store_true")
    g.add_argument("-l", "--selector", help="label selector")
    g.add_argument("-o", "--output", choices=["wide", "yaml", "json"])
    g.set_defaults(fn=cmd_get)
    d = sub.add_parser("delete", help="delete objects by kind and name, or those in a file")
    common(d)
    d.add_argument("kind", nargs="?")
    d.add_argument("names", nargs="*")
    d.add_argument("-f", "--filename")
    d.set_defaults(fn=cmd_delete)
    ex = sub.add_parser("exec", help="run a command inside a lab pod; exits with its exit code")
    common(ex)
    ex.add_argument("pod")
    ex.add_argument("-c", "--container")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    ex.set_defaults(fn=cmd_exec)
    lg = sub.add_parser("logs", help="print a container's log")
    common(lg)
    lg.add_argument("pod")
    lg.add_argument("-c", "--container")
    lg.add_argument("--tail")
    lg.set_defaults(fn=cmd_logs)
    pf = sub.add_parser("port-forward", help="reach a lab Service from this host on 127.0.0.1:LOCAL")
    common(pf)
    pf.add_argument("target", help="svc/NAME")
    pf.add_argument("ports", help="LOCAL:REMOTE (the Service's port), e.g. 8080:80")
    pf.set_defaults(fn=cmd_port_forward)
    dm = sub.add_parser("demo", help="lab up + the guestbook application, and what to look at")
    lab_arg(dm)
    dm.add_argument("--nodes", type=int, default=3)
    dm.set_defaults(fn=cmd_demo)
    ag = sub.add_parser("agent", help="run the node agent (DaemonSet on a cluster; started by the lab)",
                        add_help=False)
    ag.add_argument("rest", nargs=argparse.REMAINDER)
    ag.set_defaults(fn=lambda a: __import__("trellis.agent.main", fromlist=["main"]).main(a.rest))
    co = sub.add_parser("controller", help="run the cluster controller (pod blocks, VTEP data)", add_help=False)
    co.add_argument("rest", nargs=argparse.REMAINDER)
    co.set_defaults(fn=lambda a: __import__("trellis.controller.main", fromlist=["main"]).main(a.rest))
    ig = sub.add_parser("ingress", help="run the ingress controller (haproxy; deployed by the lab)", add_help=False)
    ig.add_argument("rest", nargs=argparse.REMAINDER)
    ig.set_defaults(fn=lambda a: __import__("trellis.ingress.main", fromlist=["main"]).main(a.rest))
    from trellis.cli import policy as policy_cli
    policy_cli.add_parsers(sub, common, client_for, lambda a: topology.load(lab_name(a)).dir,
                           lambda a: topology.CLIENT_IP if lab_name(a) in topology.list_labs() else None)
    from trellis.cli import manifests
    manifests.add_parser(sub)
    v = sub.add_parser("version", help="print the version")
    v.set_defaults(fn=lambda a: print(__import__("trellis").__version__) or 0)
    return p


DAEMONS = {"agent": "trellis.agent.main", "controller": "trellis.controller.main", "ingress": "trellis.ingress.main"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] and argv[0] in DAEMONS:  # their own parsers, --help included
        return __import__(DAEMONS[argv[0]], fromlist=["main"]).main(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    try:
        return args.fn(args)
    except (topology.LabError, KernelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except ApiError as e:
        print(f"Error from server ({e.reason or e.code}): {e.message}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
