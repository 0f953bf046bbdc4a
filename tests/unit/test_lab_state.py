"""Lab state on disk: `trellis lab down --all --mine` (make lab-clean) removes only the labs this
installation started; a shared machine's other labs stay."""
import json
import os
import subprocess
import sys

from trellis.lab import topology


def fake_lab(root, name, started_by=None):
    d = root / name
    d.mkdir()
    doc = {"name": name, "nodes": 1, "api_port": 1}
    if started_by is not None:
        doc["started_by"] = started_by
    (d / "lab.json").write_text(json.dumps(doc))


def test_lab_down_all_mine_keeps_other_peoples_labs(tmp_path):
    me = topology.this_installation()
    fake_lab(tmp_path, "zzmine", me)
    fake_lab(tmp_path, "zzother", "/home/someone/trellis/src/trellis")
    fake_lab(tmp_path, "zzold")  # an older trellis recorded no owner: not provably ours
    env = {**os.environ, "TRELLIS_STATE_ROOT": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "trellis.cli.main", "lab", "down", "--all", "--mine"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path)) == ["zzold", "zzother"]
    assert "zzmine" in r.stderr + r.stdout
    assert topology.LabConfig("x", 1, 1).started_by == me


def test_namespace_and_lab_come_from_the_kubeconfig(tmp_path, monkeypatch):
    """`trellis port-forward svc/x` without -n uses the kubeconfig context's namespace, as kubectl does."""
    import argparse

    import yaml

    from trellis.cli import main as cli
    kc = tmp_path / "config"
    kc.write_text(yaml.safe_dump({"current-context": "dev", "contexts": [
        {"name": "other", "context": {"namespace": "nope"}}, {"name": "dev", "context": {"namespace": "shop"}}]}))
    assert cli.kubeconfig_namespace(argparse.Namespace(kubeconfig=str(kc), lab=None)) == "shop"
    monkeypatch.setenv("KUBECONFIG", str(kc))
    assert cli.kubeconfig_namespace(argparse.Namespace(kubeconfig=None, lab=None)) == "shop"
    kc.write_text(yaml.safe_dump({"current-context": "dev", "contexts": [{"name": "dev", "context": {}}]}))
    assert cli.kubeconfig_namespace(argparse.Namespace(kubeconfig=None, lab=None)) == "default"
    # a kubeconfig inside a lab's directory names that lab
    monkeypatch.setattr(topology, "STATE_ROOT", str(tmp_path))
    fake_lab(tmp_path, "zzlab", "")
    (tmp_path / "zzlab" / "kubeconfig").write_text("{}")
    assert topology.lab_of_kubeconfig(str(tmp_path / "zzlab" / "kubeconfig")) == "zzlab"
    assert topology.lab_of_kubeconfig(str(kc)) is None
