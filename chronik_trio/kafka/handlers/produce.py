"""Produce (api key 0): validate batches, propose them through the partition's Raft group.

acks=-1 is answered once the batches are committed (durable on a quorum), acks=1 once they
are durable in the leader's own log, acks=0 never; a failed acks=0 request closes the
connection so the producer notices (as Kafka does). A proposal that loses its leader before
committing is answered with a retriable error, never as written.
"""

from __future__ import annotations

import functools
import logging

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.configs import parse_list
from chronik_trio.cluster.meta import Topic
from chronik_trio.errors import BrokerError, NotLeader
from chronik_trio.group import OFFSETS_TOPIC
from chronik_trio.txn import TXN_TOPIC
from chronik_trio.record_batch import ATTR_CONTROL, ATTR_TRANSACTIONAL, NO_PRODUCER_ID

from ..codec import build, response_schema
from ..errors import KafkaError, ProtocolViolation
from ..records import keyless_records, parse_batches
from .common import leader_hint, node_endpoints, topic_for_request
from .context import BrokerContext

log = logging.getLogger(__name__)

ACKS_VALUES = (-1, 0, 1)
TV2_PRODUCE_MIN_VERSION = 12
INTERNAL_TOPICS = frozenset({OFFSETS_TOPIC, TXN_TOPIC})


class AcksZeroFailed(ProtocolViolation):
    """An acks=0 produce failed: Kafka's answer is to close the connection."""


def _entry(index: int, error: ErrorCode, **fields) -> dict:
    return {"index": index, "error_code": error, "base_offset": -1, "log_append_time": None,
            "log_start_offset": -1, **fields}


def _check_transactional(headers, transactional_id: str | None) -> bool:
    """Whether the batches are transactional; raises KafkaError for what Kafka refuses:
    control batches from a client (only the coordinator's markers are control batches),
    transactional and plain batches mixed, a transactional batch without a producer id or
    without the request's transactional id."""
    kinds = {bool(h.attributes & ATTR_TRANSACTIONAL) for h in headers}
    if any(h.attributes & ATTR_CONTROL for h in headers):
        raise KafkaError("clients may not write control batches", ErrorCode.invalid_record)
    if len(kinds) > 1:
        raise KafkaError("transactional and non-transactional batches in one produce", ErrorCode.invalid_record)
    if True not in kinds:
        return False
    if any(h.producer_id == NO_PRODUCER_ID for h in headers) or len({h.producer_id for h in headers}) > 1:
        raise KafkaError("transactional batches need one producer id", ErrorCode.invalid_record)
    if transactional_id is None:
        raise KafkaError("transactional batches without a transactional id",
                         ErrorCode.transactional_id_authorization_failed)
    return True


async def _produce_one(ctx: BrokerContext, topic: Topic, partition_data, acks: int,
                       transactional_id: str | None = None, add_to_txn: bool = False) -> dict:
    index = partition_data.index
    replica = ctx.replica(topic.name, index)
    if replica is None:
        error, leader = leader_hint(ctx, topic.name, index)
        return _entry(index, error, current_leader=leader) if leader else _entry(index, error)
    batch_bytes_max = int(ctx.topic_config(topic, "max.message.bytes"))  # live: read per request
    try:
        if partition_data.records is None:
            raise KafkaError("produce without records", ErrorCode.invalid_record)
        headers = parse_batches(partition_data.records, batch_bytes_max=batch_bytes_max)
        if "compact" in parse_list(ctx.topic_config(topic, "cleanup.policy")):
            keyless = keyless_records(partition_data.records, headers)
            if keyless:  # Kafka's LogValidator: the whole request for the partition fails
                message = f"Compacted topic cannot accept message without key in topic partition {topic.name}-{index}."
                log.info("produce to %s-%d refused: %d record(s) without a key", topic.name, index, len(keyless))
                return _entry(index, ErrorCode.invalid_record, error_message=message,
                              record_errors=[{"batch_index": k, "batch_index_error_message": None}
                                             for k in keyless])
        verify = None
        if _check_transactional(headers, transactional_id):
            verify = functools.partial(_verify, ctx, transactional_id, topic.name, index, add_to_txn)
        base_offset = await replica.produce(partition_data.records, headers, acks, verify)
    except NotLeader:
        error, leader = leader_hint(ctx, topic.name, index)
        return _entry(index, error, current_leader=leader) if leader else _entry(index, error)
    except BrokerError as exc:
        log.info("produce to %s-%d refused: %s", topic.name, index, exc)
        return _entry(index, exc.error_code, error_message=str(exc))
    return _entry(index, ErrorCode.none, base_offset=base_offset, log_start_offset=replica.log_start_offset)


async def _verify(ctx: BrokerContext, transactional_id: str, topic: str, partition: int, add: bool,
                  producer_id: int, producer_epoch: int) -> ErrorCode:
    return await ctx.verify_txn_partition(transactional_id, producer_id, producer_epoch, topic, partition, add)


async def _produce_timed(ctx: BrokerContext, topic, partition_data, acks: int, timeout_s: float,
                         transactional_id: str | None, add_to_txn: bool) -> dict:
    with trio.move_on_after(max(timeout_s, 0.0)):
        return await _produce_one(ctx, topic, partition_data, acks, transactional_id, add_to_txn)
    # Not known committed within the request's timeout: it may still commit, which is why
    # Kafka's answer is the retriable REQUEST_TIMED_OUT.
    return _entry(partition_data.index, ErrorCode.request_timed_out)


async def handle_produce(body, ctx: BrokerContext, version: int):
    refused = None
    if body.acks not in ACKS_VALUES:
        refused = ErrorCode.invalid_required_acks
    elif body.transactional_id is not None and body.acks != -1:
        refused = ErrorCode.invalid_required_acks  # Kafka: transactional writes need acks=all
    # KIP-890 part 2: from Produce v12 the client leaves adding partitions to the leader.
    add_to_txn = version >= TV2_PRODUCE_MIN_VERSION
    timeout_s = body.timeout.total_seconds()
    responses = []
    jobs = []  # (entries, i, topic, partition_data): the partitions to produce to
    for topic_data in body.topic_data:
        entries: list = []
        responses.append({"name": topic_data.name, "partition_responses": entries})
        if topic_data.name in INTERNAL_TOPICS:  # only the coordinators write them (Kafka too)
            entries.extend(_entry(p.index, ErrorCode.invalid_topic_exception) for p in topic_data.partition_data)
            continue
        try:
            topic = None if refused is not None else await topic_for_request(
                ctx, topic_data.name, allow_auto_create=True)
        except BrokerError as exc:
            entries.extend(_entry(p.index, exc.error_code) for p in topic_data.partition_data)
            continue
        for i, partition_data in enumerate(topic_data.partition_data):
            if topic is None:
                entries.append(_entry(partition_data.index, refused))
                continue
            entries.append(None)
            jobs.append((entries, i, topic, partition_data))
    if len(jobs) == 1:
        # One partition (a lone record, linger 0): produced in the request's own task; a
        # nursery and a child task would add a spawn and two scheduler steps per record.
        await _fill(*jobs[0], ctx, body.acks, timeout_s, body.transactional_id, add_to_txn)
    elif jobs:
        async with trio.open_nursery() as nursery:  # partitions in parallel: one commit round
            for job in jobs:
                nursery.start_soon(_fill, *job, ctx, body.acks, timeout_s, body.transactional_id, add_to_txn)
    if body.acks == 0:
        failed = [e for r in responses for e in r["partition_responses"] if e["error_code"] != 0]
        if failed:
            raise AcksZeroFailed(f"acks=0 produce failed with {failed[0]['error_code'].name}")
        return None
    leaders = [e["current_leader"]["leader_id"] for r in responses for e in r["partition_responses"]
               if "current_leader" in e]
    return build(response_schema(0, version), responses=responses, throttle_time=0,
                 node_endpoints=node_endpoints(ctx, leaders))


async def _fill(entries: list, i: int, topic, partition_data, ctx: BrokerContext, acks: int, timeout_s: float,
                transactional_id: str | None, add_to_txn: bool) -> None:
    entries[i] = await _produce_timed(ctx, topic, partition_data, acks, timeout_s, transactional_id, add_to_txn)
