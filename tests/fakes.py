"""Fakes shared by the test tiers."""
import threading


class FakeInformer:
    """The Informer surface the agent's controllers use, fed by the test; listed at once unless
    ``synced=False``."""

    def __init__(self, plural: str = "things", synced: bool = True):
        self.cache, self.handlers, self.synced, self.plural = {}, [], threading.Event(), plural
        if synced:
            self.synced.set()

    def add_handler(self, h):
        self.handlers.append(h)

    def items(self):
        return list(self.cache.values())

    def get(self, ns, name):
        return self.cache.get(f"{ns}/{name}")

    def put(self, obj):
        key = f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"
        old = self.cache.get(key)
        self.cache[key] = obj
        for h in self.handlers:
            h("MODIFIED" if old else "ADDED", obj, old)

    def remove(self, ns, name):
        obj = self.cache.pop(f"{ns}/{name}")
        for h in self.handlers:
            h("DELETED", obj, None)
