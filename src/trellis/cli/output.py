"""Output a user reads: aligned tables like kubectl's, or JSON/YAML with -o."""
from __future__ import annotations

import json
import sys
from typing import Any, Iterable, TextIO

import yaml


def table(headers: list[str], rows: Iterable[list[Any]], out: TextIO | None = None) -> None:
    out = out or sys.stdout  # NOTE: looked up per call (a default would pin the stdout of import time)
    rows = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    for r in [headers] + rows:
        out.write("   ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip() + "\n")


def server_table(doc: dict, wide: bool, with_namespace: bool, out: TextIO | None = None) -> int:
    """Print a meta.k8s.io Table as kubectl does; returns the row count."""
    cols = [(i, c) for i, c in enumerate(doc.get("columnDefinitions", [])) if wide or c.get("priority", 0) == 0]
    headers = [c["name"].upper() for _, c in cols]
    rows = []
    for r in doc.get("rows", []):
        cells = [r["cells"][i] for i, _ in cols]
        if with_namespace:
            cells = [((r.get("object") or {}).get("metadata") or {}).get("namespace", "")] + cells
        rows.append(cells)
    if with_namespace:
        headers = ["NAMESPACE"] + headers
    if rows:
        table(headers, rows, out)
    return len(rows)


def dump(obj: Any, fmt: str, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        out.write(json.dumps(obj, indent=4) + "\n")
    else:
        out.write(yaml.safe_dump(obj, sort_keys=False, default_flow_style=False))


def warn_not_honoured(problems: Iterable[str]) -> None:
    """What trellis cannot honour as written (``policy.audit``), on stderr, one line each."""
    for p in problems:
        sys.stderr.write(f"warning: not honoured: {p}\n")
