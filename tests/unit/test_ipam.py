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
