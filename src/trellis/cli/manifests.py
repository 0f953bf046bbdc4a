"""``trellis manifests``: print (or write) the manifest that installs trellis on a cluster."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

from trellis.manifests.options import IMAGE, Options, OptionError
from trellis.manifests.render import render, render_cleanup

EPILOG = """examples:
  trellis manifests --api-server 192.0.2.10:6443 > trellis.yaml && kubectl apply -f trellis.yaml
  trellis manifests --pod-cidr 10.32.0.0/12 --block-size 26 --routing direct --api-server 192.0.2.10:6443
  trellis manifests -o deploy/trellis.yaml     # the repository's file: every default
  trellis manifests --cleanup | kubectl apply -f -   # uninstall: after kubectl delete -f trellis.yaml"""


def add_parser(sub) -> None:
    defaults = Options()
    m = sub.add_parser("manifests", help="print the manifest that installs trellis on a cluster (kubectl apply -f)",
                       description="Render deploy/trellis.yaml for a cluster: namespace trellis-system, CRDs, "
                                   "RBAC, ConfigMap trellis-config, the agent DaemonSet and the controller "
                                   "Deployment (docs/install.md).", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    m.add_argument("--pod-cidr", default=defaults.pod_cidr, help="the cluster's pod CIDR, as kubeadm init "
                   "--pod-network-cidr (default %(default)s)")
    m.add_argument("--block-size", type=int, default=defaults.block_size,
                   help="prefix length of each node's pod block (default %(default)s)")
    m.add_argument("--service-cidr", default=defaults.service_cidr,
                   help="the Service CIDR, as kubeadm init --service-cidr (default %(default)s)")
    m.add_argument("--routing", default=defaults.routing, metavar="vxlan|direct",
                   help="between nodes: vxlan overlay (default) or direct routes (nodes on one L2 network)")
    m.add_argument("--mtu", type=int, default=defaults.mtu, help="MTU off the node (default 0: the underlay's)")
    m.add_argument("--isolation-mode", default=defaults.isolation_mode, metavar="cluster|namespace|deployment",
                   help="policy isolation mode (default %(default)s)")
    m.add_argument("--api-server", default="", metavar="IP:PORT",
                   help="the control plane's address, which agent and controller use directly (trellis is the "
                        "service proxy, so not the kubernetes Service); without it the manifest carries a "
                        "placeholder and the agent pods stop in their init container, saying why")
    m.add_argument("--image", default=IMAGE, help="the trellis image (default %(default)s)")
    m.add_argument("--with-dns", action="store_true",
                   help="also deploy trellis DNS as kube-dns (for clusters without CoreDNS)")
    m.add_argument("--cleanup", action="store_true",
                   help="render the uninstall step instead: a DaemonSet in kube-system that removes trellis' links, "
                        "routes, tables and files from every node (apply after kubectl delete -f trellis.yaml)")
    m.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    m.set_defaults(fn=cmd_manifests)


def cmd_manifests(args) -> int:
    opts = Options(pod_cidr=args.pod_cidr, block_size=args.block_size, service_cidr=args.service_cidr,
                   routing=args.routing, mtu=args.mtu, isolation_mode=args.isolation_mode,
                   api_server=args.api_server, image=args.image, with_dns=args.with_dns)
    try:
        text = render_cleanup(opts) if args.cleanup else render(opts)
    except OptionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.output or args.output == "-":
        sys.stdout.write(text)
        return 0
    d = os.path.dirname(os.path.abspath(args.output))
    fd, tmp = tempfile.mkstemp(prefix=".trellis-manifests.", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, args.output)
    except BaseException:
        os.unlink(tmp)
        raise
    print(f"wrote {args.output}", file=sys.stderr)
    return 0
