"""Resource usage of the node's pods, for the lab's metrics.k8s.io API (``kubectl top``).

A real kubelet reads each container's cgroup. On this machine cgroups are v1
and managed by the host's own sandbox (the lab must not create or move
processes between them), so the lab kubelet measures what the cgroup would
hold from ``/proc``: every container is started as its own session
(``start_new_session``), so the processes of a container are those whose session
id is the container's pid, children included. CPU is the rate of their
utime+stime between two samples (nanocores, as the Summary API reports it), memory
their resident set (the working set a cgroup's ``memory.current`` minus page
cache would show, near enough for a process without file mappings).

Every ``INTERVAL`` seconds the kubelet writes ``<node dir>/stats.json``; the API
server serves it (the same file-backed hand-off as pod logs).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trellis.lab.kubelet.kubelet import Kubelet

log = logging.getLogger("trellis.kubelet.stats")
INTERVAL = 5.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def sessions() -> dict[int, tuple[int, int]]:
    """session id -> (CPU ticks, resident bytes) summed over its live processes."""
    out: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone while we looked
        # after the command: state(0) ppid(1) pgrp(2) session(3) ... utime(11) stime(12) ... rss(21)
        sid, ticks, rss = int(fields[3]), int(fields[11]) + int(fields[12]), int(fields[21]) * PAGE
        acc = out.setdefault(sid, [0, 0])
        acc[0] += ticks
        acc[1] += rss
    return {k: (v[0], v[1]) for k, v in out.items()}


class StatsCollector(threading.Thread):
    def __init__(self, kubelet: "Kubelet") -> None:
        super().__init__(daemon=True, name="stats")
        self.k = kubelet
        self.path = os.path.join(kubelet.node_dir, "stats.json")
        self.prev: dict[tuple[str, str, int], tuple[int, float]] = {}  # (uid, container, pid) -> (ticks, when)

    def sample(self) -> dict:
        now = time.time()
        by_session = sessions()
        with self.k.lock:
            workers = list(self.k.workers.values())
        pods, seen = {}, {}
        node_cpu = node_mem = 0
        for w in workers:
            containers = {}
            for r in list(w.runs):
                pid = r.container.pid if r.container is not None and r.container.poll() is None else None
                if pid is None:
                    continue
                ticks, rss = by_session.get(pid, (0, 0))
                key = (w.uid, r.spec["name"], pid)
                last = self.prev.get(key)
                seen[key] = (ticks, now)
                if last is None or now <= last[1]:
                    continue  # the first sample of a container has no rate yet
                cores = (ticks - last[0]) / CLK_TCK / (now - last[1])
                containers[r.spec["name"]] = {"cpu": int(max(cores, 0) * 1e9), "memory": rss}
            if containers:
                pods[w.uid] = {"namespace": w.ns, "name": w.name, "containers": containers}
                node_cpu += sum(c["cpu"] for c in containers.values())
                node_mem += sum(c["memory"] for c in containers.values())
        self.prev = seen
        return {"timestamp": now, "window": INTERVAL, "node": {"cpu": node_cpu, "memory": node_mem}, "pods": pods}

    def write(self, doc: dict) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, self.path)  # readers never see half a file

    def run(self) -> None:
        while not self.k.stop.wait(INTERVAL if self.prev else 1.0):
            try:
                self.write(self.sample())
            except OSError as e:
                log.info("stats: %s", e)
