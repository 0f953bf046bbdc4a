"""The lab's image catalog: container images mapped to programs on this machine.

The lab has no registry and no image layers; a container is a process in the
pod's namespaces. An image gives an entrypoint and a default command (as a
real image's ENTRYPOINT and CMD), and directories put first on PATH (its
"filesystem"). A pod's ``command`` replaces the entrypoint and ``args`` the
default command, as in Kubernetes.

| image (name without tag, or prefix)      | runs                                              |
|------------------------------------------|---------------------------------------------------|
| redis, */redis                           | redis-server, no persistence, protected-mode off  |
| gcr.io/google_samples/gb-redisslave      | redis replica of redis-master (DNS, or env when    |
|   (also */gb-redis-follower)             |   GET_HOSTS_FROM=env)                              |
| gcr.io/google-samples/gb-frontend        | trellis' guestbook frontend (port 80)             |
|   (also */gb-frontend*)                  |                                                   |
| */trellis (deploy/trellis.yaml's image)  | trellis' programs on PATH, as in deploy/Dockerfile: |
|                                          |   trellis, trellis-agent, trellis-controller,      |
|                                          |   trellis-install-cni, trellis-dns, trellis-cni    |
| */trellis-dns                            | trellis' cluster DNS server (``trellis dns``)     |
| */trellis-ingress                        | trellis' ingress controller (``trellis ingress``) |
| */ingressconformance/echoserver,         | the Ingress conformance suite's echo server       |
|   */k8s-staging-ingressconformance/echoserver |   (lab/images/echoserver.py), any tag        |
| busybox, alpine                          | busybox (applets on PATH), default ``sh``         |
| */pause                                  | sleeps until SIGTERM, as the pause container does |
| python                                   | python3, default ``python3``                      |
| anything else                            | the built-in test server (like agnhost): serves   |
|                                          |   every declared TCP/UDP containerPort with the   |
|                                          |   pod name; ``connect HOST:PORT`` as a client     |
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

REDIS_ARGS = ["--port", "6379", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
REPLICA_SCRIPT = ('if [ "${GET_HOSTS_FROM:-dns}" = env ]; then M="${REDIS_MASTER_SERVICE_HOST}"; '
                  'else M=redis-master; fi; exec redis-server ' + " ".join(
                      a if a else "''" for a in REDIS_ARGS) + ' --replicaof "$M" 6379')


@dataclass
class Image:
    name: str
    entrypoint: list[str]
    cmd: list[str]
    path_dirs: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def image_base(image: str) -> str:
    """``gcr.io/x/redis:e2e`` -> ``gcr.io/x/redis``; digests and tags dropped."""
    base = image.split("@", 1)[0]
    last = base.rsplit("/", 1)[-1]
    if ":" in last:
        base = base[: len(base) - len(last)] + last.split(":", 1)[0]
    return base


def _busybox_dir(state_dir: str) -> str:
    """A directory of busybox applet links: the busybox image's /bin."""
    d = os.path.join(state_dir, "images", "busybox", "bin")
    if not os.path.isdir(d):
        tmp = d + f".tmp{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        bb = shutil.which("busybox") or "/bin/busybox"
        applets = subprocess.run([bb, "--list"], capture_output=True, text=True).stdout.split()
        for a in applets:
            if a not in ("[", "[["):
                os.symlink(bb, os.path.join(tmp, a))
        try:
            os.rename(tmp, d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def _python_dir(state_dir: str) -> str:
    d = os.path.join(state_dir, "images", "python", "bin")
    if not os.path.isdir(d):
        os.makedirs(d, exist_ok=True)
        py3 = shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin") or sys.executable
        for n in ("python", "python3"):
            try:
                os.symlink(py3, os.path.join(d, n))
            except FileExistsError:
                pass
    return d


# the image's programs: what pyproject's [project.scripts] install, by module
TRELLIS_PROGRAMS = {"trellis": "trellis.cli.main", "trellis-cni": "trellis.cni.main",
                    "trellis-agent": "trellis.agent.main", "trellis-controller": "trellis.controller.main",
                    "trellis-install-cni": "trellis.cni.install", "trellis-dns": "trellis.dns.server",
                    "trellis-ingress": "trellis.ingress.main"}


def _trellis_dir(state_dir: str) -> str:
    """The trellis image's /usr/local/bin: a launcher per program, run by the lab's interpreter."""
    d = os.path.join(state_dir, "images", "trellis", "bin")
    if not os.path.isdir(d):
        tmp = d + f".tmp{os.getpid()}"
        os.makedirs(tmp, exist_ok=True)
        for name, module in TRELLIS_PROGRAMS.items():
            path = os.path.join(tmp, name)
            with open(path, "w") as f:
                f.write(f"#!{sys.executable}\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
            os.chmod(path, 0o755)
        try:
            os.rename(tmp, d)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def program_dirs() -> list[str]:
    """What the images' programs run from on this machine: the lab's interpreter (its virtualenv and
    base installation) and trellis' own code. A container sees them read-only, also when they live
    under a directory it gets its own of (a checkout in /tmp)."""
    import trellis
    dirs = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(os.path.abspath(trellis.__file__)))}
    return sorted(d for d in dirs if d and d != "/" and os.path.isdir(d))


def resolve(image: str, state_dir: str) -> Image:
    base = image_base(image)
    last = base.rsplit("/", 1)[-1]
    py = sys.executable  # the lab's own interpreter, for trellis' built-in programs
    if last in ("gb-redisslave", "gb-redis-follower", "redis-slave", "redis-replica"):
        return Image(image, ["/bin/sh", "-c"], [REPLICA_SCRIPT])
    if last == "redis":
        return Image(image, ["redis-server"], list(REDIS_ARGS))
    if last == "trellis":
        return Image(image, [], [], [_trellis_dir(state_dir)])
    if last == "trellis-dns":
        return Image(image, [py, "-m", "trellis.dns.server"], [])
    if last == "trellis-ingress":
        return Image(image, [py, "-m", "trellis.ingress.main"], [])
    if last == "echoserver" and base.rsplit("/", 2)[-2].endswith("ingressconformance"):
        return Image(image, [py, "-m", "trellis.lab.images.echoserver"], [])
    if last.startswith("gb-frontend"):
        return Image(image, [py, "-m", "trellis.lab.images.guestbook"], [])
    if last in ("busybox", "alpine"):
        return Image(image, [], ["sh"], [_busybox_dir(state_dir)])
    if last == "pause":
        return Image(image, ["sleep"], ["infinity"])
    if last == "python":
        return Image(image, [], ["python3"], [_python_dir(state_dir)])
    return Image(image, [py, "-m", "trellis.lab.images.agnhost"], ["serve"])


def argv(img: Image, command: list[str] | None, args: list[str] | None) -> list[str]:
    """ENTRYPOINT/CMD semantics: command replaces the entrypoint (and drops CMD); args replace CMD."""
    if command:
        return list(command) + list(args or [])
    return img.entrypoint + (list(args) if args is not None else img.cmd)
