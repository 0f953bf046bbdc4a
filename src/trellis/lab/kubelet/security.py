"""A container's privileges from its securityContext: capabilities, user and group.

Pure: the pod and container spec in, a ``Privileges`` out. Kubernetes leaves the default
capability set to the runtime; this is containerd's and Docker's (the same 14). ``privileged``
keeps every capability; ``capabilities.drop`` may name ``ALL``; the container's fields win over
the pod's (``runAsUser``, ``runAsGroup``, ``runAsNonRoot``), as in Kubernetes.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field

# by its full path: an image's PATH may hold another setpriv (busybox has a smaller one)
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin") or "/usr/bin/setpriv"

DEFAULT_CAPS = ("CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE")
KNOWN_CAPS = frozenset(DEFAULT_CAPS) | {
    "DAC_READ_SEARCH", "LINUX_IMMUTABLE", "NET_BROADCAST", "NET_ADMIN", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE",
    "SYS_RAWIO", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "LEASE", "AUDIT_CONTROL", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE"}


class SecurityError(ValueError):
    pass


@dataclass(frozen=True)
class Privileges:
    privileged: bool
    caps: tuple[str, ...] = field(default=DEFAULT_CAPS)  # the bounding set; all of them when privileged
    uid: int | None = None   # None: the image's user (root here)
    gid: int | None = None
    groups: tuple[int, ...] = ()

    def setpriv_argv(self) -> list[str]:
        """``setpriv`` options that put a process (exec'd next) in these privileges."""
        if self.privileged and self.uid is None and self.gid is None:
            return []
        argv = [SETPRIV]
        if self.gid is not None:
            argv += [f"--regid={self.gid}"]
        if self.uid is not None or self.gid is not None or self.groups:
            argv += [f"--groups={','.join(map(str, self.groups))}"] if self.groups else ["--clear-groups"]
        if self.uid is not None:
            argv += [f"--reuid={self.uid}"]
        if not self.privileged:
            keep = ",".join("+" + c.lower() for c in self.caps)
            argv += ["--inh-caps=-all", "--bounding-set=-all" + ("," + keep if keep else "")]
        return argv + ["--"]


def _cap(name: str, where: str) -> str:
    n = name.upper().removeprefix("CAP_")
    if n != "ALL" and n not in KNOWN_CAPS:
        raise SecurityError(f"{where}: unknown capability {name!r}")
    return n


def _int(v, where: str) -> int | None:
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise SecurityError(f"{where}: must be a non-negative integer, not {v!r}")
    return v


def privileges(pod: dict, container: dict) -> Privileges:
    psc = pod.get("spec", {}).get("securityContext") or {}
    csc = container.get("securityContext") or {}
    name = container.get("name", "")
    privileged = bool(csc.get("privileged"))
    uid = _int(csc.get("runAsUser", psc.get("runAsUser")), f"container {name}: securityContext.runAsUser")
    gid = _int(csc.get("runAsGroup", psc.get("runAsGroup")), f"container {name}: securityContext.runAsGroup")
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if non_root and not uid:
        raise SecurityError(f"container {name}: runAsNonRoot is set but the container would run as root "
                            "(set securityContext.runAsUser to a non-zero uid)")
    groups = [_int(g, f"container {name}: securityContext.supplementalGroups") for g in
              psc.get("supplementalGroups") or []]
    if psc.get("fsGroup") is not None:
        groups.append(_int(psc["fsGroup"], f"container {name}: securityContext.fsGroup"))
    caps_spec = csc.get("capabilities") or {}
    add = [_cap(c, f"container {name}: securityContext.capabilities.add") for c in caps_spec.get("add") or []]
    drop = [_cap(c, f"container {name}: securityContext.capabilities.drop") for c in caps_spec.get("drop") or []]
    if privileged:
        return Privileges(True, tuple(sorted(KNOWN_CAPS)), uid, gid, tuple(g for g in groups if g is not None))
    caps = [] if "ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    for c in (sorted(KNOWN_CAPS) if "ALL" in add else add):
        if c not in caps:
            caps.append(c)
    return Privileges(False, tuple(caps), uid, gid, tuple(g for g in groups if g is not None))
