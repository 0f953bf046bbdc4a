"""SPDY/3.1 framing, the server half that Kubernetes' port-forward needs.

kubectl 1.32 forwards ports by tunnelling SPDY through a WebSocket (subprotocol
``SPDY/3.1+portforward.k8s.io``): the binary messages are just a byte stream of
SPDY frames, so this module parses and writes frames over bytes and knows
nothing of sockets. Frame layout (draft 3.1, section 2.2):

  control: 1 | version(15)=3 | type(16) | flags(8) | length(24) | data
  data:    0 | stream-id(31) | flags(8) | length(24) | data

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are zlib-compressed with the
dictionary from the spec, one zlib stream per direction for the connection's
life. The dictionary comes from the ``spdy-py`` package (its frame reader is
not used: it reads flags from the wrong byte and has no writer).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from spdy.dictionary import zdict

VERSION = 3
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
RST_PROTOCOL_ERROR, RST_INVALID_STREAM, RST_REFUSED_STREAM, RST_CANCEL = 1, 2, 3, 5
MAX_DATA = 0xFFFFFF


class ProtocolError(Exception):
    pass


@dataclass
class Frame:
    control: bool
    type: int  # control frame type; 0 for data
    flags: int
    stream_id: int = 0
    data: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 0  # RST_STREAM / GOAWAY status, PING id, WINDOW_UPDATE delta

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


def _u31(b: bytes, off: int = 0) -> int:
    return struct.unpack_from(">I", b, off)[0] & 0x7FFFFFFF


class Framer:
    """Feed bytes, get frames; render frames to bytes. One per connection."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.inflate = zlib.decompressobj(zdict=zdict)
        self.deflate = zlib.compressobj(zdict=zdict)

    # -- reading --
    def feed(self, data: bytes) -> list[Frame]:
        self.buf.extend(data)
        out = []
        while len(self.buf) >= 8:
            length = int.from_bytes(self.buf[5:8], "big")
            if len(self.buf) < 8 + length:
                break
            head, body = bytes(self.buf[:8]), bytes(self.buf[8:8 + length])
            del self.buf[:8 + length]
            out.append(self._parse(head, body))
        return out

    def _parse(self, head: bytes, body: bytes) -> Frame:
        flags = head[4]
        if not head[0] & 0x80:
            return Frame(False, 0, flags, _u31(head), body)
        version, typ = struct.unpack_from(">HH", head)
        if version & 0x7FFF != VERSION:
            raise ProtocolError(f"SPDY version {version & 0x7FFF}, want {VERSION}")
        f = Frame(True, typ, flags)
        if typ == SYN_STREAM:
            f.stream_id, f.headers = _u31(body), self._headers(body[10:])
        elif typ in (SYN_REPLY, HEADERS):
            f.stream_id, f.headers = _u31(body), self._headers(body[4:])
        elif typ in (RST_STREAM, WINDOW_UPDATE):
            f.stream_id, f.status = _u31(body), _u31(body, 4)
        elif typ == PING:
            f.status = struct.unpack_from(">I", body)[0]
        elif typ == GOAWAY:
            f.stream_id, f.status = _u31(body), struct.unpack_from(">I", body, 4)[0] if len(body) >= 8 else 0
        f.data = body
        return f

    def _headers(self, block: bytes) -> dict[str, str]:
        raw = self.inflate.decompress(block)
        n, off, out = struct.unpack_from(">I", raw)[0], 4, {}
        for _ in range(n):
            (ln,) = struct.unpack_from(">I", raw, off)
            name = raw[off + 4:off + 4 + ln].decode("latin-1")
            off += 4 + ln
            (lv,) = struct.unpack_from(">I", raw, off)
            value = raw[off + 4:off + 4 + lv].decode("latin-1")
            off += 4 + lv
            out[name.lower()] = value.split("\0")[0]  # several values are NUL-separated; one is enough here
        return out

    # -- writing --
    def _block(self, headers: dict[str, str]) -> bytes:
        raw = struct.pack(">I", len(headers))
        for k, v in headers.items():
            kb, vb = k.lower().encode(), v.encode()
            raw += struct.pack(">I", len(kb)) + kb + struct.pack(">I", len(vb)) + vb
        return self.deflate.compress(raw) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def control(typ: int, flags: int, body: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, typ, (flags << 24) | len(body)) + body

    def syn_reply(self, stream_id: int, headers: dict[str, str] | None = None, fin: bool = False) -> bytes:
        return self.control(SYN_REPLY, FLAG_FIN if fin else 0,
                            struct.pack(">I", stream_id) + self._block(headers or {}))

    @classmethod
    def rst_stream(cls, stream_id: int, status: int) -> bytes:
        return cls.control(RST_STREAM, 0, struct.pack(">II", stream_id, status))

    @classmethod
    def ping(cls, ping_id: int) -> bytes:
        return cls.control(PING, 0, struct.pack(">I", ping_id))

    @classmethod
    def goaway(cls, last_stream: int, status: int = 0) -> bytes:
        return cls.control(GOAWAY, 0, struct.pack(">II", last_stream, status))

    @staticmethod
    def data(stream_id: int, payload: bytes, fin: bool = False) -> bytes:
        if len(payload) > MAX_DATA:
            raise ValueError("SPDY data frame payload over 16 MiB")
        return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(payload)) + payload
