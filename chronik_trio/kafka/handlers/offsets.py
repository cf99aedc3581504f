"""ListOffsets (api key 2): earliest, latest, and by timestamp (from batch headers).
isolation_level 1 (read_committed, v2+) answers up to the last stable offset."""

from __future__ import annotations

from kio.schema.errors import ErrorCode

from ..codec import build, response_schema
from chronik_trio.record_batch import read_header

from ..records import first_offset_at_or_after
from .common import leader_hint
from .context import BrokerContext
from .fetch import _epoch_error

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4
LATEST_TIERED = -5


READ_COMMITTED = 1


def _lookup(replica, timestamp: int, isolation_level: int) -> tuple[ErrorCode, int, int]:
    """(error, offset, timestamp) for one partition; latest under read_committed is the
    last stable offset, as Kafka answers."""
    if timestamp == LATEST:
        stable = isolation_level == READ_COMMITTED
        return ErrorCode.none, replica.last_stable_offset if stable else replica.high_watermark, -1
    if timestamp in (EARLIEST, EARLIEST_LOCAL):
        return ErrorCode.none, replica.log_start_offset, -1
    if timestamp == LATEST_TIERED:
        return ErrorCode.none, -1, -1  # no tiered storage
    if timestamp < 0 and timestamp != MAX_TIMESTAMP:
        return ErrorCode.invalid_request, -1, -1
    committed_only = isolation_level == READ_COMMITTED
    end = replica.last_stable_offset if committed_only else replica.high_watermark
    if timestamp == MAX_TIMESTAMP:  # KIP-734: the first record with the largest timestamp
        timestamp = _largest_timestamp(replica, end, committed_only)
        if timestamp < 0:
            return ErrorCode.none, -1, -1
    found = replica.log.offset_for_timestamp(timestamp)
    if found is None or found[0] >= end:
        return ErrorCode.none, -1, -1
    base_offset, max_timestamp = found
    (batch,) = replica.read(base_offset, 1, committed_only=committed_only)[:1]
    exact = first_offset_at_or_after(batch, timestamp)
    offset, found_timestamp = exact if exact is not None else (base_offset, max_timestamp)
    return ErrorCode.none, max(offset, replica.log_start_offset), found_timestamp


SCAN_BYTES = 1 << 20


def _largest_timestamp(replica, end: int, committed_only: bool) -> int:
    """The largest record timestamp below `end` (-1 for none). The log's index answers unless
    the largest one is at or above `end` (not yet committed, or in an open transaction under
    read_committed): then the batches below `end` are read, a rare and passing case."""
    largest = replica.log.max_timestamp_ms
    found = replica.log.offset_for_timestamp(largest) if largest >= 0 else None
    if found is None or found[0] < end:
        return largest
    largest, offset = -1, replica.log_start_offset
    while offset < end:
        batches = replica.read(offset, SCAN_BYTES, committed_only=committed_only)
        if not batches:
            break
        for batch in batches:
            header = read_header(batch)
            largest = max(largest, header.max_timestamp_ms)
            offset = header.base_offset + header.last_offset_delta + 1
    return largest


async def handle_list_offsets(body, ctx: BrokerContext, version: int):
    topics = []
    isolation_level = getattr(body, "isolation_level", 0)  # v2+
    for topic in body.topics:
        partitions = []
        for p in topic.partitions:
            replica = ctx.replica(topic.name, p.partition_index)
            entry = {"partition_index": p.partition_index, "timestamp": -1, "offset": -1,
                     "leader_epoch": -1}
            if replica is None or not replica.is_leader:  # offsets come from the leader
                entry["error_code"] = leader_hint(ctx, topic.name, p.partition_index)[0]
            else:
                error = _epoch_error(getattr(p, "current_leader_epoch", -1), replica.leader_epoch)
                if error is None:
                    error, offset, timestamp = _lookup(replica, p.timestamp, isolation_level)
                    entry.update(offset=offset, timestamp=timestamp, leader_epoch=replica.leader_epoch)
                entry["error_code"] = error
            partitions.append(entry)
        topics.append({"name": topic.name, "partitions": partitions})
    return build(response_schema(2, version), throttle_time=0, topics=topics)
