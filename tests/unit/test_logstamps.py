"""Log timestamps: each stretch of a log keeps the time it was first seen, also before the stamper looked."""
import os

from trellis.lab.kubelet import logstamps


def test_unseen_tail_gets_the_files_modification_time(tmp_path):
    log = tmp_path / "c.log"
    log.write_bytes(b"run 2\nsecond line\n")
    os.utime(log, (1_800_000_000, 1_800_000_000))
    (tmp_path / "c.log.idx").write_text("0 6 2026-12-03T10:00:00.000000000Z\n")  # the stamper saw only line 1
    index = logstamps.read_index(str(log))
    assert index == [(0, "2026-12-03T10:00:00.000000000Z"), (6, "2027-01-15T08:00:00.000000000Z")]
    out = logstamps.stamp_lines(log.read_bytes(), index).decode().splitlines()
    assert out == ["2026-12-03T10:00:00.000000000Z run 2", "2027-01-15T08:00:00.000000000Z second line"]


def test_fully_stamped_log_and_unwatched_log(tmp_path):
    log = tmp_path / "c.log"
    log.write_bytes(b"a\nb\n")
    (tmp_path / "c.log.idx").write_text("0 2 2026-12-03T10:00:00.000000000Z\n2 4 2026-12-03T10:00:01.000000000Z\n")
    assert [t for _, t in logstamps.read_index(str(log))] == [
        "2026-12-03T10:00:00.000000000Z", "2026-12-03T10:00:01.000000000Z"]
    os.remove(tmp_path / "c.log.idx")
    os.utime(log, (1_800_000_000, 1_800_000_000))
    assert logstamps.read_index(str(log)) == [(0, "2027-01-15T08:00:00.000000000Z")]
