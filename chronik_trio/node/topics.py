"""Topics: create, grow and delete them through __meta (placement: cluster/placement.py).

CreateTopics answers only once every new partition has a leader in this node's metadata,
and after leadership settled on the preferred replicas (bounded), so the client's first
produce after creation succeeds.
"""

from __future__ import annotations

import logging
import random
import uuid

import trio

from chronik_trio.cluster.meta import (InvalidPartitionCount, Topic, TopicAlreadyExists, UnknownTopic,
                                       validate_topic_name)
from chronik_trio.cluster.configs import ConfigChange
from chronik_trio.cluster.placement import assign_replicas
from chronik_trio.errors import RequestTimedOut
from chronik_trio.pb import meta_pb2

from .meta_group import MetaMachine, MetaService
from .preferred_leaders import PreferredLeaders
from .replicas import HostedReplicas
from .seams import uuid4

log = logging.getLogger(__name__)

CREATE_TOPIC_TIMEOUT_S = 30.0
MIN_INSYNC_REPLICAS_RF3 = "2"  # a topic of three or more replicas gets min.insync.replicas 2


class Topics:
    def __init__(self, meta: MetaMachine, meta_service: MetaService, preferred: PreferredLeaders,
                 replicas: HostedReplicas, default_partitions: int, rng: random.Random) -> None:
        self._rng = rng  # topic ids
        self._meta = meta
        self._meta_service = meta_service
        self._preferred = preferred
        self._replicas = replicas
        self._default_partitions = default_partitions

    async def create(self, name: str, partitions: int, configs: dict[str, str], *,
                     validate_only: bool = False, replication_factor: int = -1,
                     assignment: list[list[int]] | None = None,
                     timeout_s: float = CREATE_TOPIC_TIMEOUT_S) -> Topic:
        """Assign replicas across the registered brokers, commit the topic through __meta,
        and return once every partition has a leader in this node's metadata (so the first
        produce after creation succeeds), or raise RequestTimedOut."""
        validate_topic_name(name)
        if name in self._meta.state.topics:
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        if assignment is None:
            assignment = assign_replicas(name, partitions, replication_factor, self._meta.state.brokers)
        configs = dict(configs)
        if len(assignment[0]) >= 3:
            configs.setdefault("min.insync.replicas", MIN_INSYNC_REPLICAS_RF3)
        command = meta_pb2.MetaCommand(topic_created=meta_pb2.TopicCreated(
            name=name, topic_id=uuid4(self._rng).bytes, configs=configs,
            partitions=[meta_pb2.PartitionAssignment(replicas=r) for r in assignment]))
        if validate_only:
            return Topic(name, uuid.UUID(bytes=command.topic_created.topic_id),
                         tuple(tuple(r) for r in assignment), configs)
        applied = await self._meta_service.propose(command)
        if not applied.ok:
            raise applied.error
        topic = self._still_there(name)
        await self.wait_for_leaders(topic, timeout_s)
        await self._preferred.settle(topic)
        log.info("created topic %s: %d partition(s), replicas %s", name, partitions, assignment)
        return topic

    async def add_partitions(self, name: str, count: int, *, assignment: list[list[int]] | None = None,
                             validate_only: bool = False, timeout_s: float = CREATE_TOPIC_TIMEOUT_S) -> Topic:
        """Grow a topic to `count` partitions (CreatePartitions); returns once the new
        partitions have leaders here."""
        topic = self._meta.state.topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} does not exist")
        if count <= topic.partition_count:
            raise InvalidPartitionCount(
                f"topic {name!r} has {topic.partition_count} partitions; {count} would not add any")
        rf = len(topic.replicas[0])
        new = assignment or assign_replicas(name, count, rf, self._meta.state.brokers)[topic.partition_count:]
        if validate_only:
            return topic
        applied = await self._meta_service.propose(meta_pb2.MetaCommand(partitions_added=meta_pb2.PartitionsAdded(
            name=name, topic_id=topic.topic_id.bytes,
            partitions=[meta_pb2.PartitionAssignment(replicas=r) for r in new])))
        if not applied.ok:
            raise applied.error
        topic = self._still_there(name)
        await self.wait_for_leaders(topic, timeout_s)
        return topic

    async def auto_create(self, name: str) -> Topic:
        """A topic a client asked for that does not exist yet (auto.create.topics.enable)."""
        try:
            return await self.create(name, self._default_partitions, {})
        except TopicAlreadyExists:
            topic = self._meta.state.topics[name]  # another request created it meanwhile
            await self.wait_for_leaders(topic, CREATE_TOPIC_TIMEOUT_S)
            return topic

    async def delete(self, name: str) -> Topic:
        """Commit the deletion through __meta, then close and remove this node's replicas."""
        topic = self._meta.state.topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} does not exist")
        applied = await self._meta_service.propose(meta_pb2.MetaCommand(
            topic_deleted=meta_pb2.TopicDeleted(name=name, topic_id=topic.topic_id.bytes)))
        if not applied.ok:
            raise applied.error
        await self._replicas.reconcile()
        log.info("deleted topic %s", name)
        return topic

    async def alter_configs(self, name: str, change: ConfigChange) -> None:
        """Commit a topic's config overrides through __meta (AlterConfigs); every replica reads
        them live (retention, max.message.bytes, min.insync.replicas, cleanup.policy)."""
        if name not in self._meta.state.topics:
            raise UnknownTopic(f"topic {name!r} does not exist")
        if not change.set and not change.removed:
            return
        applied = await self._meta_service.propose(meta_pb2.MetaCommand(
            topic_configs_altered=meta_pb2.TopicConfigsAltered(name=name, set=change.set,
                                                               removed=change.removed)))
        if not applied.ok:
            raise applied.error
        log.info("topic %s configs: set %s, removed %s", name, change.set, list(change.removed))

    async def alter_broker_configs(self, broker: str, change: ConfigChange) -> None:
        """Commit dynamic broker configs (broker: a node id, or "" for the cluster default)."""
        if not change.set and not change.removed:
            return
        applied = await self._meta_service.propose(meta_pb2.MetaCommand(
            broker_configs_altered=meta_pb2.BrokerConfigsAltered(broker=broker, set=change.set,
                                                                 removed=change.removed)))
        if not applied.ok:
            raise applied.error
        log.info("broker %s configs: set %s, removed %s", broker or "default", change.set, list(change.removed))

    def _still_there(self, name: str) -> Topic:
        """The topic just changed through __meta, unless a DeleteTopics applied in the same
        pass took it away before this task resumed."""
        topic = self._meta.state.topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} was deleted meanwhile")
        return topic

    async def wait_for_leaders(self, topic: Topic, timeout_s: float) -> None:
        """Until every partition of topic has a leader in this node's metadata."""
        with trio.move_on_after(timeout_s):
            while not all(self._meta.state.leader_of(topic, p) for p in range(topic.partition_count)):
                await self._meta.changed.wait()
                if topic.name not in self._meta.state.topics:  # a DeleteTopics applied meanwhile
                    raise UnknownTopic(f"topic {topic.name!r} was deleted meanwhile")
            return
        raise RequestTimedOut(f"topic {topic.name!r} not ready within the timeout: a partition "
                              f"has no leader after {timeout_s:.0f} s")
