"""Where a running pod's container lives on this machine, for exec, attach and port-forward.

The lab API server runs on the same machine as every kubelet, so instead of
proxying to a kubelet's streaming server it reads what the kubelet recorded for
the pod (``sandbox.json``: the pid holding the pod's namespaces; ``<c>.env.json``:
the container's environment, working directory and how to enter it) and enters the
container itself (its namespaces and privileges), as `trellis exec` does. The API stays the one kubectl talks to; only
the last hop is shorter than on a real cluster.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from trellis.lab.apiserver import errors
from trellis.lab.kubelet.runtime import enter_argv


@dataclass(frozen=True)
class PodTarget:
    pid: int  # the sandbox process: its network namespace is the pod's
    env: dict[str, str]
    cwd: str
    entry: dict  # the container's first process and privileges (runtime.enter_argv)
    pod_dir: str = ""  # the kubelet's directory of the pod: the container's log, its stdin FIFO

    @property
    def netns_path(self) -> str:
        return f"/proc/{self.pid}/ns/net"

    def enter_argv(self, argv: list[str], tty: bool = False) -> list[str]:
        # NOTE: -n also for hostNetwork pods: their container lives in the node's namespace, and the
        # command must run there, never in the API server's (the host's) namespace.
        return enter_argv(self.entry, argv, tty)


def container_name(pod: dict, requested: str | None) -> str:
    names = [c["name"] for c in pod["spec"].get("containers") or []]
    if requested:
        if requested not in names:
            raise errors.bad_request(f"container {requested} is not valid for pod {pod['metadata']['name']}")
        return requested
    if not names:
        raise errors.bad_request(f"pod {pod['metadata']['name']} has no containers")
    return names[0]


def locate(pod: dict, container: str, state_dir: str, verb: str = "exec into") -> PodTarget:
    md = pod["metadata"]
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        raise errors.bad_request(f"cannot {verb} a container in a completed pod; current phase is {phase}")
    pod_dir = os.path.join(state_dir, "nodes", pod["spec"].get("nodeName") or "-", "pods", md["uid"])
    try:
        with open(os.path.join(pod_dir, "sandbox.json")) as f:
            pid = int(json.load(f)["pid"])
        with open(os.path.join(pod_dir, f"{container}.env.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError, KeyError, TypeError):
        raise errors.bad_request(f'container "{container}" in pod "{md["name"]}" is not running '
                                 "(no sandbox on its node yet)") from None
    entry = meta.get("enter") or {}
    if not os.path.exists(f"/proc/{pid}/ns/net") or not entry.get("pid") or not os.path.exists(
            f"/proc/{entry['pid']}/ns/mnt"):
        raise errors.bad_request(f'container "{container}" in pod "{md["name"]}" is not running')
    return PodTarget(pid, dict(meta.get("env") or {}), meta.get("cwd") or "/", entry, pod_dir)
