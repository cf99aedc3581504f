"""AddRaftVoter, RemoveRaftVoter and UnregisterBroker: nodes join and leave the cluster
(node/membership.py carries the changes out).

- AddRaftVoter (80, KIP-853): sent by a node started with --join on an empty data dir; the
  first listener is its Raft address. Answered once __meta has recorded it as joining (the
  __meta leader then adds it as a learner and, caught up, as a voter).
- RemoveRaftVoter (81): `admin remove-node N`; refused while N hosts partition replicas.
- DescribeQuorum (55): __meta as the metadata quorum, with every member's Raft address.
- UnregisterBroker (64, Kafka's `kafka-cluster unregister`): `admin remove-node N --force`, for
  a dead node that still hosts replicas (a lost machine).
"""

from __future__ import annotations

import logging
import uuid

from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError

from ..codec import build, response_schema
from .context import BrokerContext

log = logging.getLogger(__name__)

ADD_RAFT_VOTER, REMOVE_RAFT_VOTER, UNREGISTER_BROKER = 80, 81, 64


def _check_cluster_id(body, ctx: BrokerContext) -> None:
    if body.cluster_id and body.cluster_id != ctx.cluster_id:
        raise BrokerError(f"cluster id {body.cluster_id!r} is not this cluster's ({ctx.cluster_id!r})",
                          ErrorCode.inconsistent_cluster_id)


def _answer(api_key: int, version: int, exc: BrokerError | None):
    if exc is None:
        return build(response_schema(api_key, version), throttle_time=0, error_code=0, error_message=None)
    return build(response_schema(api_key, version), throttle_time=0, error_code=exc.error_code,
                 error_message=str(exc))


async def handle_add_raft_voter(body, ctx: BrokerContext, version: int):
    try:
        _check_cluster_id(body, ctx)
        if not body.listeners:
            raise BrokerError("AddRaftVoter needs a listener: the joining node's Raft address",
                              ErrorCode.invalid_request)
        if body.voter_id < 1:
            raise BrokerError(f"voter id {body.voter_id} is not a node id (>= 1)", ErrorCode.invalid_request)
        listener = body.listeners[0]
        await ctx.add_node(int(body.voter_id), f"{listener.host}:{listener.port}")
    except BrokerError as exc:
        log.info("AddRaftVoter for node %d refused: %s", body.voter_id, exc)
        return _answer(ADD_RAFT_VOTER, version, exc)
    return _answer(ADD_RAFT_VOTER, version, None)


async def handle_remove_raft_voter(body, ctx: BrokerContext, version: int):
    return await _remove(REMOVE_RAFT_VOTER, version, body, ctx, int(body.voter_id), force=False)


async def handle_unregister_broker(body, ctx: BrokerContext, version: int):
    return await _remove(UNREGISTER_BROKER, version, body, ctx, int(body.broker_id), force=True)


async def _remove(api_key: int, version: int, body, ctx: BrokerContext, node_id: int, *, force: bool):
    try:
        if hasattr(body, "cluster_id"):
            _check_cluster_id(body, ctx)
        await ctx.remove_node(node_id, force=force)
    except BrokerError as exc:
        log.info("%s for node %d refused: %s", "UnregisterBroker" if force else "RemoveRaftVoter", node_id, exc)
        return _answer(api_key, version, exc)
    return _answer(api_key, version, None)

DESCRIBE_QUORUM = 55
METADATA_TOPIC = "__cluster_metadata"  # the name Kafka's tools ask for; here it is __meta


async def handle_describe_quorum(body, ctx: BrokerContext, version: int):
    """__meta's Raft group as KRaft's metadata quorum (kafka-metadata-quorum.sh describe): its
    leader, term, commit index, voters and learners (observers) and, from v2, every member's
    Raft address (a joining node learns its peers from it)."""
    quorum = ctx.meta_quorum()
    topics = []
    for topic in body.topics:
        partitions = []
        for p in topic.partitions:
            if topic.topic_name != METADATA_TOPIC or p.partition_index != 0:
                partitions.append({"partition_index": p.partition_index,
                                   "error_code": ErrorCode.unknown_topic_or_partition,
                                   "error_message": f"the metadata quorum is {METADATA_TOPIC}-0",
                                   "leader_id": -1, "leader_epoch": -1, "high_watermark": -1})
                continue
            partitions.append({
                "partition_index": 0, "error_code": 0, "error_message": None,
                "leader_id": quorum.leader_id or -1, "leader_epoch": quorum.term,
                "high_watermark": quorum.commit_index,
                "current_voters": [_replica(n, quorum) for n in quorum.voters],
                "observers": [_replica(n, quorum) for n in quorum.learners]})
        topics.append({"topic_name": topic.topic_name, "partitions": partitions})
    nodes = [{"node_id": n, "listeners": [{"name": RAFT_LISTENER, "host": host, "port": port}]}
             for n, (host, port) in sorted(quorum.addresses.items())]
    return build(response_schema(DESCRIBE_QUORUM, version), error_code=0, error_message=None,
                 topics=topics, nodes=nodes)


RAFT_LISTENER = "RAFT"


def _replica(node_id: int, quorum) -> dict:
    return {"replica_id": node_id, "replica_directory_id": uuid.UUID(int=0),
            "log_end_offset": quorum.match.get(node_id, -1)}
