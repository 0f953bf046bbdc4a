"""rtnl's handling of what only a busy kernel sends: interrupted dumps. The kernel side is
scripted here with real message bytes (the kernel tests cover the ordinary paths)."""
import struct

import pytest

from trellis.kernel import rtnl


def link_message(seq: int, name: str, index: int, flags: int = 0) -> bytes:
    body = rtnl.ifinfomsg(index) + rtnl.attr(rtnl.IFLA_IFNAME, name.encode() + b"\0")
    return struct.pack("=IHHII", 16 + len(body), rtnl.RTM_NEWLINK, flags | 0x2, seq, 0) + body  # 0x2: NLM_F_MULTI


def done(seq: int, flags: int = 0) -> bytes:
    return struct.pack("=IHHIIi", 20, rtnl.NLMSG_DONE, flags | 0x2, seq, 0, 0)


class ScriptedKernel:
    """Answers the n-th dump request with the n-th answer (a function of the request's seq)."""

    def __init__(self, *answers):
        self.answers, self.requests = list(answers), 0

    def sendto(self, data, addr):
        self.seq = struct.unpack_from("=IHHII", data)[3]
        self.pending = [self.answers[self.requests](self.seq)]
        self.requests += 1

    def recv(self, size):
        return self.pending.pop(0)


def scripted(*answers) -> rtnl.Rtnl:
    nl = object.__new__(rtnl.Rtnl)  # no real socket: the kernel is the script
    nl.netns, nl.seq, nl.sock = "lab-node", 0, ScriptedKernel(*answers)
    return nl


def test_an_interrupted_dump_is_read_again():
    nl = scripted(lambda s: link_message(s, "stale", 7, rtnl.NLM_F_DUMP_INTR) + done(s, rtnl.NLM_F_DUMP_INTR),
                  lambda s: link_message(s, "fresh", 7) + link_message(s, "lo", 1) + done(s))
    assert [link.name for link in nl.links()] == ["fresh", "lo"]
    assert nl.sock.requests == 2


def test_a_table_that_never_settles_is_an_error_naming_the_step():
    nl = scripted(*[lambda s: done(s, rtnl.NLM_F_DUMP_INTR)] * 5)
    with pytest.raises(rtnl.NetlinkError, match="list links in netns lab-node: EAGAIN .*kept changing"):
        nl.links()
