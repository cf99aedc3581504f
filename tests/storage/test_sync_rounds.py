"""A sync round of many groups costs the same flushes however many groups it holds.

Elections of thousands of groups change a term and vote in each; one hard state file
replaced costs two fsyncs of its own, so a round of N groups was 2N+ fsyncs (seconds on a
busy disk, long enough for every election to time out again), and with the fsyncs batched
still N file creations and renames. Now every hard state of a round is one frame appended
to the node's hard-state log. run_tickets counts here: fsyncs, filesystem syncs and files
made, not seconds.
"""

from __future__ import annotations

import os

import pytest

from chronik_trio.raft.types import Entry, HardState
from chronik_trio.storage import Disk, FaultyDisk
from chronik_trio.storage import disk as disk_module
from chronik_trio.storage.hardstate_log import HardStateLog
from chronik_trio.storage.raft_storage import BATCHED_SYNC_MIN_TICKETS, DurableRaftStorage, run_tickets


class CountingDisk(Disk):
    def __init__(self) -> None:
        self.filesystem_syncs = 0

    def sync_filesystem(self, root) -> None:
        self.filesystem_syncs += 1
        super().sync_filesystem(root)


@pytest.fixture
def fsyncs(monkeypatch):
    """Counts the fsync(2) calls that reach the OS."""
    count = [0]
    real = os.fsync

    def counting(fd: int) -> None:
        count[0] += 1
        real(fd)

    monkeypatch.setattr(disk_module.os, "fsync", counting)
    return count


def _groups(disk: Disk, root, n: int, hard_states: HardStateLog | None = None) -> list[DurableRaftStorage]:
    (root / "partitions").mkdir()
    if hard_states is None:
        hard_states = HardStateLog(disk, root / "hardstates")
    with disk.deferred_sync(root):  # bootstrapped in bulk, as node/replicas.py does
        return [DurableRaftStorage.bootstrap(disk, root / "partitions" / f"g-{k}", voters=(1, 2, 3),
                                             kafka=False, hard_states=hard_states, key=f"g-{k}")
                for k in range(n)]


def _elect_and_append(storages: list[DurableRaftStorage], term: int, commit: int = 0) -> list:
    """Each group: a new term and vote, and one entry; their tickets."""
    for s in storages:
        s.append([Entry(term=term, index=s.last_index() + 1, data=b"x" * 20)])
        s.set_hard_state(HardState(term=term, vote=1, commit=commit))
    return [s.begin_sync() for s in storages]


@pytest.mark.parametrize("groups", [BATCHED_SYNC_MIN_TICKETS, 4 * BATCHED_SYNC_MIN_TICKETS])
def test_a_round_of_many_groups_makes_no_fsync_per_group(tmp_path, fsyncs, groups):
    disk = CountingDisk()
    hard_states = HardStateLog(disk, tmp_path / "hardstates")
    storages = _groups(disk, tmp_path, groups, hard_states)
    tickets = _elect_and_append(storages, term=2)
    fsyncs[0] = disk.filesystem_syncs = 0
    appends, files = hard_states.appends, len(list(tmp_path.rglob("*")))
    run_tickets(tickets)
    for s, t in zip(storages, tickets):
        assert s.end_sync(t) == 1
    # One filesystem sync for the logs' new bytes and the hard states' frame (their commits
    # need no new entry), whatever the number of groups; no fsync of any single file, one
    # frame appended and no file created.
    assert fsyncs[0] == 0
    assert disk.filesystem_syncs == 1
    assert hard_states.appends == appends + 1
    assert len(list(tmp_path.rglob("*"))) == files
    for s in storages:
        s.close()
    hard_states.close()
    hard_states = HardStateLog(disk, tmp_path / "hardstates")
    for k in range(groups):  # reopened: the new term, vote and entry are there
        s = DurableRaftStorage(disk, tmp_path / "partitions" / f"g-{k}", kafka=False,
                               hard_states=hard_states, key=f"g-{k}")
        assert s.initial_state()[0] == HardState(term=2, vote=1, commit=0)
        assert s.last_index() == 1 and s.term(1) == 2
        s.close()
    hard_states.close()


def _end_and_close(storages, tickets, hard_states) -> None:
    """Every ticket ends durable through entry 1; then everything is closed."""
    for s, t in zip(storages, tickets):
        assert s.end_sync(t) == 1
        s.close()
    hard_states.close()


def test_a_commit_that_needs_the_rounds_entries_is_saved_after_them(tmp_path, fsyncs):
    disk = CountingDisk()
    hard_states = HardStateLog(disk, tmp_path / "hardstates")
    storages = _groups(disk, tmp_path, BATCHED_SYNC_MIN_TICKETS, hard_states)
    tickets = _elect_and_append(storages, term=2, commit=1)  # entry 1 is in this round
    fsyncs[0] = disk.filesystem_syncs = 0
    run_tickets(tickets)
    # The entries' filesystem sync first, then the hard states' frame and its one fsync.
    assert disk.filesystem_syncs == 1 and fsyncs[0] == 1
    _end_and_close(storages, tickets, hard_states)


def test_a_round_of_few_groups_fsyncs_each_log_and_the_hard_states_once(tmp_path, fsyncs):
    disk = CountingDisk()
    hard_states = HardStateLog(disk, tmp_path / "hardstates")
    storages = _groups(disk, tmp_path, 3, hard_states)
    tickets = _elect_and_append(storages, term=2)
    fsyncs[0] = disk.filesystem_syncs = 0
    run_tickets(tickets)
    assert disk.filesystem_syncs == 0
    # Per group its segment (created empty, and its directory synced, at bootstrap); the
    # hard states once.
    assert fsyncs[0] == 3 + 1
    _end_and_close(storages, tickets, hard_states)


def test_deferred_sync_puts_off_fsyncs_only_in_its_own_thread_and_only_until_its_end(tmp_path, fsyncs):
    disk = CountingDisk()
    f = disk.open(tmp_path / "a")
    with disk.deferred_sync(tmp_path):
        disk.pwritev(f, [b"abc"], 0)
        disk.fsync(f)
        disk.fsync_dir(tmp_path)
        assert fsyncs[0] == 0 and disk.filesystem_syncs == 0
    assert disk.filesystem_syncs == 1
    disk.fsync(f)  # outside the block: an fsync again
    assert fsyncs[0] == 1
    with pytest.raises(RuntimeError):  # a block that fails syncs nothing (and defers no more)
        with disk.deferred_sync(tmp_path):
            disk.fsync(f)
            raise RuntimeError("boom")
    assert disk.filesystem_syncs == 1
    disk.fsync(f)
    assert fsyncs[0] == 2
    disk.close(f)


def test_a_batched_round_keeps_what_a_power_loss_may_not_take(tmp_path):
    """Through FaultyDisk: after a batched round, a simulated power loss keeps every new
    hard state and entry; what was written after it and not synced is gone."""
    disk = FaultyDisk()
    hard_states = HardStateLog(disk, tmp_path / "hardstates")
    storages = _groups(disk, tmp_path, BATCHED_SYNC_MIN_TICKETS, hard_states)
    tickets = _elect_and_append(storages, term=3)
    run_tickets(tickets)
    for s, t in zip(storages, tickets):
        s.end_sync(t)
    for s in storages:  # written, never synced
        s.append([Entry(term=4, index=2, data=b"y")])
        s.set_hard_state(HardState(term=4, vote=2, commit=0))
        s.close()
    hard_states.close()
    disk.drop_unsynced()
    hard_states = HardStateLog(disk, tmp_path / "hardstates")
    for k in range(BATCHED_SYNC_MIN_TICKETS):
        s = DurableRaftStorage(disk, tmp_path / "partitions" / f"g-{k}", kafka=False,
                               hard_states=hard_states, key=f"g-{k}")
        assert s.initial_state()[0] == HardState(term=3, vote=1, commit=0) and s.last_index() == 1
        s.close()
    hard_states.close()
