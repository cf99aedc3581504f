"""HardStateLog: every group's hard state of a node in one append-only file.

Torn tails are cut off, corruption before the tail is an error, power loss keeps exactly
what was fsynced, compaction survives a crash at each of its steps, a new replica of a
group never starts from an earlier one's state, and the per-group files of earlier data
directories are still read (migration)."""

from __future__ import annotations

import errno
import pathlib

import pytest

from chronik_trio.raft.types import ConfState, Entry, HardState
from chronik_trio.storage import (CorruptHardStateError, Disk, DiskError, DiskFaults, FaultyDisk,
                                  HardStateFile)
from chronik_trio.storage.hardstate_log import HEADER, HardStateLog, encode_frame
from chronik_trio.storage.raft_storage import (LEGACY_HARD_STATE_FILE, DurableRaftStorage,
                                               run_tickets)

VOTERS = (1, 2, 3)


def _states(log: HardStateLog, keys) -> dict:
    return {k: log.get(k) for k in keys}


def test_the_last_record_of_each_group_wins_after_reopen(tmp_path):
    path = tmp_path / "hardstates"
    log = HardStateLog(Disk(), path)
    log.append([("a", HardState(1, 1, 0)), ("b", HardState(1, 2, 0))])
    log.append([("a", HardState(2, 0, 5))])
    log.append([("b", HardState(3, 3, 1)), ("b", HardState(4, 1, 1))])  # later in a frame wins
    log.close()
    log = HardStateLog(Disk(), path)
    assert _states(log, "abc") == {"a": HardState(2, 0, 5), "b": HardState(4, 1, 1), "c": None}
    assert log.group_count == 2
    log.close()


def _three_frames(path: pathlib.Path) -> list[int]:
    """Three frames written; the file's length after each."""
    log = HardStateLog(Disk(), path)
    ends = []
    for term in (1, 2, 3):
        log.append([("a", HardState(term, 1, term)), ("b", HardState(term, 2, 0))])
        ends.append(log.size_bytes)
    log.close()
    return ends


def test_a_torn_last_frame_is_cut_off_at_any_length(tmp_path):
    path = tmp_path / "hardstates"
    ends = _three_frames(path)
    whole = path.read_bytes()
    for cut in range(ends[1], ends[2]):  # every prefix of the last frame
        path.write_bytes(whole[:cut])
        log = HardStateLog(Disk(), path)
        assert _states(log, "ab") == {"a": HardState(2, 1, 2), "b": HardState(2, 2, 0)}, cut
        assert path.stat().st_size == ends[1]  # cut off, so the next frame follows the last good one
        log.append([("a", HardState(9, 9, 9))])
        log.close()
        assert HardStateLog(Disk(), path).get("a") == HardState(9, 9, 9)


@pytest.mark.parametrize("tail", [b"\0" * 300, b"\xff" * 9, b"garbage that is not a frame"])
def test_a_tail_of_garbage_after_the_last_frame_is_ignored(tmp_path, tail):
    path = tmp_path / "hardstates"
    ends = _three_frames(path)
    with path.open("ab") as f:
        f.write(tail)
    log = HardStateLog(Disk(), path)
    assert log.get("a") == HardState(3, 1, 3) and log.size_bytes == ends[2]
    log.close()


def test_a_bad_frame_with_a_good_one_after_it_is_corruption_naming_file_and_offset(tmp_path):
    path = tmp_path / "hardstates"
    ends = _three_frames(path)
    data = bytearray(path.read_bytes())
    data[ends[0] + 12] ^= 0x40  # inside the second frame's records
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptHardStateError) as info:
        HardStateLog(Disk(), path)
    assert info.value.path == path and f"byte {ends[0]}" in str(info.value)
    assert path.read_bytes() == bytes(data)  # nothing cut off: an operator decides


def test_a_bad_header_is_corruption(tmp_path):
    path = tmp_path / "hardstates"
    path.write_bytes(b"XXXX\0\1" + encode_frame([("a", HardState(1, 1, 1))]))
    with pytest.raises(CorruptHardStateError, match="bad header"):
        HardStateLog(Disk(), path)


def test_power_loss_keeps_every_appended_state(tmp_path):
    disk = FaultyDisk()
    log = HardStateLog(disk, tmp_path / "hardstates")
    log.append([("a", HardState(1, 1, 0))])
    log.append([("a", HardState(2, 3, 0)), ("b", HardState(2, 3, 0))])
    log.close()
    disk.drop_unsynced()
    log = HardStateLog(Disk(), tmp_path / "hardstates")
    assert _states(log, "ab") == {"a": HardState(2, 3, 0), "b": HardState(2, 3, 0)}
    log.close()


def test_a_failed_fsync_changes_nothing_and_power_loss_keeps_the_old_state(tmp_path):
    faults = DiskFaults()
    disk = FaultyDisk(faults)
    log = HardStateLog(disk, tmp_path / "hardstates")
    log.append([("a", HardState(1, 1, 0))])
    faults.fsync_errno = errno.EIO
    with pytest.raises(DiskError):
        log.append([("a", HardState(2, 2, 0))])
    assert log.get("a") == HardState(1, 1, 0)  # nothing promised in memory either
    log.close()
    disk.drop_unsynced()
    assert HardStateLog(Disk(), tmp_path / "hardstates").get("a") == HardState(1, 1, 0)


def test_compaction_keeps_every_live_state_once_and_drops_forgotten_groups(tmp_path):
    path = tmp_path / "hardstates"
    log = HardStateLog(Disk(), path, compact_bytes_min=2000)
    keys = [f"group-{k}" for k in range(10)]
    rounds = 0
    while not log.compaction_due:
        rounds += 1
        log.append([(k, HardState(rounds, 1, rounds)) for k in keys])
    log.forget("group-0")
    assert log.get("group-0") is None
    before = log.size_bytes
    log.compact()
    assert log.size_bytes < before / 4 and not log.compaction_due and log.compactions == 1
    log.append([("group-1", HardState(rounds + 1, 2, 0))])  # appends go on after compaction
    log.close()
    log = HardStateLog(Disk(), path)
    assert log.get("group-0") is None and log.get("group-1") == HardState(rounds + 1, 2, 0)
    assert all(log.get(k) == HardState(rounds, 1, rounds) for k in keys[2:])
    log.close()


def test_a_forgotten_group_stays_forgotten_after_reopen(tmp_path):
    log = HardStateLog(Disk(), tmp_path / "hardstates")
    log.append([("a", HardState(1, 1, 0)), ("b", HardState(1, 1, 0))])
    log.forget("a")
    log.append([("b", HardState(2, 1, 0))])  # carries a's zero record
    log.close()
    log = HardStateLog(Disk(), tmp_path / "hardstates")
    assert log.get("a") is None and log.group_count == 1
    log.close()


class _PowerCut(Exception):
    pass


class CrashingDisk(FaultyDisk):
    """Cuts the power (raises) at one step of a compaction: the temporary file's write or
    fsync, the rename over the log, or the directory's fsync after it."""

    def __init__(self, step: str) -> None:
        super().__init__()
        self.step = step
        self.armed = False

    def _cut(self, step: str, path: pathlib.Path) -> None:
        if self.armed and step == self.step and path.name.startswith("hardstates"):
            raise _PowerCut(step)

    def pwritev(self, f, buffers, offset):
        self._cut("write", f.path)
        super().pwritev(f, buffers, offset)

    def fsync(self, f):
        self._cut("fsync", f.path)
        super().fsync(f)

    def rename(self, src, dst):
        self._cut("rename", dst)
        super().rename(src, dst)

    def fsync_dir(self, path):
        self._cut("fsync_dir", path / "hardstates")
        super().fsync_dir(path)


@pytest.mark.parametrize("step", ["write", "fsync", "rename", "fsync_dir"])
def test_a_crash_at_any_step_of_compaction_loses_no_state(tmp_path, step):
    disk = CrashingDisk(step)
    path = tmp_path / "hardstates"
    log = HardStateLog(disk, path, compact_bytes_min=500)
    expected = {}
    for term in range(1, 20):
        states = [(f"g{k}", HardState(term, k, term - 1)) for k in range(4)]
        log.append(states)
        expected.update(states)
    log.forget("g3")
    del expected["g3"]
    assert log.compaction_due
    disk.armed = True
    with pytest.raises(_PowerCut):
        log.compact()
    disk.drop_unsynced()
    log = HardStateLog(Disk(), path)
    assert {k: log.get(k) for k in ("g0", "g1", "g2")} == expected
    assert not path.with_name("hardstates.tmp").exists()
    log.append([("g0", HardState(30, 0, 0))])
    log.close()
    assert HardStateLog(Disk(), path).get("g0") == HardState(30, 0, 0)


def test_a_leftover_temporary_file_is_removed_on_open(tmp_path):
    path = tmp_path / "hardstates"
    _three_frames(path)
    path.with_name("hardstates.tmp").write_bytes(HEADER + b"half a compaction")
    log = HardStateLog(Disk(), path)
    assert log.get("a") == HardState(3, 1, 3) and not path.with_name("hardstates.tmp").exists()
    log.close()


# --- with DurableRaftStorage ----------------------------------------------------------------


def _open(disk, log, directory, key) -> DurableRaftStorage:
    return DurableRaftStorage(disk, directory, kafka=False, hard_states=log, key=key)


def test_a_group_of_an_earlier_data_directory_keeps_its_term_vote_and_commit(tmp_path):
    """Migration: the per-group hard-state file is read while the log has nothing for the
    group; once the group saves, the log's record wins (the old file is never written)."""
    directory = tmp_path / "partitions" / "t-0"
    old = DurableRaftStorage.bootstrap(Disk(), directory, voters=VOTERS, kafka=False)
    old.append([Entry(4, 1, b"a"), Entry(4, 2, b"b")])
    old.sync()
    old.close()
    HardStateFile(Disk(), directory / LEGACY_HARD_STATE_FILE).save(HardState(4, 2, 2))  # as saved before
    (directory / "hardstates").unlink()  # an earlier version had no log
    log = HardStateLog(Disk(), tmp_path / "hardstates")
    s = _open(Disk(), log, directory, "t-0")
    assert s.initial_state() == (HardState(4, 2, 2), ConfState(voters=VOTERS))
    assert s.begin_sync(save_commit=True) is None  # nothing to save: the old state counts as saved
    s.set_hard_state(HardState(5, 3, 2))
    s.sync()
    s.close()
    log.close()
    assert HardStateFile(Disk(), directory / LEGACY_HARD_STATE_FILE).load() == HardState(4, 2, 2)
    log = HardStateLog(Disk(), tmp_path / "hardstates")
    s = _open(Disk(), log, directory, "t-0")
    assert s.initial_state()[0] == HardState(5, 3, 2)
    s.close()
    log.close()


@pytest.mark.parametrize("restarted", [False, True])
def test_a_new_replica_of_a_group_starts_from_nothing_even_after_a_power_loss(tmp_path, restarted):
    """A group removed from this node and later assigned here again: its earlier replica's
    term, vote and commit (past the new, empty log) must not come back, whether the node
    restarted in between (the removal's zero record never written) or not."""
    disk = FaultyDisk()
    log = HardStateLog(disk, tmp_path / "hardstates")
    first = DurableRaftStorage.bootstrap(disk, tmp_path / "p-0", voters=VOTERS, kafka=False,
                                         hard_states=log, key="g")
    first.append([Entry(3, 1, b"x")])
    first.set_hard_state(HardState(3, 1, 1))
    first.sync()
    first.forget_hard_state()  # removed (the zero record is not written yet)
    first.close()
    if restarted:
        log.close()
        log = HardStateLog(disk, tmp_path / "hardstates")
        assert log.get("g") == HardState(3, 1, 1)
    second = DurableRaftStorage.bootstrap(disk, tmp_path / "p-0-again", voters=VOTERS, kafka=False,
                                          hard_states=log, key="g")
    assert second.initial_state()[0] == HardState()
    second.close()
    log.close()
    disk.drop_unsynced()
    log = HardStateLog(Disk(), tmp_path / "hardstates")
    assert log.get("g") is None
    assert _open(Disk(), log, tmp_path / "p-0-again", "g").initial_state()[0] == HardState()
    log.close()


def test_a_vote_is_durable_when_its_round_returns(tmp_path):
    """run_tickets returns only once the vote's record is fsynced: a power loss right after
    keeps it (a vote is never sent before that)."""
    disk = FaultyDisk()
    log = HardStateLog(disk, tmp_path / "hardstates")
    storages = [DurableRaftStorage.bootstrap(disk, tmp_path / f"g{k}", voters=VOTERS, kafka=False,
                                             hard_states=log, key=f"g{k}") for k in range(3)]
    for s in storages:
        s.set_hard_state(HardState(7, 2, 0))
    tickets = [s.begin_sync() for s in storages]
    assert all(t.log_ticket is None for t in tickets)  # a vote alone: nothing of the log
    run_tickets(tickets)
    for s, t in zip(storages, tickets):
        s.end_sync(t)
        s.close()
    log.close()
    disk.drop_unsynced()
    log = HardStateLog(Disk(), tmp_path / "hardstates")
    assert [log.get(f"g{k}") for k in range(3)] == [HardState(7, 2, 0)] * 3
    log.close()
