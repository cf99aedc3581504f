"""The broker's one error family: every expected failure answered to a Kafka client.

`BrokerError` carries the Kafka error code the failure is answered with; each layer
subclasses it (kafka.errors.KafkaError, cluster.meta.ClusterError, group.errors.GroupError,
partition.producers.ProducerError, storage.errors.OffsetOutOfRange), so a handler answers
any of them with `exc.error_code` and maps nothing by hand (tests/unit/test_errors.py checks
that every error class with a code is one, and that none is raised nowhere).

The failures below are raised by the node runtime and caught by the Kafka handlers and the
group layer, which sit below it: they live here, at the bottom, so that both the raiser and
the catcher import them downward.

May import: the standard library and kio's ErrorCode. No trio, no I/O (the pure layers
import this module).
"""

from __future__ import annotations

from kio.schema.errors import ErrorCode


class BrokerError(Exception):
    """An expected failure answered to the client with `error_code`."""

    error_code: ErrorCode = ErrorCode.unknown_server_error

    def __init__(self, message: str, error_code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if error_code is not None:
            self.error_code = error_code


class NotLeader(BrokerError):
    """This node is not the Raft group's leader; `leader_id` is the one it knows (0: none)."""

    error_code = ErrorCode.not_leader_or_follower

    def __init__(self, group_id: str, leader_id: int, term: int) -> None:
        who = f"node {leader_id}" if leader_id else "no known leader"
        super().__init__(f"group {group_id}: not the leader ({who}, term {term})")
        self.group_id, self.leader_id, self.term = group_id, leader_id, term


class ProposalFailed(BrokerError):
    """The proposal will not be reported as applied (leadership lost, entry overwritten,
    or dropped); retrying is safe for idempotent commands. Not written, or not known to
    be: retriable either way, never reported as written. The raiser gives
    NOT_LEADER_OR_FOLLOWER when leadership is moving, so the client goes to the leader."""

    error_code = ErrorCode.request_timed_out


class NotEnoughReplicas(BrokerError):
    """acks=all with fewer in-sync replicas than min.insync.replicas: refused, not written."""

    error_code = ErrorCode.not_enough_replicas


class MetaUnavailable(BrokerError):
    """No quorum of __meta within the timeout; retriable by the client."""

    error_code = ErrorCode.request_timed_out


class RequestTimedOut(BrokerError):
    """What the request waits for did not happen within its timeout (e.g. a new topic's
    leaders); it may still happen, so the client may retry."""

    error_code = ErrorCode.request_timed_out
