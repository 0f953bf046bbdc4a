"""IPAM: host-local semantics, idempotency, exhaustion, GC, and no duplicates under 64 parallel ADDs."""
import multiprocessing
import os

import pytest

from trellis.agent.ipam import Allocator, DiskStore, Exhausted, MemoryStore


def test_sequential_idempotent_and_round_robin():
    a = Allocator("10.244.1.0/29", MemoryStore())  # usable .1-.6 (.0 is the node's tunnel address)
    r1 = a.allocate("c1", "eth0", "default/p1")
    assert r1.ip == "10.244.1.1"
    assert a.allocate("c1", "eth0").ip == "10.244.1.1"  # same container+interface: same address
    assert a.allocate("c2", "eth0").ip == "10.244.1.2"
    a.release("c1", "eth0")
    assert a.allocate("c3", "eth0").ip == "10.244.1.3"  # round robin: a freed address is not reused at once
    for i in range(4, 8):
        a.allocate(f"c{i}", "eth0")
    with pytest.raises(Exhausted, match="10.244.1.0/29"):
        a.allocate("c9", "eth0")
    assert {r.ip for r in a.store.all()} == {f"10.244.1.{i}" for i in range(1, 7)}


def test_disk_store_survives_a_restart_and_gc(tmp_path):
    a = Allocator("10.244.2.0/24", DiskStore(str(tmp_path)))
    keep = a.allocate("keep", "eth0", "default/keep")
    a.allocate("gone", "eth0", "default/gone")
    b = Allocator("10.244.2.0/24", DiskStore(str(tmp_path)))  # a restarted agent
    assert b.find("keep", "eth0") == keep
    assert b.allocate("new", "eth0").ip == "10.244.2.3"  # continues after the last reserved
    released = b.gc({("keep", "eth0"), ("new", "eth0")})
    assert [r.container_id for r in released] == ["gone"]
    assert sorted(r.container_id for r in b.store.all()) == ["keep", "new"]
    assert b.release("nothing", "eth0") is None


def _allocate_many(args):
    directory, start = args
    a = Allocator("10.244.3.0/24", DiskStore(directory))
    return [a.allocate(f"c{start + i}", "eth0").ip for i in range(8)]


def test_64_parallel_allocations_never_collide(tmp_path):
    # 8 processes x 8 allocations, all against one store directory, as 64 parallel CNI ADDs would be
    with multiprocessing.get_context("fork").Pool(8) as pool:
        ips = [ip for chunk in pool.map(_allocate_many, [(str(tmp_path), k * 8) for k in range(8)]) for ip in chunk]
    assert len(ips) == 64 and len(set(ips)) == 64
    files = [f for f in os.listdir(tmp_path) if f[0].isdigit()]
    assert len(files) == 64


def test_disk_index_follows_the_ip_files_after_a_crash(tmp_path):
    store = DiskStore(str(tmp_path))
    a = Allocator("10.244.4.0/24", store)
    r = a.allocate("c1", "eth0", "default/p1")
    assert os.readlink(store._key("c1", "eth0")) == r.ip  # one file read per lookup, not a scan
    # a crash after the IP file was removed but before its link was: the link is stale
    os.unlink(os.path.join(str(tmp_path), r.ip))
    assert a.find("c1", "eth0") is None
    # the address went to another container meanwhile: the stale link must not claim it
    other = a.allocate("c2", "eth0")
    os.symlink(other.ip, store._key("c9", "eth0"))
    assert a.find("c9", "eth0") is None and a.find("c2", "eth0") == other
    # c1 comes back: a new address, and its link is replaced
    again = a.allocate("c1", "eth0")
    assert a.find("c1", "eth0") == again
    a.release("c1", "eth0")
    assert not os.path.lexists(store._key("c1", "eth0"))


def test_a_torn_cursor_only_moves_the_search(tmp_path):
    a = Allocator("10.244.5.0/29", DiskStore(str(tmp_path)))
    a.allocate("c1", "eth0")
    with open(os.path.join(str(tmp_path), "last_reserved"), "w") as f:
        f.write("10.24")  # a write cut short
    assert a.allocate("c2", "eth0").ip == "10.244.5.2"
    assert a.allocate("c3", "eth0").ip == "10.244.5.3"


# ---- kill -9 at every step of reserve and release (issue 15, item 5) ----------------------

MUTATING = ("open", "symlink", "replace", "link", "unlink", "fsync", "write")


def _crash_at(step: int, directory: str, action: str) -> None:
    """In a forked child: run ``action`` and die (os._exit, as kill -9: no clean-up runs) just
    before the ``step``-th file system change."""
    import builtins
    calls = {"n": 0}

    def tick():
        calls["n"] += 1
        if calls["n"] == step:
            os._exit(9)

    for name in MUTATING:
        real = getattr(os, name)

        def wrapped(*a, _real=real, **kw):
            tick()
            return _real(*a, **kw)
        setattr(os, name, wrapped)
    real_open = builtins.open
    builtins.open = lambda *a, **kw: (tick(), real_open(*a, **kw))[1] if len(a) > 1 and "w" in str(a[1]) \
        else real_open(*a, **kw)
    a = Allocator("10.244.7.0/28", DiskStore(directory))
    if action == "reserve":
        a.allocate("c1", "eth0", "default/p1")
    else:
        a.release("c1", "eth0")
    os._exit(0)


def _files(directory: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(r, n), directory) for r, _, ns in os.walk(directory) for n in ns
                  if n not in ("lock", "last_reserved"))


@pytest.mark.parametrize("action", ["reserve", "release"])
def test_kill_at_any_step_leaks_nothing(tmp_path, action):
    """The runtime retries what was cut short (ADD again, DEL again); afterwards the store holds
    exactly the one address of the container (ADD) or nothing (DEL), and no stray file. With
    the old order (IP file, then link; a file written in place) the retry got a second address
    and an empty or unlinked file stayed until the periodic GC."""
    crashes = 0
    for step in range(1, 30):
        d = str(tmp_path / f"{action}-{step}")
        os.makedirs(d)
        if action == "release":
            Allocator("10.244.7.0/28", DiskStore(d)).allocate("c1", "eth0", "default/p1")
        pid = os.fork()
        if pid == 0:
            try:
                _crash_at(step, d, action)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        assert code in (0, 9), code
        if code == 0:
            break  # the action completes before this step: every crash point is covered
        crashes += 1
        a = Allocator("10.244.7.0/28", DiskStore(d))  # the agent restarts
        if action == "reserve":
            r = a.allocate("c1", "eth0", "default/p1")  # the runtime's retry
            assert [x.ip for x in a.store.all()] == [r.ip], (step, _files(d))
            assert len(_files(d)) == 2, (step, _files(d))  # the IP file and its index link
            a.release("c1", "eth0")
        else:
            a.release("c1", "eth0")
        assert a.store.all() == [] and _files(d) == [], (step, _files(d))
    assert crashes >= 3, crashes
