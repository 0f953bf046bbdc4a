"""What a request carries, read with kube-apiserver's limits: body size, nesting, query values.

Every malformed input is the client's error (400, or 413 for a body over the
limit), never the server's: a 5xx means a bug in the lab, not a bad request.
"""
from __future__ import annotations

import json

import yaml
from aiohttp import web

from trellis.lab.apiserver import errors, protobuf

MAX_BODY = 3 * 1024 * 1024  # kube-apiserver's --max-request-body-bytes default (3 MiB)
# Deeper than any real object, and shallow enough that every code path (copies, patches,
# serialisation) handles it without running out of Python stack.
MAX_DEPTH = 200


def too_large() -> errors.ApiError:
    return errors.ApiError(413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}")


def depth(value) -> int:
    """Nesting depth of a decoded document, without recursion."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        v, d = todo.pop()
        if isinstance(v, dict):
            v = list(v.values())
        if isinstance(v, list):
            deepest = max(deepest, d)
            todo.extend((x, d + 1) for x in v)
    return deepest


async def body(request: web.Request):
    """The decoded body ({} when empty): JSON, YAML or kubectl's protobuf envelope."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise too_large()
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise too_large() from None
    if not raw:
        return {}
    ctype = request.content_type or ""
    try:
        if "protobuf" in ctype:
            doc = protobuf.decode(raw)  # kubectl's typed clients; answered in JSON
        elif "yaml" in ctype:
            doc = yaml.safe_load(raw)
        else:
            doc = json.loads(raw)
    except RecursionError:
        raise errors.bad_request(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, yaml.YAMLError) as e:  # JSONDecodeError, UnicodeDecodeError, protobuf's DecodeError
        raise errors.bad_request(f"the request body is not valid {_format(ctype)}: {e}") from None
    if depth(doc) > MAX_DEPTH:
        raise errors.bad_request(f"the request body is nested deeper than {MAX_DEPTH} levels")
    return doc


def _format(ctype: str) -> str:
    return "protobuf" if "protobuf" in ctype else "YAML" if "yaml" in ctype else "JSON"


def integer(query, name: str, default: int | None = None, minimum: int | None = 0) -> int | None:
    """An integer query parameter; 400 naming it when it is not one (or is below minimum)."""
    raw = query.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise errors.bad_request(f"invalid value for {name}: {raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise errors.bad_request(f"invalid value for {name}: {value} must be at least {minimum}")
    return value


def field_validation(query) -> str:
    from trellis.lab.apiserver.api import FIELD_VALIDATIONS
    value = query.get("fieldValidation") or "Warn"
    if value not in FIELD_VALIDATIONS:
        raise errors.bad_request(f"fieldValidation parameter unsupported: {value!r}; supported values are "
                                 + ", ".join(FIELD_VALIDATIONS))
    return value


def dry_run(values, field: str = "dryRun") -> bool:
    """``dryRun=All`` (the only value kube-apiserver knows) -> True; none -> False."""
    bad = [v for v in values if v != "All"]
    if bad:
        raise errors.ApiError(400, "BadRequest", f'{field}: Unsupported value: "{bad[0]}": supported values: "All"')
    return bool(values)


def field_manager(query, user_agent: str) -> str:
    """The writer's name in managedFields: ``fieldManager``, else the user agent up to its first
    "/" (``kubectl/v1.32.0 (linux/amd64) ...`` -> kubectl), as kube-apiserver names it."""
    value = query.get("fieldManager") or user_agent.split("/", 1)[0][:128] or "unknown"
    if len(value) > 128:
        raise errors.bad_request(f"fieldManager: Too long: may not be more than 128 bytes (got {len(value)})")
    return value
