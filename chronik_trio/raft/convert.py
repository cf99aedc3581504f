"""Conversions between raft/'s dataclasses and the generated protobuf messages (raft_pb2).

The node runtime calls these when it sends or receives a Message and when it writes or reads
entries, hard state and snapshots on disk.
"""

from __future__ import annotations

from chronik_trio.pb import raft_pb2 as pb

from .types import (LOCAL_MESSAGES, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
                    ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
                    SnapshotMetadata)

# What a peer may send a group: protobuf enums are open (any int32 decodes), and a local
# message type stepped from the network raises StepLocalMessage in the Ready pass.
_PEER_MESSAGE_TYPES = frozenset(int(t) for t in MessageType if t not in LOCAL_MESSAGES)
_ENTRY_TYPES = frozenset(int(t) for t in EntryType)
# A term is a Kafka leader epoch, an int32 on the wire: no real cluster gets near it, and a
# term adopted from one message is kept forever (persisted). Indexes are int64 on disk.
PEER_TERM_MAX = 2**31 - 1
PEER_INDEX_MAX = 2**63 - 1


def entry_to_pb(e: Entry) -> pb.Entry:
    return pb.Entry(type=int(e.type), term=e.term, index=e.index, data=e.data)


def entry_from_pb(p: pb.Entry) -> Entry:
    return Entry(term=p.term, index=p.index, data=p.data, type=EntryType(p.type))


def conf_state_to_pb(c: ConfState) -> pb.ConfState:
    return pb.ConfState(voters=c.voters, learners=c.learners, voters_outgoing=c.voters_outgoing,
                        learners_next=c.learners_next, auto_leave=c.auto_leave)


def conf_state_from_pb(p: pb.ConfState) -> ConfState:
    return ConfState(voters=tuple(p.voters), learners=tuple(p.learners),
                     voters_outgoing=tuple(p.voters_outgoing),
                     learners_next=tuple(p.learners_next), auto_leave=p.auto_leave)


def snapshot_to_pb(s: Snapshot) -> pb.Snapshot:
    md = pb.SnapshotMetadata(conf_state=conf_state_to_pb(s.metadata.conf_state),
                             index=s.metadata.index, term=s.metadata.term)
    return pb.Snapshot(data=s.data, metadata=md)


def snapshot_from_pb(p: pb.Snapshot) -> Snapshot:
    md = SnapshotMetadata(index=p.metadata.index, term=p.metadata.term,
                          conf_state=conf_state_from_pb(p.metadata.conf_state))
    return Snapshot(metadata=md, data=p.data)


def hard_state_to_pb(h: HardState) -> pb.HardState:
    return pb.HardState(term=h.term, vote=h.vote, commit=h.commit)


def hard_state_from_pb(p: pb.HardState) -> HardState:
    return HardState(term=p.term, vote=p.vote, commit=p.commit)


def message_to_pb(m: Message) -> pb.Message:
    p = pb.Message(type=int(m.type), to=m.to, term=m.term, log_term=m.log_term, index=m.index,
                   entries=[entry_to_pb(e) for e in m.entries], commit=m.commit,
                   reject=m.reject, reject_hint=m.reject_hint, context=m.context,
                   request_snapshot=m.request_snapshot)
    setattr(p, "from", m.from_)  # `from` is a Python keyword
    if m.snapshot is not None:
        p.snapshot.CopyFrom(snapshot_to_pb(m.snapshot))
    return p


def message_from_pb(p: pb.Message) -> Message:
    snap = snapshot_from_pb(p.snapshot) if p.HasField("snapshot") else None
    return Message(type=MessageType(p.type), to=p.to, from_=getattr(p, "from"), term=p.term,
                   log_term=p.log_term, index=p.index,
                   entries=tuple(entry_from_pb(e) for e in p.entries), commit=p.commit,
                   snapshot=snap, reject=p.reject, reject_hint=p.reject_hint,
                   context=p.context, request_snapshot=p.request_snapshot)


def peer_message_from_pb(p: pb.Message) -> Message | None:
    """message_from_pb for a message received from a peer; None when no peer may send it: a
    type outside the enum or one a node only makes for itself; an entry type outside the
    enum; a term past PEER_TERM_MAX or an index past PEER_INDEX_MAX; a proposal without
    entries or a snapshot message without a snapshot (raft/ asserts on those). The caller drops it (the node's Raft must never see it)."""
    if p.type not in _PEER_MESSAGE_TYPES or any(e.type not in _ENTRY_TYPES for e in p.entries):
        return None
    if max(p.term, p.log_term, *(e.term for e in p.entries)) > PEER_TERM_MAX or \
            max(p.index, p.commit, p.reject_hint, p.request_snapshot, *(e.index for e in p.entries)) > PEER_INDEX_MAX:
        return None
    if (p.type == MessageType.PROPOSE and not p.entries) or (p.type == MessageType.SNAPSHOT
                                                             and not p.HasField("snapshot")):
        return None  # a forwarded proposal carries entries, a snapshot message a snapshot
    return message_from_pb(p)


def encode_message(m: Message) -> bytes:
    return message_to_pb(m).SerializeToString()


def decode_message(data: bytes) -> Message:
    p = pb.Message()
    p.ParseFromString(data)
    return message_from_pb(p)


def conf_change_to_pb(c: ConfChangeV2) -> pb.ConfChangeV2:
    return pb.ConfChangeV2(
        transition=int(c.transition), context=c.context,
        changes=[pb.ConfChangeSingle(type=int(s.type), node_id=s.node_id) for s in c.changes])


def conf_change_from_pb(p: pb.ConfChangeV2) -> ConfChangeV2:
    return ConfChangeV2(
        changes=tuple(ConfChangeSingle(ConfChangeType(s.type), s.node_id) for s in p.changes),
        transition=ConfChangeTransition(p.transition), context=p.context)


def encode_conf_change(c: ConfChangeV2) -> bytes:
    """The data of an EntryType.CONF_CHANGE_V2 entry."""
    return conf_change_to_pb(c).SerializeToString()


def decode_conf_change(data: bytes) -> ConfChangeV2:
    p = pb.ConfChangeV2()
    p.ParseFromString(data)
    return conf_change_from_pb(p)
