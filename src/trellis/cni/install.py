"""``trellis-install-cni``: put trellis-cni and its network config where the container runtime looks.

The DaemonSet's init container runs it with the host's /opt/cni/bin and /etc/cni/net.d
mounted at /host/opt/cni/bin and /host/etc/cni/net.d, as flannel's and Calico's installers
run. It writes:

* ``<bin-dir>/trellis``: the plugin the runtime execs (``"type": "trellis"``), a launcher of a
  few lines, and ``<bin-dir>/trellis.d/trellis_cni.py``, trellis-cni's one module (standard
  library only). The runtime execs the plugin on the *host*, where this container's Python and
  packages do not exist, so the module is copied out and run by the host's python3 (>= 3.9).
  It is imported, not run as a script, so its compiled form is cached next to it: compiling
  it at every exec would cost ~2 ms of a ~20 ms ADD.
* ``<conf-dir>/10-trellis.conflist``: cniVersion 1.0.0, one plugin with the agent's socket.

``--uninstall`` removes exactly these (the cleanup DaemonSet of ``trellis manifests --cleanup``).

Every file is written to a temporary name and renamed (a runtime never reads half a file),
the launcher last (it never runs without its module), and only when its content differs (so
re-running is a no-op that keeps the cached bytecode). The lab uses ``write_launcher``: its
nodes share this machine's filesystem, so the launcher imports the module from the installed
package itself.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

PLUGIN = "trellis"
CONFLIST = "10-trellis.conflist"
MODULE = "trellis_cni"
DEFAULT_SOCKET = "@trellis/agent.sock"  # abstract: in the node's network namespace (manifests/workloads.py)
HOST_PYTHON = "/usr/bin/python3"
# what `trellis manifests` writes as the API server's host when --api-server was not given
# (.invalid never resolves, RFC 2606): the init container refuses it, so a node whose agent
# could never reach the API server gets no CNI config (it stays NotReady, saying why)
UNSET_API_SERVER = "api-server.set-me.invalid"


def cni_interpreter() -> str:
    """trellis-cni is stdlib-only, so it runs under the distribution's python3 when there is
    one: it starts ~2 ms faster than an interpreter built with a shared libpython (such
    as pyenv's), and start-up is most of what a plugin costs."""
    try:
        p = subprocess.run([HOST_PYTHON, "-IS", "-c", "import sys; print(sys.version_info >= (3, 9))"],
                           capture_output=True, text=True, timeout=10)
        if p.stdout.strip() == "True":
            return HOST_PYTHON
    except OSError:
        pass
    return sys.executable


def launcher(interpreter: str, module_dir_expr: str, module: str) -> str:
    """trellis-cni starts with -I -S (no site, no .pth hooks): what a runtime pays on every
    ADD and DEL is the interpreter's start and one small module. The module is imported
    from its own directory (``module_dir_expr``, a Python expression), so that the package
    ``__init__`` files are not (it imports nothing from trellis)."""
    return (f"#!{interpreter} -IS\nimport sys\nsys.path.insert(0, {module_dir_expr})\n"
            f"from {module} import main\nmain()\n")


def write_launcher(path: str) -> None:
    """The lab's plugin: imports trellis-cni from this installation (the lab shares its files)."""
    import trellis.cni.main as plugin
    _write(path, launcher(cni_interpreter(), repr(os.path.dirname(plugin.__file__)), "main"), 0o755)


def conflist(socket: str = DEFAULT_SOCKET) -> dict:
    return {"cniVersion": "1.0.0", "name": "trellis", "plugins": [{"type": PLUGIN, "socket": socket}]}


def _write(path: str, text: str, mode: int) -> bool:
    """Atomically make ``path`` hold ``text`` with ``mode``; False when it already did."""
    try:
        with open(path) as f:
            if f.read() == text and os.stat(path).st_mode & 0o777 == mode:
                return False
    except (OSError, UnicodeDecodeError):
        pass
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True


def install(bin_dir: str, conf_dir: str, socket: str = DEFAULT_SOCKET, interpreter: str = HOST_PYTHON) -> list[str]:
    """Install the plugin and the conflist; -> the paths written (empty: everything was in place)."""
    import trellis.cni.main as plugin
    with open(plugin.__file__) as f:
        source = f.read()
    module_dir = os.path.join(bin_dir, f"{PLUGIN}.d")
    for d in (bin_dir, module_dir, conf_dir):
        os.makedirs(d, exist_ok=True)
    # the module first: a runtime may exec the launcher the moment it exists
    files = [(os.path.join(module_dir, f"{MODULE}.py"), source, 0o644),
             (os.path.join(bin_dir, PLUGIN), launcher(interpreter, f"__file__ + {'.d'!r}", MODULE), 0o755),
             (os.path.join(conf_dir, CONFLIST), json.dumps(conflist(socket), indent=2) + "\n", 0o644)]
    return [path for path, text, mode in files if _write(path, text, mode)]


def uninstall(bin_dir: str, conf_dir: str) -> list[str]:
    """Remove what ``install`` wrote (the conflist first: the runtime stops choosing trellis
    before its plugin goes); -> the paths removed. Files of other plugins are not touched."""
    import shutil
    removed = []
    for path in (os.path.join(conf_dir, CONFLIST), os.path.join(bin_dir, PLUGIN)):
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    module_dir = os.path.join(bin_dir, f"{PLUGIN}.d")
    if os.path.isdir(module_dir):
        shutil.rmtree(module_dir)
        removed.append(module_dir)
    return removed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="trellis-install-cni",
                                description="Install trellis-cni and its network config on this node, then exit.")
    p.add_argument("--bin-dir", default="/host/opt/cni/bin", help="the host's CNI plugin directory, as mounted here")
    p.add_argument("--conf-dir", default="/host/etc/cni/net.d", help="the host's CNI config directory, as mounted here")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="the agent's socket (a path on the host)")
    p.add_argument("--interpreter", default=HOST_PYTHON,
                   help="the host's python3 (>= 3.9) that runs the plugin (default: %(default)s)")
    p.add_argument("--uninstall", action="store_true",
                   help="remove trellis-cni and its network config instead (trellis manifests --cleanup)")
    args = p.parse_args(argv)
    if args.uninstall:
        try:
            removed = uninstall(args.bin_dir, args.conf_dir)
        except OSError as e:
            print(f"trellis-install-cni: {e}", file=sys.stderr)
            return 1
        for path in removed:
            print(f"removed {path}")
        if not removed:
            print(f"no trellis-cni or {CONFLIST} in {args.bin_dir} and {args.conf_dir}")
        return 0
    if os.environ.get("KUBERNETES_SERVICE_HOST") == UNSET_API_SERVER:
        print("trellis-install-cni: ConfigMap trellis-system/trellis-config does not name the API server: "
              "render the manifest with `trellis manifests --api-server HOST:PORT` (the control plane's "
              "address; trellis is the cluster's service proxy, so it cannot use the kubernetes Service) "
              "and apply it again", file=sys.stderr)
        return 1
    try:
        written = install(args.bin_dir, args.conf_dir, args.socket, args.interpreter)
    except OSError as e:
        print(f"trellis-install-cni: {e}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"trellis-cni and {CONFLIST} are up to date in {args.bin_dir} and {args.conf_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
