"""The partition replicas this node hosts, opened and closed as __meta assigns them.

Reconciling: every partition __meta assigns here gets a Raft group over its storage
(created and bootstrapped with the partition's replicas on first use); a replica no longer
assigned here (its topic deleted, or a new topic of the same name) is closed and its
directory removed. One reconcile at a time; __meta changes ask for another.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import pathlib
import random
import shutil
import typing

import trio

from chronik_trio.cluster.configs import TOPIC_CONFIGS, resolve_broker, resolve_topic
from chronik_trio.cluster.meta import Topic
from chronik_trio.partition.producers import ProducerStateTable
from chronik_trio.partition.transactions import TransactionState
from chronik_trio.storage import Disk
from chronik_trio.storage.hardstate_log import HardStateLog
from chronik_trio.storage.raft_storage import DurableRaftStorage

from .config import NodeConfig
from .group_coordinator import GroupCoordinator
from .meta_group import MetaMachine
from .partition_group import PartitionMachine, PartitionReplica
from .raft_group import RaftGroup, open_group
from .raft_runtime import RaftRuntime
from .seams import RunSync, uuid4

log = logging.getLogger(__name__)

TOPIC_ID_FILE = "topic_id"
# In a replica created to join a partition being moved: the move's generation, until this
# replica applied the conf change adding it (RaftGroup.joining_generation).
JOINING_FILE = "joining"
DELETED_SUFFIX = ".deleted"
CREATING_SUFFIX = ".creating"  # a new partition's directory until it is durable (_open_storages)
# New partitions opened per worker-thread call: their groups start a chunk at a time.
OPEN_CHUNK_PARTITIONS = 256
# From this many partitions opened at once, what is alive after each chunk is frozen out of the
# garbage collector's scans (gc.freeze): each partition is a few hundred long-lived objects,
# and creating 10,000 partitions the node's full collections took 0.3-7.4 s each (logged by
# node/main.py; run 2 of issue 20's second round in docs/bench.md, load 7-8), stopping the
# loop for longer than an election timeout and collecting almost nothing. The cost: a reference cycle among frozen objects that becomes garbage
# later (a deleted topic's replica) is never collected; what refcounting frees is freed.
GC_FREEZE_MIN_PARTITIONS = 100
# A new partition's preferred replica campaigns again (up to FIRST_CAMPAIGN_RETRIES times,
# waiting FIRST_CAMPAIGN_RETRY_S, then twice as long each time) only while no peer has
# answered its campaign: its vote requests may have reached peers that had not created the
# group yet, which drop them. A campaign a peer answered is left to Raft's own timer.
FIRST_CAMPAIGN_RETRIES = 5
FIRST_CAMPAIGN_RETRY_S = 0.1
# A partition's leader tells its followers of a commit with its next append or heartbeat,
# not with an empty append of its own that each follower answers (raft-rs's option; etcd
# sends it): one round of messages and a Ready pass per follower fewer per commit. What a
# follower's commit index decides here is only how soon it applies: the high watermark it
# shows a follower-fetching consumer, which in Kafka too lags the leader's by a fetch
# round, and what a new leader starts from, which it commits anew with its first entry
# anyway. __meta keeps telling at once: a node that proposes there waits to apply.
SKIP_BCAST_COMMIT = True
# While records flow, a partition's appends stand for its leader's heartbeats (each resets a
# follower's election timer): a follower an append reached since the last heartbeat round
# gets none in this one (raft/config.py). A burst's last commit then reaches the followers
# with the first round after it that finds no append since the one before (<= 200 ms).
SKIP_HEARTBEAT_AFTER_APPEND = True


class HostedReplicas:
    """(topic name, partition) -> this node's PartitionReplica, kept in step with __meta."""

    def __init__(self, config: NodeConfig, disk: Disk, runtime: RaftRuntime,
                 meta: MetaMachine, groups: GroupCoordinator, *, rng: random.Random,
                 run_sync: RunSync) -> None:
        self.config = config
        self._rng = rng
        self._run_sync = run_sync
        self._static = self.static_configs = config.kafka_configs()  # fixed for the process's life
        self.node_id = config.node_id
        self.disk = disk
        self.data_dir = pathlib.Path(config.data_dir)
        self.runtime = runtime
        self._meta = meta
        self._groups = groups
        self.by_partition: dict[tuple[str, int], PartitionReplica] = {}
        # Called (from the Ready pass: no await) when this node becomes a partition's leader.
        self.leader_listeners: list[typing.Callable[[PartitionMachine, int], None]] = []
        self._wanted = trio.Event()
        self._lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self.hard_states: HardStateLog | None = None  # the node's; set before run()
        # __meta's layout_version this node's replicas were last reconciled with: reconciling
        # costs a pass over every partition, and most __meta changes (leader and ISR reports,
        # one per partition after a creation) change nothing it looks at.
        self._reconciled_layout: int | None = None
        self.reconciles = 0  # passes that looked at every partition (tests count them)

    def get(self, topic: str, partition: int) -> PartitionReplica | None:
        return self.by_partition.get((topic, partition))

    def all(self) -> list[PartitionReplica]:
        return list(self.by_partition.values())

    def items(self) -> list[tuple[tuple[str, int], PartitionReplica]]:
        return list(self.by_partition.items())

    def __len__(self) -> int:
        return len(self.by_partition)

    def topic_config(self, topic_name: str, key: str) -> str:
        """The effective value of a topic config now (live: read from __meta on each call)."""
        topic = self._meta.state.topics.get(topic_name)
        if topic is None:
            return TOPIC_CONFIGS[key].default
        state = self._meta.state
        return resolve_topic(key, topic.configs, state.broker_configs, self.node_id, self._static).value

    def broker_config(self, key: str) -> str:
        """The effective value of a broker config now (dynamic ones live from __meta)."""
        return resolve_broker(key, self._meta.state.broker_configs, self.node_id, self._static).value

    def reconcile_soon(self) -> None:
        """__meta changed (a listener: no await)."""
        self._wanted.set()

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Open the partitions already assigned here, then follow __meta's changes."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self.reconcile()
            task_status.started()
            while True:
                await self._wanted.wait()
                self._wanted = trio.Event()
                await self.reconcile()

    async def reconcile(self) -> None:
        """Open the partition groups __meta assigns here; stop and delete the others."""
        async with self._lock:  # one at a time: it awaits between steps
            await self._reconcile_locked()

    async def _reconcile_locked(self) -> None:
        state = self._meta.state
        if state.layout_version == self._reconciled_layout:
            return  # no topic, replica list or config changed since the last pass
        self._reconciled_layout = state.layout_version  # what changes from now on, the next pass sees
        self.reconciles += 1
        wanted = {(t.name, p): t for t in self._meta.state.topics.values()
                  for p, replicas in enumerate(t.replicas) if self.node_id in replicas}
        doomed = []
        for key, replica in list(self.by_partition.items()):
            topic = wanted.get(key)
            if topic is None or topic.topic_id != replica.topic_id:
                async with replica.group.lock:  # not in the middle of a Ready
                    self.runtime.remove(replica.group.group_id)
                    replica.group.storage.forget_hard_state()
                    replica.group.close()
                    replica.closed = True
                del self.by_partition[key]
                doomed.append(rename_deleted(replica.log_directory, self._rng))
        segment_bytes: dict[str, int] = {}  # segment.bytes is a live config; per topic
        for (name, _), replica in self.by_partition.items():
            if name not in segment_bytes:
                segment_bytes[name] = int(self.topic_config(name, "segment.bytes"))
            replica.log.segment_bytes_max = segment_bytes[name]
        new = [(topic, key[1]) for key, topic in wanted.items() if key not in self.by_partition]
        for first in range(0, len(new), OPEN_CHUNK_PARTITIONS):
            chunk = new[first:first + OPEN_CHUNK_PARTITIONS]
            opened = await self._run_sync(self._open_storages, chunk)
            for (topic, partition), (storage, joining) in zip(chunk, opened):
                self._start(topic, partition, storage, joining)
            if len(new) >= GC_FREEZE_MIN_PARTITIONS:
                gc.freeze()
                # No gc.get_freeze_count() here: it walks every frozen object (a py-spy
                # profile of 10,000 partitions found that line at 12 % of a node's samples).
                log.info("opened %d partitions: objects frozen out of the garbage collector's scans", len(chunk))
        if doomed:
            await self._run_sync(remove_dirs, doomed)

    def _directory(self, topic: Topic, partition: int) -> pathlib.Path:
        return self.data_dir / "partitions" / f"{topic.name}-{partition}"

    def _open_storages(self, items: list[tuple[Topic, int]]) -> list[tuple[DurableRaftStorage, int | None]]:
        """Blocking (one worker-thread call for many partitions): open each partition's
        storage, and its joining generation. The new ones are built aside (in
        `<directory>.creating`) with their fsyncs put off, made durable together by one
        filesystem sync, then renamed into place (and their parent fsynced): one flush of the
        disk for the lot instead of six per partition, and a crash leaves each partition's
        directory whole or absent. Opening every storage of the chunk (new or not) puts its
        recovery's fsyncs off to one filesystem sync too. None of them is in a Raft group
        before this returns."""
        fresh = []
        for topic, partition in items:
            directory = self._directory(topic, partition)
            id_file = directory / TOPIC_ID_FILE
            if directory.exists() and (not id_file.exists() or id_file.read_text() != topic.topic_id.hex):
                log.warning("removing %s: it belongs to an older topic of the same name", directory)
                remove_dirs([rename_deleted(directory, self._rng)])
            if not directory.exists():
                fresh.append((topic, partition, directory))
        if fresh:
            parent = self.data_dir / "partitions"
            self.disk.mkdir(parent)
            staged = [directory.with_name(directory.name + CREATING_SUFFIX) for _, _, directory in fresh]
            remove_dirs(staged)  # left by a crash during an earlier creation
            with self.disk.deferred_sync(parent, self.data_dir):  # data_dir: the hard-state log
                for (topic, partition, _), staging in zip(fresh, staged):
                    self._bootstrap(staging, topic, partition).close()
            for (_, _, directory), staging in zip(fresh, staged):
                self.disk.rename(staging, directory)
            self.disk.fsync_dir(parent)
        # Opening a log makes what it read durable (a crashed process may have left it in the
        # page cache only): a segment fsync and a directory fsync per partition, 20,000 for
        # 10,000 partitions, which the profile of their creation showed as its largest part.
        # Put off here too and done by one filesystem sync when the block ends; no group
        # exists before this returns, so nothing is sent on the strength of an unsynced file.
        with self.disk.deferred_sync(self.data_dir / "partitions", self.data_dir):
            return [(DurableRaftStorage(self.disk, self._directory(topic, partition), kafka=True,
                                        segment_bytes=int(self.topic_config(topic.name, "segment.bytes")),
                                        hard_states=self.hard_states, key=group_id(topic, partition)),
                     self._joining_generation(topic, partition)) for topic, partition in items]

    def _bootstrap(self, directory: pathlib.Path, topic: Topic, partition: int) -> DurableRaftStorage:
        """Blocking: a new partition's storage in `directory`, its group bootstrapped."""
        segment_bytes = int(self.topic_config(topic.name, "segment.bytes"))
        self.disk.mkdir(directory)
        self.disk.replace_file(directory / TOPIC_ID_FILE, topic.topic_id.hex.encode())
        # A partition ever reassigned: its group's first config, not today's replicas (this
        # replica learns the later configs from the entries or the snapshot it is sent).
        state = self._meta.state
        voters = state.partition_bootstrap_voters(topic, partition)
        if (topic.topic_id, partition) in state.bootstrap_voters:
            move = state.reassignments.get((topic.topic_id, partition))
            if move is None:
                log.warning("%s-%d: a new replica here, but no move in progress: it will follow and "
                            "vote, never campaign", topic.name, partition)
            generation = move.generation if move is not None else state.version
            self.disk.replace_file(directory / JOINING_FILE, b"%d" % generation)
        return DurableRaftStorage.bootstrap(self.disk, directory, voters=voters,
                                            kafka=True, segment_bytes=segment_bytes,
                                            hard_states=self.hard_states, key=group_id(topic, partition))

    def _joining_generation(self, topic: Topic, partition: int) -> int | None:
        """Blocking: the generation in the replica's JOINING_FILE, or None."""
        path = self._directory(topic, partition) / JOINING_FILE
        return int(path.read_bytes()) if self.disk.exists(path) else None

    def _joined(self, topic: Topic, partition: int) -> None:
        """The replica applied the conf change that added it (from the Ready pass: no await)."""
        if self._nursery is not None:
            self._nursery.start_soon(self._run_sync, self.disk.unlink,
                                     self._directory(topic, partition) / JOINING_FILE)

    def _start(self, topic: Topic, partition: int, storage: DurableRaftStorage,
               joining_generation: int | None = None) -> None:
        machine = PartitionMachine(topic, partition, storage.log, self._became_leader,
                                   states=[ProducerStateTable(self.config.producer_id_expiration_ms),
                                           TransactionState(self.config.producer_id_expiration_ms),
                                           *self._groups.states_for(topic)])
        # A new partition's preferred replica campaigns at once, the others wait for an
        # election timeout: its first leader is the preferred one, with no hand-over after.
        new = storage.last_index() == 0 and storage.initial_state()[0].term == 0
        preferred = topic.replicas[partition][0] == self.node_id
        group = open_group(self.node_id, group_id(topic, partition), storage, machine,
                           self.runtime.wake, rng=self._rng, campaign_now=new and preferred,
                           joining_generation=joining_generation, skip_bcast_commit=SKIP_BCAST_COMMIT,
                           skip_heartbeat_after_append=SKIP_HEARTBEAT_AFTER_APPEND)
        group.joined_listeners.append(functools.partial(self._joined, topic, partition))
        self.runtime.add(group)
        if new and preferred and joining_generation is None and self._nursery is not None:
            # The first campaign can reach peers before they created the group (dropped);
            # try again soon rather than leave the first election to a random replica.
            self._nursery.start_soon(_campaign_again, group)
        replica = self.by_partition[(topic.name, partition)] = PartitionReplica(
            topic, partition, group, machine, lag_time_s=self.config.replica_lag_time_max_ms / 1000,
            alive=self.runtime.is_alive,
            min_insync=functools.partial(self._min_insync, topic.name), run_sync=self._run_sync)
        machine.log_start_listeners.append(functools.partial(self._trim_soon, replica))
        self._groups.attach(replica)

    def _trim_soon(self, replica: PartitionReplica) -> None:
        """A LOG_START entry applied (from the Ready pass: no await): delete the segments
        below it in a task of our own."""
        if self._nursery is not None:
            self._nursery.start_soon(replica.delete_below_log_start)

    def _min_insync(self, topic_name: str) -> int:
        return int(self.topic_config(topic_name, "min.insync.replicas"))

    def _became_leader(self, machine: PartitionMachine, term: int) -> None:
        for listener in self.leader_listeners:
            listener(machine, term)


async def _campaign_again(group: RaftGroup) -> None:
    """Retries a new group's first campaign while no peer answered it. Retrying on a timer
    alone, every group whose election took longer than the wait (a node busy creating
    thousands) was made to campaign again, up to five times, each time with new vote
    requests for every peer to answer: the elections of 10,000 new partitions fed on
    themselves (docs/bench.md, issue 20's third round)."""
    wait_s = FIRST_CAMPAIGN_RETRY_S
    for _ in range(FIRST_CAMPAIGN_RETRIES):
        with trio.move_on_after(wait_s):
            await group.leader_known.wait()
        wait_s *= 2
        if group.closed or group.leader_id:
            return
        async with group.lock:
            if group.node.campaign_answered():
                return  # under way (or lost, to a peer that knows better): Raft's timer goes on
            group.node.campaign()
        group.wake_runtime()


def group_id(topic: Topic, partition: int) -> str:
    """A partition's Raft group id: unique across topics ever created (a topic deleted and
    created again under its name has a new topic id), so it also keys the group's hard state."""
    return f"{topic.topic_id.hex}-{partition}"


def rename_deleted(directory: pathlib.Path, rng: random.Random) -> pathlib.Path:
    """Rename a doomed directory out of the way at once (removed later, or at the next start)."""
    target = directory.with_name(f"{directory.name}.{uuid4(rng).hex[:8]}{DELETED_SUFFIX}")
    try:
        os.replace(directory, target)
    except FileNotFoundError:
        pass
    return target


def remove_dirs(directories: list[pathlib.Path]) -> None:
    for directory in directories:
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass
