"""Consumer groups, the pure part: the classic group protocol, the committed-offsets table and
their records on `__consumer_offsets`.

- group.py: one group's state machine (members, generations, rebalances, static members) as
  a transition table, driven by calls that carry the time; it emits events (JoinCompleted,
  SyncCompleted, PersistWanted) for the node's coordinator to deliver and write.
- errors.py: GroupError and IllegalGroupInput, each with the Kafka error code it answers.
- store.py: GroupStore, the BatchState (partition/state.py) every replica of an offsets
  partition derives from its committed batches: persisted groups and committed offsets.
- records.py: the record keys and values, and the batches that carry them.
- subscription.py: the topics a consumer-protocol subscription names.
- hashing.py: which offsets partition a group lives on (Kafka's rule).

May import: the standard library, attrs, kio's ErrorCode, chronik_trio.varint and
chronik_trio.record_batch. No trio, no I/O, no clocks: time is passed in by the caller.
"""

OFFSETS_TOPIC = "__consumer_offsets"  # Kafka's name; written only by group coordinators

from .errors import GroupError, IllegalGroupInput
from .group import (Group, GroupInput, GroupState, JoinCompleted, JoinPending, JoinRequest, JoinResult,
                    PersistWanted, SyncCompleted, SyncPending, SyncResult)
from .hashing import java_string_hash, partition_for
from .store import GroupRecord, GroupStore, MemberRecord, OffsetRecord

__all__ = ["OFFSETS_TOPIC", "GroupError", "IllegalGroupInput", "Group", "GroupInput", "GroupState", "JoinCompleted", "JoinPending", "JoinRequest", "JoinResult",
           "PersistWanted", "SyncCompleted", "SyncPending", "SyncResult", "java_string_hash",
           "partition_for", "GroupRecord", "GroupStore", "MemberRecord", "OffsetRecord"]
