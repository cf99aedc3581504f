"""Raft's value types: frozen, slotted dataclasses used everywhere inside raft/.

They mirror proto/raft.proto (convert.py maps between the two at the boundary). They are
plain dataclasses rather than the generated protobuf classes because building and reading
them is several times faster in the hot paths (docs/raft.md, "Representation").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

NONE = 0
"""The node id meaning "nobody" (no vote, no leader); real ids start at 1."""


class EntryType(enum.IntEnum):
    """etcd's numbering, also the type byte of an on-disk frame (docs/storage.md)."""
    NORMAL = 0
    CONF_CHANGE = 1      # etcd's v1 conf change: reserved, never produced here
    CONF_CHANGE_V2 = 2
    # Not etcd's: a partition's log start offset moves (DeleteRecords; node/partition_group.py).
    # Raft replicates and commits it as a normal entry; only the partition state machine reads it.
    LOG_START = 3


class MessageType(enum.IntEnum):
    HUP = 0
    BEAT = 1
    PROPOSE = 2
    APPEND = 3
    APPEND_RESPONSE = 4
    VOTE = 5
    VOTE_RESPONSE = 6
    SNAPSHOT = 7
    HEARTBEAT = 8
    HEARTBEAT_RESPONSE = 9
    UNREACHABLE = 10
    SNAP_STATUS = 11
    CHECK_QUORUM = 12
    TRANSFER_LEADER = 13
    TIMEOUT_NOW = 14
    READ_INDEX = 15
    READ_INDEX_RESPONSE = 16
    PRE_VOTE = 17
    PRE_VOTE_RESPONSE = 18


LOCAL_MESSAGES = frozenset({MessageType.HUP, MessageType.BEAT, MessageType.UNREACHABLE,
                            MessageType.SNAP_STATUS, MessageType.CHECK_QUORUM})
"""Messages a node makes for itself; they never cross the network."""

RESPONSE_MESSAGES = frozenset({
    MessageType.APPEND_RESPONSE, MessageType.VOTE_RESPONSE, MessageType.HEARTBEAT_RESPONSE,
    MessageType.UNREACHABLE, MessageType.PRE_VOTE_RESPONSE, MessageType.READ_INDEX_RESPONSE})

AFTER_PERSIST_MESSAGES = frozenset({
    MessageType.APPEND_RESPONSE, MessageType.VOTE_RESPONSE, MessageType.PRE_VOTE_RESPONSE})
"""Responses that promise durable state (an appended log, a cast vote): they may leave the
node only once the Ready that produced them is persisted."""


class StateRole(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class ReadOnlyOption(enum.IntEnum):
    SAFE = 0          # confirm leadership with a heartbeat round per read batch
    LEASE_BASED = 1   # trust the check-quorum lease; needs bounded clock drift


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    ADD_LEARNER_NODE = 2


class ConfChangeTransition(enum.IntEnum):
    AUTO = 0
    JOINT_IMPLICIT = 1
    JOINT_EXPLICIT = 2


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    data: bytes = b""
    type: EntryType = EntryType.NORMAL


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    voters_outgoing: tuple[int, ...] = ()
    learners_next: tuple[int, ...] = ()
    auto_leave: bool = False


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = ConfState()


@dataclass(frozen=True, slots=True)
class Snapshot:
    metadata: SnapshotMetadata = SnapshotMetadata()
    data: bytes = b""

    @property
    def index(self) -> int:
        return self.metadata.index

    @property
    def term(self) -> int:
        return self.metadata.term

    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int = NONE
    from_: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""
    request_snapshot: int = 0


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: int = NONE
    commit: int = 0


EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class SoftState:
    leader_id: int
    role: StateRole


@dataclass(frozen=True, slots=True)
class ConfChangeSingle:
    type: ConfChangeType
    node_id: int


@dataclass(frozen=True, slots=True)
class ConfChangeV2:
    changes: tuple[ConfChangeSingle, ...] = ()
    transition: ConfChangeTransition = ConfChangeTransition.AUTO
    context: bytes = b""

    def enters_joint(self) -> bool:
        """Whether applying this change enters a joint configuration."""
        return self.transition != ConfChangeTransition.AUTO or len(self.changes) > 1

    def auto_leave(self) -> bool:
        """Whether the leader leaves the joint configuration by itself once it is applied."""
        return self.transition != ConfChangeTransition.JOINT_EXPLICIT

    def leaves_joint(self) -> bool:
        """An empty change is the command to leave a joint configuration."""
        return not self.changes


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once `applied >= index` (ReadIndex result)."""
    index: int
    request_ctx: bytes
