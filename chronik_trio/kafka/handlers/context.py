"""What a handler may use from the broker: typed interfaces, implemented above this layer.

The node (chronik_trio.node) implements BrokerContext, its partition replicas implement
Replica and its group coordinator implements GroupCoordinatorApi. Handlers import these
Protocols, never the node, so every import points down (docs/architecture.md). Every
expected failure a member raises is a chronik_trio.errors.BrokerError carrying its Kafka
error code.
"""

from __future__ import annotations

import typing

import attrs

import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.configs import ConfigChange
from chronik_trio.cluster.meta import Applied, MetaState, Topic
from chronik_trio.group import Group, JoinRequest, JoinResult, OffsetRecord, SyncResult
from chronik_trio.partition.producers import ProducerEntry
from chronik_trio.partition.transactions import AbortedTxn
from chronik_trio.pb import meta_pb2
from chronik_trio.storage import SegmentLog
from chronik_trio.txn import Decision, TxnMetadata

from ..fetch_sessions import FetchSessionCache
from ..records import BatchHeader


class BrokerConfig(typing.Protocol):
    """The broker settings handlers read (node.config.NodeConfig has them)."""

    @property
    def default_partitions(self) -> int: ...
    @property
    def auto_create_topics(self) -> bool: ...
    @property
    def message_max_bytes(self) -> int: ...
    @property
    def request_max_bytes(self) -> int: ...
    @property
    def segment_bytes(self) -> int: ...
    @property
    def rack(self) -> str | None: ...
    def kafka_configs(self) -> dict[str, str]:
        """The static settings under Kafka's broker config names."""
    @property
    def authorizer_enabled(self) -> bool: ...
    @property
    def super_user_principals(self) -> frozenset[str]: ...


class Replica(typing.Protocol):
    """This node's replica of one partition (node.partition_group.PartitionReplica)."""

    @property
    def is_leader(self) -> bool: ...
    @property
    def leader_epoch(self) -> int: ...
    @property
    def high_watermark(self) -> int: ...
    @property
    def log_start_offset(self) -> int: ...
    @property
    def isr(self) -> tuple[int, ...]: ...
    @property
    def log(self) -> SegmentLog: ...

    @property
    def last_stable_offset(self) -> int:
        """The first offset of the oldest open transaction, else the high watermark."""

    async def produce(self, records: bytes, headers: list[BatchHeader], acks: int,
                      verify: typing.Callable[[int, int], typing.Awaitable[ErrorCode]] | None = None,
                      *, coordinator: bool = False) -> int:
        """The first base offset; raises NotLeader, ProposalFailed, NotEnoughReplicas,
        ProducerError or TxnError (all BrokerErrors). verify(producer id, epoch) asks the
        transaction coordinator before a transactional batch opens a transaction here.
        coordinator: a batch of the group coordinator's own (TxnOffsetCommit's offsets),
        appended without the idempotent sequence check."""
    def read(self, offset: int, max_bytes: int, *, committed_only: bool = False) -> list[memoryview]:
        """Whole batches from offset below the high watermark (committed_only: below the
        last stable offset); raises OffsetOutOfRange."""
    def aborted_transactions(self, start_offset: int, end_offset: int) -> list[AbortedTxn]:
        """The aborted transactions with records in [start_offset, end_offset)."""
    def watch(self, event: trio.Event) -> None:
        """Set event the next time the high watermark moves."""
    def unwatch(self, event: trio.Event) -> None: ...
    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]: ...
    def describe_producers(self) -> list[tuple[ProducerEntry, int, int]]:
        """(producer, its open transaction's first offset or -1, last coordinator epoch or -1)."""
    async def delete_records(self, offset: int) -> int:
        """DeleteRecords (leader): the log start offset once moved through Raft; raises
        NotLeader, OffsetOutOfRange or ProposalFailed."""


class GroupCoordinatorApi(typing.Protocol):
    """The consumer-group APIs (node.group_coordinator.GroupCoordinator)."""

    async def offsets_topic(self) -> Topic | None: ...
    async def join(self, group_id: str, request: JoinRequest) -> JoinResult: ...
    async def sync(self, group_id: str, member_id: str, generation_id: int, instance_id: str | None,
                   protocol_type: str | None, protocol_name: str | None,
                   assignments: typing.Sequence[tuple[str, bytes]]) -> SyncResult: ...
    async def heartbeat(self, group_id: str, member_id: str, generation_id: int,
                        instance_id: str | None) -> ErrorCode: ...
    async def leave(self, group_id: str, members: typing.Sequence[tuple[str, str | None]]
                    ) -> tuple[ErrorCode, list[ErrorCode]]: ...
    async def commit(self, group_id: str, member_id: str, generation_id: int, instance_id: str | None,
                     offsets: typing.Sequence[tuple[str, int, int, int, str | None]], *,
                     producer: tuple[int, int] | None = None) -> list[ErrorCode]: ...
    async def unstable_offsets(self, group_id: str) -> set[tuple[str, int]]: ...
    async def fetch(self, group_id: str, partitions: typing.Sequence[tuple[str, int]] | None
                    ) -> dict[tuple[str, int], OffsetRecord | None]: ...
    def list_groups(self) -> list[Group]: ...
    async def describe(self, group_id: str) -> Group | None: ...
    async def delete_group(self, group_id: str) -> ErrorCode: ...
    async def delete_offsets(self, group_id: str, partitions: typing.Sequence[tuple[str, int]]
                             ) -> tuple[ErrorCode, list[ErrorCode]]: ...


@attrs.frozen
class MetaQuorum:
    """__meta's Raft group as one node sees it: leader (0: none), term, commit index, voters,
    learners, every member's Raft address, and (on the leader) each member's log end."""

    leader_id: int
    term: int
    commit_index: int
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    addresses: dict[int, tuple[str, int]]
    match: dict[int, int]


class TxnCoordinatorApi(typing.Protocol):
    """The transaction APIs (node.txn_coordinator.TxnCoordinator)."""

    async def txn_topic(self) -> Topic | None: ...
    def coordinator_of(self, transactional_id: str) -> tuple[Topic, int] | None: ...
    async def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int,
                               producer_epoch: int) -> Decision: ...
    async def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                             partitions: typing.Iterable[tuple[str, int]]) -> ErrorCode: ...
    async def verify_partition(self, transactional_id: str, producer_id: int, producer_epoch: int,
                               topic: str, partition: int, add: bool) -> ErrorCode: ...
    async def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool,
                      *, tv2: bool = False) -> Decision: ...
    async def describe(self, transactional_id: str) -> TxnMetadata:
        """Raises BrokerError with the code to answer."""
    def list_transactions(self) -> list[TxnMetadata]: ...
    def coordinator_loading(self) -> bool: ...


class BrokerContext(typing.Protocol):
    """What the handlers of one node use (node.node.Node)."""

    @property
    def node_id(self) -> int: ...
    @property
    def cluster_id(self) -> str: ...
    @property
    def config(self) -> BrokerConfig: ...
    @property
    def meta(self) -> MetaState:
        """This node's applied copy of __meta."""
    @property
    def groups(self) -> GroupCoordinatorApi: ...
    @property
    def txns(self) -> TxnCoordinatorApi: ...
    requests_inflight: int  # counted by the connection loop, for a graceful shutdown
    fetch_sessions: FetchSessionCache  # this broker's fetch sessions (KIP-227)

    def meta_leader_id(self) -> int: ...
    def broker_alive(self, node_id: int) -> bool: ...
    async def meta_changed(self) -> None:
        """Until this node applies the next change to __meta."""
    def replica(self, topic: str, partition: int) -> Replica | None:
        """This node's replica of the partition, or None."""
    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           validate_only: bool = False, replication_factor: int = -1,
                           assignment: list[list[int]] | None = None,
                           timeout_s: float = ...) -> Topic:
        """Returns once every partition has a leader here; raises BrokerError
        (ClusterError, MetaUnavailable, RequestTimedOut)."""
    async def delete_topic(self, name: str) -> Topic: ...
    async def add_partitions(self, name: str, count: int, *, assignment: list[list[int]] | None = None,
                             validate_only: bool = False, timeout_s: float = ...) -> Topic: ...
    async def auto_create(self, name: str) -> Topic: ...
    async def allocate_producer_id(self) -> int:
        """A new producer id; raises MetaUnavailable."""
    def wall_clock_ms(self) -> int: ...
    async def verify_txn_partition(self, transactional_id: str, producer_id: int, producer_epoch: int,
                                   topic: str, partition: int, add: bool) -> ErrorCode:
        """The transaction coordinator's word on a transactional produce that would open a
        transaction on the partition (KIP-890): add=False, is the partition in the
        transaction; add=True (TV2), add it. ErrorCode.none, or the produce's answer."""
    async def log_dir_usage(self) -> tuple[str, int, int]:
        """(the partitions' log directory, its file system's total and usable bytes)."""
    def topic_config(self, topic: Topic, key: str) -> str:
        """The topic's effective value of a config (its override, else the dynamic broker
        default, else the static setting, else Kafka's default)."""
    async def alter_topic_configs(self, name: str, change: ConfigChange) -> None:
        """Commit a topic's config change through __meta; raises BrokerError."""
    async def alter_broker_configs(self, broker: str, change: ConfigChange) -> None:
        """Commit a dynamic broker config change ("" = cluster default) through __meta."""
    def random_bytes(self, count: int) -> bytes:
        """Unpredictable bytes for secrets such as SCRAM nonces (the operating system's)."""
    async def propose_meta(self, command: meta_pb2.MetaCommand) -> Applied:
        """Commit a command through __meta; its result as applied here. Raises MetaUnavailable."""
    async def elect_preferred_leader(self, topic: Topic, partition: int, timeout_s: float) -> bool:
        """False if the preferred replica already leads; True once it leads here. Raises
        BrokerError (RequestTimedOut on timeout)."""
    def meta_quorum(self) -> "MetaQuorum":
        """__meta's Raft group as this node sees it (DescribeQuorum)."""
    async def add_node(self, node_id: int, raft_address: str) -> None:
        """Record a node asking to join (node/membership.py). Raises BrokerError."""
    async def remove_node(self, node_id: int, *, force: bool = False, timeout_s: float = 30.0) -> None:
        """Take a node out of the cluster (node/membership.py). Raises BrokerError."""
