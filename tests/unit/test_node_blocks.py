"""The controller's node blocks: a node synced twice before the cache shows its block keeps that block."""
from trellis.controller.main import NodeBlocks


class Nodes:
    def __init__(self, nodes):
        self.nodes = {n["metadata"]["name"]: n for n in nodes}

    def add_handler(self, fn):
        pass

    def get(self, ns, name):
        return self.nodes.get(name)

    def items(self):
        return list(self.nodes.values())


class Client:
    def __init__(self):
        self.patches = []

    def patch(self, api_version, plural, name, patch):
        self.patches.append((name, patch))


def node(name, cidr=None):
    return {"metadata": {"name": name}, "spec": {"podCIDR": cidr} if cidr else {}}


def test_a_second_event_before_the_cache_caught_up_keeps_the_block():
    nodes, client = Nodes([node("node-1", "10.244.1.0/24"), node("node-4")]), Client()
    nb = NodeBlocks(client, nodes, "10.244.0.0/16")
    nb.sync("node-4")
    nb.sync("node-4")  # the informer still shows node-4 without its podCIDR (a taint changed meanwhile)
    blocks = [p["spec"]["podCIDR"] for _, p in client.patches if "spec" in p]
    assert blocks == ["10.244.4.0/24", "10.244.4.0/24"]
    assert nb.free_block("node-9") == "10.244.9.0/24"
