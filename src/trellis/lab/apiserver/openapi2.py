"""/openapi/v2: a schema-less OpenAPI v2 document, in the protobuf kubectl asks for.

kubectl validates a ``kind: List`` on the client against OpenAPI v2 (its
OpenAPI v3 field-validation check never covers List), and a 404 there fails
``kubectl apply -f list.yaml``. A document without definitions makes kubectl
skip client-side validation of each item (the server validates it) and fall
back to its compiled-in types for patches, as it does today with v3.
"""
from __future__ import annotations

TITLE, VERSION = "trellis lab", "v1.32.0"
PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"  # what kubectl asks for


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    out = bytearray([(number << 3) | 2])
    n = len(payload)
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def document_protobuf() -> bytes:
    # gnostic openapi_v2.Document: swagger = 1, info = 2 (Info: title = 1, version = 2)
    info = _field(1, TITLE.encode()) + _field(2, VERSION.encode())
    return _field(1, b"2.0") + _field(2, info)


def document_json() -> dict:
    return {"swagger": "2.0", "info": {"title": TITLE, "version": VERSION}, "paths": {}, "definitions": {}}
