"""DurableRaftStorage's cache of recent entries answers exactly as its segment files do."""

import pytest

from chronik_trio.raft.types import Entry
from chronik_trio.storage import Disk
from chronik_trio.storage import raft_storage
from chronik_trio.storage.raft_storage import DurableRaftStorage

pytestmark = pytest.mark.timeout(60)


def _entries(first: int, count: int, term: int, size: int = 10) -> list[Entry]:
    return [Entry(term, i, bytes([i % 256]) * (size + i % 7)) for i in range(first, first + count)]


def _all_answers(s: DurableRaftStorage) -> list:
    first, last = s.first_index(), s.last_index()
    return [s.entries(lo, hi, limit) for lo in range(first, last + 1) for hi in range(lo, last + 2)
            for limit in (None, 0, 30, 100, 10_000)]


def _from_files(tmp_path) -> list:
    reopened = DurableRaftStorage(Disk(), tmp_path / "g", kafka=False)
    try:
        assert not reopened._recent  # a fresh storage reads its files
        return _all_answers(reopened)
    finally:
        reopened.close()


def test_cached_entries_equal_the_files_after_appends_and_a_conflicting_suffix(tmp_path):
    s = DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=(1, 2, 3), kafka=False)
    s.append(_entries(1, 12, term=1))
    s.append(_entries(8, 6, term=2))  # replaces 8..12 and adds 13
    s.sync()
    cached = _all_answers(s)
    assert s._recent_first == 1 and len(s._recent) == 13
    assert [e.term for e in s.entries(1, 14)] == [1] * 7 + [2] * 6
    s.close()
    assert cached == _from_files(tmp_path)


def test_the_cache_keeps_only_the_newest_entries_within_its_byte_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(raft_storage, "RECENT_ENTRIES_BYTES_MAX", 200)
    s = DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=(1, 2, 3), kafka=False)
    for first in range(1, 40, 5):
        s.append(_entries(first, 5, term=1))
    s.sync()
    assert 1 < s._recent_first and s._recent_first + len(s._recent) - 1 == s.last_index() == 40
    assert s._recent_bytes <= 200
    cached = _all_answers(s)  # partly from the cache, partly from the files
    s.close()
    assert cached == _from_files(tmp_path)


def test_a_snapshot_from_the_leader_empties_the_cache(tmp_path):
    from chronik_trio.raft.types import ConfState, Snapshot, SnapshotMetadata

    s = DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=(1, 2, 3), kafka=False)
    s.append(_entries(1, 5, term=1))
    s.apply_snapshot(Snapshot(SnapshotMetadata(20, 3, ConfState(voters=(1, 2, 3)))))
    assert not s._recent
    s.append(_entries(21, 3, term=3))
    assert s._recent_first == 21 and [e.index for e in s.entries(21, 24)] == [21, 22, 23]
    s.close()


def test_a_byte_limit_reached_inside_one_segment_stops_the_read_there(tmp_path):
    """Regression: SegmentLog.entries went on into the next segment with a negative position
    (IndexError, a node crashed sending appends to a follower lagging across a segment)."""
    from chronik_trio.storage.frame import FRAME_HEADER_BYTES

    s = DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=(1, 2, 3), kafka=False,
                                     segment_bytes=300)
    entries = _entries(1, 30, term=1, size=40)
    for k in range(0, 30, 3):
        s.append(entries[k:k + 3])
    s.sync()
    assert len(s.log._segments) > 5
    sizes = {e.index: FRAME_HEADER_BYTES + len(e.data) for e in entries}
    for lo in range(1, 31):
        for hi in range(lo, 32):
            for limit in (None, 0, 100, 250, 1000):
                expected, budget = [], limit
                for i in range(lo, hi):
                    if budget is not None and sizes[i] > budget and expected:
                        break
                    expected.append(i)
                    budget = None if budget is None else budget - sizes[i]
                assert [e.index for e in s.log.entries(lo, hi, limit)] == expected, (lo, hi, limit)
    s.close()


def test_released_entries_are_read_from_the_files(tmp_path):
    s = DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=(1, 2, 3), kafka=False)
    s.append(_entries(1, 10, term=1))
    s.release_recent(6)
    assert s._recent_first == 7 and len(s._recent) == 4
    assert [e.index for e in s.entries(1, 11)] == list(range(1, 11))
    s.release_recent(10)
    assert not s._recent and s._recent_bytes == 0
    s.append(_entries(11, 2, term=1))
    assert s._recent_first == 11 and [e.index for e in s.entries(5, 13)] == list(range(5, 13))
    s.close()
