"""nftables: every change is one ``nft -f -`` transaction, applied atomically by the kernel."""
from __future__ import annotations

import json
import subprocess

from trellis.kernel.netns import KernelError


class NftError(KernelError):
    pass


def apply(script: str, step: str, netns: str | None = None) -> None:
    """Run a script as one transaction; on error nothing of it is applied."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + ["nft", "-f", "-"]
    p = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        where = f" in netns {netns}" if netns else ""
        raise NftError(f"nft {step}{where}: {p.stderr.strip()}")


def list_table(family: str, table: str, netns: str | None = None) -> dict | None:
    """The table as nft's JSON, or None when it does not exist."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + ["nft", "-j", "list", "table", family, table]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if p.returncode != 0:
        return None
    return json.loads(p.stdout)


def set_elements(family: str, table: str, set_name: str, netns: str | None = None) -> list:
    doc = list_table(family, table, netns) or {"nftables": []}
    for item in doc["nftables"]:
        s = item.get("set")
        if s and s.get("name") == set_name:
            return s.get("elem", [])
    return []
