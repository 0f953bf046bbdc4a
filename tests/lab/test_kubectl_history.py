"""The real kubectl's history verbs: rollout history/undo --to-revision, logs --previous/--timestamps."""
import datetime as dt

import pytest

from conftest import kubectl_runner, module_lab, needs_kubectl, needs_root
from helpers import AGNHOST, running_pods, wait_for
from trellis.kube.client import KubeClient

pytestmark = [needs_root, needs_kubectl, pytest.mark.lab]


hlab = module_lab("kvh", 1)


@pytest.fixture(scope="module")
def kc(hlab):
    c = hlab.client()
    yield c
    c.close()


@pytest.fixture(scope="module")
def kubectl(hlab, tmp_path_factory):
    return kubectl_runner(hlab.kubeconfig, str(tmp_path_factory.mktemp("home")))


def history(kubectl):
    lines = kubectl("rollout", "history", "deployment/web").stdout.splitlines()
    return [line.split(None, 1) for line in lines[2:] if line.strip()]  # after the title and the header


def image(kc):
    return kc.get("apps/v1", "deployments", "web", "default")["spec"]["template"]["spec"]["containers"][0]["image"]


def test_rollout_history_and_undo_to_revision(kubectl, kc):
    v2 = AGNHOST.replace("2.40", "2.41")
    kubectl("create", "deployment", "web", f"--image={AGNHOST}", "--port=80")
    kubectl("annotate", "deployment/web", "kubernetes.io/change-cause=first")
    running_pods(kc, "default", "app=web", 1)
    kubectl("set", "image", "deployment/web", f"agnhost={v2}")
    kubectl("annotate", "--overwrite", "deployment/web", "kubernetes.io/change-cause=second")
    wait_for(lambda: len(history(kubectl)) == 2, 20, "two revisions")
    assert history(kubectl) == [["1", "first"], ["2", "second"]]
    kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=70)
    detail = kubectl("rollout", "history", "deployment/web", "--revision=1").stdout
    assert AGNHOST in detail and v2 not in detail
    out = kubectl("rollout", "undo", "deployment/web", "--to-revision=1").stdout
    assert "rolled back" in out
    assert image(kc) == AGNHOST
    # the template of revision 1 is the newest revision now, as upstream renumbers it
    wait_for(lambda: [r[0] for r in history(kubectl)] == ["2", "3"], 20, "revision 1 renumbered 3")
    d = kc.get("apps/v1", "deployments", "web", "default")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    pods = running_pods(kc, "default", "app=web", 1, timeout=60)
    assert pods[0]["spec"]["containers"][0]["image"] == AGNHOST  # the old ReplicaSet's pods are back
    p = kubectl("rollout", "undo", "deployment/web", "--to-revision=9", check=False)
    assert p.returncode != 0 and "unable to find specified revision 9" in p.stderr


COUNTING = "n=$(cat n 2>/dev/null || echo 0); n=$((n+1)); echo $n > n; echo run $n; sleep 1; echo second line; sleep 1; exit 1"


def test_logs_previous_and_timestamps(kubectl, kc):
    kc.create("v1", "pods", {"metadata": {"name": "crashy", "labels": {"app": "crashy"}}, "spec": {
        "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", COUNTING]}]}}, "default")
    wait_for(lambda: kubectl("logs", "crashy", check=False).stdout == "run 2\nsecond line\n", 40,
             "the second run's whole log")
    prev = kubectl("logs", "crashy", "--previous").stdout
    assert prev.splitlines() == ["run 1", "second line"]
    stamped = kubectl("logs", "crashy", "--timestamps").stdout.splitlines()
    assert [line.split(" ", 1)[1] for line in stamped] == ["run 2", "second line"]
    times = [dt.datetime.strptime(line.split()[0][:26] + "Z", "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=dt.timezone.utc) for line in stamped]
    assert all(abs((dt.datetime.now(dt.timezone.utc) - t).total_seconds()) < 60 for t in times)
    assert 0.5 < (times[1] - times[0]).total_seconds() < 2  # each line stamped when it was written
    kc.create("v1", "pods", {"metadata": {"name": "steady", "labels": {"app": "steady"}}, "spec": {
        "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", "echo up; sleep 3600"]}]}},
        "default")
    running_pods(kc, "default", "app=steady", 1)
    p = kubectl("logs", "steady", "--previous", check=False)
    assert p.returncode != 0 and 'previous terminated container "c" in pod "steady" not found' in p.stderr
