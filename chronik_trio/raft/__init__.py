"""Pure sans-I/O Raft (RawNode with the etcd-raft / raft-rs contract).

May import: the standard library and chronik_trio.pb (generated protobuf) only.
Never trio, sockets, files or clocks: time is tick(), randomness an injected random.Random
(bench.py's command line alone reads a clock). docs/raft.md describes the design, the API
contract and how it is tested.
"""

from .config import Config
from .convert import (decode_conf_change, decode_message, encode_conf_change, encode_message,
                      entry_from_pb, entry_to_pb, hard_state_from_pb, hard_state_to_pb,
                      message_from_pb, message_to_pb, snapshot_from_pb, snapshot_to_pb,
                      conf_state_from_pb, conf_state_to_pb, conf_change_from_pb,
                      conf_change_to_pb)
from .describe import (describe_entry, describe_hard_state, describe_message, describe_ready,
                       describe_snapshot, describe_conf_change, describe_conf_state)
from .errors import (Compacted, ConfChangeInvalid, ConfigInvalid, ProposalDropped, RaftError,
                     ReadIndexDropped, SnapshotOutOfDate, SnapshotTemporarilyUnavailable,
                     StepLocalMessage, StepPeerNotFound, Unavailable)
from .rawnode import ElectionTimer, ProgressStatus, RawNode, Ready, Status
from .storage import MemoryStorage, Storage
from .types import (NONE, ConfChangeSingle, ConfChangeTransition, ConfChangeType,
                    ConfChangeV2, ConfState, Entry, EntryType, HardState, Message,
                    MessageType, ProgressState, ReadOnlyOption, ReadState, Snapshot,
                    SnapshotMetadata, SoftState, StateRole)

__all__ = [
    "Config", "RawNode", "Ready", "Status", "ProgressStatus", "ElectionTimer", "Storage", "MemoryStorage",
    "NONE", "ConfChangeSingle", "ConfChangeTransition", "ConfChangeType", "ConfChangeV2",
    "ConfState", "Entry", "EntryType", "HardState", "Message", "MessageType",
    "ProgressState", "ReadOnlyOption", "ReadState", "Snapshot", "SnapshotMetadata",
    "SoftState", "StateRole",
    "RaftError", "Compacted", "Unavailable", "SnapshotOutOfDate",
    "SnapshotTemporarilyUnavailable", "ProposalDropped", "ReadIndexDropped",
    "StepLocalMessage", "StepPeerNotFound", "ConfChangeInvalid", "ConfigInvalid",
    "encode_message", "decode_message", "encode_conf_change", "decode_conf_change",
    "entry_to_pb", "entry_from_pb", "hard_state_to_pb", "hard_state_from_pb",
    "message_to_pb", "message_from_pb", "snapshot_to_pb", "snapshot_from_pb",
    "conf_state_to_pb", "conf_state_from_pb", "conf_change_to_pb", "conf_change_from_pb",
    "describe_entry", "describe_message", "describe_ready", "describe_hard_state",
    "describe_snapshot", "describe_conf_change", "describe_conf_state",
]
