"""Transactions across nodes: how a coordinator's markers reach the partition leaders, and
how a partition leader's verification reaches the coordinator.

Both use the peer transport's request/response route (transport/rpc.py), with the
messages of proto/txn.proto:

- write_markers (the coordinator, node/txn_coordinator.py): the marker's partitions this
  node leads are written here (Node.write_txn_markers); the others are grouped by the
  leader __meta names and sent to each such node as one `txn-markers` call, whose handler
  writes them with its own write_txn_markers. A call that fails, or a partition without a
  known leader, is answered NOT_LEADER_OR_FOLLOWER for its partitions: the coordinator
  retries (markers are idempotent on the partitions).
- verify_txn_partition (a partition leader, on a transactional produce): asked of this
  node's coordinator if it leads the transactional id's `__transaction_state` partition,
  else of the node __meta names as its leader (`txn-verify`). No answer is
  COORDINATOR_NOT_AVAILABLE: the produce answers a retriable error.
"""

from __future__ import annotations

import logging
import typing

import google.protobuf.message
import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import MetaState
from chronik_trio.partition.transactions import TxnMarker
from chronik_trio.pb import txn_pb2
from chronik_trio.transport.rpc import RpcFailed, RpcRefused
from chronik_trio.txn import state as ts

from .partition_group import PartitionReplica
from .txn_coordinator import TxnCoordinator

log = logging.getLogger(__name__)

MARKERS_CALL = "txn-markers"
VERIFY_CALL = "txn-verify"
Partition = tuple[str, int]


class RoutesHost(typing.Protocol):
    node_id: int
    txns: TxnCoordinator

    @property
    def meta(self) -> MetaState: ...
    @property
    def transport(self) -> typing.Any:
        """The peer transport (None on a node without peers)."""
    def replica(self, topic: str, partition: int) -> PartitionReplica | None: ...
    async def write_txn_markers(self, markers: list[TxnMarker]) -> dict[Partition, ErrorCode]: ...


def _error(code: int) -> ErrorCode:
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.unknown_server_error


class TxnRoutes:
    def __init__(self, node: RoutesHost) -> None:
        self.node = node

    def register(self, transport) -> None:
        transport.add_rpc_handler(MARKERS_CALL, self._serve_markers)
        transport.add_rpc_handler(VERIFY_CALL, self._serve_verify)

    def _leader_node(self, topic_name: str, partition: int) -> int | None:
        topic = self.node.meta.topics.get(topic_name)
        if topic is None:
            return None
        leader = self.node.meta.leader_of(topic, partition)
        return leader.leader if leader is not None and leader.leader > 0 else None

    # --- the coordinator's side ------------------------------------------------------------------

    async def write_markers(self, coordinator_epoch: int, marker: ts.Marker) -> dict[Partition, ErrorCode]:
        results: dict[Partition, ErrorCode] = {}
        local: list[Partition] = []
        remote: dict[int, list[Partition]] = {}
        for topic_name, partition in sorted(marker.partitions):
            topic = self.node.meta.topics.get(topic_name)
            if topic is None or not 0 <= partition < topic.partition_count:
                results[(topic_name, partition)] = ErrorCode.unknown_topic_or_partition
                continue
            replica = self.node.replica(topic_name, partition)
            if replica is not None and replica.is_leader:
                local.append((topic_name, partition))
                continue
            leader = self._leader_node(topic_name, partition)
            if leader is None or leader == self.node.node_id or self.node.transport is None:
                results[(topic_name, partition)] = ErrorCode.not_leader_or_follower
            else:
                remote.setdefault(leader, []).append((topic_name, partition))

        async def one_node(node_id: int, partitions: list[Partition]) -> None:
            results.update(await self._remote_markers(node_id, coordinator_epoch, marker, partitions))

        async with trio.open_nursery() as nursery:
            for node_id, partitions in remote.items():
                nursery.start_soon(one_node, node_id, partitions)
            if local:
                results.update(await self.node.write_txn_markers([TxnMarker(
                    marker.producer_id, marker.producer_epoch, marker.commit, coordinator_epoch, local)]))
        return results

    async def _remote_markers(self, node_id: int, coordinator_epoch: int, marker: ts.Marker,
                              partitions: list[Partition]) -> dict[Partition, ErrorCode]:
        request = txn_pb2.WriteMarkersRequest(
            producer_id=marker.producer_id, producer_epoch=marker.producer_epoch, commit=marker.commit,
            coordinator_epoch=coordinator_epoch,
            partitions=[txn_pb2.TopicPartition(topic=t, partition=p) for t, p in partitions])
        try:
            answer = txn_pb2.WriteMarkersResponse.FromString(
                await self.node.transport.call(node_id, MARKERS_CALL, request.SerializeToString()))
        except (RpcFailed, google.protobuf.message.DecodeError) as exc:
            log.info("markers for %d partition(s) on node %d not written: %s", len(partitions), node_id, exc)
            return {tp: ErrorCode.not_leader_or_follower for tp in partitions}
        results = {(r.partition.topic, r.partition.partition): _error(r.error_code) for r in answer.results}
        return {tp: results.get(tp, ErrorCode.not_leader_or_follower) for tp in partitions}

    async def _serve_markers(self, from_node: int, body: bytes) -> bytes:
        try:
            request = txn_pb2.WriteMarkersRequest.FromString(body)
        except google.protobuf.message.DecodeError as exc:
            raise RpcRefused(f"not a WriteMarkersRequest: {exc}") from None
        partitions = [(p.topic, p.partition) for p in request.partitions]
        results = await self.node.write_txn_markers([TxnMarker(
            request.producer_id, request.producer_epoch, request.commit, request.coordinator_epoch, partitions)]) \
            if partitions else {}
        return txn_pb2.WriteMarkersResponse(results=[
            txn_pb2.PartitionError(partition=txn_pb2.TopicPartition(topic=t, partition=p),
                                   error_code=int(results.get((t, p), ErrorCode.not_leader_or_follower)))
            for t, p in partitions]).SerializeToString()

    # --- the partition leader's side --------------------------------------------------------------

    async def verify_txn_partition(self, transactional_id: str, producer_id: int, producer_epoch: int,
                                   topic: str, partition: int, add: bool) -> ErrorCode:
        where = self.node.txns.coordinator_of(transactional_id)
        if where is None:
            return ErrorCode.coordinator_not_available
        replica = self.node.replica(where[0].name, where[1])
        if replica is not None and replica.is_leader:
            return await self.node.txns.verify_partition(transactional_id, producer_id, producer_epoch, topic,
                                                         partition, add)
        leader = self._leader_node(where[0].name, where[1])
        if leader is None or leader == self.node.node_id or self.node.transport is None:
            return ErrorCode.coordinator_not_available
        request = txn_pb2.VerifyPartitionRequest(
            transactional_id=transactional_id, producer_id=producer_id, producer_epoch=producer_epoch,
            partition=txn_pb2.TopicPartition(topic=topic, partition=partition), add=add)
        try:
            answer = txn_pb2.VerifyPartitionResponse.FromString(
                await self.node.transport.call(leader, VERIFY_CALL, request.SerializeToString()))
        except (RpcFailed, google.protobuf.message.DecodeError) as exc:
            log.info("verification of %r at node %d failed: %s", transactional_id, leader, exc)
            return ErrorCode.coordinator_not_available
        return _error(answer.error_code)

    async def _serve_verify(self, from_node: int, body: bytes) -> bytes:
        try:
            request = txn_pb2.VerifyPartitionRequest.FromString(body)
        except google.protobuf.message.DecodeError as exc:
            raise RpcRefused(f"not a VerifyPartitionRequest: {exc}") from None
        error = await self.node.txns.verify_partition(
            request.transactional_id, request.producer_id, request.producer_epoch, request.partition.topic,
            request.partition.partition, request.add)
        return txn_pb2.VerifyPartitionResponse(error_code=int(error)).SerializeToString()
