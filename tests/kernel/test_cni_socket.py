"""The agent's CNI socket as an abstract one (``@name``): it lives in the network namespace, so the
plugin and the agent meet there whatever their mount namespaces; only root may ask."""
import json
import os
import subprocess
import sys
import textwrap

from conftest import needs_root

pytestmark = needs_root
SERVER = textwrap.dedent("""
    import os, subprocess, sys, json
    from trellis.agent.cniserver import CNIServer
    from trellis.agent.health import NotReady
    srv = CNIServer("@trellis-test/agent.sock", lambda: None, lambda: NotReady("no network yet"))
    srv.start()
    conf = json.dumps({"cniVersion": "1.1.0", "name": "n", "type": "trellis", "socket": "@trellis-test/agent.sock"})
    env = {"CNI_COMMAND": "STATUS", "CNI_PATH": "/nowhere", "PATH": os.environ["PATH"]}
    plugin = [sys.executable, "-m", "trellis.cni.main"]
    for argv in (plugin, ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *plugin]):
        p = subprocess.run(argv, input=conf, capture_output=True, text=True, env=env, timeout=20)
        print(p.returncode, p.stdout.strip().replace(chr(10), " "))
""")


def test_the_plugin_reaches_the_agent_through_the_namespace_and_only_as_root():
    # a fresh network namespace of its own (gone with the process): the abstract name is in it only
    p = subprocess.run(["unshare", "--net", "--", sys.executable, "-c", SERVER], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert p.returncode == 0, p.stderr
    root, other = [line.split(" ", 1) for line in p.stdout.strip().splitlines()]
    assert root[0] != "0" and json.loads(root[1])["code"] == 50  # the agent answered: not ready
    assert "not ready: no network yet" in json.loads(root[1])["msg"]
    assert "did not answer" in json.loads(other[1])["msg"]  # refused: closed without an answer
