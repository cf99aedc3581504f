"""An internal topic (`__consumer_offsets`, `__transaction_state`) created through __meta
by the first request that needs it, on whichever node that request arrives, and the part
of a coordinator on such a topic that both coordinators share: the leader of each of its
partitions coordinates that partition's share (a shard), loaded once the new term's log is
applied."""

from __future__ import annotations

import logging
import typing

import trio

from chronik_trio.cluster.meta import MetaState, Topic, TopicAlreadyExists
from chronik_trio.errors import BrokerError
from chronik_trio.raft.types import StateRole

log = logging.getLogger(__name__)

CREATE_TOPIC_WAIT_S = 10.0  # a request waits this long for the topic, then is told to retry


class Shard(typing.Protocol):
    replica: typing.Any  # the PartitionReplica this node leads
    term: int
    load_index: int  # the shard is loaded once this index is applied

    @property
    def current(self) -> bool: ...


class ShardedCoordinator:
    """What the group and transaction coordinators share. A subclass sets TOPIC and has
    `shards` (partition -> Shard), `_nursery` (None until it runs) and `_wake` (its loop's
    trio.Event), and gives `_new_store` (a replica's state for this topic), `_new_shard` and,
    if a shard holds live state, `_unload`."""

    TOPIC: str

    @classmethod
    def _new_store(cls):
        raise NotImplementedError

    def _new_shard(self, replica, term: int, load_index: int) -> Shard:
        raise NotImplementedError

    def _unload(self, shard: Shard) -> None:
        """A shard this node no longer leads (or leads at a new term): drop its live state."""

    @classmethod
    def states_for(cls, topic: Topic) -> list:
        """The replica states a partition of `topic` keeps for this coordinator (replicas.py)."""
        return [cls._new_store()] if topic.name == cls.TOPIC else []

    def attach(self, replica) -> None:
        """Follow a replica of the topic's partitions (replicas.py calls this when it opens one)."""
        if replica.topic_name != self.TOPIC:
            return
        replica.machine.role_listeners.append(
            lambda leader_id, role, term: self._role_changed(replica, role, term))
        if replica.is_leader:
            self._role_changed(replica, StateRole.LEADER, replica.leader_epoch)

    def _role_changed(self, replica, role: StateRole, term: int) -> None:
        """From the Ready pass (no await): a new term of leadership starts loading; losing it
        unloads the shard."""
        shard = self.shards.get(replica.partition)
        if role == StateRole.LEADER:
            if shard is not None and shard.term == term and shard.replica is replica:
                return
            if shard is not None:
                self._unload(shard)
            load_index = replica.group.node.last_index()
            shard = self.shards[replica.partition] = self._new_shard(replica, term, load_index)
            if self._nursery is not None:
                self._nursery.start_soon(self._load_when_applied, shard)
            log.info("%s partition %d: leader at term %d, loading (log up to index %d)",
                     self.TOPIC, replica.partition, term, load_index)
        elif shard is not None and shard.replica is replica:
            del self.shards[replica.partition]
            self._unload(shard)

    async def _load_when_applied(self, shard: Shard) -> None:
        """Wake the loop to load the shard once its replica has applied the new term's first
        entry (everything before it is then in the replica's state)."""
        while shard.current and shard.replica.machine.applied_index < shard.load_index:
            await shard.replica.group.wait_advanced()
        self._wake.set()


class TopicHost(typing.Protocol):
    @property
    def meta(self) -> MetaState: ...
    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           replication_factor: int = -1) -> Topic: ...


class InternalTopic:
    def __init__(self, name: str, configs: dict[str, str] | None = None) -> None:
        self.name = name
        self.configs = dict(configs or {})  # the topic configs it is created with
        self._created: trio.Event | None = None  # set when this node's creation attempt ends

    async def get(self, node: TopicHost, nursery: trio.Nursery | None, partitions: int,
                  replication_factor: int) -> Topic | None:
        """The topic, created on first use (replication factor capped at the brokers
        registered); None while it is being created."""
        topic = node.meta.topics.get(self.name)
        if topic is not None:
            return topic
        if self._created is None and nursery is not None:
            self._created = trio.Event()
            nursery.start_soon(self._create, node, partitions, replication_factor, self._created)
        if self._created is not None:
            with trio.move_on_after(CREATE_TOPIC_WAIT_S):
                await self._created.wait()
        return node.meta.topics.get(self.name)

    async def _create(self, node: TopicHost, partitions: int, replication_factor: int, done: trio.Event) -> None:
        rf = max(1, min(replication_factor, len(node.meta.brokers)))
        try:
            await node.create_topic(self.name, partitions, self.configs, replication_factor=rf)
        except TopicAlreadyExists:
            pass
        except BrokerError as exc:
            log.warning("could not create %s: %s", self.name, exc)
        finally:
            done.set()
            self._created = None
