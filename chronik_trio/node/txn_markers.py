"""Transaction markers on this node's partitions: the partition side of transactions that
the coordinator calls in process (Node.write_txn_markers, docs/transactions.md).

Each marker goes to every partition it names, in parallel; each partition's answer is a
Kafka error code: none once the control batch is committed in the partition's Raft group.
"""

from __future__ import annotations

import logging
import typing

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import MetaState
from chronik_trio.errors import BrokerError
from chronik_trio.partition.transactions import TxnMarker

from .partition_group import PartitionReplica

log = logging.getLogger(__name__)

MARKER_WRITE_TIMEOUT_S = 30.0  # a commit takes milliseconds; an election well under 2 s


async def write_txn_markers(markers: typing.Sequence[TxnMarker], meta: MetaState,
                            replica: typing.Callable[[str, int], PartitionReplica | None],
                            timestamp_ms: int) -> dict[tuple[str, int], ErrorCode]:
    """Write each marker to each of its partitions led here; the answer per partition."""
    results: dict[tuple[str, int], ErrorCode] = {}
    async with trio.open_nursery() as nursery:
        for marker in markers:
            for topic, partition in marker.partitions:
                nursery.start_soon(_write_one, marker, topic, partition, meta, replica, timestamp_ms, results)
    return results


async def _write_one(marker: TxnMarker, topic: str, partition: int, meta: MetaState,
                     replica: typing.Callable[[str, int], PartitionReplica | None], timestamp_ms: int,
                     results: dict[tuple[str, int], ErrorCode]) -> None:
    target = replica(topic, partition)
    known = meta.topics.get(topic)
    if target is None or known is None:
        exists = known is not None and 0 <= partition < known.partition_count
        results[(topic, partition)] = (ErrorCode.not_leader_or_follower if exists
                                       else ErrorCode.unknown_topic_or_partition)
        return
    error = ErrorCode.request_timed_out
    with trio.move_on_after(MARKER_WRITE_TIMEOUT_S):
        try:
            await target.write_txn_marker(marker, timestamp_ms)
            error = ErrorCode.none
        except BrokerError as exc:
            error = exc.error_code
            log.info("%s marker for producer %d epoch %d on %s-%d refused: %s",
                     "commit" if marker.commit else "abort", marker.producer_id, marker.producer_epoch,
                     topic, partition, exc)
    results[(topic, partition)] = error
