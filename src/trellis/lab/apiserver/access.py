"""Authentication and authorization of the API server's requests (the HTTP side).

Per request: who (``authn``), what (kube's RequestInfo as ``rbac.Attributes``), allowed or
not (``rbac``). Plus the APIs that talk about access: TokenRequest
(``serviceaccounts/<name>/token``, ``kubectl create token``), SelfSubjectAccessReview and
SelfSubjectRulesReview (``kubectl auth can-i [--list]``), SelfSubjectReview (``kubectl auth
whoami``) and TokenReview.
"""
from __future__ import annotations

import datetime
from contextvars import ContextVar

from trellis.kube import selectors
from trellis.lab.apiserver import errors, nodeauthz, rbac
from trellis.lab.apiserver.authn import INTERNAL, Tokens, user_from_peercert
from trellis.lab.apiserver.rbac import Attributes, User

USER: ContextVar[User] = ContextVar("user", default=INTERNAL)
STREAM_SUBRESOURCES = ("exec", "attach", "portforward")  # "create" whatever the method, as upstream
REVIEW_GROUPS = ("authorization.k8s.io", "authentication.k8s.io")
UNAUTHORIZED = errors.ApiError(401, "Unauthorized", "Unauthorized")


def attributes(method: str, res, ns: str | None, name: str | None, sub: str | None, watch: bool,
               query) -> Attributes:
    if sub in STREAM_SUBRESOURCES:
        verb = "create"
    elif method in ("GET", "HEAD"):
        verb = "watch" if watch or query.get("watch") in ("1", "true") else ("get" if name else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method) or (
            "delete" if name else "deletecollection")
    namespace = ns or ""
    if res.key == "/namespaces" and name:
        namespace = name
    if not name and verb in ("list", "watch"):
        name = selected_name(query.get("fieldSelector"))
    return Attributes(verb, res.group, res.plural, sub or "", name or "", namespace)


def selected_name(field_selector: str | None) -> str:
    """kube's RequestInfo: a list or watch whose field selector pins ``metadata.name`` is about that
    one object, so a rule with ``resourceNames`` can allow it (an informer of one ConfigMap)."""
    try:
        terms = selectors.parse_field_selector(field_selector)
    except selectors.SelectorError:
        return ""
    name = next((v for path, op, v in terms if path == "metadata.name" and op == "="), "")
    return name if name not in (".", "..") and "/" not in name and "%" not in name else ""


class Access:
    def __init__(self, api, tokens: Tokens | None, enabled: bool) -> None:
        self.api, self.tokens, self.enabled = api, tokens, enabled

    def lookup(self, bucket: str, ns: str | None) -> list:
        return self.api.store.list(bucket, ns)

    def authenticate(self, request) -> User | None:
        """The user of a request on the secure port (None: 401); the in-lab port is trusted."""
        if not self.enabled or not request.secure:
            return INTERNAL
        user = user_from_peercert(request.transport.get_extra_info("peercert") if request.transport else None)
        if user is None and self.tokens is not None:
            auth = request.headers.get("Authorization", "")
            if auth[:7].lower() == "bearer ":
                user = self.tokens.authenticate(auth[7:].strip())
        return user

    def allowed(self, user: User, a: Attributes) -> bool:
        """kube-apiserver's --authorization-mode=Node,RBAC: the Node authorizer first."""
        return nodeauthz.authorize(user, a, self.lookup) or rbac.authorize(user, a, self.lookup)

    def check(self, user: User, a: Attributes) -> None:
        if not self.allowed(user, a):
            raise errors.ApiError(403, "Forbidden", rbac.forbidden_message(user, a),
                                  details={"name": a.name, "group": a.group, "kind": a.resource} if a.resource else None)

    # -- the access APIs --
    def token_request(self, ns: str, name: str, body: dict) -> dict:
        if self.tokens is None:
            raise errors.ApiError(404, "NotFound", "this API server issues no ServiceAccount tokens")
        sa = self.api.store.get("/serviceaccounts", ns, name)
        if sa is None:
            raise errors.not_found("serviceaccounts", name)
        spec = (body or {}).get("spec") or {}
        bound = spec.get("boundObjectRef")
        if bound:
            obj = self.api.store.get("/pods" if bound.get("kind") == "Pod" else "/secrets", ns, bound.get("name", ""))
            if obj is None or (bound.get("uid") and bound["uid"] != obj["metadata"]["uid"]):
                raise errors.ApiError(404, "NotFound", f'{bound.get("kind")} "{bound.get("name")}" not found')
            bound = {"kind": bound.get("kind"), "name": bound.get("name"), "uid": obj["metadata"]["uid"]}
        token, exp = self.tokens.issue(sa, spec.get("audiences"), int(spec.get("expirationSeconds") or 3600), bound)
        stamp = datetime.datetime.fromtimestamp(exp, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
                "spec": {**spec, "expirationSeconds": exp - int(datetime.datetime.now().timestamp())},
                "status": {"token": token, "expirationTimestamp": stamp}}

    def review(self, res, user: User, body: dict) -> dict:
        kind = res.kind
        spec = (body or {}).get("spec") or {}
        out = {"kind": kind, "apiVersion": res.api_version, "metadata": {"creationTimestamp": None}, "spec": spec}
        if kind == "SelfSubjectAccessReview":
            ra, nra = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
            if ra:
                a = Attributes(ra.get("verb", ""), ra.get("group", ""), ra.get("resource", ""),
                               ra.get("subresource", ""), ra.get("name", ""), ra.get("namespace", ""))
            elif nra:
                a = Attributes(nra.get("verb", ""), path=nra.get("path", ""))
            else:
                raise errors.Invalid(kind, "", [("spec.resourceAttributes", "FieldValueRequired",
                                                 "Required value: exactly one of nonResourceAttributes or "
                                                 "resourceAttributes must be specified")], res.group)
            ok = self.allowed(user, a)
            out["status"] = {"allowed": ok} | ({} if ok else {"reason": ""})
            if ok:
                out["status"]["reason"] = "RBAC: allowed" if rbac.MASTERS not in user.groups else \
                    "allowed by the system:masters group"
        elif kind == "SelfSubjectRulesReview":
            rules = ([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}] if rbac.MASTERS in user.groups
                     else rbac.rules_for(user, spec.get("namespace", ""), self.lookup))
            out["status"] = {
                "resourceRules": [{k: r.get(k, []) for k in ("verbs", "apiGroups", "resources", "resourceNames")}
                                  for r in rules if not r.get("nonResourceURLs")],
                "nonResourceRules": [{"verbs": r.get("verbs", []), "nonResourceURLs": r["nonResourceURLs"]}
                                     for r in rules if r.get("nonResourceURLs")]
                + ([{"verbs": ["*"], "nonResourceURLs": ["*"]}] if rbac.MASTERS in user.groups else []),
                "incomplete": False}
        elif kind == "SelfSubjectReview":
            out["status"] = {"userInfo": {"username": user.name, "uid": user.uid, "groups": list(user.groups)}}
        elif kind == "TokenReview":
            who = self.tokens.authenticate(spec.get("token", "")) if self.tokens else None
            out["status"] = {"authenticated": who is not None} | ({"user": {
                "username": who.name, "uid": who.uid, "groups": list(who.groups)}} if who else {})
        else:
            raise errors.ApiError(405, "MethodNotAllowed", f"{kind} cannot be created here")
        return out
