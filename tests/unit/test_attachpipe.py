"""The attach FIFO's frames and the kubelet's stdin relay, against real processes (no root)."""
import os
import select
import subprocess

from conftest import wait_until
from trellis.lab.kubelet import attachpipe
from trellis.lab.kubelet.attachpipe import DETACH, RESIZE, STDIN, FrameReader, StdinRelay, StdioSpec


def test_frames_fit_one_atomic_fifo_write_and_survive_split_reads():
    data = bytes(range(256)) * 40  # 10 KiB: three frames
    frames = attachpipe.encode(STDIN, data)
    assert len(frames) == 3 and all(len(f) <= select.PIPE_BUF for f in frames)
    wire = b"".join(frames) + attachpipe.resize_frame(120, 40) + attachpipe.encode(DETACH)[0]
    reader, got = FrameReader(), []
    for i in range(0, len(wire), 1000):  # reads that end inside a frame
        got += reader.feed(wire[i:i + 1000])
    assert b"".join(d for k, d in got if k == STDIN) == data
    assert got[-2:] == [(RESIZE, b"120 40"), (DETACH, b"")]


def test_stdio_spec_only_with_stdin():
    assert StdioSpec.of({"name": "c"}) is None
    assert StdioSpec.of({"tty": True}) is None  # a terminal needs stdin, as the API's validation says
    assert StdioSpec.of({"stdin": True, "stdinOnce": True}) == StdioSpec(tty=False, once=True)


def start(tmp_path, spec, argv):
    log = str(tmp_path / "c.log")
    relay = StdinRelay(spec, log)
    out = open(log, "ab")
    p = subprocess.Popen(argv, stdin=relay.child_stdin, stdout=relay.child_stdout or out, stderr=subprocess.STDOUT)
    out.close()
    relay.started()
    return relay, p, log


def write(relay, frames):
    fd = os.open(relay.fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        for f in frames:
            os.write(fd, f)
    finally:
        os.close(fd)


def read(log):
    with open(log, "rb") as f:
        return f.read()


def test_pipe_stays_open_across_sessions_and_closes_with_stdin_once(tmp_path):
    relay, p, log = start(tmp_path, StdioSpec(tty=False, once=False), ["cat"])
    write(relay, attachpipe.encode(STDIN, b"first\n"))
    write(relay, attachpipe.encode(DETACH))  # a session ended: without stdinOnce stdin stays open
    write(relay, attachpipe.encode(STDIN, b"second\n"))
    wait_until("both sessions' lines", lambda: read(log) == b"first\nsecond\n")
    assert p.poll() is None
    relay.close()
    p.kill()
    p.wait()
    relay.join(5)
    assert not os.path.exists(relay.fifo)

    relay, p, log = start(tmp_path, StdioSpec(tty=False, once=True), ["sh", "-c", "cat; echo eof-seen"])
    write(relay, attachpipe.encode(STDIN, b"only\n") + attachpipe.encode(DETACH))
    assert p.wait(10) == 0  # stdin closed at the first session's end
    assert read(log).endswith(b"only\neof-seen\n")
    relay.close()
    relay.join(5)


def test_terminal_output_reaches_the_log_and_resizes_apply(tmp_path):
    relay, p, log = start(tmp_path, StdioSpec(tty=True, once=False),
                          ["setsid", "-c", "sh", "-c", "read line; stty size; echo got-$line"])
    write(relay, [attachpipe.resize_frame(111, 33)])
    wait_until("the resize", lambda: os.get_terminal_size(relay.sink) == (111, 33))
    write(relay, attachpipe.encode(STDIN, b"hello\r"))
    assert p.wait(10) == 0
    relay.close()
    relay.join(5)
    text = read(log)
    assert b"33 111" in text and b"got-hello" in text
