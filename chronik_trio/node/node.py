"""The node: one process, one top-level nursery.

Under it: the group committer (fsyncs), the hard-state checkpointer, the retention loop and
the Kafka listener with one task per connection. The node takes its listeners and its Disk
from the caller, so the same code can later run under a simulated network and disk.

Shutdown (request_shutdown(), e.g. on SIGTERM): stop accepting, give in-flight requests up to
SHUTDOWN_GRACE_S to be answered, close the remaining connections (their requests fail), make
everything durable, write every hard state, close the files.
"""

from __future__ import annotations

import base64
import functools
import logging
import os
import pathlib
import shutil
import time
import uuid

import trio

from chronik_trio.cluster.meta import Topic, TopicAlreadyExists, UnknownTopic, validate_topic_name
from chronik_trio.pb import meta_pb2
from chronik_trio.storage import Disk

from .committer import GroupCommitter
from .config import NodeConfig
from .kafka_server import serve_connection
from .meta_store import MetaStore
from .partitions import PartitionReplica

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 3.0  # in-flight produces are durable within milliseconds; long polls are not
PRODUCER_ID_BLOCK = 1000  # ids reserved per __meta command; a restart skips the unused rest
TOPIC_ID_FILE = "topic_id"
DELETED_SUFFIX = ".deleted"


class Node:
    def __init__(self, config: NodeConfig, *, disk: Disk | None = None,
                 wall_clock_ms=lambda: int(time.time() * 1000)) -> None:
        self.config = config
        self.node_id = config.node_id
        self.disk = disk or Disk()
        self.wall_clock_ms = wall_clock_ms
        self.data_dir = pathlib.Path(config.data_dir)
        self.committer = GroupCommitter(
            interval_s=None if config.fsync == "always" else config.fsync_interval_ms / 1000)
        self.meta_store: MetaStore | None = None
        self.replicas: dict[tuple[str, int], PartitionReplica] = {}
        self.cluster_id = ""
        self.requests_inflight = 0
        self._shutdown = trio.Event()
        self._producer_ids = (0, 0)  # [next, end) of this node's reserved block
        self._producer_id_lock = trio.Lock()
        self._meta_lock = trio.Lock()  # one topic change at a time keeps directories consistent

    # --- what handlers use (kafka/handlers/context.py) ---------------------------------------

    @property
    def meta(self):
        return self.meta_store.state

    def replica(self, topic: str, partition: int) -> PartitionReplica | None:
        return self.replicas.get((topic, partition))

    async def create_topic(self, name: str, partitions: int, configs: dict[str, str],
                           *, validate_only: bool = False) -> Topic:
        validate_topic_name(name)
        if name in self.meta.topics:
            raise TopicAlreadyExists(f"topic {name!r} already exists")
        command = meta_pb2.MetaCommand(topic_created=meta_pb2.TopicCreated(
            name=name, topic_id=uuid.uuid4().bytes, configs=configs,
            partitions=[meta_pb2.PartitionAssignment(replicas=[self.node_id])] * partitions))
        if validate_only:
            return Topic(name, uuid.UUID(bytes=command.topic_created.topic_id),
                         ((self.node_id,),) * partitions, dict(configs))
        async with self._meta_lock:
            applied = await self.meta_store.propose(command)
            if not applied.ok:
                raise applied.error
            self._reconcile_partitions()
        log.info("created topic %s with %d partition(s)", name, partitions)
        return self.meta.topics[name]

    async def auto_create(self, name: str) -> Topic:
        try:
            return await self.create_topic(name, self.config.default_partitions, {})
        except TopicAlreadyExists:
            return self.meta.topics[name]  # another request created it meanwhile

    async def delete_topic(self, name: str) -> Topic:
        topic = self.meta.topics.get(name)
        if topic is None:
            raise UnknownTopic(f"topic {name!r} does not exist")
        async with self._meta_lock:
            applied = await self.meta_store.propose(meta_pb2.MetaCommand(
                topic_deleted=meta_pb2.TopicDeleted(name=name, topic_id=topic.topic_id.bytes)))
            if not applied.ok:
                raise applied.error
            doomed = self._reconcile_partitions()
        await trio.to_thread.run_sync(_remove_dirs, doomed)
        log.info("deleted topic %s", name)
        return topic

    async def allocate_producer_id(self) -> int:
        async with self._producer_id_lock:
            next_id, end = self._producer_ids
            if next_id >= end:
                applied = await self.meta_store.propose(meta_pb2.MetaCommand(
                    producer_ids_allocated=meta_pb2.ProducerIdsAllocated(
                        node_id=self.node_id, count=PRODUCER_ID_BLOCK)))
                next_id, end = applied.producer_id_start, applied.producer_id_start + PRODUCER_ID_BLOCK
            self._producer_ids = (next_id + 1, end)
            return next_id

    # --- partitions on disk ------------------------------------------------------------------

    def _partition_dir(self, topic: str, partition: int) -> pathlib.Path:
        return self.data_dir / "partitions" / f"{topic}-{partition}"

    def _reconcile_partitions(self) -> list[pathlib.Path]:
        """Open the replicas __meta assigns to this node, close the others. Returns the
        directories to remove (already renamed out of the way, so a new topic of the same
        name can never see the old data)."""
        wanted = {(t.name, i): t for t in self.meta.topics.values()
                  for i, replicas in enumerate(t.replicas) if self.node_id in replicas}
        doomed = []
        for key, replica in list(self.replicas.items()):
            topic = wanted.get(key)
            if topic is None or topic.topic_id != replica.topic_id:
                replica.close()
                del self.replicas[key]
                doomed.append(_rename_deleted(replica.directory))
        for key, topic in wanted.items():
            if key not in self.replicas:
                self.replicas[key] = self._open_replica(topic, key[1])
        return doomed

    def _open_replica(self, topic: Topic, partition: int) -> PartitionReplica:
        directory = self._partition_dir(topic.name, partition)
        id_file = directory / TOPIC_ID_FILE
        if directory.exists() and (not id_file.exists() or id_file.read_text() != topic.topic_id.hex):
            log.warning("removing %s: it belongs to an older topic of the same name", directory)
            _remove_dirs([_rename_deleted(directory)])
        if not directory.exists():
            directory.mkdir(parents=True)
            _write_durably(id_file, topic.topic_id.hex)
        return PartitionReplica(topic, partition, directory, self.disk, self.committer,
                                node_id=self.node_id, fsync_always=self.config.fsync == "always",
                                segment_bytes=int(topic.config("segment.bytes")))

    # --- lifecycle ---------------------------------------------------------------------------

    def _open_stores(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = _cluster_id(self.data_dir)
        self.meta_store = MetaStore(self.data_dir / "meta", self.disk, self.committer,
                                    node_id=self.node_id)
        leftovers = [p for p in (self.data_dir / "partitions").glob(f"*{DELETED_SUFFIX}")]
        _remove_dirs(leftovers)
        self._reconcile_partitions()
        known = {r.directory for r in self.replicas.values()}
        for directory in (self.data_dir / "partitions").glob("*"):
            if directory.is_dir() and directory not in known:
                log.warning("removing %s: no topic in __meta owns it", directory)
                _remove_dirs([_rename_deleted(directory)])

    async def _register_broker(self) -> None:
        host, port = self.config.advertised_host_port
        me = self.meta.brokers.get(self.node_id)
        if me is None or (me.host, me.port) != (host, port):
            await self.meta_store.propose(meta_pb2.MetaCommand(broker_registered=meta_pb2.BrokerRegistered(
                node_id=self.node_id, host=host, port=port)))

    def request_shutdown(self) -> None:
        self._shutdown.set()

    async def run(self, listeners=None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until request_shutdown(); then shut down cleanly and return."""
        self._open_stores()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.committer.run)
                await self._register_broker()
                nursery.start_soon(self._checkpoint_loop)
                nursery.start_soon(self._retention_loop)
                if listeners is None:
                    host, port = self.config.listen_host_port
                    listeners = await trio.open_tcp_listeners(port, host=host)
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as acceptor:
                        await acceptor.start(functools.partial(
                            trio.serve_listeners, self._serve_client, listeners,
                            handler_nursery=connections))
                        log.info("node %d ready: kafka %s, advertised %s, data %s, %d partition(s)",
                                 self.node_id, self.config.listen,
                                 self.config.advertised or self.config.listen, self.data_dir,
                                 len(self.replicas))
                        task_status.started(listeners)
                        await self._shutdown.wait()
                        acceptor.cancel_scope.cancel()
                    for listener in listeners:
                        await listener.aclose()
                    log.info("shutting down: no new connections, %d request(s) in flight",
                             self.requests_inflight)
                    with trio.move_on_after(SHUTDOWN_GRACE_S):
                        while self.requests_inflight:
                            await trio.sleep(0.01)
                    connections.cancel_scope.cancel()
                await self.committer.sync_dirty()
                nursery.cancel_scope.cancel()
        except BaseException:
            # No final sync here: after a failed fsync a second one can report success for
            # data that never reached the disk, and recording that as durable would lie.
            for store in self._stores():
                store.close()
            raise
        self._close_cleanly()

    def _stores(self) -> list:
        return [self.meta_store, *self.replicas.values()] if self.meta_store else []

    def _close_cleanly(self) -> None:
        """Everything written is made durable and recorded as such, then files are closed."""
        stores = self._stores()
        for store in stores:
            store.log.sync()
            store.on_durable(store.log.last_index)
            hs = store.checkpoint_due()
            if hs is not None:
                store.hard_state_file.save(hs)
                store.checkpointed(hs)
            store.close()
        log.info("node %d stopped cleanly; %d log(s) synced and closed", self.node_id, len(stores))

    async def _serve_client(self, stream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except (AttributeError, OSError):
            peer = "unknown peer"
        await serve_connection(stream, self, peer)

    async def _checkpoint_loop(self) -> None:
        """Rewrite hard states (the durable index recovery trusts) at most once an interval."""
        while True:
            await trio.sleep(self.config.hard_state_interval_ms / 1000)
            # Under the meta lock: a topic deletion cannot remove a directory mid-save.
            async with self._meta_lock:
                due = [(s, hs) for s in self._stores() if (hs := s.checkpoint_due()) is not None]
                if due:
                    await trio.to_thread.run_sync(_save_hard_states, due)
                    for store, hs in due:
                        store.checkpointed(hs)

    async def _retention_loop(self) -> None:
        while True:
            await trio.sleep(self.config.retention_check_interval_ms / 1000)
            now_ms = self.wall_clock_ms()
            for (name, _), replica in list(self.replicas.items()):
                topic = self.meta.topics.get(name)
                if topic is None or replica.closed:
                    continue
                retention_bytes = int(topic.config("retention.bytes"))
                retention_ms = int(topic.config("retention.ms"))
                replica.apply_retention(now_ms, retention_bytes if retention_bytes >= 0 else None,
                                        retention_ms if retention_ms >= 0 else None)


def _save_hard_states(due: list) -> None:
    for store, hs in due:
        store.hard_state_file.save(hs)


def _cluster_id(data_dir: pathlib.Path) -> str:
    path = data_dir / "cluster_id"
    if path.exists():
        return path.read_text().strip()
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    _write_durably(path, cluster_id)
    return cluster_id


def _write_durably(path: pathlib.Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _rename_deleted(directory: pathlib.Path) -> pathlib.Path:
    target = directory.with_name(f"{directory.name}.{uuid.uuid4().hex[:8]}{DELETED_SUFFIX}")
    try:
        os.replace(directory, target)
    except FileNotFoundError:
        return target
    return target


def _remove_dirs(directories: list[pathlib.Path]) -> None:
    for directory in directories:
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
