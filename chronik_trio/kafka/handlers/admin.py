"""CreateTopics, DeleteTopics, DescribeCluster, InitProducerId, CreatePartitions, ElectLeaders
(the config APIs are configs.py)."""

from __future__ import annotations

import logging

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.acls import CLUSTER_NAME, ResourceType
from chronik_trio.cluster.configs import TOPIC_CONFIGS, normalize, validate_topic_configs
from chronik_trio.cluster.meta import Topic, validate_topic_name
from chronik_trio.errors import BrokerError

from ..authorization import authorized_operations
from ..codec import build, has_field, response_schema
from ..session import current as current_session
from .common import AUTHORIZED_OPERATIONS_OMITTED
from .configs import topic_configs_out
from .context import BrokerContext

log = logging.getLogger(__name__)

async def _create_one(ctx: BrokerContext, spec, validate_only: bool, timeout_s: float) -> dict:
    out = {"name": spec.name, "num_partitions": -1, "replication_factor": -1, "configs": None}
    partitions = spec.num_partitions if spec.num_partitions != -1 else ctx.config.default_partitions
    configs = {c.name: c.value for c in spec.configs if c.value is not None}  # null: the default
    assignment = None
    try:
        validate_topic_name(spec.name)
        if spec.assignments:
            assignment = [list(a.broker_ids) for a in sorted(spec.assignments, key=lambda a: a.partition_index)]
            unknown = {b for a in assignment for b in a} - set(ctx.meta.brokers)
            if unknown or any(len(set(a)) != len(a) or not a for a in assignment):
                return {**out, "error_code": ErrorCode.invalid_replica_assignment,
                        "error_message": f"invalid assignment {assignment}: unknown brokers {sorted(unknown)}"}
            partitions = len(assignment)
        validate_topic_configs(configs)
        configs = {k: normalize(TOPIC_CONFIGS[k], v) for k, v in configs.items()}
        topic = await ctx.create_topic(spec.name, partitions, configs, validate_only=validate_only,
                                       replication_factor=spec.replication_factor,
                                       assignment=assignment, timeout_s=timeout_s)
    except BrokerError as exc:
        return {**out, "error_code": exc.error_code, "error_message": str(exc)}
    return {**out, "error_code": ErrorCode.none, "topic_id": topic.topic_id,
            "num_partitions": topic.partition_count, "replication_factor": len(topic.replicas[0]),
            "configs": topic_configs_out(ctx, topic.configs)}


async def handle_create_topics(body, ctx: BrokerContext, version: int):
    names = [t.name for t in body.topics]
    results = []
    for spec in body.topics:
        if names.count(spec.name) > 1:
            results.append({"name": spec.name, "error_code": ErrorCode.invalid_request,
                            "error_message": f"topic {spec.name!r} appears more than once"})
            continue
        results.append(await _create_one(ctx, spec, body.validate_only,
                                         max(body.timeout.total_seconds(), 1.0)))
    return build(response_schema(19, version), throttle_time=0, topics=results)


async def handle_delete_topics(body, ctx: BrokerContext, version: int):
    results = []
    if has_field(type(body), "topic_names"):
        wanted = [(name, None) for name in body.topic_names]
    else:
        wanted = [(t.name, t.topic_id) for t in body.topics]
    for name, topic_id in wanted:
        if name is None:
            topic = ctx.meta.topics_by_id.get(topic_id)
            name = topic.name if topic else None
        entry = {"name": name, "topic_id": topic_id}
        if name is None:
            results.append({**entry, "error_code": ErrorCode.unknown_topic_id})
            continue
        try:
            topic = await ctx.delete_topic(name)
            results.append({**entry, "topic_id": topic.topic_id, "error_code": ErrorCode.none})
        except BrokerError as exc:
            results.append({**entry, "error_code": exc.error_code, "error_message": str(exc)})
    return build(response_schema(20, version), throttle_time=0, responses=results)


async def handle_describe_cluster(body, ctx: BrokerContext, version: int):
    listener = current_session().listener
    brokers = [{"broker_id": b.node_id, "host": host, "port": port, "rack": b.rack}
               for b in sorted(ctx.meta.brokers.values(), key=lambda b: b.node_id)
               for host, port in [b.endpoint(listener) or (None, None)] if host is not None]
    return build(response_schema(60, version), throttle_time=0, error_code=0,
                 endpoint_type=getattr(body, "endpoint_type", 1), cluster_id=ctx.cluster_id,
                 controller_id=ctx.meta_leader_id(), brokers=brokers,
                 cluster_authorized_operations=authorized_operations(
                     ctx, current_session(), ResourceType.CLUSTER, CLUSTER_NAME)
                 if body.include_cluster_authorized_operations else AUTHORIZED_OPERATIONS_OMITTED)


INIT_PRODUCER_ID_FENCED_VERSION = 4  # older clients are told INVALID_PRODUCER_EPOCH instead


async def handle_init_producer_id(body, ctx: BrokerContext, version: int):
    """A new producer id (epoch 0) for an idempotent producer, as Kafka answers even when
    the producer gives the id it holds (KIP-360: it bumps its epoch itself when it can). A
    transactional id is the transaction coordinator's (node/txn_coordinator.py): it keeps
    the id's producer id with the epoch bumped, which fences the previous holder (and
    aborts its ongoing transaction)."""
    resp = response_schema(22, version)
    if body.transactional_id is None:
        try:
            producer_id = await ctx.allocate_producer_id()
        except BrokerError as exc:
            log.info("InitProducerId refused: %s", exc)
            return build(resp, throttle_time=0, error_code=exc.error_code, producer_id=-1, producer_epoch=-1)
        return build(resp, throttle_time=0, error_code=0, producer_id=producer_id, producer_epoch=0)
    timeout = body.transaction_timeout
    timeout_ms = int(timeout.total_seconds() * 1000) if hasattr(timeout, "total_seconds") else int(timeout)
    decision = await ctx.txns.init_producer_id(body.transactional_id, timeout_ms,
                                               getattr(body, "producer_id", -1),  # v3+
                                               getattr(body, "producer_epoch", -1))
    code = decision.error
    if code != ErrorCode.none:
        log.info("InitProducerId for %r refused: %s", body.transactional_id, code.name)
        if code == ErrorCode.producer_fenced and version < INIT_PRODUCER_ID_FENCED_VERSION:
            code = ErrorCode.invalid_producer_epoch
        return build(resp, throttle_time=0, error_code=code, producer_id=-1, producer_epoch=-1)
    return build(resp, throttle_time=0, error_code=0, producer_id=decision.producer_id,
                 producer_epoch=decision.producer_epoch)


async def _add_partitions_one(ctx: BrokerContext, spec, validate_only: bool, timeout_s: float) -> dict:
    out = {"name": spec.name}
    assignment = [list(a.broker_ids) for a in spec.assignments] if spec.assignments else None
    try:
        if assignment is not None:
            unknown = {b for a in assignment for b in a} - set(ctx.meta.brokers)
            if unknown:
                return {**out, "error_code": ErrorCode.invalid_replica_assignment,
                        "error_message": f"unknown brokers {sorted(unknown)} in {assignment}"}
        await ctx.add_partitions(spec.name, spec.count, assignment=assignment,
                                 validate_only=validate_only, timeout_s=timeout_s)
    except BrokerError as exc:
        return {**out, "error_code": exc.error_code, "error_message": str(exc)}
    return {**out, "error_code": ErrorCode.none}


async def handle_create_partitions(body, ctx: BrokerContext, version: int):
    timeout_s = max(body.timeout.total_seconds(), 1.0)
    results = [await _add_partitions_one(ctx, spec, body.validate_only, timeout_s) for spec in body.topics]
    return build(response_schema(37, version), throttle_time=0, results=results)


ELECTION_PREFERRED = 0


async def _elect_one(ctx: BrokerContext, topic: Topic | None, partition: int, election_type: int,
                     timeout_s: float) -> dict:
    out = {"partition_id": partition}
    if topic is None or not 0 <= partition < topic.partition_count:
        return {**out, "error_code": ErrorCode.unknown_topic_or_partition}
    if election_type != ELECTION_PREFERRED:
        return {**out, "error_code": ErrorCode.invalid_request,
                "error_message": "Raft never elects a replica that may lack committed data; "
                                 "only preferred elections exist"}
    try:
        moved = await ctx.elect_preferred_leader(topic, partition, timeout_s)
    except BrokerError as exc:
        return {**out, "error_code": exc.error_code, "error_message": str(exc)}
    if not moved:
        return {**out, "error_code": ErrorCode.election_not_needed}
    return {**out, "error_code": ErrorCode.none}


async def handle_elect_leaders(body, ctx: BrokerContext, version: int):
    timeout_s = max(body.timeout.total_seconds(), 1.0)
    election_type = getattr(body, "election_type", ELECTION_PREFERRED)
    if body.topic_partitions is None:
        wanted = [(t.name, list(range(t.partition_count))) for t in ctx.meta.topics.values()]
    else:
        wanted = [(tp.topic, list(tp.partitions)) for tp in body.topic_partitions]
    results = []
    async with trio.open_nursery() as nursery:
        for name, partitions in wanted:
            entries = [None] * len(partitions)
            results.append({"topic": name, "partition_result": entries})
            topic = ctx.meta.topics.get(name)
            for i, partition in enumerate(partitions):
                async def one(i=i, partition=partition, topic=topic, entries=entries):
                    entries[i] = await _elect_one(ctx, topic, partition, election_type, timeout_s)
                nursery.start_soon(one)
    return build(response_schema(43, version), throttle_time=0, error_code=0,
                 replica_election_results=results)
