"""The first process of a lab container (what runc's init is): build its root, then exec it.

Started by the kubelet as ``unshare --mount --pid --fork --propagation slave -- python -I
containerinit.py SPEC.json`` inside the pod's network and UTS namespaces, so it is PID 1 of
the container's own PID namespace, in a mount namespace of its own. It builds the root the
container sees, from bind mounts:

- every top-level directory of the machine, read-only (``privileged``: writable), except
  ``/proc`` (a fresh proc of the container's PID namespace), ``/tmp`` and ``/run`` (the
  container's own tmpfs), ``/dev`` (a tmpfs with the usual devices, its own ``pts`` and
  ``shm``), and the lab's state directory (hidden: other pods' volumes and tokens are there);
- then the pod's volumes at their mount paths (a path whose directory does not exist is made
  by turning the nearest existing parent into a tmpfs of bind mounts of its entries: the
  machine's files are never written), ``/etc/hosts`` and ``/etc/resolv.conf``;

then ``pivot_root`` into it, and exec's the container's command through ``setpriv`` with
the container's capabilities and user. Stdlib only, so it starts with ``-I``.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_MOVE, MS_REC = 1, 2, 4, 8, 32, 4096, 8192, 16384
MS_PRIVATE, MS_SLAVE = 1 << 18, 1 << 19
MNT_DETACH = 2
SYS_PIVOT_ROOT, SYS_MOUNT_SETATTR = 155, 442  # x86_64
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
_libc = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def mount(src: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                       data.encode() if data else None), f"mount {src} on {target}")


def readonly_tree(path: str) -> None:
    attr = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), AT_RECURSIVE, ctypes.byref(attr),
                         ctypes.sizeof(attr)), f"read-only {path}")


def placeholder(like: str, at: str) -> None:
    """A mount point at ``at`` for what ``like`` is (a directory or a file)."""
    if os.path.isdir(like):
        os.makedirs(at, exist_ok=True)
    elif not os.path.exists(at):
        os.makedirs(os.path.dirname(at), exist_ok=True)
        open(at, "w").close()


def bind(src: str, at: str, recursive: bool = True) -> None:
    placeholder(src, at)
    mount(src, at, None, MS_BIND | (MS_REC if recursive else 0))


class Root:
    """The container's root under construction at ``self.top`` (a tmpfs)."""

    def __init__(self, top: str) -> None:
        self.top = top
        self.owned = {"/"}  # paths that are our tmpfs (writable until sealed), not the machine's
        self.hidden: set[str] = set()  # the machine's paths covered by an empty tmpfs

    def hide(self, path: str) -> None:
        mount("tmpfs", self.at(path), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
        self.owned.add(path)
        self.hidden.add(path)

    def at(self, path: str) -> str:
        return os.path.join(self.top, path.lstrip("/"))

    def shadow(self, path: str, host: str) -> None:
        """Make ``path`` (a bind of the machine's ``host``) a tmpfs holding bind mounts of its entries."""
        dst = self.at(path)
        if os.path.ismount(dst):
            _check(_libc.umount2(dst.encode(), MNT_DETACH), f"umount {dst}")
        mount("tmpfs", dst, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")  # (over a directory of a bind)
        for entry in os.listdir(host):
            src, sub = os.path.join(host, entry), os.path.join(dst, entry)
            if os.path.islink(src):
                os.symlink(os.readlink(src), sub)
            elif os.path.join(path, entry) in self.hidden:
                os.mkdir(sub)
                self.hide(os.path.join(path, entry))
            else:
                bind(src, sub)
        self.owned.add(path)

    def ensure(self, path: str, is_dir: bool) -> str:
        """The mount point for ``path`` in the root, made without writing the machine's files."""
        parts = [p for p in path.split("/") if p]
        cur = "/"
        for i, part in enumerate(parts):
            nxt = os.path.join(cur, part)
            last = i == len(parts) - 1
            if not os.path.lexists(self.at(nxt)):
                if cur not in self.owned:
                    self.shadow(cur, cur)  # a bind of the machine's same path
                if last and not is_dir:
                    open(self.at(nxt), "w").close()
                else:
                    os.mkdir(self.at(nxt))
                self.owned.add(nxt)
            elif os.path.islink(self.at(nxt)):
                target = os.readlink(self.at(nxt))
                rest = "/".join(parts[i + 1:])
                base = target if target.startswith("/") else os.path.join(cur, target)
                return self.ensure(os.path.normpath(os.path.join(base, rest)), is_dir)
            cur = nxt
        return self.at(path)


def own_dev_tmp_run(root: Root) -> None:
    """The container's own /dev (the usual devices, its own pts and shm), /tmp and /run."""
    mount("tmpfs", root.at("/dev"), "tmpfs", MS_NOSUID, "mode=755,size=65536k")
    for d in DEVICES:
        bind("/dev/" + d, root.at("/dev/" + d), recursive=False)
    for d in ("pts", "shm"):
        os.mkdir(root.at("/dev/" + d))
    mount("devpts", root.at("/dev/pts"), "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620")
    os.symlink("pts/ptmx", root.at("/dev/ptmx"))
    for link, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, root.at("/dev/" + link))
    mount("tmpfs", root.at("/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")
    mount("tmpfs", root.at("/tmp"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    mount("tmpfs", root.at("/run"), "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")


def build(spec: dict) -> None:
    top = spec["scratch"]
    mount("", "/", None, MS_REC | MS_SLAVE)  # nothing made here reaches the machine
    os.makedirs(top, exist_ok=True)
    mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    root = Root(top)
    for entry in sorted(os.listdir("/")):
        src = "/" + entry
        if os.path.islink(src):
            os.symlink(os.readlink(src), root.at(src))
        elif entry == "proc" and spec.get("hostPID"):
            bind(src, root.at(src))  # the machine's processes (hostPID)
        elif entry in ("proc", "tmp", "run", "dev"):
            os.mkdir(root.at(src), 0o1777 if entry == "tmp" else 0o755)
            root.owned.add(src)
        elif os.path.isdir(src):
            bind(src, root.at(src))
    for hidden in spec.get("hide") or []:  # the lab's state: other pods' volumes and tokens
        if os.path.isdir(root.at(hidden)):
            root.hide(hidden)
    own_dev_tmp_run(root)
    # twice: making one mount point may turn a parent of an earlier one into a fresh tmpfs (shadow);
    # the second pass finds every parent that needed it done and makes what the first lost
    for _ in range(2):
        points = [(m, root.ensure(m["target"], m.get("type") == "tmpfs" or os.path.isdir(m["source"])))
                  for m in spec["mounts"]]
    if not spec.get("privileged"):
        for entry in os.listdir(top):
            p = os.path.join(top, entry)
            if os.path.ismount(p) and entry not in ("proc", "tmp", "run", "dev"):
                readonly_tree(p)
    for m, point in points:
        if m.get("type") == "tmpfs":
            mount("tmpfs", point, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
            continue
        mount(m["source"], point, None, MS_BIND | MS_REC)
        if m.get("propagation") != "HostToContainer":
            mount("", point, None, MS_REC | MS_PRIVATE)
        if m.get("readOnly"):
            readonly_tree(point)
    old = os.path.join(top, ".oldroot")
    os.mkdir(old)
    os.chdir(top)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b".oldroot"), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.oldroot", MNT_DETACH), "umount the old root")
    os.rmdir("/.oldroot")
    if not spec.get("hostPID"):
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    try:
        build(spec)
        os.chdir(spec.get("workdir") or "/")
    except OSError as e:
        print(f"trellis: container init: {e}", file=sys.stderr)
        sys.exit(128)
    argv = list(spec.get("setpriv") or []) + list(spec["argv"])
    try:
        os.execvpe(argv[0], argv, spec["env"])
    except OSError as e:
        print(f"trellis: exec {spec['argv'][0]!r}: {e.strerror}", file=sys.stderr)
        sys.exit(127 if e.errno == errno.ENOENT else 126)


if __name__ == "__main__":
    main()
