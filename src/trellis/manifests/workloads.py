"""The objects that run trellis: its namespace, ConfigMap trellis-config, the agent DaemonSet, the
controller Deployment and (optionally) the cluster DNS. Pure: options in, object dicts out.

The agent and the controller reach the API server at the address trellis-config names
(kubernetesServiceHost/Port), not through the ``kubernetes`` Service: trellis *is* the
cluster's service proxy, so that ClusterIP works only once the agent is up (Cilium without
kube-proxy does the same). The explicit env overrides the one the kubelet injects.
"""
from __future__ import annotations

from trellis.manifests.options import Options, dns_ip
from trellis.manifests.rbac import AGENT, CONTROLLER, DNS, DNS_NAMESPACE, NAMESPACE
from trellis.names import CONFIG_NAME

# an abstract unix socket: it lives in the node's network namespace (the agent is hostNetwork, the
# runtime runs trellis-cni there), so no hostPath is shared for it; only root may use it
AGENT_SOCKET = "@trellis/agent.sock"
AGENT_STATE = "/var/lib/trellis/agent"
METRICS_PORT = 9753  # agent/main.py --metrics-port; the health endpoints are served there too
LABEL = "app.kubernetes.io/name"


def namespace() -> dict:
    # the agent is privileged and uses the host's network and paths: Pod Security "privileged"
    levels = {f"pod-security.kubernetes.io/{m}": "privileged" for m in ("enforce", "audit", "warn")}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": levels}}


def config_data(o: Options) -> list[tuple[str, str, str]]:
    """(key, value, what it is) of trellis-config."""
    return [
        ("clusterCIDR", o.pod_cidr, "the pod CIDR (kubeadm init --pod-network-cidr)"),
        ("blockSize", str(o.block_size), "prefix length of each node's pod block (with kube-controller-manager "
                                         "allocating node CIDRs: its --node-cidr-mask-size)"),
        ("serviceCIDR", o.service_cidr, "the Service CIDR (kubeadm init --service-cidr)"),
        ("routingMode", o.routing, "between nodes: vxlan (overlay) or direct (nodes share an L2 network)"),
        ("mtu", str(o.mtu), "MTU off the node; 0: the underlay device's (less 50 for vxlan)"),
        ("isolationMode", o.isolation_mode, "policy isolation: cluster (Kubernetes' default), namespace or "
                                            "deployment"),
        ("kubernetesServiceHost", o.api_host, "the API server's IP (trellis manifests --api-server): agent and "
                                              "controller reach it directly, not through the kubernetes Service"),
        ("kubernetesServicePort", o.api_port, "the API server's port"),
    ]


def config_map(o: Options) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CONFIG_NAME, "namespace": NAMESPACE},
            "data": {k: v for k, v, _ in config_data(o)}}


def _from_config(var: str, key: str) -> dict:
    return {"name": var, "valueFrom": {"configMapKeyRef": {"name": CONFIG_NAME, "key": key}}}


def _field(var: str, path: str) -> dict:
    return {"name": var, "valueFrom": {"fieldRef": {"fieldPath": path}}}


API_ENV = [_from_config("KUBERNETES_SERVICE_HOST", "kubernetesServiceHost"),
           _from_config("KUBERNETES_SERVICE_PORT", "kubernetesServicePort")]


def _host_path(name: str, path: str, typ: str | None = "DirectoryOrCreate") -> dict:
    return {"name": name, "hostPath": {"path": path, **({"type": typ} if typ else {})}}


def _labels(component: str) -> dict:
    return {LABEL: component}


def agent_daemonset(o: Options) -> dict:
    probe = {"httpGet": {"path": "/livez", "port": "metrics"}, "periodSeconds": 10, "timeoutSeconds": 5,
             "failureThreshold": 6}
    install = {
        "name": "install-cni", "image": o.image, "command": ["trellis-install-cni"],
        "args": ["--bin-dir=/host/opt/cni/bin", "--conf-dir=/host/etc/cni/net.d", f"--socket={AGENT_SOCKET}"],
        "env": API_ENV,  # it refuses to install while the API server is the placeholder
        "volumeMounts": [{"name": "cni-bin", "mountPath": "/host/opt/cni/bin"},
                         {"name": "cni-conf", "mountPath": "/host/etc/cni/net.d"}],
    }
    agent = {
        "name": "agent", "image": o.image, "command": ["trellis-agent"],
        "args": ["--node=$(NODE_NAME)", "--mode=$(ROUTING_MODE)", "--cluster-cidr=$(CLUSTER_CIDR)",
                 "--service-cidr=$(SERVICE_CIDR)", f"--state-dir={AGENT_STATE}", f"--socket={AGENT_SOCKET}",
                 f"--metrics-port={METRICS_PORT}"],
        "env": [_field("NODE_NAME", "spec.nodeName"), _from_config("ROUTING_MODE", "routingMode"),
                _from_config("CLUSTER_CIDR", "clusterCIDR"), _from_config("SERVICE_CIDR", "serviceCIDR")] + API_ENV,
        # netlink, nftables, sysctls, and other pods' network namespaces: the agent's job
        "securityContext": {"privileged": True},
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": probe,
        "readinessProbe": dict(probe, httpGet={"path": "/readyz", "port": "metrics"}, periodSeconds=5,
                               failureThreshold=3),
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "volumeMounts": [
            {"name": "state", "mountPath": AGENT_STATE},              # IPAM store: survives restarts
            # pods' namespaces, also those the runtime creates after the agent started
            {"name": "netns", "mountPath": "/var/run/netns", "mountPropagation": "HostToContainer"},
            {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True},  # vxlan, nf_* modules
            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},  # shared with the host's iptables users
        ],
    }
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": AGENT, "namespace": NAMESPACE, "labels": _labels(AGENT)},
            "spec": {
                "selector": {"matchLabels": _labels(AGENT)},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {"metadata": {"labels": _labels(AGENT)}, "spec": {
                    "hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet",
                    # a runtime may name a pod's namespace /proc/<pid>/ns/net (cri-dockerd, ctr --cni):
                    # only the host's PID namespace resolves it
                    "hostPID": True,
                    "priorityClassName": "system-node-critical", "serviceAccountName": AGENT,
                    "tolerations": [{"operator": "Exists"}],  # every node needs pod networking, tainted or not
                    "initContainers": [install], "containers": [agent],
                    "volumes": [_host_path("cni-bin", "/opt/cni/bin"), _host_path("cni-conf", "/etc/cni/net.d"),
                                _host_path("state", AGENT_STATE),
                                _host_path("netns", "/var/run/netns"), _host_path("lib-modules", "/lib/modules", None),
                                _host_path("xtables-lock", "/run/xtables.lock", "FileOrCreate")],
                }},
            }}


CLEANUP = "trellis-cleanup"
CLEANUP_NAMESPACE = "kube-system"  # trellis-system is gone by the time it runs
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def cleanup_daemonset(o: Options) -> dict:
    """``trellis manifests --cleanup``: after ``kubectl delete -f trellis.yaml``, one pod per node
    removes what the agent made (``trellis-agent --cleanup``) and what the installer wrote
    (``trellis-install-cni --uninstall``) in its init containers; it is Ready when its node is
    clean (``kubectl rollout status`` waits for every node), then it is deleted."""
    state_parent = "/host/var/lib"
    clean = {
        "name": "remove-agent-state", "image": o.image, "command": ["trellis-agent"],
        "args": ["--cleanup", "--node=$(NODE_NAME)", f"--state-dir={state_parent}{AGENT_STATE[len('/var/lib'):]}"],
        "env": [_field("NODE_NAME", "spec.nodeName")],
        "securityContext": {"privileged": True},  # links, routes and nftables of the node
        "volumeMounts": [{"name": "var-lib", "mountPath": state_parent}],
    }
    uninstall = {
        "name": "uninstall-cni", "image": o.image, "command": ["trellis-install-cni"],
        "args": ["--uninstall", "--bin-dir=/host/opt/cni/bin", "--conf-dir=/host/etc/cni/net.d"],
        "volumeMounts": [{"name": "cni-bin", "mountPath": "/host/opt/cni/bin"},
                         {"name": "cni-conf", "mountPath": "/host/etc/cni/net.d"}],
    }
    done = {"name": "done", "image": PAUSE_IMAGE, "resources": {"requests": {"cpu": "1m", "memory": "8Mi"}}}
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": CLEANUP, "namespace": CLEANUP_NAMESPACE, "labels": _labels(CLEANUP)},
            "spec": {
                "selector": {"matchLabels": _labels(CLEANUP)},
                "template": {"metadata": {"labels": _labels(CLEANUP)}, "spec": {
                    "hostNetwork": True, "automountServiceAccountToken": False,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists"}],  # every node the agent ran on
                    # the CNI config goes first: the runtime stops choosing trellis before its links do
                    "initContainers": [uninstall, clean], "containers": [done],
                    "volumes": [_host_path("cni-bin", "/opt/cni/bin", "Directory"),
                                _host_path("cni-conf", "/etc/cni/net.d", "Directory"),
                                _host_path("var-lib", "/var/lib", "Directory")],
                }},
            }}


def controller_deployment(o: Options) -> dict:
    container = {
        "name": "controller", "image": o.image, "command": ["trellis-controller"],
        "args": ["--leader-elect", "--leader-elect-namespace=$(POD_NAMESPACE)", "--cluster-cidr=$(CLUSTER_CIDR)",
                 "--block-prefix=$(BLOCK_SIZE)"],
        "env": [_field("POD_NAME", "metadata.name"), _field("POD_NAMESPACE", "metadata.namespace"),
                _from_config("CLUSTER_CIDR", "clusterCIDR"), _from_config("BLOCK_SIZE", "blockSize")] + API_ENV,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    spread = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
        "weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": _labels(CONTROLLER)},
                                           "topologyKey": "kubernetes.io/hostname"}}]}}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": CONTROLLER, "namespace": NAMESPACE, "labels": _labels(CONTROLLER)},
            "spec": {
                "replicas": 2,  # one leads (Lease trellis-controller), one stands by
                "selector": {"matchLabels": _labels(CONTROLLER)},
                "template": {"metadata": {"labels": _labels(CONTROLLER)}, "spec": {
                    # it hands out the pod blocks the agents wait for: it runs before pods have networking
                    "hostNetwork": True,
                    "priorityClassName": "system-cluster-critical", "serviceAccountName": CONTROLLER,
                    "tolerations": [
                        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
                        # NoSchedule and NoExecute: the nodes are not ready until it has given them blocks
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists"}],
                    "affinity": spread, "containers": [container],
                }},
            }}


def dns(o: Options) -> list[dict]:
    """trellis dns behind kube-dns (for clusters without CoreDNS). In kube-system, with the Service,
    since a Service selects pods of its own namespace; an ordinary pod, so it reaches the API
    server through the kubernetes Service the agents proxy (the kubelet's env)."""
    labels = {"k8s-app": "kube-dns"}
    container = {
        "name": "dns", "image": o.image, "command": ["trellis-dns"],
        "args": [f"--cluster-range={o.service_cidr}", f"--cluster-range={o.pod_cidr}"],
        "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                  {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                  {"name": "ready", "containerPort": 8181, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "ready"}, "periodSeconds": 2},
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
    }
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                  "metadata": {"name": DNS, "namespace": DNS_NAMESPACE, "labels": labels},
                  "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                           "template": {"metadata": {"labels": labels}, "spec": {
                               "dnsPolicy": "Default", "priorityClassName": "system-cluster-critical",
                               "serviceAccountName": DNS, "containers": [container]}}}}
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "kube-dns", "namespace": DNS_NAMESPACE,
                            "labels": {**labels, "kubernetes.io/name": "DNS"}},
               "spec": {"selector": labels, "clusterIP": dns_ip(o), "ports": [
                   {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                   {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}}
    return [deployment, service]
