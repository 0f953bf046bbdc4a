"""Lab topology: namespaces, the underlay switch, and the lab's processes.

Everything lives in namespaces named ``<lab>-underlay``, ``<lab>-master``,
``<lab>-node-<i>``, ``<lab>-client`` (and pods ``<lab>-p-<hash>``). The only
thing in the root namespace is the API server's listener on 127.0.0.1.
State (SQLite, logs, pod dirs, IPAM, kubeconfig) is under one directory per
lab, so ``down`` can remove all of it, also after any process died with -9.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import yaml
from dataclasses import asdict, dataclass, field
from typing import Callable

from trellis.kernel import netns as kns
from trellis.kube.client import ApiError, KubeClient
from trellis.lab import pki
from trellis.lab.kubelet.cni import reference_conflist

STATE_ROOT = os.environ.get("TRELLIS_STATE_ROOT", "/var/lib/trellis/labs")
UNDERLAY = "172.31.0"
MASTER_IP = f"{UNDERLAY}.2"
CLIENT_IP = f"{UNDERLAY}.250"
API_PORT = 6443
POD_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"  # default/kubernetes: the first address of SERVICE_CIDR
LB_POOL = f"{UNDERLAY}.200-{UNDERLAY}.239"
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
Progress = Callable[[str], None]
# trellis: installed from its manifest as on a cluster; none: what kubeadm leaves before a CNI is
# applied (nodes NotReady, pods Pending); reference: Debian's bridge + host-local plugins
CNIS = ("trellis", "none", "reference")


class LabError(RuntimeError):
    pass


def node_ip(i: int) -> str:
    return f"{UNDERLAY}.{10 + i}"


def lab_dir(name: str) -> str:
    return os.path.join(STATE_ROOT, name)


@dataclass
class LabConfig:
    name: str
    nodes: int
    api_port: int
    cni: str = "trellis"
    routing: str = "vxlan"
    created: float = field(default_factory=time.time)
    node_ids: list[int] = field(default_factory=list)  # nodes may join and leave after up
    # the trellis installation (its package directory) that started the lab: `make lab-clean` in one
    # checkout removes only its own labs, never another user's on a shared machine
    started_by: str = field(default_factory=lambda: this_installation())

    def __post_init__(self) -> None:
        if not self.node_ids:
            self.node_ids = list(range(1, self.nodes + 1))

    @property
    def dir(self) -> str:
        return lab_dir(self.name)

    @property
    def kubeconfig(self) -> str:
        return os.path.join(self.dir, "kubeconfig")

    @property
    def api_url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    def client(self) -> KubeClient:
        """A client of the lab's API as its admin (the kubeconfig's client certificate)."""
        return KubeClient.from_kubeconfig(self.kubeconfig)

    def ns(self, role: str) -> str:
        return f"{self.name}-{role}"

    def node_names(self) -> list[str]:
        return [f"node-{i}" for i in self.node_ids]

    def save(self) -> None:
        with open(os.path.join(self.dir, "lab.json"), "w") as f:
            json.dump(asdict(self), f)


def load(name: str) -> LabConfig:
    try:
        with open(os.path.join(lab_dir(name), "lab.json")) as f:
            doc = json.load(f)
        doc.setdefault("started_by", "")  # a lab of an older trellis: nobody's own
        return LabConfig(**doc)
    except FileNotFoundError:
        raise LabError(f"no lab named {name!r} (looked in {lab_dir(name)}); start one with "
                       f"'trellis lab up --name {name}'") from None


def lab_of_kubeconfig(path: str) -> str | None:
    """The lab a kubeconfig belongs to: one under a lab's directory (what `trellis lab kubeconfig`
    prints), or one whose current context is a lab's name."""
    real = os.path.realpath(path)
    root = os.path.realpath(STATE_ROOT)
    if real.startswith(root + os.sep):
        name = os.path.relpath(real, root).split(os.sep)[0]
        if os.path.exists(os.path.join(root, name, "lab.json")):
            return name
    try:
        with open(path) as f:
            ctx = (yaml.safe_load(f) or {}).get("current-context")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return ctx if isinstance(ctx, str) and ctx in list_labs() else None


def this_installation() -> str:
    import trellis
    return os.path.dirname(os.path.abspath(trellis.__file__))


def labs_started_by(installation: str) -> list[str]:
    """The labs this trellis installation started (``lab down --all --mine``, ``make lab-clean``)."""
    mine = []
    for name in list_labs():
        try:
            if load(name).started_by == installation:
                mine.append(name)
        except (LabError, TypeError, ValueError):  # unreadable state: not provably ours
            pass
    return mine


def list_labs() -> list[str]:
    try:
        return sorted(d for d in os.listdir(STATE_ROOT) if os.path.exists(os.path.join(STATE_ROOT, d, "lab.json")))
    except FileNotFoundError:
        return []


def owned_netns(name: str) -> list[str]:
    """Namespaces that belong to lab ``name`` (exact shapes, so lab 'a' never takes lab 'a-b's)."""
    rx = re.compile(rf"^{re.escape(name)}-(underlay|master|client|node-\d+|p-[0-9a-f]{{10}})$")
    return [n for n in kns.list_names() if rx.match(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- processes ---------------------------------------------------------------

def _spawn(cfg: LabConfig, component: str, argv: list[str], netns: str | None = None,
           extra_env: dict[str, str] | None = None) -> int:
    logs = os.path.join(cfg.dir, "logs")
    os.makedirs(logs, exist_ok=True)
    os.makedirs(os.path.join(cfg.dir, "pids"), exist_ok=True)
    # NOTE: nsenter --net switches only the network namespace. `ip netns exec` would also
    # give the process a private mount namespace, and the pod namespaces a kubelet then
    # creates (bind mounts under /run/netns) would be invisible to everyone else.
    full = (["nsenter", f"--net={os.path.join(kns.NETNS_DIR, netns)}", "--"] if netns else []) + argv
    env = dict(os.environ, PYTHONUNBUFFERED="1", TRELLIS_LAB=cfg.name, **{MEMBER_ENV: cfg.name}, **(extra_env or {}))
    with open(os.path.join(logs, f"{component}.log"), "ab") as log:
        p = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, env=env, cwd=cfg.dir)
    with open(os.path.join(cfg.dir, "pids", f"{component}.pid"), "w") as f:
        f.write(str(p.pid))
    return p.pid


def components(cfg: LabConfig) -> dict[str, int | None]:
    out: dict[str, int | None] = {}
    pid_dir = os.path.join(cfg.dir, "pids")
    # (trellis itself runs as pods: kubectl get pods -n trellis-system)
    comps = ["apiserver", "controller-manager"] + [f"kubelet-{n}" for n in cfg.node_names()]
    for comp in comps:
        try:
            with open(os.path.join(pid_dir, f"{comp}.pid")) as f:
                pid = int(f.read())
            out[comp] = pid if _alive(pid) else None
        except (OSError, ValueError):
            out[comp] = None
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


# Every process a lab starts carries this in its environment, and its children inherit it
# (pod sandboxes too): lab down finds its processes by exact identity, never by a substring.
MEMBER_ENV = "TRELLIS_LAB_MEMBER"


def lab_pids(name: str, lab_dir_path: str) -> list[int]:
    """Processes of lab ``name``: ``TRELLIS_LAB_MEMBER=<name>`` exactly in /proc/PID/environ,
    or (processes of a lab started before the marker) an argument that is the lab's directory
    or a path under it, whole. Lab 'barrel' never matches lab 'barrelx'."""
    marker = f"{MEMBER_ENV}={name}".encode()
    d = lab_dir_path.rstrip("/").encode()
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    out.append(int(pid))
                    continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        for a in args:
            value = a.split(b"=", 1)[1] if a.startswith(b"--") and b"=" in a else a
            if value == d or value.startswith(d + b"/"):
                out.append(int(pid))
                break
    return out


def _kill(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _wait_gone(pids: list[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


# ---- up ---------------------------------------------------------------------

def _wire(cfg: LabConfig, member_ns: str, port: str, ip: str) -> tuple[list[str], list[str]]:
    """Commands for a veth from the underlay bridge to member_ns (eth0 with ip)."""
    under = [f"link add name {port} type veth peer name eth0 netns {member_ns}",
             f"link set {port} master br0 up"]
    member = ["link set lo up", f"addr add {ip}/24 dev eth0", "link set eth0 up"]
    return under, member


def node_sysctls(netns: str) -> None:
    """What the lab's nodes have set, as an admin sets a host: forwarding, and no per-destination
    limit on ICMP errors (Linux sends a destination one per second after a burst of six; a policy
    reject is one, and `trellis probe` of a whole namespace rejects a client many times at once).
    trellis itself changes neither; `trellis probe` retries timeouts to cope with the limit."""
    kns.sysctl(netns, "net.ipv4.ip_forward", "1")
    kns.sysctl(netns, "net.ipv4.icmp_ratelimit", "0")


MAX_PODS = 1000  # the lab API server's quota of sanity: a runaway replicas count stops here


def up(name: str, nodes: int = 3, cni: str = "trellis", progress: Progress = lambda s: None,
       timeout: float = 90, routing: str = "vxlan") -> LabConfig:
    if not NAME_RE.match(name):
        raise LabError(f"lab name {name!r}: must be 1-15 characters of a-z, 0-9 and '-', starting with a letter")
    if not 1 <= nodes <= 100:
        raise LabError(f"--nodes {nodes}: must be between 1 and 100")
    if cni not in CNIS:
        raise LabError(f"--cni {cni!r}: must be one of {', '.join(CNIS)}")
    if routing not in ("vxlan", "direct"):
        raise LabError(f"--routing {routing!r}: must be 'vxlan' or 'direct'")
    if os.path.exists(os.path.join(lab_dir(name), "lab.json")) or owned_netns(name):
        raise LabError(f"lab {name!r} already exists; run 'trellis lab down --name {name}' first")
    if os.geteuid() != 0:
        raise LabError("the lab needs root (it creates network namespaces)")
    cfg = LabConfig(name, nodes, free_port(), cni, routing)
    os.makedirs(cfg.dir, exist_ok=True)
    cfg.save()
    try:
        _build(cfg, progress, timeout)
    except BaseException:
        progress("lab up failed; removing what was created")
        down(name, force=True)
        raise
    return cfg


def _build(cfg: LabConfig, progress: Progress, timeout: float) -> None:
    t0 = time.monotonic()
    members = [("master", "to-master", MASTER_IP), ("client", "to-client", CLIENT_IP)]
    members += [(f"node-{i}", f"to-node-{i}", node_ip(i)) for i in range(1, cfg.nodes + 1)]
    progress(f"creating {len(members) + 1} network namespaces")
    for role in ["underlay"] + [m[0] for m in members]:
        kns.add(cfg.ns(role))
    under = ["link add br0 type bridge", "link set br0 up"]
    for role, port, ip in members:
        under += _wire(cfg, cfg.ns(role), port, ip)[0]
    # the veths must exist before their member ends can be addressed: underlay first
    kns.ip_batch(under, "wire the underlay switch", cfg.ns("underlay"))
    for role, port, ip in members:
        kns.ip_batch(_wire(cfg, cfg.ns(role), port, ip)[1], f"address {role} on the underlay", cfg.ns(role))
    for i in range(1, cfg.nodes + 1):
        node_sysctls(cfg.ns(f"node-{i}"))
    progress("making the lab's CA and certificates")
    ca = pki.LabPKI(cfg.dir)
    serving = ca.init(["127.0.0.1", MASTER_IP, KUBERNETES_SERVICE_IP])
    progress("starting the API server")
    py = sys.executable
    ready = os.path.join(cfg.dir, "apiserver.ready")
    _spawn(cfg, "apiserver", [py, "-m", "trellis.lab.apiserver.server", "--state-dir", cfg.dir,
                              "--listen", f"127.0.0.1:{cfg.api_port}",
                              "--tls-cert-file", serving.cert, "--tls-private-key-file", serving.key,
                              "--client-ca-file", ca.ca.cert, "--service-account-signing-key-file", ca.sa_key,
                              "--service-account-key-file", ca.sa_pub,
                              "--netns-listen", f"{cfg.ns('master')}={MASTER_IP}:{API_PORT}",
                              "--service-cidr", SERVICE_CIDR, "--ready-file", ready,
                              "--advertise-address", f"{MASTER_IP}:{API_PORT}",
                              "--max-pods", os.environ.get("TRELLIS_LAB_MAX_PODS", str(MAX_PODS))])
    # the other components start beside it and wait for its /readyz, as on a booting cluster:
    # their interpreters load while it does
    progress("starting the scheduler and controllers")
    # TRELLIS_NODE_MONITOR_GRACE: seconds without a kubelet Lease renewal before Ready is Unknown
    _spawn(cfg, "controller-manager", [py, "-m", "trellis.lab.controllermanager",
                                       "--kubeconfig", component_kubeconfig(cfg, "controller-manager",
                                                                            "system:kube-controller-manager"),
                                       "--root-ca-file", ca.ca.cert,
                                       "--node-monitor-grace-period", os.environ.get("TRELLIS_NODE_MONITOR_GRACE", "40")],
           cfg.ns("master"))
    progress(f"starting {cfg.nodes} kubelets (CNI: {cfg.cni})")
    for i in cfg.node_ids:
        start_kubelet(cfg, i)
    _wait(lambda: os.path.exists(ready), 20, "the API server to listen", cfg, "apiserver")
    write_kubeconfig(cfg)
    if cfg.cni == "trellis":
        progress("installing trellis from its manifest (trellis manifests = deploy/trellis.yaml)")
        apply_manifest(cfg, trellis_manifest(cfg) + "---\n" + LB_POOL_MANIFEST)  # one discovery for both
    client = cfg.client()
    want = set(cfg.node_names())

    def nodes_up() -> bool:
        try:
            items, _ = client.list("v1", "nodes")
        except ApiError:
            return False
        ready = {n["metadata"]["name"] for n in items if cfg.cni == "none" or (any(
            c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
            and (cfg.cni != "trellis" or n.get("spec", {}).get("podCIDR")))}
        line = f"nodes {'registered' if cfg.cni == 'none' else 'ready'}: {len(ready & want)}/{len(want)}"
        if line != shown[0]:
            progress(line)
            shown[0] = line
        return want <= ready
    shown = [""]
    try:
        _wait(nodes_up, max(timeout - (time.monotonic() - t0), 10),
              "all nodes to register" if cfg.cni == "none" else "all nodes to be Ready", cfg)
    finally:
        client.close()
    if cfg.cni == "none":
        progress("no CNI: the nodes stay NotReady and pods Pending until one is applied, as after kubeadm init: "
                 f"trellis manifests --api-server {MASTER_IP}:{API_PORT} | kubectl --kubeconfig {cfg.kubeconfig} "
                 "apply -f -")
    if cfg.cni == "trellis":
        progress("deploying cluster DNS (kube-system/kube-dns, 10.96.0.10) and the ingress controller "
                 "(kube-system/trellis-ingress, IngressClass trellis)")
        apply_manifest(cfg, "\n---\n".join(bundled(n) for n in ("dns.yaml", "ingress.yaml")))
        client = cfg.client()

        def ready(svc: str) -> Callable[[], bool]:
            def check() -> bool:
                items, _ = client.list("discovery.k8s.io/v1", "endpointslices", "kube-system",
                                       label_selector=f"kubernetes.io/service-name={svc}")
                return any((e.get("conditions") or {}).get("ready") for s in items for e in s.get("endpoints") or [])
            return check
        try:
            _wait(ready("kube-dns"), 60, "cluster DNS to be ready", cfg)
            _wait(ready("trellis-ingress"), 60, "the ingress controller to be ready", cfg)
        finally:
            client.close()


def trellis_manifest(cfg: LabConfig) -> str:
    """deploy/trellis.yaml for this lab: what a user renders for a kubeadm cluster, with the lab's
    API server address (trellis is its own service proxy, so it does not reach the API through the
    kubernetes ClusterIP) and routing mode."""
    from trellis.manifests.options import Options
    from trellis.manifests.render import render
    return render(Options(pod_cidr=POD_CIDR, service_cidr=SERVICE_CIDR, routing=cfg.routing,
                          api_server=f"{MASTER_IP}:{API_PORT}"))


LB_POOL_MANIFEST = f"""apiVersion: trellis.dev/v1alpha1
kind: IPPool
metadata:
  name: lab-default
spec:
  addresses: ["{LB_POOL}"]
  autoAssign: true
"""


def bundled(name: str) -> str:
    """One of trellis' bundled manifests (src/trellis/manifests/<name>)."""
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "manifests", name)) as f:
        return f.read()


def apply_manifest(cfg: LabConfig, name_or_text: str) -> None:
    """Apply one of trellis' bundled manifests (src/trellis/manifests/<name>) or YAML text."""
    from trellis.kube.discovery import Discovery, apply
    text = name_or_text if "\n" in name_or_text else bundled(name_or_text)
    client = cfg.client()
    disc = Discovery(client)
    try:
        for obj in yaml.safe_load_all(text):
            if obj:
                for _ in range(50):  # a CRD's resource appears in discovery right after its creation
                    try:
                        apply(client, disc, obj, "default")
                        break
                    except (ApiError, KeyError, LookupError):
                        disc = Discovery(client)
                        time.sleep(0.1)
                else:
                    apply(client, disc, obj, "default")
    finally:
        client.close()


def node_dir(cfg: LabConfig, node: str) -> str:
    return os.path.join(cfg.dir, "nodes", node)


# what every Linux host has before anything is installed on it (so that a hostPath of a DaemonSet
# finds /var/lib and /run, and an uninstall can be checked against what the node had)
HOST_DIRS = ("etc/cni/net.d", "opt/cni/bin", "run", "tmp", "var/lib", "var/log")


def node_root(cfg: LabConfig, node: str) -> str:
    """The node's view of the host: where its hostPath volumes live (kubelet.volumes.node_path)."""
    return os.path.join(node_dir(cfg, node), "root")


def seed_node_root(cfg: LabConfig, node: str) -> None:
    for d in HOST_DIRS:
        os.makedirs(os.path.join(node_root(cfg, node), d), exist_ok=True)


def agent_state_dir(cfg: LabConfig, node: str) -> str:
    """The trellis agent's --state-dir (a hostPath in deploy/trellis.yaml) as the machine sees it."""
    from trellis.manifests.workloads import AGENT_STATE
    return os.path.join(node_root(cfg, node), AGENT_STATE.lstrip("/"))


def cni_conf_dir(cfg: LabConfig, node: str) -> str:
    return os.path.join(node_root(cfg, node), "etc", "cni", "net.d")


def cni_bin_dirs(cfg: LabConfig, node: str) -> list[str]:
    """The node's /opt/cni/bin (where trellis-install-cni puts ``trellis``), then Debian's plugins."""
    d = os.path.join(node_root(cfg, node), "opt", "cni", "bin")
    os.makedirs(d, exist_ok=True)
    return [d, "/usr/lib/cni"]


def cni_interpreter() -> str:
    """Moved to trellis.cni.install (product code: the DaemonSet's installer writes the plugin too)."""
    from trellis.cni.install import cni_interpreter as interpreter
    return interpreter()


def write_cni_launcher(path: str) -> None:
    """Moved to trellis.cni.install.write_launcher."""
    from trellis.cni.install import write_launcher
    write_launcher(path)


def write_conflist(cfg: LabConfig, i: int) -> str:
    """The node's CNI config dir; with --cni reference, Debian's bridge conflist in it (trellis writes
    its own from its DaemonSet's init container; none leaves it empty: the node stays NotReady)."""
    node = f"node-{i}"
    seed_node_root(cfg, node)
    conf_dir = cni_conf_dir(cfg, node)
    if cfg.cni == "reference":
        conf = reference_conflist(f"{cfg.name}-pods", f"10.244.{i}.0/24", os.path.join(node_dir(cfg, node), "ipam"))
        with open(os.path.join(conf_dir, "10-bridge.conflist"), "w") as f:
            json.dump(conf, f, indent=2)
    return conf_dir


def start_kubelet(cfg: LabConfig, i: int) -> None:
    node = f"node-{i}"
    conf_dir = write_conflist(cfg, i)
    _spawn(cfg, f"kubelet-{node}", [sys.executable, "-m", "trellis.lab.kubelet.kubelet", "--lab", cfg.name,
                                    "--node", node, "--node-ip", node_ip(i),
                                    "--kubeconfig", component_kubeconfig(cfg, f"kubelet-{node}", f"system:node:{node}",
                                                                         ("system:nodes",)),
                                    "--state-dir", cfg.dir,
                                    "--cni-conf-dir", conf_dir, "--cni-bin-dir", ":".join(cni_bin_dirs(cfg, node))],
           cfg.ns(node))


def _wait(cond: Callable[[], bool], timeout: float, what: str, cfg: LabConfig, component: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if component and components(cfg).get(component) is None:
            break
        time.sleep(0.05)
    hint = f"; see {os.path.join(cfg.dir, 'logs', (component or 'apiserver') + '.log')}"
    raise LabError(f"timed out waiting for {what}{hint}")


def component_kubeconfig(cfg: LabConfig, component: str, user: str, groups: tuple[str, ...] = ()) -> str:
    """A lab component's kubeconfig (mode 0600): the in-lab secure port, a client certificate of
    its own name and nothing more: the controller-manager has its ClusterRole, a kubelet what the
    Node authorizer allows its node (docs/security.md)."""
    ca = pki.LabPKI(cfg.dir)
    pair = ca.client(component, user, groups)
    return pki.kubeconfig(os.path.join(ca.dir, f"{component}.kubeconfig"), cfg.name, f"https://{MASTER_IP}:{API_PORT}",
                          ca.ca.cert, pair)


def write_kubeconfig(cfg: LabConfig) -> str:
    """The admin's kubeconfig (mode 0600): the lab CA and a client certificate in system:masters."""
    ca = pki.LabPKI(cfg.dir)
    admin = ca.client("admin", "kubernetes-admin", ("system:masters",))
    return pki.kubeconfig(cfg.kubeconfig, cfg.name, cfg.api_url, ca.ca.cert, admin)


# ---- nodes joining and leaving ------------------------------------------------------

def add_node(name: str, progress: Progress = lambda s: None, timeout: float = 30) -> str:
    """A new node joins: namespace, underlay port, kubelet (and trellis' agent, from its DaemonSet);
    returns its name once Ready."""
    cfg = load(name)
    i = max(cfg.node_ids, default=0) + 1
    if 10 + i >= 200:
        raise LabError("no underlay address left for another node (172.31.0.200+ is the LoadBalancer pool)")
    node = f"node-{i}"
    kns.add(cfg.ns(node))
    u, m = _wire(cfg, cfg.ns(node), f"to-{node}", node_ip(i))
    kns.ip_batch(u, f"wire {node} to the underlay", cfg.ns("underlay"))
    kns.ip_batch(m, f"address {node} on the underlay", cfg.ns(node))
    node_sysctls(cfg.ns(node))
    cfg.node_ids.append(i)
    cfg.nodes = len(cfg.node_ids)
    cfg.save()
    start_kubelet(cfg, i)  # trellis' agent comes as its DaemonSet's pod
    client = cfg.client()

    def ready() -> bool:
        n = client.get_or_none("v1", "nodes", node)
        return bool(n and n.get("spec", {}).get("podCIDR") or cfg.cni != "trellis") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in (n or {}).get("status", {}).get("conditions", []))
    _wait(ready, timeout, f"{node} to be Ready", cfg, f"kubelet-{node}")
    progress(f"{node} joined at {node_ip(i)}")
    return node


def remove_node(name: str, node: str, progress: Progress = lambda s: None) -> None:
    """A node leaves for good: its processes and namespace go, and its Node object is deleted."""
    cfg = load(name)
    if node not in cfg.node_names():
        raise LabError(f"lab {name!r} has no node {node!r} (it has {', '.join(cfg.node_names())})")
    i = int(node.split("-")[1])
    pids = []
    for comp in (f"kubelet-{node}",):
        pid = components(cfg).get(comp)
        if pid:
            pids.append(pid)
    _kill(pids, signal.SIGTERM)
    _kill(_wait_gone(pids, 15), signal.SIGKILL)
    for pid in kns.pids(cfg.ns(node)):
        _kill([pid], signal.SIGKILL)
    client = cfg.client()
    for pod in client.list("v1", "pods", field_selector=f"spec.nodeName={node}")[0]:
        client.delete("v1", "pods", pod["metadata"]["name"], pod["metadata"]["namespace"], grace_period=0)
    client.delete("v1", "nodes", node)
    kns.delete(cfg.ns(node))
    cfg.node_ids.remove(i)
    cfg.nodes = len(cfg.node_ids)
    cfg.save()
    for f in (f"kubelet-{node}.pid",):
        try:
            os.unlink(os.path.join(cfg.dir, "pids", f))
        except FileNotFoundError:
            pass
    progress(f"{node} left; its Node object is deleted")


# ---- down -------------------------------------------------------------------

def down(name: str, force: bool = False, progress: Progress = lambda s: None) -> list[str]:
    """Remove every process, namespace and file of lab ``name``. Returns what was removed."""
    d = lab_dir(name)
    if not force and not os.path.exists(os.path.join(d, "lab.json")):
        raise LabError(f"no lab named {name!r}; use --force to remove leftovers by name")
    removed: list[str] = []
    pids: list[int] = []
    pid_dir = os.path.join(d, "pids")
    kubelets = []
    if os.path.isdir(pid_dir):
        for fn in os.listdir(pid_dir):
            try:
                with open(os.path.join(pid_dir, fn)) as f:
                    pid = int(f.read())
            except (OSError, ValueError):
                continue
            if _alive(pid):
                (kubelets if fn.startswith("kubelet-") else pids).append(pid)
    if kubelets:  # let kubelets stop their pods (CNI DEL) before everything else
        progress(f"stopping {len(kubelets)} kubelets and their pods")
        _kill(kubelets, signal.SIGTERM)
        _kill(_wait_gone(kubelets, 20), signal.SIGKILL)
    # whatever still runs in the lab's namespaces (orphans of a kubelet killed with -9)
    spaces = owned_netns(name)
    for ns in spaces:
        pids += kns.pids(ns)
    pids += lab_pids(name, d)  # also after a crash took the directory: the marker finds them
    pids = sorted(set(pids))
    if pids:
        progress(f"stopping {len(pids)} processes")
        _kill(pids, signal.SIGTERM)
        _kill(_wait_gone(pids, 3), signal.SIGKILL)
        _wait_gone(pids, 3)
    for ns in owned_netns(name):
        for pid in kns.pids(ns):
            _kill([pid], signal.SIGKILL)
        kns.delete(ns)
        removed.append(f"netns {ns}")
    if spaces:
        progress(f"removed {len(spaces)} network namespaces")
    if os.path.isdir(d):
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"dir {d}")
    return removed
