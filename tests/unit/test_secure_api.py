"""The API server over real HTTPS: strangers get 401, users what RBAC gives them (403 in
Kubernetes' words otherwise), ServiceAccount tokens that die with their ServiceAccount, and
the real kubectl's auth verbs (can-i, whoami, create token)."""
from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import tempfile

import httpx
import pytest
from conftest import KUBECTL, ApiServer, needs_kubectl

from trellis.lab.pki import LabPKI, kubeconfig


@pytest.fixture(scope="module")
def secure():
    d = tempfile.mkdtemp(prefix="trellis-secure-")
    pki = LabPKI(d)
    serving = pki.init(["127.0.0.1"])
    srv = ApiServer(d, "--tls-cert-file", serving.cert, "--tls-private-key-file", serving.key,
                    "--client-ca-file", pki.ca.cert, "--service-account-signing-key-file", pki.sa_key,
                    "--service-account-key-file", pki.sa_pub).start()
    url = srv.url.replace("http://", "https://")
    configs = {who: kubeconfig(os.path.join(d, f"{who}.kubeconfig"), who, url, pki.ca.cert, pki.client(who, who, groups))
               for who, groups in (("admin", ("system:masters",)), ("alice", ()))}
    yield url, pki, configs
    srv.stop()
    shutil.rmtree(d, ignore_errors=True)


def trust(pki):
    return ssl.create_default_context(cafile=pki.ca.cert)


def kubectl(cfg, *args, check=True):
    r = subprocess.run([KUBECTL, "--kubeconfig", cfg, *args], capture_output=True, text=True, timeout=30)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def test_no_or_bad_credentials_are_401(secure):
    url, pki, _ = secure
    for headers in ({}, {"Authorization": "Bearer not-a-token"}):
        r = httpx.get(f"{url}/api/v1/namespaces", verify=trust(pki), headers=headers)
        assert r.status_code == 401, r.text
        assert r.json() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    r = httpx.get(f"{url}/healthz", verify=trust(pki))
    assert r.status_code == 401
    # plain HTTP on the secure port is not answered as an API
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/api", timeout=5).raise_for_status()


def test_a_certificate_of_another_ca_is_refused(secure, tmp_path):
    url, pki, _ = secure
    other = LabPKI(str(tmp_path))
    other.init(["127.0.0.1"])
    pair = other.client("mallory", "admin", ("system:masters",))
    ctx = ssl.create_default_context(cafile=pki.ca.cert)
    ctx.load_cert_chain(pair.cert, pair.key)
    try:
        r = httpx.get(f"{url}/api/v1/namespaces", verify=ctx)
        assert r.status_code == 401
    except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
        pass  # the handshake itself refused it


def test_kubeconfig_files_are_private(secure):
    _, pki, configs = secure
    for path in list(configs.values()) + [pki.ca.key, pki.sa_key]:
        assert os.stat(path).st_mode & 0o077 == 0, path
    assert os.stat(pki.dir).st_mode & 0o077 == 0


@needs_kubectl
def test_rbac_through_kubectl(secure):
    _, _, cfg = secure
    r = kubectl(cfg["alice"], "get", "pods", check=False)
    assert r.returncode != 0
    assert ('pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace '
            '"default"') in r.stderr
    assert kubectl(cfg["alice"], "auth", "can-i", "create", "deployments", check=False).stdout.strip() == "no"
    kubectl(cfg["admin"], "create", "rolebinding", "alice-edit", "--clusterrole=edit", "--user=alice")
    assert kubectl(cfg["alice"], "auth", "can-i", "create", "deployments").stdout.strip() == "yes"
    kubectl(cfg["alice"], "create", "configmap", "made-by-alice", "--from-literal=a=b")
    assert kubectl(cfg["alice"], "auth", "can-i", "create", "deployments", "-n", "kube-system",
                   check=False).stdout.strip() == "no"
    r = kubectl(cfg["alice"], "get", "nodes", check=False)
    assert 'cannot list resource "nodes" in API group "" at the cluster scope' in r.stderr
    who = json.loads(kubectl(cfg["alice"], "auth", "whoami", "-o", "json").stdout)
    assert who["status"]["userInfo"]["username"] == "alice"
    assert "system:authenticated" in who["status"]["userInfo"]["groups"]
    listed = kubectl(cfg["alice"], "auth", "can-i", "--list").stdout
    assert "deployments.apps" in listed and "selfsubjectaccessreviews.authorization.k8s.io" in listed


@needs_kubectl
def test_service_account_tokens_work_until_the_account_is_deleted(secure):
    url, pki, cfg = secure
    kubectl(cfg["admin"], "create", "serviceaccount", "bot")
    kubectl(cfg["admin"], "create", "rolebinding", "bot-view", "--clusterrole=view", "--serviceaccount=default:bot")
    token = kubectl(cfg["admin"], "create", "token", "bot").stdout.strip()
    h = {"Authorization": f"Bearer {token}"}
    r = httpx.get(f"{url}/api/v1/namespaces/default/configmaps", verify=trust(pki), headers=h)
    assert r.status_code == 200, r.text
    r = httpx.post(f"{url}/api/v1/namespaces/default/configmaps", verify=trust(pki), headers=h,
                   json={"metadata": {"name": "by-bot"}})
    assert r.status_code == 403 and 'User "system:serviceaccount:default:bot" cannot create' in r.json()["message"]
    kubectl(cfg["admin"], "delete", "serviceaccount", "bot")
    r = httpx.get(f"{url}/api/v1/namespaces/default/configmaps", verify=trust(pki), headers=h)
    assert r.status_code == 401
    # a new account of the same name does not revive the old token (its uid differs)
    kubectl(cfg["admin"], "create", "serviceaccount", "bot")
    assert httpx.get(f"{url}/api/v1/namespaces/default/configmaps", verify=trust(pki),
                     headers=h).status_code == 401


def test_a_verified_token_is_cached_only_while_it_lives_and_only_as_sent(tmp_path, monkeypatch):
    """Tokens.verified caches a checked signature until the token's exp; a token altered by one
    character is verified afresh (and refused), and a cached token past its exp is refused."""
    from trellis.lab.apiserver import authn
    pki = LabPKI(str(tmp_path))
    pki.init(["127.0.0.1"])
    with open(pki.sa_key, "rb") as f, open(pki.sa_pub, "rb") as g:
        tokens = authn.Tokens(f.read(), g.read(), lambda *a: None)
    sa = {"metadata": {"namespace": "default", "name": "bot", "uid": "u-1"}}
    token, exp = tokens.issue(sa)
    assert tokens.verified(token)["sub"] == "system:serviceaccount:default:bot"
    assert token in tokens._verified
    head, payload, sig = token.split(".")
    forged = ".".join((head, payload, ("A" if sig[0] != "A" else "B") + sig[1:]))
    assert tokens.verified(forged) is None and forged not in tokens._verified
    # past its exp the cache does not answer: PyJWT (whose clock is its own) is asked again
    later = exp + 1
    monkeypatch.setattr(authn.time, "time", lambda: later)

    def expired(*a, **k):
        raise authn.jwt.ExpiredSignatureError("Signature has expired")
    monkeypatch.setattr(authn.jwt, "decode", expired)
    assert tokens.verified(token) is None


@needs_kubectl
def test_a_kubelet_identity_reaches_its_own_node_only(secure):
    """Over HTTPS with the kubelet's kind of certificate (system:node:<n>, group system:nodes): the
    Node authorizer lets it patch its own Node and nobody else's, and read no Secret its pods do
    not use; the controller-manager's certificate has its ClusterRole and no Secrets."""
    url, pki, cfg = secure
    d = os.path.dirname(cfg["admin"])
    node1 = kubeconfig(os.path.join(d, "node-1.kubeconfig"), "node-1", url, pki.ca.cert,
                       pki.client("kubelet-node-1", "system:node:node-1", ("system:nodes",)))
    cm = kubeconfig(os.path.join(d, "cm.kubeconfig"), "cm", url, pki.ca.cert,
                    pki.client("controller-manager", "system:kube-controller-manager"))
    nodes = os.path.join(d, "nodes.json")
    with open(nodes, "w") as f:
        json.dump({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in ("node-1", "node-2")]}, f)
    kubectl(cfg["admin"], "apply", "-f", nodes)
    kubectl(cfg["admin"], "create", "secret", "generic", "db", "--from-literal=p=x")
    assert kubectl(node1, "label", "node", "node-1", "own=yes").returncode == 0
    r = kubectl(node1, "label", "node", "node-2", "own=no", check=False)
    assert r.returncode != 0 and 'User "system:node:node-1" cannot patch resource "nodes"' in r.stderr
    r = kubectl(node1, "get", "secret", "db", check=False)
    assert r.returncode != 0 and "forbidden" in r.stderr
    assert kubectl(cm, "get", "pods").returncode == 0
    r = kubectl(cm, "get", "secret", "db", check=False)
    assert r.returncode != 0 and 'User "system:kube-controller-manager" cannot get resource "secrets"' in r.stderr
