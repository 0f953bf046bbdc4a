"""``trellis demo`` (and ``make demo``): a lab with the classic guestbook on it."""
from __future__ import annotations

import os
import sys
import time
from typing import Callable

from trellis.cli import output
from trellis.kube.client import KubeClient
from trellis.kube.discovery import Discovery, apply
from trellis.lab import topology

EXAMPLES = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples"))


def guestbook_manifests() -> list[dict]:
    from trellis.cli.main import load_manifests
    return load_manifests(os.path.join(EXAMPLES, "guestbook"))


def wait_ready(client: KubeClient, ns: str, want: int, progress: Callable[[str], None],
               timeout: float = 120) -> list[dict]:
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        pods, _ = client.list("v1", "pods", ns)
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
    client = KubeClient(cfg.api_url)
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
    kc = cfg.kubeconfig
    out.write(f"""
Look further:
  export KUBECONFIG={kc}
  kubectl get nodes -o wide                      # the lab's {cfg.nodes} nodes
  kubectl describe pod -l tier=frontend          # or: trellis get pods -o yaml
  trellis --help; trellis lab status --name {name}
  trellis exec --lab {name} <pod> -- cat /etc/resolv.conf
Tear down (removes every namespace, process and file of the lab):
  trellis lab down --name {name}
""")
    return 0
