"""What the benchmarks share: percentiles and the markdown table written to docs/."""
from __future__ import annotations

import os
import time

DOCS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def rss_mib() -> float:
    """This process's resident memory, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_markdown(name: str, title: str, script: str, about: str, headers: list[str], rows) -> None:
    """docs/<name>: a title, how and when it was produced, and the rows as a table."""
    out = os.path.join(DOCS, name)
    with open(out, "w") as f:
        f.write(f"# {title}\n\nProduced by `sudo .venv/bin/python bench/{script}` on {time.strftime('%Y-%m-%d')}, "
                f"{os.cpu_count()} cores. {about}\n\n| " + " | ".join(headers) + " |\n|---|"
                + "---:|" * (len(headers) - 2) + ("---|" if headers[-1] == "note" else "---:|") + "\n")
        for r in rows:
            f.write("| " + " | ".join(r) + " |\n")
    print(f"written to {os.path.normpath(out)}")
