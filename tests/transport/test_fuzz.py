"""The Raft-transport fuzzer (fuzz.py), bounded, and the peer messages it found stopping a
node: a live one-member cluster node takes mutated transport frames from a node that is not a
member and never exits. `python -m tests.transport.fuzz --frames 1000000` is the long run."""

from __future__ import annotations

import random
import socket

import pytest

from chronik_trio.pb import raft_pb2, transport_pb2
from chronik_trio.raft.convert import peer_message_from_pb
from tests.kafka import live
from tests.transport import fuzz

pytestmark = pytest.mark.timeout(180)

FRAMES = 8_000
SECONDS = 45.0


@pytest.fixture
def node(tmp_path):
    broker, raft_port = fuzz.start_node(tmp_path)
    try:
        yield broker, raft_port
    finally:
        assert broker.stop() == 0


def test_mutated_transport_frames_never_stop_the_node(node):
    broker, raft_port = node
    seed = random.randrange(2**31)
    report = fuzz.run(broker.port, raft_port, lambda: broker.proc.poll() is None,
                      frames=FRAMES, seconds=SECONDS, seed=seed)
    about = f"seed {seed}: {report.line()}\n{report.failures}"
    assert not report.failures and report.node_exits == 0, about
    assert report.frames == FRAMES or report.seconds >= SECONDS, about
    assert report.statuses[204] > 0 and report.statuses[400] + report.statuses[413] > 0, about
    assert 0 < report.delivered <= report.frames, about


def _message(message_type: int, **fields) -> raft_pb2.Message:
    return raft_pb2.Message(type=message_type, to=fuzz.NODE_ID, **{"term": 1, "from": fuzz.NOT_A_MEMBER, **fields})


# Each of these stopped a node when it arrived from the network (found by the fuzzer).
STOPPED_A_NODE = {
    "a local-only type (MsgHup): StepLocalMessage": _message(raft_pb2.MSG_HUP),
    "a type outside the enum: ValueError": _message(99),
    "an entry type outside the enum": _message(raft_pb2.MSG_APPEND, entries=[raft_pb2.Entry(type=9, index=2)]),
    "a proposal without entries: an assert": _message(raft_pb2.MSG_PROPOSE),
    "a term past int32 (the Kafka leader epoch)": _message(raft_pb2.MSG_VOTE, term=2**40),
    "a snapshot message without a snapshot: an assert": _message(raft_pb2.MSG_SNAPSHOT),
}


@pytest.mark.parametrize("what", sorted(STOPPED_A_NODE))
def test_a_message_no_peer_may_send_is_refused_at_ingress(what):
    assert peer_message_from_pb(STOPPED_A_NODE[what]) is None


def test_a_well_formed_peer_message_is_taken():
    message = peer_message_from_pb(_message(raft_pb2.MSG_HEARTBEAT, commit=0))
    assert message is not None and message.from_ == fuzz.NOT_A_MEMBER


def test_the_node_drops_them_counts_them_and_serves_on(node):
    broker, raft_port = node
    group_ids = fuzz.groups(broker.port)
    conn = fuzz._H2(raft_port)
    try:
        for message in STOPPED_A_NODE.values():
            for group in group_ids:
                batch = transport_pb2.RaftBatch(from_node=fuzz.NOT_A_MEMBER, to_node=fuzz.NODE_ID,
                                                messages=[transport_pb2.GroupMessage(group=group, message=message)])
                payload = batch.SerializeToString()
                body = bytes([fuzz.FRAME_KIND_RAFT_BATCH]) + len(payload).to_bytes(4, "big") + payload
                assert conn.post(body, str(fuzz.NOT_A_MEMBER)) == 204
        # A proposal with entries, forwarded to a group other than __meta (only __meta's
        # followers forward; partitions propose on their leader): it would write any sender's entries.
        partition_group = next(g for g in group_ids if g.endswith("-0"))
        batch = transport_pb2.RaftBatch(from_node=fuzz.NOT_A_MEMBER, to_node=fuzz.NODE_ID, messages=[
            transport_pb2.GroupMessage(group=partition_group, message=_message(
                raft_pb2.MSG_PROPOSE, entries=[raft_pb2.Entry(data=b"not a record batch")]))])
        payload = batch.SerializeToString()
        body = bytes([fuzz.FRAME_KIND_RAFT_BATCH]) + len(payload).to_bytes(4, "big") + payload
        assert conn.post(body, str(fuzz.NOT_A_MEMBER)) == 204
        # One forwarded to __meta whose entry is no MetaCommand: committed, it would stop every
        # replica on every replay of the log.
        batch = transport_pb2.RaftBatch(from_node=fuzz.NOT_A_MEMBER, to_node=fuzz.NODE_ID, messages=[
            transport_pb2.GroupMessage(group="__meta", message=_message(
                raft_pb2.MSG_PROPOSE, entries=[raft_pb2.Entry(data=b"\xff\xff\xff")]))])
        payload = batch.SerializeToString()
        body = bytes([fuzz.FRAME_KIND_RAFT_BATCH]) + len(payload).to_bytes(4, "big") + payload
        assert conn.post(body, str(fuzz.NOT_A_MEMBER)) == 204
    finally:
        conn.close()
    dropped = live.metric(raft_port, "chronik_raft_malformed_dropped_total")
    # The liveness group ("") takes any type (only its term, the incarnation, is read).
    assert dropped == len(STOPPED_A_NODE) * (len(group_ids) - 1) + 2
    assert broker.proc.poll() is None
    live.round_trip(broker.port, "fuzz-health")
