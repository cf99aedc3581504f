"""An internal topic (`__consumer_offsets`, `__transaction_state`) created through __meta
by the first request that needs it, on whichever node that request arrives: the
coordinators' shared way to get their topic."""

from __future__ import annotations

import logging
import typing

import trio

from chronik_trio.cluster.meta import MetaState, Topic, TopicAlreadyExists
from chronik_trio.errors import BrokerError

log = logging.getLogger(__name__)

CREATE_TOPIC_WAIT_S = 10.0  # a request waits this long for the topic, then is told to retry


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
