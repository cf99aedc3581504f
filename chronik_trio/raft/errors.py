"""Expected failures of the Raft layer. Programmer errors are asserts, not these."""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every expected failure raised by chronik_trio.raft."""


class Compacted(RaftError):
    """The requested index is at or below the storage's compaction point (etcd ErrCompacted)."""


class Unavailable(RaftError):
    """The requested index is beyond the last index the storage holds (etcd ErrUnavailable)."""


class SnapshotOutOfDate(RaftError):
    """A snapshot older than the one the storage already holds was offered (ErrSnapOutOfDate)."""


class SnapshotTemporarilyUnavailable(RaftError):
    """The storage cannot produce a snapshot now; the leader retries later."""


class ProposalDropped(RaftError):
    """The proposal was not appended: no leader, forwarding disabled, a leader transfer is in
    progress, the uncommitted-size limit was hit, or a conf change is already pending."""


class StepLocalMessage(RaftError):
    """A local-only message (hup, beat, ...) was handed to RawNode.step from the network."""


class StepPeerNotFound(RaftError):
    """A response came from a peer that is not in the configuration."""


class ConfChangeInvalid(RaftError):
    """A configuration change cannot be applied to the current configuration."""


class ConfigInvalid(RaftError):
    """A raft Config has an impossible combination of values."""


class ReadIndexDropped(RaftError):
    """A read-index request was not accepted: no leader, or too many reads pending."""
