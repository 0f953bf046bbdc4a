"""deploy/trellis.yaml (`trellis manifests`): the committed file is the rendered one; every object
is valid for Kubernetes offline (the official client's models with the strict unknown-field check,
the API's metadata validation, then a real apply with fieldValidation=Strict to the lab API
server); the RBAC rules allow every watch and call the code makes and nothing more; the CRD
schemas refuse what trellis refuses; bad options are errors that name the flag."""
from __future__ import annotations

import json
import os
import re

import httpx
import pytest
import yaml

from trellis.cli.main import main as cli
from trellis.controller import lbipam
from trellis.lab.apiserver import access, admission, rbac as labrbac, schema
from trellis.lab.apiserver.resources import Registry
from trellis.lab.apiserver.rbac import Attributes, User
from trellis.lab.topology import LB_POOL_MANIFEST
from trellis.manifests import rbac, workloads
from trellis.manifests.options import Options, OptionError
from trellis.manifests.render import crds_text, render, render_cleanup
from trellis.policy import model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SRC = os.path.join(ROOT, "src", "trellis")
DEPLOY = os.path.join(ROOT, "deploy", "trellis.yaml")
VARIANTS = [Options(), Options(with_dns=True, api_server="192.0.2.10:6443"),
            Options(pod_cidr="10.32.0.0/12", block_size=26, service_cidr="172.20.0.0/16", routing="direct",
                    mtu=9000, isolation_mode="namespace", api_server="[fd00::1]:6443", image="registry.local/t:dev")]


def objects(o: Options) -> list[dict]:
    return [d for d in yaml.safe_load_all(render(o)) if d]


def with_cleanup(o: Options) -> list[dict]:
    """The manifest and its uninstall step (trellis manifests --cleanup)."""
    return objects(o) + [d for d in yaml.safe_load_all(render_cleanup(o)) if d]


# ---- (a) the committed file ---------------------------------------------------------------------

def test_the_committed_manifest_is_the_rendered_one():
    with open(DEPLOY) as f:
        committed = f.read()
    assert committed == render(Options()), (
        "deploy/trellis.yaml is stale: regenerate it with `.venv/bin/trellis manifests -o deploy/trellis.yaml` "
        "(or `.venv/bin/python -m trellis.cli.main manifests -o deploy/trellis.yaml`) and commit it")


def test_the_manifest_holds_what_an_install_needs_in_apply_order():
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects(Options(with_dns=True))]
    assert kinds[0] == ("Namespace", "trellis-system")
    assert [n for k, n in kinds[1:4]] == ["ippools.trellis.dev", "endpointgroups.trellis.dev", "contracts.trellis.dev"]
    order = [k for k, _ in kinds]
    last_rbac = max(i for i, k in enumerate(order) if k.endswith(("Role", "RoleBinding")))
    assert order.index("ServiceAccount") < order.index("ClusterRole") and last_rbac < order.index("ConfigMap")
    assert order.index("ConfigMap") < order.index("DaemonSet") < order.index("Deployment")
    assert ("ServiceAccount", "trellis-dns") in kinds and ("Service", "kube-dns") in kinds
    assert not any(k == "Service" for k, _ in kinds_of(Options()))  # DNS is off by default
    # the CRDs are the lab's own file, byte for byte
    assert crds_text().split("\n---\n")[1].strip() in render(Options())


def kinds_of(o):
    return [(d["kind"], d["metadata"]["name"]) for d in objects(o)]


def test_the_daemonset_and_deployment_as_specified():
    docs = {(d["kind"], d["metadata"]["name"]): d for d in objects(Options(api_server="192.0.2.10:6443"))}
    ds = docs[("DaemonSet", "trellis-agent")]["spec"]
    pod = ds["template"]["spec"]
    assert ds["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert pod["hostNetwork"] and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["priorityClassName"] == "system-node-critical" and pod["tolerations"] == [{"operator": "Exists"}]
    init, agent = pod["initContainers"][0], pod["containers"][0]
    assert init["command"] == ["trellis-install-cni"] and agent["command"] == ["trellis-agent"]
    assert agent["securityContext"] == {"privileged": True}
    assert {p["httpGet"]["path"] for p in (agent["livenessProbe"], agent["readinessProbe"])} == {"/livez", "/readyz"}
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9753, "protocol": "TCP"}]
    host = {v["name"]: v["hostPath"] for v in pod["volumes"]}
    mounts = {m["name"]: m for c in (init, agent) for m in c["volumeMounts"]}
    assert host["cni-bin"]["path"] == "/opt/cni/bin" and mounts["cni-bin"]["mountPath"] == "/host/opt/cni/bin"
    assert host["cni-conf"]["path"] == "/etc/cni/net.d" and mounts["cni-conf"]["mountPath"] == "/host/etc/cni/net.d"
    assert mounts["netns"]["mountPropagation"] == "HostToContainer" and mounts["lib-modules"]["readOnly"]
    assert host["xtables-lock"] == {"path": "/run/xtables.lock", "type": "FileOrCreate"}
    # the socket the plugin dials is the one the agent serves, on the host path both see
    assert "--socket=@trellis/agent.sock" in init["args"] and "--socket=@trellis/agent.sock" in agent["args"]
    assert "run" not in mounts and "run" not in host  # an abstract socket: no host path shared for it
    dep = docs[("Deployment", "trellis-controller")]["spec"]
    cpod = dep["template"]["spec"]
    assert dep["replicas"] == 2 and cpod["hostNetwork"] and cpod["priorityClassName"] == "system-cluster-critical"
    assert {t["key"] for t in cpod["tolerations"]} == {"node-role.kubernetes.io/control-plane", "node.kubernetes.io/not-ready"}
    ctl = cpod["containers"][0]
    assert "--leader-elect" in ctl["args"]
    assert {e["name"] for e in ctl["env"]} >= {"POD_NAME", "POD_NAMESPACE", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"}
    cm = docs[("ConfigMap", "trellis-config")]
    assert cm["metadata"]["namespace"] == "trellis-system"
    assert cm["data"]["kubernetesServiceHost"] == "192.0.2.10" and cm["data"]["kubernetesServicePort"] == "6443"


@pytest.mark.parametrize("o", VARIANTS, ids=["defaults", "dns", "custom"])
def test_containers_only_use_flags_their_programs_have_and_keys_the_config_has(o):
    docs = with_cleanup(o)
    keys = set(next(d for d in docs if d["kind"] == "ConfigMap")["data"])
    programs = {"trellis-agent": "agent/main.py", "trellis-install-cni": "cni/install.py",
                "trellis-controller": "controller/main.py", "trellis-dns": "dns/server.py"}
    seen = set()
    for d in docs:
        spec = (d.get("spec") or {}).get("template", {}).get("spec")
        for c in (spec or {}).get("initContainers", []) + (spec or {}).get("containers", []):
            if c["image"].startswith("registry.k8s.io/pause:"):
                continue
            source = open(os.path.join(SRC, programs[c["command"][0]])).read()
            for arg in c.get("args", []):
                flag = arg.split("=", 1)[0]
                assert f'"{flag}"' in source, f"{c['name']}: {flag} is no flag of {c['command'][0]}"
                for var in re.findall(r"\$\((\w+)\)", arg):  # $(VAR) expands only variables the container has
                    assert var in {e["name"] for e in c.get("env", [])}, f"{c['name']}: {arg} uses an unset $({var})"
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
                if ref:
                    assert ref["name"] == "trellis-config" and ref["key"] in keys, e
                    assert d["metadata"]["namespace"] == "trellis-system"  # a configMapKeyRef is namespace-local
            seen.add(c["command"][0])
    assert seen >= {"trellis-agent", "trellis-install-cni", "trellis-controller"}


# ---- (b) valid Kubernetes objects, offline --------------------------------------------------------

@pytest.mark.parametrize("o", VARIANTS, ids=["defaults", "dns", "custom"])
def test_every_object_decodes_strictly_against_the_kubernetes_schemas(o):
    """The official client's models: no unknown field anywhere (kube-apiserver's strict decoding),
    no value of the wrong type; then the API's metadata and kind validation."""
    reg = Registry()
    for obj in with_cleanup(o):
        group, _, version = obj["apiVersion"].rpartition("/")
        name = f"{obj['kind']} {obj['metadata']['name']}"
        model_name = schema.model_name(group, version, obj["kind"])
        assert model_name is not None, f"{name}: no such kind in the Kubernetes API"
        decoded = schema.decode(obj, model_name)  # TypeMismatch on a wrong type
        assert decoded.unknown == [], f"{name}: unknown fields {decoded.unknown}"
        res = reg.by_kind(obj["apiVersion"], obj["kind"])
        assert res is not None and res.namespaced == ("namespace" in obj["metadata"]), name
        assert admission.admit(res.key, json.loads(json.dumps(decoded.obj)), None) == [], name


def test_the_strict_check_catches_an_unknown_field():
    """The check above can fail: a misspelt field deep in a DaemonSet, and one in a CRD's schema."""
    ds = next(d for d in objects(Options()) if d["kind"] == "DaemonSet")
    ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privilegd"] = True
    assert schema.decode(ds, "V1DaemonSet").unknown == ["spec.template.spec.containers[0].securityContext.privilegd"]
    crd = next(d for d in objects(Options()) if d["kind"] == "CustomResourceDefinition")
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["requierd"] = ["x"]
    assert schema.decode(crd, "V1CustomResourceDefinition").unknown[0].endswith(".properties.spec.requierd")


def _post(url: str, obj: dict, dry_run: bool) -> httpx.Response:
    from trellis.kube.client import resource_path
    reg = Registry()
    res = reg.by_kind(obj["apiVersion"], obj["kind"])
    ns = obj["metadata"].get("namespace") if res is not None and res.namespaced else None
    plural = res.plural if res is not None else obj["kind"].lower() + "s"
    params = {"fieldValidation": "Strict", **({"dryRun": "All"} if dry_run else {})}
    return httpx.post(url + resource_path(obj["apiVersion"], plural, ns), params=params, json=obj, timeout=15)


@pytest.mark.parametrize("o", VARIANTS[:2], ids=["defaults", "dns"])
def test_the_lab_api_server_accepts_the_whole_file_strictly(apiserver, o):
    """kubectl apply --server-side --field-validation=Strict, as the lab API answers it: the namespace and
    the CRDs are created (the rest needs them), everything else is a dry run (nothing starts)."""
    for obj in objects(o):
        real = obj["kind"] in ("Namespace", "CustomResourceDefinition")
        r = _post(apiserver.url, obj, dry_run=not real)
        assert r.status_code == 201, f"{obj['kind']} {obj['metadata']['name']}: {r.status_code} {r.text}"
        assert "warning" not in {k.lower() for k in r.headers}, f"{obj['kind']}: {r.headers.get('warning')}"
    served = httpx.get(apiserver.url + "/apis/trellis.dev/v1alpha1", timeout=10).json()
    assert {r["name"] for r in served["resources"]} >= {"ippools", "endpointgroups", "contracts"}


def test_the_lab_objects_still_apply_over_the_stricter_crds(apiserver):
    """The lab keeps working: its LoadBalancer pool and the guestbook's groups and contracts."""
    from trellis.kube.client import KubeClient
    from trellis.kube.discovery import Discovery, apply
    c = KubeClient(apiserver.url)
    try:
        for crd in yaml.safe_load_all(crds_text()):
            c.create("apiextensions.k8s.io/v1", "customresourcedefinitions", crd)
        docs = list(yaml.safe_load_all(LB_POOL_MANIFEST)) + list(
            yaml.safe_load_all(open(os.path.join(ROOT, "examples", "guestbook", "policy.yaml"))))
        for d in [d for d in docs if d]:
            apply(c, Discovery(c), d, "default")
            assert crd_valid(d) == [], d["metadata"]["name"]
    finally:
        c.close()


# ---- the CRD schemas refuse what trellis refuses --------------------------------------------------

def crd_schemas() -> dict[str, dict]:
    return {c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            for c in yaml.safe_load_all(crds_text())}


def structural(s: dict, v, path: str = "") -> list[str]:
    """The OpenAPI v3 keywords these schemas use, checked as kube-apiserver checks a custom
    resource (not the CEL rules: x-kubernetes-validations). The lab API does not do this."""
    out: list[str] = []
    if s.get("x-kubernetes-int-or-string"):
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            return [f"{path}: must be an integer or a string"]
    else:
        t = s.get("type")
        types = {"object": dict, "array": list, "string": str, "integer": int, "boolean": bool}
        if t and (not isinstance(v, types[t]) or (t == "integer" and isinstance(v, bool))):
            return [f"{path}: must be of type {t}"]
    if "enum" in s and v not in s["enum"]:
        out.append(f"{path}: Unsupported value {v!r}")
    if isinstance(v, str):
        if "pattern" in s and not re.search(s["pattern"], v):
            out.append(f"{path}: {v!r} does not match the pattern")
        if len(v) > s.get("maxLength", len(v)) or len(v) < s.get("minLength", 0):
            out.append(f"{path}: length")
    if isinstance(v, int) and not isinstance(v, bool):
        if not s.get("minimum", v) <= v <= s.get("maximum", v):
            out.append(f"{path}: {v} out of range")
    if isinstance(v, list):
        if len(v) < s.get("minItems", 0):
            out.append(f"{path}: needs {s['minItems']} items")
        for i, x in enumerate(v):
            out += structural(s.get("items") or {}, x, f"{path}[{i}]")
    if isinstance(v, dict):
        out += [f"{path}.{k}: Required value" for k in s.get("required", []) if k not in v]
        for k, x in v.items():
            sub = (s.get("properties") or {}).get(k)
            if sub is None and isinstance(s.get("additionalProperties"), dict):
                sub = s["additionalProperties"]
            if sub is not None:
                out += structural(sub, x, f"{path}.{k}")
    return out


def crd_valid(obj: dict) -> list[str]:
    return structural(crd_schemas()[obj["kind"]], {k: v for k, v in obj.items() if k in ("spec", "status")})


def pool(*addresses, **spec) -> dict:
    return {"kind": "IPPool", "metadata": {"name": "p"}, "spec": {"addresses": list(addresses), **spec}}


@pytest.mark.parametrize("address,ok", [
    ("172.31.0.200-172.31.0.239", True), ("172.31.0.200 - 172.31.0.239", True), ("10.0.0.0/24", True),
    ("10.0.0.7", True), ("10.1.0.0/16", True),
    ("172.31.0.300-172.31.0.310", False), ("10.0.0/24", False), ("10.0.0.0/33", False), ("fd00::/120", False),
    ("10.0.0.0/8", False), ("pool-a", False), ("", False), ("10.0.0.1-", False)])
def test_ippool_addresses(address, ok):
    """What the schema lets through the controller can enumerate; what it refuses would have thrown
    in lbipam.pool_addresses (or is IPv6, or too big to enumerate)."""
    assert (crd_valid(pool(address)) == []) is ok, crd_valid(pool(address))
    if ok:
        assert 0 < len(lbipam.pool_addresses(pool(address))) <= 65536


def test_ippool_fields():
    assert crd_valid(pool("10.0.0.0/24", autoAssign=False)) == []
    assert crd_valid(pool("10.0.0.0/24", autoAssign="yes")) == [".spec.autoAssign: must be of type boolean"]
    assert crd_valid({"kind": "IPPool", "spec": {}}) == [".spec.addresses: Required value"]
    assert crd_valid(pool()) == [".spec.addresses: needs 1 items"]


def group(**spec) -> dict:
    return {"kind": "EndpointGroup", "metadata": {"name": "g", "namespace": "x"}, "spec": spec}


def contract(**spec) -> dict:
    return {"kind": "Contract", "metadata": {"name": "c", "namespace": "x"},
            "spec": {"provider": "db", "consumers": ["web"], **spec}}


@pytest.mark.parametrize("obj", [
    group(podSelector={"matchLabels": {"app": "db"}}, intraGroup="deny"),
    group(podSelector={"matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]}),
    group(intraGroup="maybe"),
    group(podSelector={"matchExpressions": [{"key": "app", "operator": "Like", "values": ["a"]}]}),
    contract(),
    contract(provider="namespace:prod", consumers=["deployment:web", "other/api", "group:x/y"]),
    contract(consumers=[], consumerIPBlocks=[{"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]),
    contract(consumerIPBlocks=[{"cidr": "fd00::/64"}]),
    contract(rules=[{"action": "deny", "protocol": "TCP", "ports": [80, "8000-8080", "443"]}]),
    contract(provider="foo:bar"), contract(consumers=["namespace:a/b"]), contract(consumers=["a/b/c"]),
    contract(consumerIPBlocks=[{"cidr": "10.0.0/8"}]), contract(consumerIPBlocks=[{"except": ["10.0.0.0/8"]}]),
    contract(rules=[{"action": "reject"}]), contract(rules=[{"protocol": "ICMP"}]),
    contract(rules=[{"protocol": "TCP", "ports": [70000]}]), contract(rules=[{"protocol": "TCP", "ports": ["80--90"]}]),
    contract(rules=[{"protocol": "TCP", "ports": [0]}]), contract(rules=[{"protocol": "UDP", "ports": [True]}]),
], ids=lambda o: json.dumps(o["spec"])[:60])
def test_the_schemas_agree_with_the_agents_parser(obj):
    """Accepted by the schema exactly when policy/model.py compiles it (the cross-field rules that
    only CEL expresses are left to real clusters: protocol with ports, a consumer needed)."""
    problem = model.validate(obj["kind"], obj)
    assert (crd_valid(obj) == []) == (problem is None), (crd_valid(obj), problem)


# ---- (c) RBAC: what the code needs, and no more ---------------------------------------------------

def rbac_lookup(o: Options):
    docs = objects(o)
    buckets = {"ClusterRole": labrbac.CLUSTER_ROLES, "ClusterRoleBinding": labrbac.CLUSTER_BINDINGS,
               "Role": labrbac.ROLES, "RoleBinding": labrbac.BINDINGS}

    def lookup(bucket, ns):
        return [d for d in docs if buckets.get(d["kind"]) == bucket
                and (ns is None or d["metadata"].get("namespace") == ns)]
    return lookup


def account(name: str, ns: str = "trellis-system") -> User:
    return User(f"system:serviceaccount:{ns}:{name}", ("system:serviceaccounts", f"system:serviceaccounts:{ns}",
                                                       "system:authenticated"))


AGENT, CONTROLLER, DNS = account("trellis-agent"), account("trellis-controller"), account("trellis-dns", "kube-system")
COMPONENT_FILES = {"agent": (AGENT, ["agent"]), "controller": (CONTROLLER, ["controller"]), "dns": (DNS, ["dns"])}
CONFIG_NAMESPACES = ("trellis-system", "kube-system")
CLUSTER_SCOPED = {"nodes", "namespaces", "ippools"}
INFORMER = re.compile(r'Informer\(\s*client,\s*(?:"(?P<gv>[^"]+)"|(?P<const>audit\.GV)),\s*"(?P<plural>[^"]+)"')
CALL = re.compile(r'client\.(?P<verb>get_or_none|get|list|create|update|patch|delete)\(\s*"(?P<gv>[^"]+)",\s*'
                  r'"(?P<plural>[^"]+)"(?P<rest>[^\n]*\n[^\n]*)')


def needs(component: str) -> list[Attributes]:
    """Every request the component's code makes, read from the source: informers (list + watch),
    client calls, Events; a ConfigMap is trellis-config, looked for in both namespaces."""
    out = []
    user, dirs = COMPONENT_FILES[component]
    for d in dirs:
        for fn in sorted(os.listdir(os.path.join(SRC, d))):
            if not fn.endswith(".py"):
                continue
            text = open(os.path.join(SRC, d, fn)).read()
            found = [(m["gv"] or "trellis.dev/v1alpha1", m["plural"], ("list", "watch"), "")
                     for m in INFORMER.finditer(text)]
            found += [(m["gv"], m["plural"], ({"get_or_none": "get"}.get(m["verb"], m["verb"]),),
                       "status" if 'sub="status"' in m["rest"] else "") for m in CALL.finditer(text)]
            if "EventRecorder(" in text:
                found.append(("v1", "events", ("create", "patch"), ""))
            for gv, plural, verbs, sub in found:
                group = gv.rpartition("/")[0]
                if plural == "configmaps":
                    where = [(ns, "trellis-config") for ns in CONFIG_NAMESPACES]
                elif plural in CLUSTER_SCOPED:
                    where = [("", "")]
                else:
                    where = [("default", ""), ("kube-system", "")]
                out += [Attributes(v, group, plural, sub, name, ns) for v in verbs for ns, name in where]
    return out


@pytest.mark.parametrize("component", ["agent", "controller", "dns"])
def test_every_watch_and_call_in_the_code_is_allowed(component):
    user = COMPONENT_FILES[component][0]
    lookup = rbac_lookup(Options(with_dns=True))
    wanted = needs(component)
    assert len(wanted) >= {"agent": 20, "controller": 20, "dns": 6}[component]  # the scan found the code
    missing = [a for a in wanted if not labrbac.authorize(user, a, lookup)]
    assert missing == [], "\n".join(labrbac.forbidden_message(user, a) for a in missing)


def test_leader_election_is_allowed_on_its_lease_only():
    lookup = rbac_lookup(Options())
    lease = dict(group="coordination.k8s.io", resource="leases", namespace="trellis-system")
    for verb in ("get", "update"):
        assert labrbac.authorize(CONTROLLER, Attributes(verb, name="trellis-controller", **lease), lookup)
        assert not labrbac.authorize(CONTROLLER, Attributes(verb, name="kube-scheduler", **lease), lookup)
    assert labrbac.authorize(CONTROLLER, Attributes("create", **lease), lookup)
    assert not labrbac.authorize(CONTROLLER, Attributes("create", **dict(lease, namespace="kube-system")), lookup)
    assert not labrbac.authorize(AGENT, Attributes("get", name="trellis-controller", **lease), lookup)


@pytest.mark.parametrize("user,attrs", [
    (AGENT, Attributes("create", "", "pods", namespace="default")),
    (AGENT, Attributes("delete", "", "pods", name="p", namespace="default")),
    (AGENT, Attributes("get", "", "secrets", name="s", namespace="kube-system")),
    (AGENT, Attributes("list", "", "secrets")),
    (AGENT, Attributes("watch", "", "secrets", namespace="trellis-system")),
    (AGENT, Attributes("patch", "", "nodes", name="node-1")),
    (AGENT, Attributes("update", "", "configmaps", name="trellis-config", namespace="trellis-system")),
    (AGENT, Attributes("get", "", "configmaps", name="kubeadm-config", namespace="kube-system")),
    (AGENT, Attributes("list", "", "configmaps", namespace="kube-system")),   # all of them: no
    (AGENT, Attributes("create", "", "pods", "exec", "p", "default")),
    (AGENT, Attributes("create", "rbac.authorization.k8s.io", "clusterrolebindings")),
    (AGENT, Attributes("create", "trellis.dev", "contracts", namespace="default")),
    (CONTROLLER, Attributes("get", "", "secrets", name="s", namespace="trellis-system")),
    (CONTROLLER, Attributes("create", "", "pods", namespace="default")),
    (CONTROLLER, Attributes("delete", "", "nodes", name="node-1")),
    (CONTROLLER, Attributes("update", "", "services", name="s", namespace="default")),   # only its status
    (CONTROLLER, Attributes("patch", "", "configmaps", name="other", namespace="trellis-system")),
    (DNS, Attributes("get", "", "secrets", name="s", namespace="kube-system")),
    (DNS, Attributes("patch", "", "services", name="s", namespace="default")),
    (DNS, Attributes("list", "", "nodes")),
])
def test_nothing_more_is_allowed(user, attrs):
    assert not labrbac.authorize(user, attrs, rbac_lookup(Options(with_dns=True)))


def test_a_watch_of_one_configmap_by_field_selector_is_a_request_for_that_name():
    """kube's RequestInfo (and the lab's): an informer of trellis-config alone is allowed by a rule
    with resourceNames; without the selector it is a list of every ConfigMap."""
    res = Registry().lookup("", "v1", "configmaps")
    one = access.attributes("GET", res, "kube-system", None, None, False,
                            {"watch": "true", "fieldSelector": "metadata.name=trellis-config"})
    assert (one.verb, one.name) == ("watch", "trellis-config")
    every = access.attributes("GET", res, "kube-system", None, None, False, {})
    lookup = rbac_lookup(Options())
    assert labrbac.authorize(AGENT, one, lookup) and not labrbac.authorize(AGENT, every, lookup)


# ---- (d) bad options ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,flag", [
    ({"pod_cidr": "10.244.0.0/33"}, "--pod-cidr"), ({"pod_cidr": "10.244.1.0/16"}, "--pod-cidr"),
    ({"pod_cidr": "fd00::/48"}, "--pod-cidr"), ({"block_size": 16}, "--block-size"),
    ({"block_size": 31}, "--block-size"), ({"service_cidr": "10.96.0.0/29"}, "--service-cidr"),
    ({"service_cidr": "10.244.0.0/20"}, "--service-cidr"), ({"service_cidr": "ten"}, "--service-cidr"),
    ({"routing": "bgp"}, "--routing"), ({"mtu": 100}, "--mtu"), ({"isolation_mode": "tenant"}, "--isolation-mode"),
    ({"api_server": "192.0.2.10"}, "--api-server"), ({"api_server": "kube.example:6443"}, "--api-server"),
    ({"api_server": "192.0.2.10:99999"}, "--api-server"), ({"image": "a b"}, "--image"),
])
def test_bad_options_name_the_flag(kwargs, flag):
    with pytest.raises(OptionError) as e:
        render(Options(**kwargs))
    assert str(e.value).startswith(f"{flag} ")


def test_the_cli_writes_the_file_and_refuses_bad_values(tmp_path, capsys):
    out = tmp_path / "t.yaml"
    assert cli(["manifests", "--api-server", "192.0.2.10:6443", "--routing", "direct", "-o", str(out)]) == 0
    text = out.read_text()
    assert text == render(Options(api_server="192.0.2.10:6443", routing="direct"))
    assert "`trellis manifests --routing direct --api-server 192.0.2.10:6443`" in text.replace("\n# ", " ")
    assert capsys.readouterr().err == f"wrote {out}\n"
    assert cli(["manifests", "--pod-cidr", "10.0.0/33"]) == 2
    assert capsys.readouterr().err.startswith("error: --pod-cidr '10.0.0/33': not a CIDR")
    assert cli(["manifests"]) == 0 and capsys.readouterr().out == render(Options())


def test_the_placeholder_is_what_install_cni_refuses():
    from trellis.cni.install import UNSET_API_SERVER
    cm = next(d for d in objects(Options()) if d["kind"] == "ConfigMap")
    assert cm["data"]["kubernetesServiceHost"] == UNSET_API_SERVER
    assert workloads.config_map(Options(api_server="192.0.2.10:6443"))["data"]["kubernetesServiceHost"] == "192.0.2.10"
    assert rbac.NAMESPACE == "trellis-system"
