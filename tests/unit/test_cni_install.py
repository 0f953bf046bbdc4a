"""trellis-install-cni (the DaemonSet's init container) in throwaway directories: the plugin it
installs runs on its own (no trellis package needed: the host has none), answers VERSION, reads
the conflist it wrote; re-running changes nothing; a damaged file is replaced whole."""
from __future__ import annotations

import json
import os
import subprocess

import trellis.cni.main as plugin_module
from trellis.cni import install
from trellis.lab import topology


def run_plugin(path: str, command: str, stdin: str, **env) -> tuple[int, dict]:
    p = subprocess.run([path], input=stdin, capture_output=True, text=True, timeout=20,
                       env={"CNI_COMMAND": command, "PATH": "/usr/bin:/bin", **env})
    assert p.stderr == "", p.stderr
    return p.returncode, json.loads(p.stdout)


def dirs(tmp_path):
    return str(tmp_path / "opt-cni-bin"), str(tmp_path / "etc-cni-net.d")


def test_installs_a_plugin_that_runs_without_trellis(tmp_path):
    bin_dir, conf_dir = dirs(tmp_path)
    written = install.install(bin_dir, conf_dir, interpreter=install.cni_interpreter())
    plugin = os.path.join(bin_dir, "trellis")
    assert set(written) == {plugin, os.path.join(bin_dir, "trellis.d", "trellis_cni.py"),
                            os.path.join(conf_dir, "10-trellis.conflist")}
    assert os.stat(plugin).st_mode & 0o777 == 0o755
    # nothing points back into this installation: the host has only what was copied
    assert os.path.dirname(plugin_module.__file__) not in open(plugin).read()
    code, out = run_plugin(plugin, "VERSION", '{"cniVersion": "1.0.0"}')
    assert code == 0
    assert out["cniVersion"] == "1.0.0" and {"1.0.0", "1.1.0"} <= set(out["supportedVersions"])
    assert sorted(os.listdir(bin_dir)) == ["trellis", "trellis.d"]  # no temporary files left


def test_the_conflist_names_the_plugin_and_the_agent_socket(tmp_path):
    bin_dir, conf_dir = dirs(tmp_path)
    sock = str(tmp_path / "no-agent.sock")
    assert install.main(["--bin-dir", bin_dir, "--conf-dir", conf_dir, "--socket", sock,
                         "--interpreter", install.cni_interpreter()]) == 0
    with open(os.path.join(conf_dir, "10-trellis.conflist")) as f:
        conf = json.load(f)
    assert conf == {"cniVersion": "1.0.0", "name": "trellis", "plugins": [{"type": "trellis", "socket": sock}]}
    # the plugin reads that config as a runtime passes it: no agent on the socket yet -> try again later
    net = dict(conf["plugins"][0], cniVersion=conf["cniVersion"], name=conf["name"])
    code, out = run_plugin(os.path.join(bin_dir, "trellis"), "ADD", json.dumps(net), CNI_CONTAINERID="c1",
                           CNI_NETNS="/proc/self/ns/net", CNI_IFNAME="eth0", CNI_PATH=bin_dir)
    assert code == 1 and out["code"] == 11, out
    assert install.conflist()["plugins"][0]["socket"] == "@trellis/agent.sock"  # the DaemonSet's


def test_installing_again_is_a_no_op_and_repairs_damage(tmp_path):
    bin_dir, conf_dir = dirs(tmp_path)
    py = install.cni_interpreter()
    install.install(bin_dir, conf_dir, interpreter=py)
    plugin = os.path.join(bin_dir, "trellis")
    before = os.stat(plugin)
    assert install.install(bin_dir, conf_dir, interpreter=py) == []
    assert os.stat(plugin).st_ino == before.st_ino  # not rewritten: the cached bytecode stays valid
    with open(plugin, "w") as f:
        f.write("#!/bin/sh\nexit 3\n")
    os.chmod(plugin, 0o700)
    assert install.install(bin_dir, conf_dir, interpreter=py) == [plugin]
    assert os.stat(plugin).st_mode & 0o777 == 0o755
    assert run_plugin(plugin, "VERSION", "{}")[0] == 0


def test_the_lab_launcher_still_imports_this_installation(tmp_path):
    path = str(tmp_path / "trellis")
    topology.write_cni_launcher(path)
    assert os.path.dirname(plugin_module.__file__) in open(path).read()
    assert topology.cni_interpreter() == install.cni_interpreter()
    code, out = run_plugin(path, "VERSION", '{"cniVersion": "1.1.0"}')
    assert code == 0 and out["cniVersion"] == "1.1.0"


def test_refuses_to_install_while_the_api_server_is_not_set(tmp_path, monkeypatch, capsys):
    bin_dir, conf_dir = dirs(tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", install.UNSET_API_SERVER)
    assert install.main(["--bin-dir", bin_dir, "--conf-dir", conf_dir]) == 1
    assert "trellis manifests --api-server HOST:PORT" in capsys.readouterr().err
    assert not os.path.exists(conf_dir)  # the node stays NotReady: no CNI config


def test_uninstall_removes_what_install_wrote_and_nothing_else(tmp_path, capsys):
    bin_dir, conf_dir = dirs(tmp_path)
    os.makedirs(bin_dir)
    os.makedirs(conf_dir)
    others = [os.path.join(bin_dir, "bridge"), os.path.join(conf_dir, "99-loopback.conf")]
    for path in others:
        with open(path, "w") as f:
            f.write("another plugin's\n")
    before = sorted(os.listdir(bin_dir)), sorted(os.listdir(conf_dir))
    install.install(bin_dir, conf_dir)
    assert install.main(["--uninstall", "--bin-dir", bin_dir, "--conf-dir", conf_dir]) == 0
    out = capsys.readouterr().out
    assert f"removed {os.path.join(conf_dir, install.CONFLIST)}" in out and "trellis.d" in out
    assert (sorted(os.listdir(bin_dir)), sorted(os.listdir(conf_dir))) == before
    # again: nothing left to remove, said so, still success
    assert install.main(["--uninstall", "--bin-dir", bin_dir, "--conf-dir", conf_dir]) == 0
    assert "no trellis-cni" in capsys.readouterr().out
