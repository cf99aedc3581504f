"""The node: one process, one top-level nursery; every partition and __meta a Raft group.

Node wires the parts and runs their lifecycle; each job has its own module:

- raft_runtime.py: ticks, peer messages, the Ready pass (group commit across groups);
- meta_group.py: the __meta group; replicas.py: the partition replicas hosted here,
  opened and closed as __meta assigns them;
- topics.py (placement: cluster/placement.py), preferred_leaders.py, producer_ids.py,
  leader_reports.py (ISR and leader reports), retention.py, compaction.py (the log
  cleaner), snapshots.py (__meta's);
- peers.py: Raft messages and node-level liveness with the peers, over a transport made by
  the TransportFactory the node is given;
- group_coordinator.py: consumer groups; txn_coordinator.py: transactions, and
  txn_routes.py their calls between nodes; kafka_server.py: one task per client connection.

A node without peers is a one-voter cluster: the same code, with nobody to send to. The node
takes its listeners, Disk and transport factory from the caller, so the same code can later
run under a simulated network and disk.

Shutdown (request_shutdown(), e.g. on SIGTERM): stop accepting, give in-flight requests up
to SHUTDOWN_GRACE_S to be answered, close the remaining connections (their requests fail),
stop the runtime, sync every group with its commit index, close the files.
"""

from __future__ import annotations

import base64
import functools
import logging
import pathlib
import random
import shutil
import time
import typing

import trio
from kio.schema.errors import ErrorCode
from prometheus_client import CollectorRegistry

from chronik_trio.cluster.configs import ConfigChange, resolve_broker
from chronik_trio.cluster.meta import Applied, MetaState, Topic
from chronik_trio.errors import MetaUnavailable
from chronik_trio.kafka.fetch_sessions import FetchSessionCache
from chronik_trio.partition.transactions import TxnMarker
from chronik_trio.pb import meta_pb2
from chronik_trio.storage import Disk
from chronik_trio.storage.hardstate_log import HardStateLog
from chronik_trio.storage.raft_storage import HARD_STATE_LOG_FILE, DurableRaftStorage, run_tickets
from chronik_trio.transport.transport import Transport

from .config import ConfigError, NodeConfig
from .disk_health import DiskHealth
from .group_coordinator import GroupCoordinator
from .kafka_server import RequestErrors, serve_connection
from .leader_reports import LeaderReports
from .listeners import AuthFailures, close_unauthenticated, open_session, peer_tls, server_ssl_context
from .membership import Membership, ask_to_join, join_through_peer, learn_members, wait_until_voter
from .meta_group import META_GROUP_ID, MetaMachine, MetaService
from .metrics import NodeMetrics
from .partition_group import PartitionReplica
from .peers import PeerNetwork, TransportFactory, tcp_transport
from .preferred_leaders import PreferredLeaders
from .producer_ids import ProducerIds
from .raft_group import RaftGroup, open_group
from .raft_runtime import RaftRuntime
from .reassignments import Reassigner
from .throttle import RATE_CONFIG, CatchUpThrottle
from .replicas import CREATING_SUFFIX, DELETED_SUFFIX, HostedReplicas, remove_dirs
from .compaction import LogCleaner
from .retention import retention_loop
from .seams import RunSync, secret_bytes, system_rng, thread_run_sync, uuid4
from .snapshots import meta_snapshot_loop
from .topics import CREATE_TOPIC_TIMEOUT_S, Topics
from .txn_coordinator import TxnCoordinator
from .txn_routes import TxnRoutes
from .txn_markers import write_txn_markers

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 3.0  # in-flight produces commit within milliseconds; long polls do not
REPLAY_WARN_S = 30.0  # log which groups are slow to replay after this, then keep waiting
META_CATCH_UP_S = 10.0


def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """Implements kafka.handlers.context.BrokerContext (what the Kafka handlers use) and
    node.group_coordinator.CoordinatorHost."""

    def __init__(self, config: NodeConfig, *, disk: Disk | None = None,
                 wall_clock_ms: typing.Callable[[], int] = _wall_clock_ms,
                 make_transport: TransportFactory = tcp_transport,
                 rng: random.Random | None = None, run_sync: RunSync = thread_run_sync) -> None:
        """rng is the node's only randomness (default: seeded once from the operating
        system); run_sync its hand-off of blocking work (default: a worker thread)."""
        self.config = config
        self.rng = rng if rng is not None else system_rng()
        self.run_sync = run_sync
        self.node_id = config.node_id
        self.disk = disk or Disk()
        self.wall_clock_ms = wall_clock_ms
        self.data_dir = pathlib.Path(config.data_dir)
        self._make_transport = make_transport
        self.metrics = NodeMetrics(CollectorRegistry())
        self.peers = PeerNetwork(self.node_id, has_peers=config.peers is not None,
                                 incarnation=self.rng.getrandbits(62) + 1)
        self._catch_up_rate_at = (-1, 0)  # (__meta version, rate): see _catch_up_rate
        self.throttle = CatchUpThrottle(self.peers.send, self._is_learner, self._catch_up_rate)
        self.metrics.collect_throttle(self.throttle)
        self.runtime = RaftRuntime(self.node_id, self.throttle.send, heartbeat=self.peers.heartbeat,
                                   observe_pass=self.metrics.ready_pass_seconds.observe,
                                   observe_fsync=self.metrics.fsync_seconds.observe,
                                   # the real hand-off: the runtime's own fsync thread
                                   run_sync=None if run_sync is thread_run_sync else run_sync)
        self.peers.runtime = self.runtime
        self.metrics.collect_groups(self.runtime)
        self.request_errors = RequestErrors()  # contained handler failures, in /metrics
        self.fetch_sessions = FetchSessionCache(self.rng, config.fetch_session_cache_slots)  # KIP-227
        self.metrics.collect_fetch_sessions(self.fetch_sessions)
        self.metrics.collect_request_errors(self.request_errors)
        self.ssl_context = server_ssl_context(config)  # raises ConfigError for bad PEM files
        self.peer_tls = peer_tls(config)  # mutual TLS between nodes, or None; ConfigError likewise
        self.auth_failures = AuthFailures()  # refused TLS handshakes and SASL exchanges, in /metrics
        self.metrics.collect_auth_failures(self.auth_failures)
        self.transport: Transport | None = None
        self.meta_machine = MetaMachine()
        self.meta_service = MetaService(self.node_id, self.meta_machine, self.rng)  # opened by run()
        self.groups = GroupCoordinator(self, self.rng)  # consumer groups (on __consumer_offsets leaders)
        # transactions (on __transaction_state leaders)
        self.txns = TxnCoordinator(self, observe=self.metrics.observe_txn)
        self.metrics.collect_txn(self.txns.counts)
        self.txn_routes = TxnRoutes(self)
        self.replicas = HostedReplicas(config, self.disk, self.runtime, self.meta_machine,
                                       _InternalTopics(self.groups, self.txns), rng=self.rng, run_sync=run_sync)
        self.meta_machine.listeners.append(self.replicas.reconcile_soon)
        self.cleaner = LogCleaner(self.replicas, self.meta_machine, wall_clock_ms=wall_clock_ms,
                                  run_sync=run_sync)
        self.metrics.collect_cleaner(self.cleaner.stats)
        self.disk_health = DiskHealth(self.node_id, config.disk_degraded_fsync_ms / 1000, self.runtime,
                                      self.meta_machine, self.meta_service)
        self.runtime.observe_fsync = self._observe_fsync
        self.preferred_leaders = PreferredLeaders(
            self.node_id, self.meta_machine, self.meta_service, self.replicas, runtime=self.runtime,
            disk=self.disk_health, static_configs=config.kafka_configs,
            min_healthy_s=config.leader_balance_min_healthy_ms / 1000)
        self.topics = Topics(self.meta_machine, self.meta_service, self.preferred_leaders, self.replicas,
                             config.default_partitions, self.rng)
        self.producer_ids = ProducerIds(self.node_id, self.meta_service, wall_clock_ms)
        self.reassigner = Reassigner(self.node_id, self.meta_machine, self.meta_service, self.replicas)
        self.leader_reports = LeaderReports(self.node_id, self.meta_machine, self.meta_service,
                                            self.runtime, self.replicas)
        self.metrics.collect_isr_checks(self.leader_reports)
        self.membership = Membership(self.node_id, config.peer_addresses, self.meta_machine, self.meta_service,
                                     self.runtime, self.peers, run_sync)
        self._joining = False  # set by _open_stores: an empty data dir and --join
        self.hard_states: HardStateLog | None = None  # opened by _open_stores
        self._serving = False
        self._requests_inflight = 0
        self._requests_drained: trio.Event | None = None  # set when requests_inflight drops to 0
        self._shutdown = trio.Event()

    # --- what handlers use (kafka/handlers/context.py) ---------------------------------------

    @property
    def requests_inflight(self) -> int:
        """Kafka requests being answered (counted by kafka_server.py)."""
        return self._requests_inflight

    @requests_inflight.setter
    def requests_inflight(self, count: int) -> None:
        self._requests_inflight = count
        if count == 0 and self._requests_drained is not None:
            self._requests_drained.set()
            self._requests_drained = None

    @property
    def meta(self) -> MetaState:
        return self.meta_machine.state

    @property
    def cluster_id(self) -> str:
        return self.meta.cluster_id

    def broker_alive(self, node_id: int) -> bool:
        return self.peers.broker_alive(node_id)

    async def meta_changed(self) -> None:
        await self.meta_machine.changed.wait()

    def meta_leader_id(self) -> int:
        return self.meta_machine.leader_id or -1

    def replica(self, topic: str, partition: int) -> PartitionReplica | None:
        return self.replicas.get(topic, partition)

    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           validate_only: bool = False, replication_factor: int = -1,
                           assignment: list[list[int]] | None = None,
                           timeout_s: float = CREATE_TOPIC_TIMEOUT_S) -> Topic:
        return await self.topics.create(name, partitions, configs, validate_only=validate_only,
                                        replication_factor=replication_factor, assignment=assignment,
                                        timeout_s=timeout_s)

    async def delete_topic(self, name: str) -> Topic:
        return await self.topics.delete(name)

    async def add_partitions(self, name: str, count: int, *, assignment: list[list[int]] | None = None,
                             validate_only: bool = False, timeout_s: float = CREATE_TOPIC_TIMEOUT_S) -> Topic:
        return await self.topics.add_partitions(name, count, assignment=assignment,
                                                validate_only=validate_only, timeout_s=timeout_s)

    async def auto_create(self, name: str) -> Topic:
        return await self.topics.auto_create(name)

    async def allocate_producer_id(self) -> int:
        return await self.producer_ids.allocate()

    async def write_markers(self, coordinator_epoch: int, marker) -> dict:
        """The coordinator's markers, to whichever nodes lead their partitions (txn_routes.py)."""
        return await self.txn_routes.write_markers(coordinator_epoch, marker)

    async def verify_txn_partition(self, transactional_id: str, producer_id: int, producer_epoch: int,
                                   topic: str, partition: int, add: bool) -> ErrorCode:
        """For a partition leader: ask the transactional id's coordinator, wherever it is."""
        return await self.txn_routes.verify_txn_partition(transactional_id, producer_id, producer_epoch, topic,
                                                          partition, add)

    async def write_txn_markers(self, markers: list[TxnMarker]) -> dict[tuple[str, int], ErrorCode]:
        """The transaction coordinator's entry point: write commit/abort markers to the
        partitions this node leads (node/txn_markers.py); per partition, none once the
        control batch is committed, else the Kafka error code."""
        return await write_txn_markers(markers, self.meta, self.replica, self.wall_clock_ms())

    async def log_dir_usage(self) -> tuple[str, int, int]:
        directory = (self.data_dir / "partitions").absolute()
        usage = await self.run_sync(shutil.disk_usage, self.data_dir)
        return str(directory), usage.total, usage.free

    def topic_config(self, topic: Topic, key: str) -> str:
        return self.replicas.topic_config(topic.name, key)

    async def alter_topic_configs(self, name: str, change: ConfigChange) -> None:
        await self.topics.alter_configs(name, change)

    async def alter_broker_configs(self, broker: str, change: ConfigChange) -> None:
        await self.topics.alter_broker_configs(broker, change)
    def random_bytes(self, count: int) -> bytes:
        return secret_bytes(count)

    async def propose_meta(self, command: meta_pb2.MetaCommand) -> Applied:
        return await self.meta_service.propose(command)

    async def elect_preferred_leader(self, topic: Topic, partition: int, timeout_s: float) -> bool:
        return await self.preferred_leaders.elect(topic, partition, timeout_s)

    def meta_quorum(self):
        return self.membership.quorum()

    async def add_node(self, node_id: int, raft_address: str) -> None:
        await self.membership.add_node(node_id, raft_address)

    async def remove_node(self, node_id: int, *, force: bool = False, timeout_s: float = 30.0) -> None:
        await self.membership.remove_node(node_id, force=force, timeout_s=timeout_s)

    # --- lifecycle ---------------------------------------------------------------------------

    def request_shutdown(self) -> None:
        self._shutdown.set()

    async def run(self, listeners=None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Serve until request_shutdown(); then shut down cleanly and return."""
        self._open_stores()
        self.runtime.set_peers(self.config.voters)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.throttle.run)
                await nursery.start(self.runtime.run)
                if self.config.peers is not None or self.config.admin_listen is not None:
                    self.transport = self.peers.transport = self._start_transport()
                    self.txn_routes.register(self.transport)
                    self.membership.register(self.transport)
                    await nursery.start(self.transport.run)
                await self._wait_replayed([self.meta_service.group])
                nursery.start_soon(self.membership.run)
                if self._joining and not await self._join_as_new_member():
                    nursery.cancel_scope.cancel()  # stopped while joining
                await self._wait_meta_caught_up()
                await nursery.start(self.replicas.run)  # opens the partitions assigned here
                await self._wait_replayed([r.group for r in self.replicas.all()])
                nursery.start_soon(self.leader_reports.run)
                nursery.start_soon(retention_loop, self.replicas, self.meta_machine,
                                   self.config.retention_check_interval_ms / 1000, self.wall_clock_ms)
                nursery.start_soon(self.cleaner.run)
                nursery.start_soon(meta_snapshot_loop, self.meta_service, self.config.meta_snapshot_entries,
                                   self.run_sync)
                nursery.start_soon(self.preferred_leaders.run)
                nursery.start_soon(self.disk_health.run)
                nursery.start_soon(self.reassigner.run)
                await nursery.start(self.groups.run)
                await nursery.start(self.txns.run)
                # Serve Kafka only as a member of a working cluster: registered in __meta.
                await self._join_cluster()
                await self._serve_kafka(listeners, task_status)
                nursery.cancel_scope.cancel()
        except BaseException:
            # No final sync: after a failed fsync another one can report success for data
            # that never reached the disk, and recording that as durable would lie.
            for group in list(self.runtime.groups.values()):
                group.storage.close()
            if self.hard_states is not None:
                self.hard_states.close()
            raise
        self._close_cleanly()

    def _is_learner(self, group_id: str, peer: int) -> bool:
        group = self.runtime.groups.get(group_id)
        progress = group.node.progress().get(peer) if group is not None else None
        return progress is not None and progress.is_learner

    def _catch_up_rate(self) -> int:
        """leader.replication.throttled.rate now (asked per append: cached by __meta's version)."""
        version, rate = self._catch_up_rate_at
        if version != self.meta.version:
            rate = int(resolve_broker(RATE_CONFIG, self.meta.broker_configs, self.node_id,
                                      self.replicas.static_configs).value)
            self._catch_up_rate_at = (self.meta.version, rate)
        return rate

    def _open_stores(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for suffix in (DELETED_SUFFIX, CREATING_SUFFIX):
            remove_dirs(list((self.data_dir / "partitions").glob(f"*{suffix}")))
        # Every group's term, vote and commit: one append per sync round (storage/hardstate_log.py).
        self.hard_states = self.replicas.hard_states = HardStateLog(self.disk, self.data_dir / HARD_STATE_LOG_FILE)
        directory = self.data_dir / "meta"
        opened = {"kafka": False, "segment_bytes": self.config.meta_segment_bytes,
                  "hard_states": self.hard_states, "key": META_GROUP_ID}
        storage = DurableRaftStorage(self.disk, directory, **opened)
        if not storage.is_initialized:
            storage.close()
            if self.config.join:
                # No configuration: the __meta leader sends a snapshot once this node is a learner.
                storage = DurableRaftStorage(self.disk, directory, **opened)
                self._joining = True
                log.info("__meta is empty and --join was given: joining the cluster through %s", self.config.join)
            else:
                storage = DurableRaftStorage.bootstrap(self.disk, directory, voters=self.config.voters, **opened)
                log.info("bootstrapped __meta with voters %s", self.config.voters)
        group = open_group(self.node_id, META_GROUP_ID, storage, self.meta_machine, self.runtime.wake,
                           rng=self.rng)
        self.meta_machine.conf_state = group.node.status().conf_state
        self.runtime.add(group, first=True)  # CreateTopics and leader reports wait on it
        self.meta_service.open(group)

    def _observe_fsync(self, seconds: float) -> None:
        self.metrics.fsync_seconds.observe(seconds)
        self.disk_health.observe(seconds)

    def _other_peers(self) -> dict[int, tuple[str, int]]:
        return {n: address for n, address in self.config.peer_addresses.items() if n != self.node_id}

    async def _join_as_new_member(self) -> bool:
        """An empty data dir and --join: learn the members' Raft addresses from the member,
        ask it to add this node, then wait until __meta has made it a voter (membership.py
        describes the steps). False if a shutdown was requested meanwhile."""
        async with trio.open_nursery() as race:
            async def stop_on_shutdown() -> None:
                await self._shutdown.wait()
                race.cancel_scope.cancel()
            race.start_soon(stop_on_shutdown)
            member, address = self.config.join_target
            own = self.config.peer_addresses[self.node_id]
            if member is None:  # a member's Kafka listener
                self.membership.learn(await learn_members(self.config.join, self.transport.connect))
                await ask_to_join(self.node_id, own, self.config.join, connect=self.transport.connect)
            else:  # a member's Raft address: through the peer transport
                self.membership.learn({member: address})
                self.membership.learn(await join_through_peer(self.transport, self.node_id, own, member))
            await wait_until_voter(self.node_id, self.meta_machine)
            race.cancel_scope.cancel()
        return not self._shutdown.is_set()

    def _start_transport(self) -> Transport:
        """The HTTP/2 app: Raft ingress from peers, /health and /metrics. On the node's
        entry in --peers; a node without peers serves it only with --admin-listen."""
        members = self.config.peer_addresses
        peers = self._other_peers()
        listen = members[self.node_id] if members else self.config.admin_host_port
        # Only when asked for, so a factory of a simulated network needs no such options.
        options = {}
        if self.peer_tls is not None:
            options["tls"] = self.peer_tls
        if members and self.config.admin_listen is not None:
            options["public_listen"] = self.config.admin_host_port
        transport = self._make_transport(self.node_id, listen, peers, self.peers, self.metrics.registry,
                                         self._health, **options)
        self.peers.transport = transport
        self.membership.transport_started(peers)  # then peers learnt from __meta
        return transport

    def _health(self) -> dict:
        groups = list(self.runtime.groups.values())
        return {"cluster_id": self.meta.cluster_id, "meta_leader": self.meta_leader_id(),
                "groups": len(groups), "leading": sum(1 for g in groups if g.is_leader),
                "quiesced": self.runtime.quiesced_count,
                "serving_kafka": self._serving, "partitions": len(self.replicas),
                "meta_voters": list(self.meta_machine.conf_state.voters),
                "meta_learners": list(self.meta_machine.conf_state.learners),
                "disk_degraded": self.disk_health.degraded,
                # who leads what, for outsiders (the node-process harness): group id -> term
                "leading_groups": {g.group_id: g.term for g in groups if g.is_leader},
                "stable_offsets": self._stable_offsets()}

    def _stable_offsets(self) -> dict[str, list[int]]:
        """"topic-partition" -> [last stable offset, high watermark] of every replica here
        that has seen a transactional producer (the chaos harness's lso_monotonic check
        samples it); partitions without transactions are left out, so the answer stays
        small on a node with many partitions."""
        found = {}
        for (topic, partition), replica in self.replicas.items():
            txns = replica.machine.transactions
            if txns is not None and txns.producers:
                found[f"{topic}-{partition}"] = [replica.machine.last_stable_offset, replica.machine.high_watermark]
        return found

    async def _wait_replayed(self, groups: list[RaftGroup]) -> None:
        """Until every group has applied its replay target (no quorum needed for that
        except for groups this node alone votes in, which elect themselves)."""
        with trio.move_on_after(REPLAY_WARN_S) as scope:
            await _until_replayed(groups)
        if scope.cancelled_caught:
            slow = [g.group_id for g in groups if g.node.applied_index < g.replay_target]
            log.warning("still replaying %d group(s) after %.0f s: %s", len(slow), REPLAY_WARN_S, slow[:5])
            await _until_replayed(groups)

    async def _wait_meta_caught_up(self) -> None:
        """With peers: before serving, hear from the __meta leader and apply up to the
        commit index it sent, so Metadata does not answer from a stale copy (bounded: a
        cluster without quorum still starts, and catches up later)."""
        group = self.meta_service.group
        with trio.move_on_after(META_CATCH_UP_S):
            while not (group.leader_id and group.node.applied_index >= group.node.committed_index):
                await group.wait_advanced()

    async def _join_cluster(self) -> None:
        """Until this node is a registered member: a node started while __meta has no
        quorum (e.g. the first of a cluster whose nodes all lost power, restarted one at a
        time) waits for one instead of stopping, as a Kafka broker waits for its controllers
        (the simulation found the nodes of such a cluster stopping one after the other)."""
        while True:
            try:
                await self._ensure_cluster_id()
                await self._register_broker()
                return
            except MetaUnavailable as exc:
                log.warning("node %d not registered yet (%s); trying again", self.node_id, exc)

    async def _ensure_cluster_id(self) -> None:
        if not self.meta.cluster_id:
            proposal = base64.urlsafe_b64encode(uuid4(self.rng).bytes).decode().rstrip("=")
            await self.meta_service.propose(meta_pb2.MetaCommand(
                cluster_id_proposed=meta_pb2.ClusterIdProposed(cluster_id=proposal)))

    async def _register_broker(self) -> None:
        specs = self.config.kafka_listeners
        host, port = specs[0].advertised_host, specs[0].advertised_port
        members = self.config.peer_addresses
        raft_address = "%s:%d" % members[self.node_id] if members else ""
        rack = self.config.rack or ""
        # One default listener: registered as before (host and port only).
        listeners = {} if self.config.listeners is None else {
            s.name: (s.advertised_host, s.advertised_port) for s in specs}
        me = self.meta.brokers.get(self.node_id)
        if me is None or (me.host, me.port, me.rack or "", me.raft_address, me.listeners) != (
                host, port, rack, raft_address, listeners):
            applied = await self.meta_service.propose(meta_pb2.MetaCommand(broker_registered=meta_pb2.BrokerRegistered(
                node_id=self.node_id, host=host, port=port, rack=rack, raft_address=raft_address,
                listeners=[meta_pb2.ListenerEndpoint(name=s.name, host=s.advertised_host, port=s.advertised_port,
                                                     security_protocol=s.security_protocol)
                           for s in specs if s.name in listeners])))
            if not applied.ok:
                raise applied.error  # a removed node: it must not serve as a member

    async def _serve_kafka(self, listeners, task_status) -> None:
        """listeners: trio listeners given by the caller, served as the first configured
        listener; None: open one TCP listener per configured listener."""
        specs = self.config.kafka_listeners
        if listeners is None:
            by_spec = [(spec, await trio.open_tcp_listeners(spec.port, host=spec.host)) for spec in specs]
        else:
            by_spec = [(specs[0], listeners)]
        listeners = [listener for _, group in by_spec for listener in group]
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptor:
                for spec, group in by_spec:
                    await acceptor.start(functools.partial(
                        trio.serve_listeners, functools.partial(self._serve_client, spec), group,
                        handler_nursery=connections))
                log.info("node %d ready: kafka %s, data %s, voters %s", self.node_id,
                         ", ".join(f"{s.name} ({s.security_protocol}) {s.host}:{s.port} advertised "
                                   f"{s.advertised_host}:{s.advertised_port}" for s, _ in by_spec),
                         self.data_dir, self.meta_machine.conf_state.voters)
                task_status.started(listeners)
                self._serving = True
                await self._shutdown.wait()
                self._serving = False
                acceptor.cancel_scope.cancel()
            for listener in listeners:
                await listener.aclose()
            log.info("shutting down: no new connections, %d request(s) in flight", self.requests_inflight)
            with trio.move_on_after(SHUTDOWN_GRACE_S):
                while self.requests_inflight:
                    self._requests_drained = self._requests_drained or trio.Event()
                    await self._requests_drained.wait()
            connections.cancel_scope.cancel()

    async def _serve_client(self, spec, stream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            peer = f"{host}:{port}"
        except (AttributeError, OSError):
            peer = "unknown peer"
        accepted_at = trio.current_time()
        timeout_s = self.config.authentication_timeout_ms / 1000
        opened = await open_session(stream, spec, self.ssl_context, self.config.sasl_mechanisms, peer,
                                    self.auth_failures, timeout_s)
        if opened is None:
            await trio.aclose_forcefully(stream)
            return
        secured, session = opened
        if self.config.listeners is None:
            session.listener = None  # one default listener: brokers are registered without names
        if not session.authenticating:
            await serve_connection(secured, self, peer, session)
            return
        async with trio.open_nursery() as connection:
            connection.start_soon(close_unauthenticated, session, timeout_s, accepted_at, peer,
                                  self.auth_failures, connection.cancel_scope)
            await serve_connection(secured, self, peer, session)
            connection.cancel_scope.cancel()

    def _close_cleanly(self) -> None:
        """Everything written is made durable and recorded as such, then files are closed."""
        groups = list(self.runtime.groups.values())
        # One round for all (one hard-state append, not one per group).
        tickets = [(g, g.storage.begin_sync(save_commit=True)) for g in groups]
        tickets = [(g, t) for g, t in tickets if t is not None]
        run_tickets([t for _, t in tickets])
        for group, ticket in tickets:
            group.storage.end_sync(ticket)
        for group in groups:
            group.close()
        self.hard_states.close()
        log.info("node %d stopped cleanly; %d Raft group(s) synced and closed", self.node_id, len(groups))


class _InternalTopics:
    """The coordinators that own internal topics, as one for HostedReplicas: each gives the
    BatchStates of its topic's partitions and watches their leadership."""

    def __init__(self, *owners) -> None:
        self.owners = owners

    def states_for(self, topic: Topic) -> list:
        return [state for owner in self.owners for state in owner.states_for(topic)]

    def attach(self, replica: PartitionReplica) -> None:
        for owner in self.owners:
            owner.attach(replica)


async def _until_replayed(groups: list[RaftGroup]) -> None:
    for group in groups:
        while group.node.applied_index < group.replay_target and not group.closed:
            await group.wait_advanced()
