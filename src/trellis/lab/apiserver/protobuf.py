"""Protobuf request bodies, as kubectl's typed clients send them, turned into JSON objects.

The envelope (k8s.io/apimachinery runtime/serializer/protobuf): the 4 bytes
``k8s\\x00`` then a ``runtime.Unknown`` message: 1 typeMeta {1 apiVersion,
2 kind}, 2 raw (the object's own message), 3 contentEncoding, 4 contentType.

Why a field table and not a protobuf library: no package on PyPI ships the
k8s.io/api descriptors (the Kubernetes Python client is JSON-only), and
generating them would mean vendoring Kubernetes' .proto files. The wire format
is small (varints and length-delimited fields are all k8s uses), so this module
reads it generically and names the fields from ``protobuf_fields.TABLE``, which
lists the messages of every kind kubectl's generators create (``create
deployment|job|cronjob|...``, ``run``, ``expose``).

Zero values: Go's generated marshallers write every non-pointer field, set or
not, so an unknown field holding a zero value (empty string, 0, empty message)
is what "unset" looks like and is skipped; an unknown field with a value is an
error naming the message and field number, never silently dropped. Known fields
drop zero values as JSON's ``omitempty`` does, except those the table marks as
pointers (``?``), where 0 and false are real values (``replicas: 0``).
"""
from __future__ import annotations

import base64
import datetime as dt

from trellis.lab.apiserver import errors
from trellis.lab.apiserver.protobuf_fields import KINDS, TABLE

MAGIC = b"k8s\x00"
ZERO_TIME = -62135596800  # Go's time.Time{} in Unix seconds


class DecodeError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise DecodeError("varint longer than 10 bytes")


def fields(buf: bytes):
    """Yield (field number, wire type, value): an int for varints and fixed, bytes for length-delimited."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise DecodeError(f"field {num}: length {n} past the end of the message")
            v, i = buf[i:i + n], i + n
        elif wt == 1:
            v, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wt == 5:
            v, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise DecodeError(f"field {num}: wire type {wt} is not used by Kubernetes")
        yield num, wt, v


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _is_zero(wt: int, v) -> bool:
    """Empty, 0, or a message of only such fields (which bytes that are not a message never are)."""
    if wt != 2:
        return v == 0
    if not v:
        return True
    try:
        return all(_is_zero(w, x) for _, w, x in fields(v))
    except DecodeError:
        return False


def _scalar(kind: str, wt: int, v, where: str):
    base = kind.rstrip("?")
    if base == "s":
        if wt != 2:
            raise DecodeError(f"{where}: a string with wire type {wt}")
        return v.decode()
    if base == "i":
        if wt != 0:
            raise DecodeError(f"{where}: an integer with wire type {wt}")
        return _signed(v)
    if base == "b":
        return bool(v)
    if base == "bytes":
        return base64.b64encode(v).decode()
    if base == "q":  # resource.Quantity: {1 string}
        return next((x.decode() for n, _, x in fields(v) if n == 1), "")
    if base == "ios":  # intstr.IntOrString: {1 type, 2 intVal, 3 strVal}
        parts = {n: x for n, _, x in fields(v)}
        return parts.get(3, b"").decode() if parts.get(1) == 1 else _signed(parts.get(2, 0))
    if base == "time":  # metav1.Time: {1 seconds, 2 nanos}
        secs = _signed(next((x for n, _, x in fields(v) if n == 1), 0))
        if not v or secs == ZERO_TIME:
            return None  # the zero time: JSON's null
        return dt.datetime.fromtimestamp(secs, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise DecodeError(f"{where}: unknown kind {kind!r} in the field table")


def _map_entry(v: bytes, value_kind: str, where: str) -> tuple[str, object]:
    key, val = "", None
    for n, wt, x in fields(v):
        if n == 1:
            key = x.decode()
        elif n == 2:
            val = _scalar(value_kind, wt, x, where)
    if val is None:
        val = "" if value_kind in ("s", "bytes", "q") else val
    return key, val


def decode_message(buf: bytes, message: str) -> dict:
    table = TABLE[message]
    out: dict = {}
    for num, wt, v in fields(buf):
        spec = table.get(num)
        where = f"{message}.{spec[0] if spec else num}"
        if spec is None:
            if _is_zero(wt, v):
                continue  # an unset non-pointer field, as Go writes it
            raise DecodeError(f"field {num} of {message} is not known to the lab API server")
        name, kind = spec
        if kind == "skip":
            continue
        if kind.startswith("inline:"):
            out.update(decode_message(v, kind[7:]))
            continue
        if kind.startswith("map:"):
            k, val = _map_entry(v, kind[4:], where)
            out.setdefault(name, {})[k] = val
            continue
        repeated = kind.startswith("[")
        item_kind = kind.strip("[]")
        if item_kind in TABLE:
            if wt != 2:
                raise DecodeError(f"{where}: a message with wire type {wt}")
            item = decode_message(v, item_kind)
        else:
            item = _scalar(item_kind, wt, v, where)
        if repeated:
            out.setdefault(name, []).append(item)
        elif item is None or (not kind.endswith("?") and item in ("", 0)):  # omitempty (0 == False)
            out.pop(name, None)
        else:
            out[name] = item
    return out


def decode(body: bytes) -> dict:
    """A protobuf request body to the JSON object it stands for; ApiError 400/415 when it cannot."""
    if not body.startswith(MAGIC):
        raise errors.bad_request("a protobuf body must start with the 'k8s\\x00' envelope prefix")
    kind = ""
    try:
        parts = {num: v for num, _, v in fields(body[len(MAGIC):])}
        type_meta = {n: v.decode() for n, _, v in fields(parts.get(1, b""))}
        api_version, kind = type_meta.get(1, ""), type_meta.get(2, "")
        if parts.get(3):
            raise DecodeError(f"contentEncoding {parts[3].decode()!r} is not supported")
        message = KINDS.get(kind)
        if message is None:
            raise errors.ApiError(415, "UnsupportedMediaType", f"the lab API server does not decode protobuf "
                                  f"for {api_version} {kind or '(no kind)'}; send JSON or YAML instead "
                                  "(for example 'kubectl apply -f')")
        obj = decode_message(parts.get(2, b""), message)
    except DecodeError as e:
        raise errors.bad_request(f"the protobuf body of {kind or 'the request'} could not be decoded: {e}") from None
    except UnicodeDecodeError as e:
        raise errors.bad_request(f"the protobuf body has a string that is not UTF-8: {e}") from None
    return {"apiVersion": api_version, "kind": kind, **obj}
