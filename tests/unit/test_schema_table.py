"""The lab API server's schema table is the installed official client's models, field for field."""
import gzip
import json

from trellis.lab.apiserver import schema


def test_the_committed_table_matches_the_installed_kubernetes_client():
    with gzip.open(schema.TABLE_FILE, "rt") as f:
        committed = json.load(f)
    built = schema.build_table()
    assert committed == built, ("src/trellis/lab/apiserver/models.json.gz is out of date: run "
                                "python -m trellis.lab.apiserver.schema --regenerate")
    assert committed["V1PodSpec"]["host_network"] == ["hostNetwork", "bool"]


def test_the_api_server_does_not_import_the_client():
    import subprocess
    import sys
    code = ("import sys, trellis.lab.apiserver.server as s, trellis.lab.apiserver.schema as m; "
            "m.decode({'spec': {'hostNetwork': True}}, 'V1Pod'); print('kubernetes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
