"""``trellis-agent --cleanup``: remove everything the agent made on its node, for uninstall (not
for a restart, which keeps it all so that pods keep their networking).

What the agent makes, and so what goes: the VXLAN device and its routes; the LoadBalancer
addresses it put on ``lo`` (by their label); the routes it owns (protocol trellis) in the main
table and in direct mode's tunnel table, with its fwmark rule; the host ends of pods' veths;
its nftables tables (pod wiring, service proxy, policy); and its state directory (the IPAM
store), with its parent when nothing else is left in it (/var/lib/trellis). Pods' own
network namespaces belong to the runtime and go with the pods. The CNI plugin and its config
are the installer's (``trellis-install-cni --uninstall``). Each step is idempotent: a second
run, or a run on a node the agent never touched, removes nothing and succeeds.
"""
from __future__ import annotations

import os
import shutil

from trellis.agent import lbannounce, nettable
from trellis.agent import policy as policy_ctl
from trellis.agent.routing import VXLAN_DEV
from trellis.kernel import netlink, nft
from trellis.kernel.netns import KernelError
from trellis.kernel.rtnl import RT_TABLE_MAIN
from trellis.names import JUDGED_MARK, TUNNEL_RULE_PRIORITY, TUNNEL_TABLE
from trellis.proxy import nftables as proxy_nft


def cleanup(state_dir: str | None = None) -> list[str]:
    """Remove the agent's links, addresses, routes, rule, tables and (when given) state
    directory in this network namespace; -> what was removed, for the log."""
    done = []
    if netlink.delete_link(VXLAN_DEV):
        done.append(f"link {VXLAN_DEV}")
    for cidr in netlink.addresses(lbannounce.LB_DEV, label=lbannounce.LB_LABEL):
        netlink.delete_address(lbannounce.LB_DEV, cidr)
        done.append(f"address {cidr} on {lbannounce.LB_DEV}")
    for table in (RT_TABLE_MAIN, TUNNEL_TABLE):
        for r in netlink.owned_routes(table=table):
            if netlink.delete_route(r.dst, table=table):
                done.append(f"route {r.dst}" + (f" table {table}" if table != RT_TABLE_MAIN else ""))
    netlink.delete_fwmark_rule(TUNNEL_RULE_PRIORITY, JUDGED_MARK, TUNNEL_TABLE)  # direct mode's tunnel
    for name in netlink.list_links(prefix=nettable.HOST_IF_PREFIX):
        netlink.delete_link(name)
        done.append(f"link {name}")
    policy_ctl.cleanup()
    for table in (nettable.TABLE, proxy_nft.TABLE):
        try:
            nft.apply(f"table inet {table}\ndelete table inet {table}\n", f"remove table {table}")
            done.append(f"table inet {table}")
        except KernelError:
            pass
    if state_dir and os.path.isdir(state_dir):
        shutil.rmtree(state_dir)
        done.append(state_dir)
        parent = os.path.dirname(os.path.abspath(state_dir))
        try:
            os.rmdir(parent)  # only when empty
            done.append(parent)
        except OSError:
            pass
    return done
