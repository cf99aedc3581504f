"""DeleteRecords and DescribeLogDirs: log management.

DeleteRecords is served by each partition's leader: it commits a LOG_START entry through
the partition's Raft group, so every replica moves its log start offset (ListOffsets
earliest and Fetch follow it) and deletes the segments wholly below it. DescribeLogDirs
reports this node's one log directory and the size of every partition replica in it.
"""

from __future__ import annotations

import logging

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError, NotLeader

from ..codec import build, response_schema
from .common import leader_hint
from .context import BrokerContext

log = logging.getLogger(__name__)

DELETE_RECORDS_KEY, DESCRIBE_LOG_DIRS_KEY = 21, 35


async def _delete_one(ctx: BrokerContext, topic: str, partition: int, offset: int) -> dict:
    out = {"partition_index": partition, "low_watermark": -1}
    replica = ctx.replica(topic, partition)
    if replica is None or not replica.is_leader:
        return {**out, "error_code": leader_hint(ctx, topic, partition)[0]}
    try:
        low_watermark = await replica.delete_records(offset)
    except NotLeader:
        return {**out, "error_code": leader_hint(ctx, topic, partition)[0]}
    except BrokerError as exc:
        log.info("DeleteRecords on %s-%d below %d refused: %s", topic, partition, offset, exc)
        return {**out, "error_code": exc.error_code}
    return {**out, "error_code": ErrorCode.none, "low_watermark": low_watermark}


async def _delete_timed(ctx, topic: str, partition: int, offset: int, timeout_s: float) -> dict:
    with trio.move_on_after(timeout_s):
        return await _delete_one(ctx, topic, partition, offset)
    return {"partition_index": partition, "low_watermark": -1, "error_code": ErrorCode.request_timed_out}


async def handle_delete_records(body, ctx, version: int):
    timeout_s = max(body.timeout.total_seconds(), 0.1)
    results = []
    async with trio.open_nursery() as nursery:
        for t in body.topics:
            entries: list = [None] * len(t.partitions)
            results.append({"name": t.name, "partitions": entries})
            for i, p in enumerate(t.partitions):
                async def one(i=i, name=t.name, p=p, entries=entries):
                    entries[i] = await _delete_timed(ctx, name, int(p.partition_index), int(p.offset), timeout_s)
                nursery.start_soon(one)
    return build(response_schema(DELETE_RECORDS_KEY, version), throttle_time=0, topics=results)


async def handle_describe_log_dirs(body, ctx, version: int):
    if body.topics is None:
        wanted = [(t.name, range(t.partition_count)) for t in ctx.meta.topics.values()]
    else:
        wanted = [(t.topic, [int(p) for p in t.partitions]) for t in body.topics]
    topics = []
    for name, partitions in sorted(wanted, key=lambda w: w[0]):
        found = [{"partition_index": p, "partition_size": replica.log.size_bytes,
                  "offset_lag": 0,  # Kafka's lag of a future (moving) replica: there are none
                  "is_future_key": False}
                 for p in partitions if (replica := ctx.replica(name, p)) is not None]
        if found:
            topics.append({"name": name, "partitions": found})
    log_dir, total_bytes, usable_bytes = await ctx.log_dir_usage()
    result = {"error_code": ErrorCode.none, "log_dir": log_dir, "topics": topics,
              "total_bytes": total_bytes, "usable_bytes": usable_bytes}
    return build(response_schema(DESCRIBE_LOG_DIRS_KEY, version), throttle_time=0,
                 error_code=ErrorCode.none, results=[result])
