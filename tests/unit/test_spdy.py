"""SPDY/3.1 framing for port-forward: frames split anywhere, headers through the shared zlib streams."""
import struct
import zlib

from spdy.dictionary import zdict

from trellis.lab.apiserver import spdy


def client_syn(deflate, stream_id, headers):
    raw = struct.pack(">I", len(headers))
    for k, v in headers.items():
        raw += struct.pack(">I", len(k)) + k.encode() + struct.pack(">I", len(v)) + v.encode()
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    body = struct.pack(">IIBB", stream_id, 0, 0, 0) + block
    return spdy.Framer.control(spdy.SYN_STREAM, 0, body)


def test_syn_streams_data_and_ping_split_at_every_byte():
    deflate = zlib.compressobj(zdict=zdict)
    wire = (client_syn(deflate, 1, {"streamtype": "error", "port": "80", "requestid": "0"})
            + client_syn(deflate, 3, {"streamtype": "data", "port": "80", "requestid": "0"})
            + spdy.Framer.data(3, b"GET / HTTP/1.0\r\n\r\n", fin=True) + spdy.Framer.ping(7))
    f = spdy.Framer()
    frames = []
    for i in range(len(wire)):  # a WebSocket message may end anywhere in a frame
        frames += f.feed(wire[i:i + 1])
    assert [(x.control, x.type, x.stream_id) for x in frames] == [
        (True, spdy.SYN_STREAM, 1), (True, spdy.SYN_STREAM, 3), (False, 0, 3), (True, spdy.PING, 0)]
    assert frames[1].headers == {"streamtype": "data", "port": "80", "requestid": "0"}
    assert frames[2].data == b"GET / HTTP/1.0\r\n\r\n" and frames[2].fin
    assert frames[3].status == 7


def test_replies_decode_with_the_spec_dictionary():
    f = spdy.Framer()
    inflate = zlib.decompressobj(zdict=zdict)
    for sid in (1, 3, 5):  # one compression stream for the connection: later blocks depend on earlier
        frame = f.syn_reply(sid, {"x": str(sid)})
        typ, length = struct.unpack(">xxHI", frame[:8])
        assert typ == spdy.SYN_REPLY and length & 0xFFFFFF == len(frame) - 8
        raw = inflate.decompress(frame[12:])
        assert raw == struct.pack(">I", 1) + struct.pack(">I", 1) + b"x" + struct.pack(">I", 1) + str(sid).encode()


def test_wrong_version_is_a_protocol_error():
    bad = struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\0\0\0\1"
    try:
        spdy.Framer().feed(bad)
    except spdy.ProtocolError as e:
        assert "version 2" in str(e)
    else:
        raise AssertionError("SPDY/2 accepted")
