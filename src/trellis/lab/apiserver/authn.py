"""Who is asking: client certificates and ServiceAccount tokens, as kube-apiserver authenticates.

- A client certificate signed by the lab CA (checked by the TLS layer): user = the subject's
  CN, groups = its O entries.
- ``Authorization: Bearer <token>``: a ServiceAccount token (a JWT signed RS256 with the lab's
  ServiceAccount key, as the TokenRequest API issues it). Valid while it has not expired and
  while its ServiceAccount (and the pod it is bound to, if any) exists with the uid it names:
  a token of a deleted ServiceAccount stops working at once.
- Nothing, or credentials that do not check out: no user (the caller answers 401).

Every listener is secure (the host's 127.0.0.1 port and the in-lab 172.31.0.2:6443 alike); an
API server started without TLS (unit tests) treats its callers as ``system:lab-internal`` in
``system:masters`` (docs/security.md).
"""
from __future__ import annotations

import time
import uuid
from typing import Callable

import jwt
from cryptography.hazmat.primitives import serialization

from trellis.lab.apiserver.rbac import AUTHENTICATED, MASTERS, User

ISSUER = "https://kubernetes.default.svc.cluster.local"
INTERNAL = User("system:lab-internal", (MASTERS, AUTHENTICATED))
DEFAULT_TTL, MIN_TTL, MAX_TTL = 3600, 600, 48 * 3600

# (kind, namespace, name) -> the stored object or None
Get = Callable[[str, str, str], "dict | None"]


def user_from_peercert(peer: dict | None) -> User | None:
    """ssl's getpeercert() dict (only filled when the chain verified) -> the user it names."""
    if not peer:
        return None
    cn, orgs = "", []
    for rdn in peer.get("subject") or ():
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    return User(cn, tuple(orgs) + (AUTHENTICATED,)) if cn else None


VERIFIED_CACHE = 4096  # tokens whose signature was checked, kept until they expire


class Tokens:
    def __init__(self, private_pem: bytes, public_pem: bytes, get: Get) -> None:
        # parsed once: PyJWT would parse a PEM key on every token (an RSA key load is milliseconds)
        self.private = serialization.load_pem_private_key(private_pem, password=None)
        self.public = serialization.load_pem_public_key(public_pem)
        self.get = get
        self._verified: dict[str, dict] = {}

    def issue(self, sa: dict, audiences: list[str] | None = None, ttl: int = DEFAULT_TTL,
              bound: dict | None = None) -> tuple[str, int]:
        """A token for ServiceAccount ``sa`` (optionally bound to a pod); -> (token, expiry)."""
        now = int(time.time())
        exp = now + max(MIN_TTL, min(ttl, MAX_TTL))
        ns, name = sa["metadata"]["namespace"], sa["metadata"]["name"]
        claims = {"iss": ISSUER, "aud": audiences or [ISSUER], "sub": f"system:serviceaccount:{ns}:{name}",
                  "iat": now, "nbf": now, "exp": exp, "jti": str(uuid.uuid4()),
                  "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": name, "uid": sa["metadata"]["uid"]}}}
        if bound:
            claims["kubernetes.io"][bound["kind"].lower()] = {"name": bound["name"], "uid": bound["uid"]}
        return jwt.encode(claims, self.private, algorithm="RS256"), exp

    def verified(self, token: str) -> dict | None:
        """The claims of a token whose signature, issuer, audience and lifetime check out. A
        signature once verified stays so: cached until the token expires (kube-apiserver caches
        token authentications too), so a pod's every request does not cost an RSA verification.
        The ServiceAccount and pod it names are looked up on every request all the same."""
        now = time.time()
        hit = self._verified.get(token)
        if hit is not None and hit["exp"] > now:
            return hit
        try:
            claims = jwt.decode(token, self.public, algorithms=["RS256"], audience=ISSUER, issuer=ISSUER,
                                options={"require": ["exp", "sub", "iss", "aud"]})
        except jwt.PyJWTError:
            return None
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified = {t: c for t, c in self._verified.items() if c["exp"] > now}
            if len(self._verified) >= VERIFIED_CACHE:
                self._verified.clear()
        self._verified[token] = claims
        return claims

    def authenticate(self, token: str) -> User | None:
        claims = self.verified(token)
        if claims is None:
            return None
        k8s = claims.get("kubernetes.io") or {}
        ns, sa_ref = k8s.get("namespace", ""), k8s.get("serviceaccount") or {}
        sa = self.get("/serviceaccounts", ns, sa_ref.get("name", ""))
        if sa is None or sa["metadata"].get("uid") != sa_ref.get("uid") or sa["metadata"].get("deletionTimestamp"):
            return None
        pod_ref = k8s.get("pod")
        if pod_ref:
            pod = self.get("/pods", ns, pod_ref.get("name", ""))
            if pod is None or pod["metadata"].get("uid") != pod_ref.get("uid"):
                return None
        name = f"system:serviceaccount:{ns}:{sa_ref['name']}"
        return User(name, ("system:serviceaccounts", f"system:serviceaccounts:{ns}", AUTHENTICATED),
                    sa_ref.get("uid", ""))
