"""Produce (api key 0): validate batches, assign offsets, answer per acks.

Single node today: acks=1 and acks=all both answer once the leader's append is durable (it is
the only replica); acks=0 never answers, and a failed acks=0 request closes the connection so
the producer notices (as Kafka does).
"""

from __future__ import annotations

import logging

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import ClusterError

from ..codec import build, response_schema
from ..errors import KafkaError, ProtocolViolation
from ..records import parse_batches
from .common import error_code_of, topic_for_request

log = logging.getLogger(__name__)

ACKS_VALUES = (-1, 0, 1)


class AcksZeroFailed(ProtocolViolation):
    """An acks=0 produce failed: Kafka's answer is to close the connection."""


async def _append_one(ctx, topic, partition_data) -> tuple[dict, tuple | None]:
    """Append one partition's batches; return (response entry, (replica, last index) or None)."""
    entry = {"index": partition_data.index, "base_offset": -1, "log_append_time": None,
             "log_start_offset": -1}
    replica = ctx.replica(topic.name, partition_data.index)
    if replica is None:
        return {**entry, "error_code": ErrorCode.unknown_topic_or_partition}, None
    batch_bytes_max = min(ctx.config.message_max_bytes, int(topic.config("max.message.bytes")))
    try:
        if partition_data.records is None:
            raise KafkaError("produce without records", ErrorCode.invalid_record)
        headers = parse_batches(partition_data.records, batch_bytes_max=batch_bytes_max)
    except KafkaError as exc:
        log.info("produce to %s-%d refused: %s", topic.name, partition_data.index, exc)
        return {**entry, "error_code": exc.error_code, "error_message": str(exc)}, None
    base_offset, last_index = replica.append(partition_data.records, headers)
    entry.update(error_code=ErrorCode.none, base_offset=base_offset,
                 log_start_offset=replica.state.log_start_offset)
    return entry, (replica, last_index)


async def handle_produce(body, ctx, version: int):
    refused = None
    if body.acks not in ACKS_VALUES:
        refused = ErrorCode.invalid_required_acks
    elif body.transactional_id is not None:
        refused = ErrorCode.transactional_id_authorization_failed  # transactions: not built
    responses, waits = [], []
    for topic_data in body.topic_data:
        entries = []
        try:
            topic = await topic_for_request(ctx, topic_data.name, allow_auto_create=True)
        except ClusterError as exc:
            topic, topic_error = None, error_code_of(exc)
        for partition_data in topic_data.partition_data:
            if refused is not None or topic is None:
                code = refused if refused is not None else topic_error
                entries.append({"index": partition_data.index, "error_code": code, "base_offset": -1,
                                "log_append_time": None, "log_start_offset": -1})
                continue
            entry, wait = await _append_one(ctx, topic, partition_data)
            entries.append(entry)
            if wait is not None:
                waits.append((entry, wait))
        responses.append({"name": topic_data.name, "partition_responses": entries})
    if body.acks == 0:
        failed = [e for r in responses for e in r["partition_responses"] if e["error_code"] != 0]
        if failed:
            raise AcksZeroFailed(f"acks=0 produce failed with {failed[0]['error_code'].name}")
        return None
    await _await_durable(waits, body.timeout.total_seconds(), ctx.config.fsync == "always")
    return build(response_schema(0, version), responses=responses, throttle_time=0)


async def _await_durable(waits, timeout_s: float, fsync_always: bool) -> None:
    if not fsync_always:
        return
    with trio.move_on_after(max(timeout_s, 0.0)):
        for entry, (replica, last_index) in waits:
            await replica.wait_durable(last_index)
            entry["done"] = True
    for entry, _ in waits:
        # Not known durable within the request's timeout: the records may still become
        # durable, which is why Kafka's answer is the retriable REQUEST_TIMED_OUT.
        if not entry.pop("done", False):
            entry.update(error_code=ErrorCode.request_timed_out, base_offset=-1)
