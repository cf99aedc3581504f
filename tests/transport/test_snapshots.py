"""Snapshots in chunks: the pure split/assemble, and a snapshot between two transports."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from chronik_trio.pb import raft_pb2, transport_pb2
from chronik_trio.transport import SnapshotAssembler, SnapshotRefused, split_snapshot

from .helpers import cluster, message, wait_connected, wait_until

pytestmark = pytest.mark.timeout(30)


def snapshot_message(from_: int, to: int, data: bytes, index: int = 10) -> raft_pb2.Message:
    m = raft_pb2.Message(type=raft_pb2.MSG_SNAPSHOT, to=to, term=3, snapshot=raft_pb2.Snapshot(
        data=data, metadata=raft_pb2.SnapshotMetadata(
            index=index, term=2, conf_state=raft_pb2.ConfState(voters=[1, 2, 3]))))
    setattr(m, "from", from_)
    return m


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=5000), chunk_bytes=st.integers(1, 2000))
def test_split_then_assemble_gives_the_message_back(data, chunk_bytes):
    original = snapshot_message(1, 2, data)
    chunks = list(split_snapshot(1, 2, "g", original, chunk_bytes))
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(len(c.data) <= chunk_bytes for c in chunks)
    assembler = SnapshotAssembler(snapshot_bytes_max=5000, assemblies_max=1)
    results = [assembler.add(c) for c in chunks]
    assert results[:-1] == [None] * (len(chunks) - 1)
    assert results[-1] == original
    assert assembler.buffered_bytes == 0


def chunks_of(data: bytes, group: str = "g", chunk_bytes: int = 4):
    return list(split_snapshot(1, 2, group, snapshot_message(1, 2, data), chunk_bytes))


def test_assembler_refuses_a_gap_and_forgets_the_snapshot():
    assembler = SnapshotAssembler(1000, 2)
    first, _, third, *_ = chunks_of(b"0123456789ab")
    assert assembler.add(first) is None
    with pytest.raises(SnapshotRefused, match="expected 4"):
        assembler.add(third)
    with pytest.raises(SnapshotRefused, match="not started"):
        assembler.add(third)


def test_assembler_refuses_chunks_that_disagree_on_the_size_or_the_end():
    assembler = SnapshotAssembler(1000, 2)
    first, second, *_ = chunks_of(b"0123456789ab")
    assembler.add(first)
    bad = transport_pb2.SnapshotChunk()
    bad.CopyFrom(second)
    bad.total_bytes = 99
    with pytest.raises(SnapshotRefused):
        assembler.add(bad)
    assembler.add(first)
    bad.CopyFrom(second)
    bad.last = True
    with pytest.raises(SnapshotRefused, match="last=True"):
        assembler.add(bad)


def test_assembler_refuses_too_large_too_many_and_non_snapshot_messages():
    with pytest.raises(SnapshotRefused, match="limit 8"):
        SnapshotAssembler(8, 2).add(chunks_of(b"0123456789")[0])
    assembler = SnapshotAssembler(1000, 2)
    assembler.add(chunks_of(b"01234567", "a")[0])
    assembler.add(chunks_of(b"01234567", "b")[0])
    with pytest.raises(SnapshotRefused, match="already 2"):
        assembler.add(chunks_of(b"01234567", "c")[0])
    not_snapshot = transport_pb2.SnapshotChunk(group="d", message=message(1, 2, 0), last=True)
    with pytest.raises(SnapshotRefused, match="type"):
        SnapshotAssembler(1000, 2).add(not_snapshot)


def test_a_new_snapshot_of_a_group_replaces_an_unfinished_one():
    assembler = SnapshotAssembler(1000, 1)
    assembler.add(chunks_of(b"old-old-old")[0])
    new = chunks_of(b"new!", chunk_bytes=100)
    assert assembler.add(new[0]).snapshot.data == b"new!"


@pytest.mark.timeout(30)
async def test_big_snapshot_arrives_whole_and_is_reported_sent():
    data = bytes(range(256)) * (5 * 2**20 // 256)  # 5 MiB: several chunks
    reports: list[tuple[int, str, bool]] = []
    async with cluster(2, report_snapshot=lambda *r: reports.append(r)) as (a, b):
        await wait_connected([a, b])
        assert a.transport.send(2, "g", snapshot_message(1, 2, data))
        for index in range(5):  # batches go out between the chunks
            assert a.transport.send(2, "other", message(1, 2, index))
        await wait_until(lambda: any(gm.message.type == raft_pb2.MSG_SNAPSHOT
                                     for batch in b.batches for gm in batch.messages))
        snapshots = [gm for batch in b.batches for gm in batch.messages
                     if gm.message.type == raft_pb2.MSG_SNAPSHOT]
        assert len(snapshots) == 1 and snapshots[0].group == "g"
        assert snapshots[0].message == snapshot_message(1, 2, data)
        await wait_until(lambda: len(b.received()) == 6)
        assert reports == [(2, "g", True)]
        assert a.transport.registry.get_sample_value(
            "chronik_transport_sent_snapshots_total", {"peer": "2"}) == 1
        assert b.transport.registry.get_sample_value(
            "chronik_transport_received_snapshots_total", {"peer": "1"}) == 1


@pytest.mark.timeout(30)
async def test_snapshot_to_an_unreachable_peer_is_reported_failed():
    reports: list[tuple[int, str, bool]] = []
    async with cluster(1, report_snapshot=lambda *r: reports.append(r)) as (a,):
        a.transport.add_peer(2, ("127.0.0.1", 1))  # nothing listens on port 1
        assert not a.transport.send(2, "g", snapshot_message(1, 2, b"state"))
        assert not a.transport.send(3, "h", snapshot_message(1, 3, b"state"))
    assert reports == [(2, "g", False), (3, "h", False)]
    assert a.unreachable == [(2, "g"), (3, "h")]


@pytest.mark.timeout(30)
async def test_snapshot_above_the_receivers_limit_is_dropped_and_later_traffic_flows():
    async with cluster(2, snapshot_bytes_max=1000) as (a, b):
        await wait_connected([a, b])
        assert a.transport.send(2, "g", snapshot_message(1, 2, bytes(5000)))
        assert a.transport.send(2, "g", message(1, 2, 7))
        await wait_until(lambda: b.received() == [(1, "g", 7)])
        await trio.sleep(0.05)
        assert b.transport.registry.get_sample_value(
            "chronik_transport_dropped_total", {"reason": "snapshot_refused"}) >= 1
        assert b.received() == [(1, "g", 7)]
