"""The idempotent-producer rules (partition/producers.py) against a table of cases.

The cases follow Kafka's protocol documentation and ProducerStateManager: KIP-98
(sequence numbers, duplicates of the last five batches, fencing by epoch), KIP-360 (a
producer with no state is accepted at any sequence; a bumped epoch restarts at 0), and the
wrap of sequence numbers after 2**31-1.
"""

import types

import pytest

from chronik_trio.cluster.meta import Topic
from chronik_trio.node.partition_group import PartitionMachine
from chronik_trio.partition.producers import (INT32_MAX, InvalidProducerEpoch, OutOfOrderSequence,
                                              ProducerStateTable, idempotent_batch, in_sequence,
                                              last_sequence)
from chronik_trio.raft.types import Entry
from tests.kafka_wire import Record, build_batch

PID = 1000


def batch(seq, count=1, *, epoch=0, pid=PID, ts=1_000):
    return idempotent_batch(pid, epoch, seq, count, ts)


def table_with(*batches):
    """A table after these batches were appended, at offsets 0, 1, ... (one per record)."""
    table, offset = ProducerStateTable(), 0
    for index, b in enumerate(batches, start=1):
        count = (b.last_seq - b.first_seq) % (INT32_MAX + 1) + 1
        table.record(b, offset, offset + count - 1, index)
        offset += count
    return table


# (history, the produce's batches, what Kafka answers: "append", ("duplicate", first
# offset), or the error)
CASES = {
    "first batch of a producer at sequence 0": ((), [batch(0, 5)], "append"),
    "the next batch in sequence": ((batch(0, 5),), [batch(5, 2)], "append"),
    "a retry of the last batch": ((batch(0, 5), batch(5, 2)), [batch(5, 2)], ("duplicate", 5)),
    "a retry of the oldest of the last five": (
        tuple(batch(i) for i in range(5)), [batch(0)], ("duplicate", 0)),
    "a retry older than the last five": (
        tuple(batch(i) for i in range(6)), [batch(0)], OutOfOrderSequence),
    "a gap": ((batch(0, 5),), [batch(6)], OutOfOrderSequence),
    "a sequence behind the last one that matches no kept batch": (
        (batch(0, 5), batch(5, 5)), [batch(3, 2)], OutOfOrderSequence),
    "the same first sequence with another length is no duplicate": (
        (batch(0, 5),), [batch(0, 3)], OutOfOrderSequence),
    "an older epoch is fenced": ((batch(0, epoch=3),), [batch(1, epoch=2)], InvalidProducerEpoch),
    "an older epoch's retry is fenced too": ((batch(0, epoch=2), batch(0, epoch=3)), [batch(0, epoch=2)],
                                             InvalidProducerEpoch),
    "a bumped epoch restarts at 0": ((batch(0, 9),), [batch(0, epoch=1)], "append"),
    "a bumped epoch must start at 0": ((batch(0, 9),), [batch(9, epoch=1)], OutOfOrderSequence),
    "a producer with no state here is accepted at any sequence (KIP-360)": ((), [batch(42)], "append"),
    "wrap: after 2**31-1 comes 0": ((batch(INT32_MAX - 1, 2),), [batch(0)], "append"),
    "wrap inside a batch": ((batch(INT32_MAX - 2, 4),), [batch(1)], "append"),
    "a retry of a batch that wrapped": ((batch(INT32_MAX - 2, 4),), [batch(INT32_MAX - 2, 4)],
                                        ("duplicate", 0)),
    "not idempotent: never checked": ((batch(0, 5),), [None, None], "append"),
    "two batches of one request in sequence": ((batch(0),), [batch(1), batch(2, 3)], "append"),
    "a gap between two batches of one request refuses both": ((batch(0),), [batch(1), batch(3)],
                                                               OutOfOrderSequence),
    "other producers are independent": ((batch(0, 5),), [batch(0, pid=PID + 1)], "append"),
}


@pytest.mark.parametrize("history, produce, expected", CASES.values(), ids=CASES.keys())
def test_sequence_rules(history, produce, expected):
    table = table_with(*history)
    if isinstance(expected, type):
        with pytest.raises(expected):
            table.check(produce)
        return
    duplicate = table.check(produce)
    if expected == "append":
        assert duplicate is None
    else:
        assert duplicate is not None and duplicate.first_offset == expected[1]


def test_sequence_arithmetic_wraps():
    assert last_sequence(INT32_MAX, 1) == INT32_MAX
    assert last_sequence(INT32_MAX, 2) == 0
    assert last_sequence(INT32_MAX - 1, 5) == 2
    assert in_sequence(INT32_MAX, 0) and in_sequence(-1, 0) and not in_sequence(-1, 1)
    assert not in_sequence(INT32_MAX, INT32_MAX + 1)


def test_a_refused_request_leaves_the_table_unchanged():
    table = table_with(batch(0))
    with pytest.raises(OutOfOrderSequence):
        table.check([batch(1), batch(3)])
    assert table.check([batch(1)]) is None  # batch(1) was not recorded by the failed check


def test_only_the_last_five_batches_are_kept_and_a_new_epoch_forgets_the_old_ones():
    table = table_with(*(batch(i) for i in range(7)))
    assert [b.first_seq for b in table.producers[PID].batches] == [2, 3, 4, 5, 6]
    table.record(batch(0, epoch=1), 7, 7, 8)
    assert [b.first_seq for b in table.producers[PID].batches] == [0]
    assert table.producers[PID].epoch == 1


def _data(offset, seq, count=1, *, pid=PID, epoch=0, ts=1_000):
    return build_batch([Record(None, b"v")] * count, base_offset=offset, producer_id=pid,
                       producer_epoch=epoch, base_sequence=seq, base_timestamp_ms=ts)


def test_replicas_applying_the_log_get_the_leaders_table():
    leader = ProducerStateTable()
    replica = ProducerStateTable()
    log = [(0, 0, 3), (3, 3, 2), (5, 5, 1)]
    for index, (offset, seq, count) in enumerate(log, start=1):
        b = batch(seq, count)
        assert leader.check([b]) is None
        leader.record(b, offset, offset + count - 1, index)
        replica.apply(memoryview(_data(offset, seq, count)), index)
    assert replica.producers == leader.producers
    # So a new leader answers a retry of the last batch with its offset.
    assert replica.check([batch(5)]).first_offset == 5
    # Not idempotent batches leave no state.
    replica.apply(memoryview(build_batch([Record(None, b"x")], base_offset=6)), 4)
    assert list(replica.producers) == [PID]


def test_the_table_survives_encoding():
    table = table_with(batch(0, 3), batch(3, epoch=0), batch(0, epoch=1, pid=PID + 1))
    copy = ProducerStateTable()
    copy.decode(table.encode())
    assert copy.producers == table.producers and copy.log_time_ms == table.log_time_ms


def test_producers_expire_by_the_logs_clock():
    table = ProducerStateTable(expiration_ms=10_000)
    table.apply(memoryview(_data(0, 0, pid=1, ts=1_000)), 1)
    table.apply(memoryview(_data(1, 0, pid=2, ts=5_000)), 2)
    table.apply(memoryview(_data(2, 1, pid=2, ts=12_000)), 3)
    assert table.expire() == [1]  # pid 1's newest batch (1 000) is older than 12 000 - 10 000
    assert list(table.producers) == [2]


def _machine():
    topic = Topic(name="t", topic_id=None, replicas=((1,),), configs={})
    return PartitionMachine(topic, 0, types.SimpleNamespace(log_start_offset=0), lambda m, t: None,
                            states=[ProducerStateTable()])


def test_a_snapshot_newer_than_its_log_position_replays_to_the_same_state():
    """A retention snapshot sits at the boundary but carries the state at the applied
    index; the replica replays entries from the boundary and must skip what it holds."""
    entries = [Entry(term=1, index=i + 1, data=_data(i * 2, i * 2, 2)) for i in range(8)]
    full = _machine()
    full.apply(entries)
    snapshot_state = full.snapshot_state()

    restored = _machine()
    restored.restore(types.SimpleNamespace(index=3, data=(6).to_bytes(8, "big") + snapshot_state))
    restored.apply(entries[3:])  # the entries after the snapshot's position, all applied before
    assert restored.states["producers"].producers == full.states["producers"].producers
    assert restored.states["producers"].check([batch(16, 2)]) is None
    with pytest.raises(OutOfOrderSequence):
        restored.states["producers"].check([batch(18)])
