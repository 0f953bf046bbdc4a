"""``trellis demo`` (and ``make demo``): a lab with the classic guestbook on it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Callable

import argparse

from trellis.cli import output
from trellis.cli import policy as pcli
from trellis.kube.client import ApiError, KubeClient
from trellis.kube.discovery import Discovery, apply
from trellis.lab import topology

EXAMPLES = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples"))


def guestbook_manifests() -> list[dict]:
    from trellis.cli.main import load_manifests
    return [d for f in ("redis-master.yaml", "redis-slave.yaml", "frontend.yaml")
            for d in load_manifests(os.path.join(EXAMPLES, "guestbook", f))]


def guestbook_policy() -> list[dict]:
    """examples/guestbook/policy.yaml, as a user applies it."""
    from trellis.cli.main import load_manifests
    return load_manifests(os.path.join(EXAMPLES, "guestbook", "policy.yaml"))


ROGUE = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rogue", "labels": {"app": "rogue"}},
         "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/e2e-test-images/agnhost:2.40"}]}}


def _short(label: str) -> str:
    return label.split("/", 1)[1] if label.startswith("default/") else label.replace("svc/default/", "svc/")


def _matrix(cfg, client: KubeClient, explain: bool = False):
    """The guestbook's probe matrix (pods x Services on 80 and 6379), with short labels."""
    from trellis.cli import probe
    pr = probe.probe(client, cfg.dir, ["default"], None, [80, 6379], ["tcp"], services=True, pod_targets=False,
                     sources=_guestbook_pods(client), explain=explain)
    for s in pr.sources:
        s.label = _short(s.label)
    pr.targets = {_short(k): probe.Target(_short(k), t.ip, t.ports) for k, t in pr.targets.items()}
    pr.result = {k: {_short(s): {_short(d): v for d, v in row.items()} for s, row in tab.items()}
                 for k, tab in pr.result.items()}
    if pr.explained is not None:
        pr.explained = {k: {_short(s): {_short(d): v for d, v in row.items()} for s, row in tab.items()}
                        for k, tab in pr.explained.items()}
    return pr


def _guestbook_pods(client: KubeClient) -> list[dict]:
    pods = [p for p in client.list("v1", "pods", "default")[0]
            if (p["metadata"].get("labels") or {}).get("app") in ("guestbook", "redis", "rogue")
            and p["status"].get("podIP") and not p["metadata"].get("deletionTimestamp")]
    return sorted(pods, key=lambda p: p["metadata"]["name"])


def _expected_after(srcs: list[str]) -> dict:
    """Who should reach what once the guestbook is protected (written by hand, not computed)."""
    want: dict = {"TCP/80": {}, "TCP/6379": {}}
    for s in srcs:
        tier = s.split("-")[0] if not s.startswith("redis-") else "-".join(s.split("-")[:2])
        want["TCP/80"][s] = {"svc/frontend": tier == "frontend"}
        # members of a group reach each other (the master its own Service, a replica the other replica)
        want["TCP/6379"][s] = {"svc/redis-master": tier in ("frontend", "redis-slave", "redis-master"),
                               "svc/redis-slave": tier in ("frontend", "redis-slave")}
    return want


def _without_policy(cfg, client: KubeClient, progress: Callable[[str], None], timeout: float = 15):
    """The matrix before the policy: on a second run the demo's policy is still there; it is taken
    away first (and waited out: every cell open) so the story is the same each time."""
    for obj in reversed(guestbook_policy()):
        api, plural = obj["apiVersion"], obj["kind"].lower() + "s"
        try:
            client.delete(api, plural, obj["metadata"]["name"], "default")
            progress(f"{obj['kind'].lower()}.trellis.dev/{obj['metadata']['name']} deleted (from an earlier run)")
        except ApiError as e:
            if e.code != 404:
                raise
    deadline = time.monotonic() + timeout
    while True:
        pr = _matrix(cfg, client)
        if all(v == "ok" for tab in pr.result.values() for row in tab.values() for v in row.values()) \
                or time.monotonic() > deadline:
            return pr
        time.sleep(0.3)


def protect_guestbook(cfg, client: KubeClient, progress: Callable[[str], None]) -> bool:
    """Probe, apply groups and contracts, probe again: the matrix a user needs to trust the policy."""
    from trellis.cli import probe
    disc = Discovery(client)
    try:
        client.create("v1", "pods", ROGUE, "default")
        progress("pod/rogue created (in no group: the attacker)")
    except ApiError as e:
        if e.code != 409:
            raise
    deadline = time.monotonic() + 60
    while not any(c.get("type") == "Ready" and c.get("status") == "True" for c in
                  client.get("v1", "pods", "rogue", "default").get("status", {}).get("conditions") or []):
        if time.monotonic() > deadline:
            raise topology.LabError("pod default/rogue did not become Ready in 60 s")
        time.sleep(0.2)
    before = _without_policy(cfg, client, progress)
    sys.stdout.write("\n$ trellis probe --namespaces default --ports 80,6379 --services   # before: no policy\n")
    probe.render(before)
    sys.stdout.write(probe.LEGEND + "\n")
    for obj in guestbook_policy():
        res, oname, what = apply(client, disc, obj, "default")
        progress(f"{res.display}/{oname} {what}")
    want = _expected_after([s.label for s in before.sources])
    t0 = time.monotonic()
    while True:
        after = _matrix(cfg, client, explain=True)
        bad = [1 for k, tab in want.items() for s, row in tab.items() for d, v in row.items()
               if k in after.result and s in after.result[k] and d in after.result[k][s]
               and not probe.meets(v, after.result[k][s][d])]
        if not bad or time.monotonic() - t0 > 10:
            break
        time.sleep(0.3)
    sys.stdout.write("\n$ trellis apply -f examples/guestbook/policy.yaml && trellis group ls && trellis contract ls\n")
    pcli.cmd_group(argparse.Namespace(action="ls", namespace="default", all_namespaces=False, output=None), client)
    sys.stdout.write("\n")
    pcli.cmd_contract(argparse.Namespace(action="ls", namespace="default", all_namespaces=False, output=None), client)
    sys.stdout.write("\n$ trellis probe --namespaces default --ports 80,6379 --services --explain"
                     "   # after ('!': unexpected, '?': explain disagrees)\n")
    nbad, disagree, _ = probe.render(after, want)
    sys.stdout.write(f"{disagree} cells where trellis explain disagrees with the probe\n")
    sys.stdout.write("\n$ trellis explain rogue svc/redis-master 6379/tcp\n")
    pcli.cmd_explain(argparse.Namespace(src="rogue", dst="svc/redis-master", port="6379/tcp", namespace="default",
                                        output=None), client)
    sys.stdout.write("\n$ trellis probe --from-outside --explain   # from the lab's client, every NodePort and the LB\n")
    outside = probe.probe(client, cfg.dir, ["default"], None, [], ["tcp"], from_outside=True, explain=True)
    obad, odis, _ = probe.render(outside)
    blocked = sum(1 for tab in outside.result.values() for row in tab.values() for v in row.values() if v != "ok")
    sys.stdout.write(f"{blocked} entry points that do not answer from outside, {odis} cells where explain disagrees\n")
    ok = not nbad and not disagree and not odis and not blocked
    sys.stdout.write(f"policy: {'as intended' if ok else 'NOT as intended'}\n")
    return ok


def wait_ready(client: KubeClient, ns: str, want: int, progress: Callable[[str], None],
               timeout: float = 120) -> list[dict]:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        pods = [p for p in client.list("v1", "pods", ns)[0]  # the Deployments' pods (not rogue)
                if (p["metadata"].get("labels") or {}).get("app") in ("guestbook", "redis")]
        ready = [p for p in pods if p["status"].get("phase") == "Running" and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])]
        msg = f"pods Running and Ready: {len(ready)}/{want}"
        if msg != last:
            progress(msg)
            last = msg
        if len(ready) >= want and len(pods) == want:
            return pods
        time.sleep(0.3)
    raise topology.LabError(f"timed out after {timeout:.0f}s waiting for {want} pods to be Ready in {ns}")


def print_table(client: KubeClient, path: str, wide: bool = True) -> None:
    r = client.http.get(path, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    output.server_table(r.json(), wide, False)


def client_get(cfg, url: str) -> str:
    """HTTP GET from the lab's client namespace (outside the cluster)."""
    p = subprocess.run(["ip", "netns", "exec", f"{cfg.name}-client", "curl", "-s", "-m", "3", url],
                       capture_output=True, text=True, timeout=10)
    return p.stdout


def replication_status(cfg, client: KubeClient, progress: Callable[[str], None], timeout: float = 30) -> None:
    """Wait until every redis replica has its link to the master up (redis delays the first
    full sync by repl-diskless-sync-delay, 5 s), and say so."""
    pods, _ = client.list("v1", "pods", "default", label_selector="role=slave")
    deadline = time.monotonic() + timeout
    for pod in pods:
        name = pod["metadata"]["name"]
        while True:
            p = subprocess.run([sys.executable, "-m", "trellis.cli.main", "exec", "--lab", cfg.name, name, "--",
                                "redis-cli", "info", "replication"], capture_output=True, text=True, timeout=20)
            info = dict(ln.strip().split(":", 1) for ln in p.stdout.splitlines() if ":" in ln)
            if info.get("master_link_status") == "up" or time.monotonic() > deadline:
                break
            progress(f"replica {name}: link to {info.get('master_host', '?')} is "
                     f"{info.get('master_link_status', '?')} (first sync)")
            time.sleep(1)
        progress(f"replica {name}: master_host={info.get('master_host')} link={info.get('master_link_status')}")


def guestbook_end_to_end(cfg, client: KubeClient, progress: Callable[[str], None]) -> None:
    """Store entries through every node's NodePort and the LoadBalancer IP, read them back,
    check replication, and go through a 127.0.0.1 port-forward: what a user would try."""
    from trellis.lab import portforward
    deadline = time.monotonic() + 30
    while True:
        svc = client.get("v1", "services", "frontend", "default")
        ingress = (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        if ingress or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    lb = ingress[0]["ip"] if ingress else None
    node_port = svc["spec"]["ports"][0].get("nodePort")
    nodes, _ = client.list("v1", "nodes")
    node_ips = sorted(a["address"] for n in nodes for a in n["status"].get("addresses") or []
                      if a["type"] == "InternalIP")
    replication_status(cfg, client, progress)
    entries = []
    rows = []
    targets = [(f"NodePort {ip}:{node_port}", f"http://{ip}:{node_port}") for ip in node_ips]
    if lb:
        targets.append((f"LoadBalancer {lb}:80", f"http://{lb}"))
    for label, base in targets:
        entries.append(f"hello-via-{label.split()[1].replace(':', '-')}")
        t0 = time.monotonic()
        ok = '"Updated"' in client_get(cfg, f"{base}/guestbook.php?cmd=set&key=messages&value="
                                       + ",".join(entries) + ",")
        rows.append((label, "stored" if ok else "FAILED", f"{(time.monotonic() - t0) * 1000:.0f} ms"))
    # replication is asynchronous (and starts streaming only after the replica's first ACK,
    # sent every second): read until the entries arrive, at most 5 s
    t0 = time.monotonic()
    while True:
        read = json.loads(client_get(cfg, f"{targets[-1][1]}/guestbook.php?cmd=get&key=messages") or "{}")
        got = [e for e in (read.get("data") or "").split(",") if e]
        if got == entries or time.monotonic() - t0 > 5:
            break
        time.sleep(0.2)
    sys.stdout.write("\n$ curl from the lab's client namespace (172.31.0.250), outside the cluster\n")
    output.table(["TARGET", "SET", "TIME"], rows)
    sys.stdout.write(f"read back through {targets[-1][0]} (served by a redis replica): "
                     f"{len(got)}/{len(entries)} entries {'OK' if got == entries else 'MISSING'}"
                     f" after {time.monotonic() - t0:.1f} s\n")
    fwd = portforward.open_forward(cfg.name, "default", "frontend", 0, 80).start()
    try:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{fwd.port}/guestbook.php?cmd=get&key=messages",
                                    timeout=5) as r:
            n = len([e for e in json.loads(r.read()).get("data", "").split(",") if e])
        sys.stdout.write(f"port-forward 127.0.0.1:{fwd.port} -> svc/frontend: {n} entries\n")
    except OSError as e:
        sys.stdout.write(f"port-forward 127.0.0.1:{fwd.port} -> svc/frontend: FAILED ({e})\n")
    finally:
        fwd.close()


def run(name: str, nodes: int, progress: Callable[[str], None]) -> int:
    if name in topology.list_labs():
        cfg = topology.load(name)
        if not all(topology.components(cfg).values()):
            progress(f"lab {name!r} exists but is degraded; recreating it")
            topology.down(name, force=True, progress=progress)
            cfg = topology.up(name, nodes, progress=progress)
        else:
            progress(f"using the running lab {name!r}")
    else:
        t0 = time.monotonic()
        cfg = topology.up(name, nodes, progress=progress)
        progress(f"lab up in {time.monotonic() - t0:.1f}s")
    client = cfg.client()
    disc = Discovery(client)
    docs = guestbook_manifests()
    for obj in docs:
        res, oname, what = apply(client, disc, obj, "default")
        progress(f"{res.display}/{oname} {what}")
    want = sum(d["spec"].get("replicas", 1) for d in docs if d["kind"] == "Deployment")
    t0 = time.monotonic()
    wait_ready(client, "default", want, progress)
    progress(f"all {want} pods Ready in {time.monotonic() - t0:.1f}s")
    out = sys.stdout
    out.write("\n$ trellis get pods -o wide\n")
    print_table(client, "/api/v1/namespaces/default/pods")
    out.write("\n$ trellis get svc\n")
    print_table(client, "/api/v1/namespaces/default/services", wide=False)
    guestbook_end_to_end(cfg, client, progress)
    ok = protect_guestbook(cfg, client, progress)
    sys.stdout.write("\nThe guestbook still works for its users, with the policy in place:\n")
    guestbook_end_to_end(cfg, client, progress)
    kc = cfg.kubeconfig
    out.write(f"""
Open the guestbook from this host (listens on 127.0.0.1 only; relays through the lab's client namespace):
  trellis port-forward --lab {name} svc/frontend 8080:80     # then browse http://127.0.0.1:8080/

Look further:
  export KUBECONFIG={kc}
  kubectl get nodes -o wide                      # the lab's {cfg.nodes} nodes
  kubectl describe pod -l tier=frontend          # or: trellis get pods -o yaml
  trellis --help; trellis lab status --name {name}
  trellis exec --lab {name} <pod> -- cat /etc/resolv.conf
  trellis probe --lab {name} --ports 80,6379 --services --explain    # the matrix, checked against explain
  trellis explain --lab {name} rogue svc/redis-master 6379/tcp
  trellis group ls --lab {name}; trellis contract ls --lab {name}
Tear down (removes every namespace, process and file of the lab):
  trellis lab down --name {name}
""")
    return 0 if ok else 1
