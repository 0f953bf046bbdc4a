"""The path of a request through the Ingress, for ``trellis explain CLIENT http://HOST/PATH``. Pure.

Two connections, as the kernel sees them: the client to the ingress controller's
Service (leg 1, any path ``paths.trace`` knows: from outside through the LB IP,
from a pod through the ClusterIP), then, from the ingress pod that took it, a
new connection to the backend pod haproxy picks for that host and path (leg 2:
the backends are the endpoints themselves, no second Service hop). The backend's
policy therefore sees the ingress pod as the source (docs/policy.md).
"""
from __future__ import annotations

from trellis.ingress.compile import Plan, select
from trellis.policy import paths
from trellis.policy.paths import ALLOWED, NO_ENDPOINTS, Client, Hop, World


def trace(world: World, client: Client, plan: Plan, front: list[tuple[str, int]], host: str,
          path: str) -> list[Hop]:
    """``front``: the (address, port) pairs of the ingress Service the client connects to."""
    leg1 = [h for ip, port in front for h in paths.trace(world, client, ip, "tcp", port)]
    route = select(plan, host, path)
    backend = route.backend if route is not None else plan.default_backend
    what = f"Ingress {host}{path}"
    out: list[Hop] = []
    for h in leg1:
        if h.outcome != ALLOWED:
            out.append(h)
            continue
        if backend is None:
            out.append(Hop(f"{what} ({h.via})", h.entry, h.endpoint, h.endpoint_ip, h.endpoint_port,
                           h.endpoint_node, h.judged_at, h.source_seen, NO_ENDPOINTS,
                           "no rule matches and there is no default backend: the controller answers 404"))
            continue
        eps = plan.backends[backend].endpoints
        if not eps:
            out.append(Hop(f"{what} ({h.via})", h.entry, h.endpoint, h.endpoint_ip, h.endpoint_port,
                           h.endpoint_node, h.judged_at, h.source_seen, NO_ENDPOINTS,
                           f"backend {plan.backends[backend].ref.service} has no ready endpoint: the "
                           "controller answers 503"))
            continue
        pod = world.state.pod_by_ip(h.endpoint_ip)
        proxy = Client(pod.key if pod else h.endpoint, h.endpoint_ip, "pod", pod.node if pod else "")
        for ip, port in sorted(eps):
            for h2 in paths.trace(world, proxy, ip, "tcp", port):
                h2.via = f"{what} via {proxy.label} ({h.via})"
                out.append(h2)
    return out
