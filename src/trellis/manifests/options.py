"""What ``trellis manifests`` can be told about the cluster, checked before anything is rendered.

Each check names the flag and the value at fault (``OptionError``): a manifest that applies
cleanly but whose agents crash-loop on a bad CIDR is the failure this prevents.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, fields

import trellis
from trellis.cni.install import UNSET_API_SERVER
from trellis.policy.model import MODES

IMAGE = f"ghcr.io/trellis-net/trellis:{trellis.__version__}"
ROUTING_MODES = ("vxlan", "direct")
MTU_RANGE = (576, 65535)  # 0: derived from the underlay device (its MTU, less 50 for VXLAN)


class OptionError(ValueError):
    """A bad option; the message starts with the flag."""


@dataclass(frozen=True)
class Options:
    pod_cidr: str = "10.244.0.0/16"
    block_size: int = 24
    service_cidr: str = "10.96.0.0/16"
    routing: str = "vxlan"
    mtu: int = 0
    isolation_mode: str = "cluster"
    api_server: str = ""            # HOST:PORT of the control plane; "" renders a placeholder
    image: str = IMAGE
    with_dns: bool = False

    @property
    def api_host(self) -> str:
        return split_host_port(self.api_server)[0] if self.api_server else UNSET_API_SERVER

    @property
    def api_port(self) -> str:
        return split_host_port(self.api_server)[1] if self.api_server else "6443"

    def flags(self) -> list[str]:
        """The command line that renders these options (only what differs from the defaults)."""
        out = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                flag = "--" + f.name.replace("_", "-")
                out += [flag] if value is True else [flag, str(value)]
        return out


def split_host_port(value: str) -> tuple[str, str]:
    """``10.0.0.1:6443`` / ``[fd00::1]:6443`` -> (host, port); OptionError names --api-server."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise OptionError(f"--api-server {value!r}: write HOST:PORT, e.g. 192.0.2.10:6443")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise OptionError(f"--api-server {value!r}: the host must be an IP address: the agent reaches the "
                          "API server before any cluster DNS can answer (trellis is the service proxy)") from None
    return host, port


def _ipv4_network(flag: str, value: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value)
    except ValueError as e:
        raise OptionError(f"{flag} {value!r}: not a CIDR ({e})") from None
    if net.version != 4:
        raise OptionError(f"{flag} {value!r}: trellis networks pods and Services over IPv4 only")
    return net


def validate(o: Options) -> Options:
    """-> ``o`` when every option is usable; OptionError (naming the flag) otherwise."""
    pods = _ipv4_network("--pod-cidr", o.pod_cidr)
    if not isinstance(o.block_size, int) or not pods.prefixlen < o.block_size <= 30:
        raise OptionError(f"--block-size {o.block_size!r}: a node's block must be smaller than --pod-cidr "
                          f"{o.pod_cidr} (a prefix length from {pods.prefixlen + 1} to 30)")
    services = _ipv4_network("--service-cidr", o.service_cidr)
    if services.prefixlen > 28:
        raise OptionError(f"--service-cidr {o.service_cidr!r}: too small (at most /28: the API server takes "
                          "the first address and cluster DNS the tenth)")
    if services.overlaps(pods):
        raise OptionError(f"--service-cidr {o.service_cidr!r}: overlaps --pod-cidr {o.pod_cidr}")
    if o.routing not in ROUTING_MODES:
        raise OptionError(f"--routing {o.routing!r}: one of {', '.join(ROUTING_MODES)}")
    if not isinstance(o.mtu, int) or not (o.mtu == 0 or MTU_RANGE[0] <= o.mtu <= MTU_RANGE[1]):
        raise OptionError(f"--mtu {o.mtu!r}: 0 (the underlay's) or {MTU_RANGE[0]} to {MTU_RANGE[1]}")
    if o.isolation_mode not in MODES:
        raise OptionError(f"--isolation-mode {o.isolation_mode!r}: one of {', '.join(MODES)}")
    if o.api_server:
        split_host_port(o.api_server)
    if not o.image or any(c.isspace() for c in o.image):
        raise OptionError(f"--image {o.image!r}: an image reference, e.g. {IMAGE}")
    return o


def dns_ip(o: Options) -> str:
    """Cluster DNS: the tenth address of the service CIDR (10.96.0.10), as kubeadm configures kubelets."""
    return str(ipaddress.ip_network(o.service_cidr)[10])
