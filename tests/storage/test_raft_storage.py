"""DurableRaftStorage answers exactly like raft.MemoryStorage, and survives reopen and power loss."""

import pathlib
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from chronik_trio.raft import errors as raft_errors
from chronik_trio.raft.config import Config
from chronik_trio.raft.rawnode import RawNode
from chronik_trio.raft.storage import MemoryStorage
from chronik_trio.raft.types import ConfState, Entry, HardState
from chronik_trio.storage import Disk, FaultyDisk, StorageError
from chronik_trio.storage.raft_storage import DurableRaftStorage

VOTERS = (1, 2, 3)


def _observe(s, probe_hi: int):
    """Everything the Storage protocol lets Raft see, as plain values (errors by class)."""
    def attempt(fn, *args):
        try:
            return fn(*args)
        except (raft_errors.Compacted, raft_errors.Unavailable,
                raft_errors.SnapshotTemporarilyUnavailable) as exc:
            return type(exc).__name__
    first, last = s.first_index(), s.last_index()
    return {
        "initial": s.initial_state(), "first": first, "last": last,
        "terms": [attempt(s.term, i) for i in range(0, probe_hi)],
        "entries": attempt(s.entries, first, last + 1),
        "head": attempt(s.entries, max(first - 1, 0), last + 1),
        "snapshot": attempt(s.snapshot, 0),
    }


ops = st.lists(st.one_of(
    st.tuples(st.just("append"), st.integers(0, 6), st.integers(1, 4), st.integers(0, 3)),
    st.tuples(st.just("hard_state"), st.integers(0, 5), st.integers(0, 3)),
    st.tuples(st.just("snapshot"), st.integers(0, 20)),
    st.tuples(st.just("reopen"),),
), max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_durable_storage_matches_memory_storage(ops):
    with tempfile.TemporaryDirectory() as tmp:
        directory = pathlib.Path(tmp) / "g"
        model = MemoryStorage.with_voters(VOTERS)
        durable = DurableRaftStorage.bootstrap(Disk(), directory, voters=VOTERS, kafka=False)
        term = 1
        for op in ops:
            if op[0] == "append":
                _, back, count, term_bump = op
                term += term_bump
                # Raft never replaces committed entries: conflicts start above the commit.
                start = max(model.first_index(), model.last_index() + 1 - back,
                            model.hard_state.commit + 1)
                entries = [Entry(term, i, b"d%d.%d" % (i, term)) for i in range(start, start + count)]
                model.append(entries)
                durable.append(entries)
            elif op[0] == "hard_state":
                _, vote, commit_back = op
                # The commit index never moves back.
                hs = HardState(term, vote, max(model.last_index() - commit_back, model.hard_state.commit))
                model.set_hard_state(hs)
                durable.set_hard_state(hs)
            elif op[0] == "snapshot":
                index = min(op[1], model.last_index())
                if index > model.first_index() - 1:  # newer than the snapshot held
                    cs = ConfState(voters=VOTERS)
                    model.create_snapshot(index, cs, b"state@%d" % index)
                    durable.create_snapshot(index, cs, b"state@%d" % index)
                    model.compact(index)
                    durable.compact(index)
            else:
                durable.sync(save_commit=True)
                durable.close()
                durable = DurableRaftStorage(Disk(), directory, kafka=False)
            assert _observe(durable, model.last_index() + 3) == _observe(model, model.last_index() + 3)
        durable.close()


def test_bootstrapping_twice_is_refused(tmp_path):
    DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=VOTERS, kafka=False).close()
    with pytest.raises(StorageError, match="already holds a Raft group"):
        DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=VOTERS, kafka=False)


def test_term_and_vote_are_saved_by_every_sync_but_commit_only_when_asked(tmp_path):
    s = DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=VOTERS, kafka=False)
    s.append([Entry(1, 1, b"a"), Entry(1, 2, b"b")])
    s.set_hard_state(HardState(1, 2, 2))
    s.sync(save_commit=False)
    s.set_hard_state(HardState(1, 2, 2))  # unchanged term/vote, commit already saved
    assert s.begin_sync(save_commit=False) is None
    s.close()
    reopened = DurableRaftStorage(Disk(), tmp_path / "g", kafka=False)
    assert reopened.initial_state()[0] == HardState(1, 2, 2)  # saved with the vote change
    reopened.append([Entry(1, 3, b"c")])
    reopened.set_hard_state(HardState(1, 2, 3))
    reopened.sync(save_commit=False)
    reopened.close()
    assert DurableRaftStorage(Disk(), tmp_path / "g", kafka=False).initial_state()[0].commit == 2


def test_power_loss_keeps_exactly_what_was_synced(tmp_path):
    disk = FaultyDisk()
    s = DurableRaftStorage.bootstrap(disk, tmp_path / "g", voters=VOTERS, kafka=False)
    s.append([Entry(1, i, b"x" * 100) for i in range(1, 11)])
    s.set_hard_state(HardState(1, 1, 7))
    s.sync()
    s.append([Entry(2, i, b"y" * 100) for i in range(11, 20)])  # unsynced
    s.set_hard_state(HardState(2, 1, 7))
    disk.drop_unsynced()
    after = DurableRaftStorage(Disk(), tmp_path / "g", kafka=False)
    assert after.initial_state() == (HardState(1, 1, 7), ConfState(voters=VOTERS))
    assert after.last_index() == 10 and after.term(10) == 1


def test_power_loss_after_a_conflicting_overwrite_loses_only_uncommitted_entries(tmp_path):
    # A new leader replaced uncommitted entries 8..10; the overwrite was not synced. Whatever
    # survives, everything up to the commit index (7) is intact and the log is readable.
    disk = FaultyDisk()
    s = DurableRaftStorage.bootstrap(disk, tmp_path / "g", voters=VOTERS, kafka=False)
    s.append([Entry(1, i, b"x" * 100) for i in range(1, 11)])
    s.set_hard_state(HardState(1, 1, 7))
    s.sync()
    s.append([Entry(2, i, b"y" * 100) for i in range(8, 12)])
    disk.drop_unsynced()
    after = DurableRaftStorage(Disk(), tmp_path / "g", kafka=False)
    assert after.last_index() >= 7
    assert [e.data for e in after.entries(1, 8)] == [b"x" * 100] * 7


def _drive(node: RawNode, storage: DurableRaftStorage, applied: list) -> None:
    while node.has_ready():
        rd = node.ready()
        if rd.entries:
            storage.append(rd.entries)
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        storage.sync(save_commit=False)
        applied.extend(e.data for e in rd.committed_entries if e.data)
        node.advance(rd)


def test_a_single_voter_group_restarts_from_disk_with_its_log_and_term(tmp_path):
    storage = DurableRaftStorage.bootstrap(Disk(), tmp_path / "g", voters=(1,), kafka=False)
    node, applied = RawNode(Config(id=1), storage), []
    node.campaign()
    _drive(node, storage, applied)
    for i in range(5):
        node.propose(b"cmd%d" % i)
        _drive(node, storage, applied)
    assert applied == [b"cmd%d" % i for i in range(5)]
    term = node.status().hard_state.term
    storage.close()

    storage = DurableRaftStorage(Disk(), tmp_path / "g", kafka=False)
    hs, cs = storage.initial_state()
    assert cs.voters == (1,) and hs.term == term and hs.vote == 1
    node, replayed = RawNode(Config(id=1), storage), []
    node.campaign()
    _drive(node, storage, replayed)
    node.propose(b"after")
    _drive(node, storage, replayed)
    assert replayed[-1] == b"after" and node.status().hard_state.term > term
    assert [e.data for e in storage.entries(1, storage.last_index() + 1) if e.data] == \
        [b"cmd%d" % i for i in range(5)] + [b"after"]
