"""Transaction APIs: AddPartitionsToTxn (24), AddOffsetsToTxn (25), EndTxn (26),
TxnOffsetCommit (28), DescribeTransactions (65), ListTransactions (66); InitProducerId
with a transactional id and FindCoordinator TRANSACTION answer from the same coordinator.

The coordinator is node/txn_coordinator.py; the rules are txn/state.py. These functions
only translate between the versions' fields and it. Transaction version 2 (KIP-890 part
2, the `transaction.version` feature ApiVersions advertises at level 2) applies per request
version, as in Kafka: EndTxn v5 bumps the epoch per transaction, TxnOffsetCommit v5 adds the
group's offsets partition itself (no AddOffsetsToTxn), Produce v12 adds its partition
(handlers/produce.py). Clients that do not read the feature keep version 1.
"""

from __future__ import annotations

import datetime
import logging
import re

from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError
from chronik_trio.group import partition_for

from chronik_trio.cluster.acls import Operation, ResourceType

from ..authorization import allowed
from ..codec import build, response_schema
from ..session import current as current_session
from .context import BrokerContext

log = logging.getLogger(__name__)

TV2_END_TXN_VERSION = 5
TV2_TXN_OFFSET_COMMIT_VERSION = 5  # KIP-890 part 2: the offsets partition is added implicitly
PRODUCER_FENCED_VERSION = {24: 2, 25: 2, 26: 2, 28: 3}  # below these, PRODUCER_FENCED reads INVALID_PRODUCER_EPOCH
VERIFY_ONLY_VERSION = 4  # AddPartitionsToTxn v4+: batched, from brokers (KIP-890 part 1)


def _fenced_for(api_key: int, version: int, error: ErrorCode) -> ErrorCode:
    if error == ErrorCode.producer_fenced and version < PRODUCER_FENCED_VERSION.get(api_key, 0):
        return ErrorCode.invalid_producer_epoch
    return error


def _unknown_partitions(ctx: BrokerContext, partitions: list[tuple[str, int]]) -> set[tuple[str, int]]:
    unknown = set()
    for topic_name, partition in partitions:
        topic = ctx.meta.topics.get(topic_name)
        if topic is None or not 0 <= partition < topic.partition_count:
            unknown.add((topic_name, partition))
    return unknown


def _topic_results(partitions: list[tuple[str, int]], errors: dict[tuple[str, int], ErrorCode]) -> list[dict]:
    by_topic: dict[str, list[dict]] = {}
    for topic, partition in partitions:
        by_topic.setdefault(topic, []).append({"partition_index": partition,
                                               "partition_error_code": errors[(topic, partition)]})
    return [{"name": topic, "results_by_partition": results} for topic, results in by_topic.items()]


async def _add_one(ctx: BrokerContext, transactional_id: str, producer_id: int, producer_epoch: int,
                   topics, verify_only: bool, version: int) -> dict[tuple[str, int], ErrorCode]:
    partitions = [(t.name, int(p)) for t in topics for p in t.partitions]
    unknown = _unknown_partitions(ctx, partitions)
    if unknown:
        return {tp: ErrorCode.unknown_topic_or_partition if tp in unknown else ErrorCode.operation_not_attempted
                for tp in partitions}
    if verify_only:
        errors = {}
        for topic, partition in partitions:
            errors[(topic, partition)] = await ctx.txns.verify_partition(
                transactional_id, producer_id, producer_epoch, topic, partition, False)
        return errors
    error = _fenced_for(24, version, await ctx.txns.add_partitions(transactional_id, producer_id, producer_epoch,
                                                                   partitions))
    return {tp: error for tp in partitions}


async def handle_add_partitions_to_txn(body, ctx: BrokerContext, version: int):
    resp = response_schema(24, version)
    if version < VERIFY_ONLY_VERSION:
        partitions = [(t.name, int(p)) for t in body.v3_and_below_topics for p in t.partitions]
        errors = await _add_one(ctx, body.v3_and_below_transactional_id, body.v3_and_below_producer_id,
                                body.v3_and_below_producer_epoch, body.v3_and_below_topics, False, version)
        return build(resp, throttle_time=0, results_by_topic_v3_and_below=_topic_results(partitions, errors))
    results = []
    for txn in body.transactions:
        partitions = [(t.name, int(p)) for t in txn.topics for p in t.partitions]
        errors = await _add_one(ctx, txn.transactional_id, txn.producer_id, txn.producer_epoch, txn.topics,
                                txn.verify_only, version)
        results.append({"transactional_id": txn.transactional_id or "",
                        "topic_results": _topic_results(partitions, errors)})
    return build(resp, throttle_time=0, error_code=ErrorCode.none, results_by_transaction=results)


async def handle_add_offsets_to_txn(body, ctx: BrokerContext, version: int):
    resp = response_schema(25, version)
    if not body.group_id:
        return build(resp, throttle_time=0, error_code=ErrorCode.invalid_group_id)
    topic = await ctx.groups.offsets_topic()
    if topic is None:
        return build(resp, throttle_time=0, error_code=ErrorCode.coordinator_not_available)
    partition = partition_for(body.group_id, topic.partition_count)
    error = await ctx.txns.add_partitions(body.transactional_id, body.producer_id, body.producer_epoch,
                                          [(topic.name, partition)])
    return build(resp, throttle_time=0, error_code=_fenced_for(25, version, error))


async def handle_end_txn(body, ctx: BrokerContext, version: int):
    decision = await ctx.txns.end_txn(body.transactional_id, body.producer_id, body.producer_epoch, body.committed,
                                      tv2=version >= TV2_END_TXN_VERSION)
    if decision.error != ErrorCode.none:
        log.info("EndTxn of %r (producer %d epoch %d, %s) refused: %s", body.transactional_id, body.producer_id,
                 body.producer_epoch, "commit" if body.committed else "abort", decision.error.name)
    return build(response_schema(26, version), throttle_time=0, error_code=_fenced_for(26, version, decision.error),
                 producer_id=decision.producer_id, producer_epoch=decision.producer_epoch)


async def _add_offsets_partition(ctx: BrokerContext, body) -> ErrorCode:
    """TxnOffsetCommit v5+ (transaction version 2): the client sent no AddOffsetsToTxn, so
    the group's `__consumer_offsets` partition is added to the transaction here, at the
    transaction coordinator (in process or over the peer route), before the offsets are
    written, as Kafka's group coordinator does."""
    topic = await ctx.groups.offsets_topic()
    if topic is None:
        return ErrorCode.coordinator_not_available
    return await ctx.verify_txn_partition(body.transactional_id, body.producer_id, body.producer_epoch, topic.name,
                                          partition_for(body.group_id, topic.partition_count), True)


async def handle_txn_offset_commit(body, ctx: BrokerContext, version: int):
    offsets = [(t.name, p.partition_index, p.committed_offset, getattr(p, "committed_leader_epoch", -1),
                p.committed_metadata) for t in body.topics for p in t.partitions]
    added = await _add_offsets_partition(ctx, body) if version >= TV2_TXN_OFFSET_COMMIT_VERSION else ErrorCode.none
    if added != ErrorCode.none:
        log.info("TxnOffsetCommit of %r for group %r: adding the offsets partition failed: %s",
                 body.transactional_id, body.group_id, added.name)
        errors = [added] * len(offsets)
    else:
        errors = await ctx.groups.commit(body.group_id, getattr(body, "member_id", ""),
                                         getattr(body, "generation_id", -1),
                                         getattr(body, "group_instance_id", None), offsets,
                                         producer=(body.producer_id, body.producer_epoch))
    by_topic: dict[str, list[dict]] = {}
    for (topic, partition, *_), error in zip(offsets, errors):
        by_topic.setdefault(topic, []).append({"partition_index": partition,
                                               "error_code": _fenced_for(28, version, error)})
    return build(response_schema(28, version), throttle_time=0,
                 topics=[{"name": t, "partitions": ps} for t, ps in by_topic.items()])


def _ms_time(ms: int) -> datetime.datetime:
    """A start time; none (Kafka's -1) is answered as 0: kio, the codec of this broker and of
    Python tools built on it, cannot read a negative timestamp."""
    return datetime.datetime.fromtimestamp(max(ms, 0) / 1000, tz=datetime.timezone.utc)


async def handle_describe_transactions(body, ctx: BrokerContext, version: int):
    states = []
    for transactional_id in body.transactional_ids:
        transactional_id = transactional_id or ""
        try:
            meta = await ctx.txns.describe(transactional_id)
        except BrokerError as exc:
            states.append({"transactional_id": transactional_id, "error_code": exc.error_code, "transaction_state": "",
                           "transaction_timeout": 0, "transaction_start_time": _ms_time(-1), "producer_id": -1,
                           "producer_epoch": -1, "topics": []})
            continue
        topics: dict[str, list[int]] = {}
        for topic, partition in sorted(meta.partitions):
            topics.setdefault(topic, []).append(partition)
        states.append({"transactional_id": transactional_id, "error_code": ErrorCode.none,
                       "transaction_state": meta.state.value, "transaction_timeout": meta.timeout_ms,
                       "transaction_start_time": _ms_time(meta.start_ms), "producer_id": meta.producer_id,
                       "producer_epoch": meta.producer_epoch,
                       "topics": [{"topic": t, "partitions": ps} for t, ps in topics.items()]})
    return build(response_schema(65, version), throttle_time=0, transaction_states=states)


async def handle_list_transactions(body, ctx: BrokerContext, version: int):
    known = {"Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort", "Dead",
             "PrepareEpochFence"}
    wanted_states = set(body.state_filters)
    unknown = sorted(wanted_states - known)
    wanted_pids = set(body.producer_id_filters)
    duration_ms = getattr(body, "duration_filter", -1)
    pattern = getattr(body, "transactional_id_pattern", None)
    try:
        matcher = re.compile(pattern) if pattern else None
    except re.error as exc:
        log.info("ListTransactions: transactional id pattern %r does not compile: %s", pattern, exc)
        return build(response_schema(66, version), throttle_time=0, error_code=ErrorCode.invalid_regular_expression)
    now = ctx.wall_clock_ms()
    listed = []
    session = current_session()
    for meta in ctx.txns.list_transactions():
        if not allowed(ctx, session, Operation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, meta.transactional_id,
                       "ListTransactions", audited=False):
            continue
        if matcher is not None and not matcher.fullmatch(meta.transactional_id):
            continue
        if wanted_states and meta.state.value not in wanted_states:
            continue
        if wanted_pids and meta.producer_id not in wanted_pids:
            continue
        if duration_ms >= 0 and (meta.start_ms < 0 or now - meta.start_ms < duration_ms):
            continue
        listed.append({"transactional_id": meta.transactional_id, "producer_id": meta.producer_id,
                       "transaction_state": meta.state.value})
    error = ErrorCode.coordinator_load_in_progress if ctx.txns.coordinator_loading() else ErrorCode.none
    return build(response_schema(66, version), throttle_time=0, error_code=error, unknown_state_filters=unknown,
                 transaction_states=listed)
