"""Network namespaces: create, delete, list, enter; and running ``ip`` with context.

``in_netns`` switches the *calling thread* (setns only affects one thread), for
short moments: opening a socket that then belongs to the namespace (netlink, a
listener), or a /proc/sys file. Everything else runs commands with ``ip -n``/
``ip netns exec``.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from typing import Iterator, Sequence

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNS = 0x00020000
NETNS_DIR = "/run/netns"
_libc = ctypes.CDLL(None, use_errno=True)


class KernelError(RuntimeError):
    """A kernel operation failed; the message says which step, object and namespace."""


def setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


@contextlib.contextmanager
def in_netns(name: str | None) -> Iterator[None]:
    """Run the body with this thread in network namespace ``name`` (a name or a path; None: stay)."""
    if not name:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(name if name.startswith("/") else os.path.join(NETNS_DIR, name), os.O_RDONLY)
    except FileNotFoundError:
        os.close(own)
        raise KernelError(f"enter netns {name}: no such network namespace") from None
    try:
        setns(target, CLONE_NEWNET)
        yield
    finally:
        setns(own, CLONE_NEWNET)
        os.close(target)
        os.close(own)


NS_GET_NSTYPE = 0xB703  # ioctl(2) on a namespace file: which kind it is (Linux 4.11)


def netns_path_problem(path: str) -> str | None:
    """Why ``path`` is not a network namespace file (None when it is). Never blocks: a FIFO,
    a socket or a device is refused from its mode before anything opens it, and the file is
    opened non-blocking; the kernel then says what kind of namespace it is."""
    import fcntl
    import stat
    try:
        st = os.stat(path)
    except ValueError:  # a NUL byte
        return f"{path!r} is not a path"
    except OSError as e:
        return f"{path}: {e.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a namespace file (it is a {_kind(st.st_mode)})"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        return f"{path}: {e.strerror}"
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError:
        return f"{path} is not a namespace file"
    finally:
        os.close(fd)
    return None if kind == CLONE_NEWNET else f"{path} is a namespace but not a network namespace"


def _kind(mode: int) -> str:
    import stat
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def list_names(prefix: str = "") -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def run(cmd: Sequence[str], step: str, netns: str | None = None, check: bool = True,
        input: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a command (in ``netns`` if given); failures raise KernelError naming the step."""
    full = list(cmd) if netns is None else ["ip", "netns", "exec", netns, *cmd]
    p = subprocess.run(full, capture_output=True, text=True, input=input, timeout=timeout)
    if check and p.returncode != 0:
        where = f" in netns {netns}" if netns else ""
        raise KernelError(f"{step}{where}: {' '.join(cmd)}: {p.stderr.strip() or p.stdout.strip()}")
    return p


def ip_batch(lines: Sequence[str], step: str, netns: str | None = None, force: bool = False) -> None:
    """Run many ``ip`` commands in one process (``ip -batch``), far faster than one each."""
    if not lines:
        return
    cmd = ["ip"] + (["-n", netns] if netns else []) + (["-force"] if force else []) + ["-batch", "-"]
    p = subprocess.run(cmd, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
    if p.returncode != 0 and not force:
        where = f" in netns {netns}" if netns else ""
        raise KernelError(f"{step}{where}: {p.stderr.strip()}")


def add(name: str) -> None:
    if not exists(name):
        run(["ip", "netns", "add", name], f"create netns {name}")
    run(["ip", "-n", name, "link", "set", "lo", "up"], f"bring up lo in netns {name}")


def delete(name: str) -> None:
    """Delete a namespace; a missing one is success (ensure semantics)."""
    if exists(name):
        p = run(["ip", "netns", "del", name], f"delete netns {name}", check=False)
        if p.returncode != 0 and exists(name):
            raise KernelError(f"delete netns {name}: {p.stderr.strip()}")


def pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name`` (compares namespace inodes)."""
    try:
        st = os.stat(os.path.join(NETNS_DIR, name))
    except FileNotFoundError:
        return []
    target = (st.st_dev, st.st_ino)
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{d}/ns/net")
        except OSError:
            continue
        if (ns.st_dev, ns.st_ino) == target:
            out.append(int(d))
    return out


def sysctl(netns: str, key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    run(["sh", "-c", f"echo {value} > {path}"], f"sysctl {key}={value}", netns=netns)
