"""A node agent's CNI half for the crash storm: IPAM on disk, routed pods, the policy table.

Run inside a throwaway node namespace: ``python crash_agent.py STATE_DIR SOCKET``. It does on
start what ``trellis agent`` does (restore the pod network from the IPAM store, keep the policy
table it left, rebuild the attachment book from IPAM, one full sync), then serves trellis-cni
until it is killed. Prints ``ready`` when the socket is up.
"""
import os
import sys
import threading

from trellis.agent.attachments import Attachment
from trellis.agent.cniserver import CNIServer
from trellis.agent.dataplane import PodNetwork
from trellis.agent.ipam import Allocator, DiskStore
from trellis.agent.policy import PolicyController

CIDR, BLOCK = "10.244.0.0/16", "10.244.1.0/24"


def main() -> None:
    state, sock = sys.argv[1], sys.argv[2]
    store = DiskStore(os.path.join(state, "ipam"))
    net = PodNetwork(Allocator(BLOCK, store), 1450, CIDR)
    net.restore()
    policy = PolicyController(None, "node-1", CIDR, held=lambda: {(r.container_id, r.ifname) for r in store.all()})
    policy.ensure_closed()
    policy.seed([Attachment(r.container_id, r.ifname, r.ip, r.pod) for r in store.all()])
    policy.full_sync()
    policy.synced.set()
    CNIServer(sock, lambda: net, lambda: None, on_add=policy.pod_added, on_del=policy.attachment_deleted).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
