"""The transaction coordinator: transactional ids on the leaders of `__transaction_state`
partitions.

The coordinator of transactional id t is the leader of partition partition_for(t, N) of
the internal topic `__transaction_state` (Kafka's hash; created through __meta on the first
FindCoordinator TRANSACTION; N = transaction_state_log_num_partitions, replication factor
min(transaction_state_log_replication_factor, brokers)). Every replica of such a partition
derives a TxnStore (txn/store.py) from its committed batches; the decisions of txn/state.py
are taken on the leader from that committed state, one request of an id at a time (a lock
per id), and each decision's record is committed through the partition's Raft group
before the client is answered or any marker is written.

- EndTxn (and the abort of a fenced or timed-out transaction) writes PrepareCommit /
  PrepareAbort, then the markers (node.write_markers: partition leaders on this node or, over
  the peer transport, on others), then CompleteCommit / CompleteAbort. The client is
  answered once the prepare record is committed (the outcome is decided and durable), as
  Kafka's coordinator answers; the markers and the Complete record follow in a task of
  their own (a completion). Until the completion ends, the id's next requests are
  CONCURRENT_TRANSACTIONS (retriable): each is first held up to CONCURRENT_WAIT_S (an
  InitProducerId INIT_WAIT_S) for the completion and decided again, which spares the
  client its retry backoff (Kafka retries a TV2 produce's add on the broker the same way).
  read_committed readers cannot see the transaction before its marker: the marker is what
  moves a partition's last stable offset past it.
- A node that becomes leader answers COORDINATOR_LOAD_IN_PROGRESS until it has applied its
  whole log (up to the new term's first entry); then it resumes the markers of every
  prepared transaction in the store. Markers are idempotent on the partitions, so a marker
  written twice (by the old and the new coordinator) is harmless.
- Every cleanup interval the leader aborts transactions past their timeout (with a bumped
  epoch, which fences their producer) and forgets ids idle for
  transactional_id_expiration_ms (a tombstone).

Time: transaction start and update times are the node's wall clock (they are written and
read by the next coordinator); waits use trio's clock.
"""

from __future__ import annotations

import collections
import logging
import typing

import attrs
import trio
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import MetaState, Topic
from chronik_trio.errors import BrokerError, NotEnoughReplicas, NotLeader, ProposalFailed
from chronik_trio.group import partition_for
from chronik_trio.kafka.records import parse_batches
from chronik_trio.txn import TXN_TOPIC, TxnMetadata, TxnState, TxnStore, txn_batch
from chronik_trio.txn import state as ts

from .internal_topic import InternalTopic, ShardedCoordinator
from .partition_group import PartitionReplica

log = logging.getLogger(__name__)

IDLE_WAKE_S = 1.0
LOAD_WAIT_S_MAX = 2.0
INIT_WAIT_S = 5.0  # InitProducerId waits this long for the abort of a fenced transaction
# A request that finds its id's previous transaction completing (markers being written) waits
# this long for the completion before it is answered CONCURRENT_TRANSACTIONS.
CONCURRENT_WAIT_S = 1.0
MARKER_BACKOFF_S = (0.05, 1.0)  # retry of markers a partition could not take yet: first, most
BATCH_BYTES_MAX = 1 << 30
# Marker errors after which retrying cannot help: the partition is gone, or it already has a
# newer epoch of the producer (a marker of this transaction was written before).
MARKER_GIVE_UP = frozenset({ErrorCode.unknown_topic_or_partition, ErrorCode.invalid_producer_epoch,
                            ErrorCode.producer_fenced})

DEFAULTS = {
    "transaction_state_log_num_partitions": 10,
    "transaction_state_log_replication_factor": 3,
    "transaction_max_timeout_ms": 900_000,
    "transactional_id_expiration_ms": 604_800_000,
    "transaction_abort_timed_out_transaction_cleanup_interval_ms": 10_000,
}


class TxnError(BrokerError):
    """A request the coordinator cannot take here (error_code: the Kafka answer)."""


@attrs.define(eq=False)
class _Join:
    """An add (AddPartitionsToTxn, AddOffsetsToTxn, a TV2 implicit add) that found its id's
    previous transaction completing: the completion decides it right after the Complete
    record and writes both in one batch, which spares the next transaction one quorum
    write. error: its answer, once that batch is committed (None: not taken)."""
    producer_id: int
    producer_epoch: int
    partitions: frozenset[tuple[str, int]]
    tv2: bool
    error: ErrorCode | None = None


class _Shard:
    """The coordinator of one `__transaction_state` partition while this node leads it."""

    def __init__(self, replica: PartitionReplica, term: int, load_index: int) -> None:
        self.replica = replica
        self.term = term
        self.load_index = load_index
        self.loaded = False
        self.locks: dict[str, trio.Lock] = {}
        self.completing: dict[str, trio.Event] = {}  # txn id -> set when its completion ends
        self.joining: dict[str, list[_Join]] = {}  # txn id -> adds waiting for its completion

    @property
    def store(self) -> TxnStore:
        return self.replica.machine.states[TxnStore.name]

    @property
    def current(self) -> bool:
        return (not self.replica.closed and self.replica.is_leader
                and self.replica.leader_epoch == self.term)

    def lock(self, transactional_id: str) -> trio.Lock:
        lock = self.locks.get(transactional_id)
        if lock is None:
            lock = self.locks[transactional_id] = trio.Lock()
        return lock


class TxnHost(typing.Protocol):
    """What the coordinator uses from its node (node.node.Node)."""

    @property
    def config(self) -> typing.Any: ...
    @property
    def meta(self) -> MetaState: ...
    def wall_clock_ms(self) -> int: ...
    async def create_topic(self, name: str, partitions: int, configs: dict[str, str], *,
                           replication_factor: int = -1) -> Topic: ...
    async def allocate_producer_id(self) -> int: ...
    async def write_markers(self, coordinator_epoch: int, marker: ts.Marker) -> dict[tuple[str, int], ErrorCode]:
        """Write the marker to every partition it names (wherever their leaders are);
        per partition the error (none: committed in that partition)."""


def _ignore(phase: str, seconds: float) -> None:
    pass


class TxnCoordinator(ShardedCoordinator):
    """observe(phase, seconds): the timing of each commit or abort (the node's /metrics):
    "end_txn" EndTxn received -> answered (its prepare committed), "markers" EndTxn received
    -> every marker durable (a completion resumed by a new coordinator or started by a
    timeout or fence: from its start), "completion" EndTxn received -> Complete committed."""

    def __init__(self, node: TxnHost, observe: typing.Callable[[str, float], None] = _ignore) -> None:
        self.node = node
        self.observe = observe
        self.shards: dict[int, _Shard] = {}
        self._nursery: trio.Nursery | None = None
        self._wake = trio.Event()
        # Compacted, as Kafka's: the latest record of each transactional id is its state.
        self._topic = InternalTopic(TXN_TOPIC, {"cleanup.policy": "compact"})
        # requests taken here by kind (client_add, implicit_add, end_txn_v1, end_txn_v2), and
        # concurrent_transactions answers: /metrics chronik_txn_requests, which shows which
        # transaction version clients run
        self.counts: collections.Counter[str] = collections.Counter()

    def setting(self, name: str) -> int:
        return int(getattr(self.node.config, name, DEFAULTS[name]))

    # --- partitions of __transaction_state (replicas.py calls these) --------------------------

    TOPIC = TXN_TOPIC

    @classmethod
    def _new_store(cls) -> TxnStore:
        return TxnStore()

    def _new_shard(self, replica: PartitionReplica, term: int, load_index: int) -> _Shard:
        return _Shard(replica, term, load_index)

    def _load(self, shard: _Shard) -> None:
        shard.loaded = True
        prepared = [t for t, m in shard.store.txns.items() if m.state in ts.PREPARED]
        for transactional_id in prepared:
            self._start_completion(shard, transactional_id)
        log.info("transaction state partition %d: coordinator at term %d with %d transactional id(s), "
                 "resuming the markers of %d prepared transaction(s)", shard.replica.partition, shard.term,
                 len(shard.store.txns), len(prepared))

    # --- the loop -------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for shard in self.shards.values():
                nursery.start_soon(self._load_when_applied, shard)
            task_status.started()
            interval_s = self.setting("transaction_abort_timed_out_transaction_cleanup_interval_ms") / 1000
            next_cleanup = trio.current_time() + interval_s
            while True:
                with trio.move_on_at(min(trio.current_time() + IDLE_WAKE_S, next_cleanup)):
                    await self._wake.wait()
                self._wake = trio.Event()
                for partition, shard in list(self.shards.items()):
                    if not shard.current:
                        if self.shards.get(partition) is shard:
                            del self.shards[partition]
                    elif not shard.loaded and shard.replica.machine.applied_index >= shard.load_index:
                        self._load(shard)
                if trio.current_time() >= next_cleanup:
                    next_cleanup = trio.current_time() + interval_s
                    for shard in list(self.shards.values()):
                        if shard.loaded and shard.current:
                            nursery.start_soon(self._cleanup, shard)

    async def _cleanup(self, shard: _Shard) -> None:
        """Abort what passed its timeout; forget ids idle past their expiration."""
        now = self.node.wall_clock_ms()
        expiration_ms = self.setting("transactional_id_expiration_ms")
        for transactional_id, meta in list(shard.store.txns.items()):
            if not shard.current:
                return
            try:
                if ts.timed_out(meta, now) and transactional_id not in shard.completing:
                    async with shard.lock(transactional_id):
                        meta = shard.store.get(transactional_id)
                        if meta is None or not ts.timed_out(meta, self.node.wall_clock_ms()):
                            continue
                        decision = ts.fence_and_abort(meta, self.node.wall_clock_ms())
                        await self._write(shard, transactional_id, decision.write)
                        log.info("transaction of %r (producer %d) timed out after %d ms: aborting with epoch %d",
                                 transactional_id, meta.producer_id, meta.timeout_ms, decision.write.producer_epoch)
                        self._start_completion(shard, transactional_id)
                elif ts.expired(meta, now, expiration_ms):
                    async with shard.lock(transactional_id):
                        meta = shard.store.get(transactional_id)
                        if meta is None or not ts.expired(meta, self.node.wall_clock_ms(), expiration_ms):
                            continue
                        ts.dead(meta, now)  # the table allows it (checks the transition)
                        await self._write(shard, transactional_id, None)
                        shard.locks.pop(transactional_id, None)
                        log.info("transactional id %r expired", transactional_id)
            except TxnError as exc:
                log.info("transaction state partition %d: cleanup stopped: %s", shard.replica.partition, exc)
                return

    # --- writing --------------------------------------------------------------------------------

    async def _write(self, shard: _Shard, transactional_id: str, meta: TxnMetadata | None,
                     *then: TxnMetadata) -> None:
        """Commit one record (meta None: a tombstone), and `then` after it in the same batch;
        raises TxnError."""
        if not shard.current:
            raise TxnError("not the coordinator", ErrorCode.not_coordinator)
        batch = txn_batch(transactional_id, meta, self.node.wall_clock_ms(), *then)
        try:
            await shard.replica.produce(batch, parse_batches(batch, batch_bytes_max=BATCH_BYTES_MAX), -1)
        except (NotLeader, ProposalFailed) as exc:
            raise TxnError(f"transaction state write failed: {exc}", ErrorCode.not_coordinator) from None
        except NotEnoughReplicas as exc:
            raise TxnError(f"transaction state write refused: {exc}", ErrorCode.coordinator_not_available) from None
        if not shard.current:
            raise TxnError("leadership moved during the write", ErrorCode.not_coordinator)

    def _start_completion(self, shard: _Shard, transactional_id: str, requested_at: float | None = None) -> trio.Event:
        """requested_at: when the EndTxn that prepared it arrived (trio clock), for the timings."""
        done = shard.completing.get(transactional_id)
        if done is None:
            done = shard.completing[transactional_id] = trio.Event()
            assert self._nursery is not None, "completion before the coordinator runs"
            self._nursery.start_soon(self._complete, shard, transactional_id, done, requested_at)
        return done

    async def _complete(self, shard: _Shard, transactional_id: str, done: trio.Event,
                        requested_at: float | None) -> None:
        """Write the markers of a prepared transaction, then its Complete record. Stops when
        this node stops leading (the next coordinator resumes it)."""
        started = trio.current_time()
        try:
            meta = shard.store.get(transactional_id)
            if meta is None or meta.state not in ts.PREPARED:
                return
            commit = meta.state == TxnState.PREPARE_COMMIT
            pending = set(meta.partitions)
            backoff = MARKER_BACKOFF_S[0]
            while pending and shard.current:
                marker = ts.Marker(meta.producer_id, meta.producer_epoch, commit, frozenset(pending))
                results = await self.node.write_markers(shard.term, marker)
                for tp, error in results.items():
                    if error == ErrorCode.none:
                        pending.discard(tp)
                    elif error in MARKER_GIVE_UP:
                        log.warning("%s marker of %r (producer %d epoch %d) not written to %s-%d: %s; not retried",
                                    "commit" if commit else "abort", transactional_id, meta.producer_id,
                                    meta.producer_epoch, tp[0], tp[1], error.name)
                        pending.discard(tp)
                if pending:
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, MARKER_BACKOFF_S[1])
            if not shard.current:
                return
            self.observe("markers", trio.current_time() - (started if requested_at is None else requested_at))
            async with shard.lock(transactional_id):
                if shard.store.get(transactional_id) == meta:
                    await self._write_complete(shard, transactional_id, meta)
                    if requested_at is not None:
                        self.observe("completion", trio.current_time() - requested_at)
        except TxnError as exc:
            log.info("completion of %r stopped: %s", transactional_id, exc)
        finally:
            if shard.completing.get(transactional_id) is done:
                del shard.completing[transactional_id]
            done.set()

    async def _write_complete(self, shard: _Shard, transactional_id: str, meta: TxnMetadata) -> None:
        """The Complete record of prepared `meta` (every marker durable), with the adds that
        waited for it decided on the completed state, in arrival order, and the resulting
        Ongoing record in the same batch. The adds are answered once it is committed."""
        now_ms = self.node.wall_clock_ms()
        completed = current = ts.complete(meta, now_ms)
        decided = []
        for join in shard.joining.pop(transactional_id, []):
            decision = ts.add_partitions(current, join.producer_id, join.producer_epoch, join.partitions, now_ms,
                                         tv2=join.tv2)
            current = decision.write or current
            decided.append((join, decision.error))
        await self._write(shard, transactional_id, completed, *([current] if current is not completed else []))
        for join, error in decided:
            join.error = error

    # --- finding the coordinator ------------------------------------------------------------------

    async def txn_topic(self) -> Topic | None:
        """__transaction_state, created on first use; None while it is being created."""
        return await self._topic.get(self.node, self._nursery, self.setting("transaction_state_log_num_partitions"),
                                     self.setting("transaction_state_log_replication_factor"))

    def coordinator_of(self, transactional_id: str) -> tuple[Topic, int] | None:
        """(topic, partition) of the coordinator of transactional_id; None: no topic yet."""
        topic = self.node.meta.topics.get(TXN_TOPIC)
        if topic is None:
            return None
        return topic, partition_for(transactional_id, topic.partition_count)

    def _shard_for(self, transactional_id: str) -> _Shard:
        if not transactional_id:
            raise TxnError("empty transactional id", ErrorCode.invalid_request)
        where = self.coordinator_of(transactional_id)
        if where is None:
            raise TxnError("no transaction state topic yet", ErrorCode.coordinator_not_available)
        shard = self.shards.get(where[1])
        if shard is None or not shard.current:
            raise TxnError("not the coordinator", ErrorCode.not_coordinator)
        if not shard.loaded and shard.replica.machine.applied_index >= shard.load_index:
            self._load(shard)
        if not shard.loaded:
            raise TxnError("loading", ErrorCode.coordinator_load_in_progress)
        return shard

    async def _loaded_shard(self, transactional_id: str) -> _Shard:
        deadline = trio.current_time() + LOAD_WAIT_S_MAX
        while True:
            try:
                return self._shard_for(transactional_id)
            except TxnError as exc:
                if exc.error_code != ErrorCode.coordinator_load_in_progress or trio.current_time() >= deadline:
                    raise
            where = self.coordinator_of(transactional_id)
            assert where is not None
            with trio.move_on_at(deadline):
                await self.shards[where[1]].replica.group.wait_advanced()

    # --- the APIs ---------------------------------------------------------------------------------

    async def _decide(self, transactional_id: str, decide: typing.Callable[[_Shard], typing.Awaitable[ts.Decision]],
                      wait_s: float) -> ts.Decision:
        """decide(shard) under the id's lock (it writes what it decided). A decision of
        CONCURRENT_TRANSACTIONS while a completion of the id runs waits up to wait_s for it
        and is taken once more; if still so, that is the answer (the client retries)."""
        for attempt in range(2):
            try:
                shard = await self._loaded_shard(transactional_id)
                async with shard.lock(transactional_id):
                    decision = await decide(shard)
                    waiting = shard.completing.get(transactional_id)
            except TxnError as exc:
                return ts.refuse(exc.error_code)
            if decision.error != ErrorCode.concurrent_transactions or waiting is None or attempt:
                break
            with trio.move_on_after(wait_s):
                await waiting.wait()
        if decision.error == ErrorCode.concurrent_transactions:
            self.counts["concurrent_transactions"] += 1
        return decision

    async def init_producer_id(self, transactional_id: str, timeout_ms: int, producer_id: int,
                               producer_epoch: int) -> ts.Decision:
        """InitProducerId with a transactional id. An Ongoing transaction of the id is
        aborted first (fenced); the call waits up to INIT_WAIT_S for that abort, or for the
        completion of a transaction that was ending."""
        async def decide(shard: _Shard) -> ts.Decision:
            current = shard.store.get(transactional_id)
            new_pid = await self.node.allocate_producer_id() if ts.needs_new_producer_id(current) else -1
            decision = ts.init_producer_id(
                current, transactional_id, timeout_ms, expected_producer_id=producer_id,
                expected_epoch=producer_epoch, now_ms=self.node.wall_clock_ms(), new_producer_id=new_pid,
                max_timeout_ms=self.setting("transaction_max_timeout_ms"))
            if decision.write is not None:
                await self._write(shard, transactional_id, decision.write)
                if decision.markers is not None:
                    self._start_completion(shard, transactional_id)
            return decision
        return await self._decide(transactional_id, decide, INIT_WAIT_S)

    async def add_partitions(self, transactional_id: str, producer_id: int, producer_epoch: int,
                             partitions: typing.Iterable[tuple[str, int]], *, tv2: bool = False) -> ErrorCode:
        """AddPartitionsToTxn / AddOffsetsToTxn, or (tv2) a partition leader's or group
        coordinator's implicit add. One that finds the id's previous transaction completing
        joins the completion (_Join), up to CONCURRENT_WAIT_S; one the completion did not
        take is decided again after it, CONCURRENT_TRANSACTIONS while it still runs."""
        self.counts["implicit_add" if tv2 else "client_add"] += 1
        wanted = frozenset(partitions)
        join = _Join(producer_id, producer_epoch, wanted, tv2)
        first = [True]

        async def decide(shard: _Shard) -> ts.Decision:
            if join.error is not None:  # written with the previous transaction's Complete record
                return ts.refuse(join.error)
            joined = shard.joining.get(transactional_id, [])
            if join in joined:  # the completion did not take it (still running): decided here
                joined.remove(join)
            decision = ts.add_partitions(shard.store.get(transactional_id), producer_id, producer_epoch, wanted,
                                         self.node.wall_clock_ms(), tv2=tv2)
            if decision.write is not None:
                await self._write(shard, transactional_id, decision.write)
            elif (first[0] and decision.error == ErrorCode.concurrent_transactions
                  and transactional_id in shard.completing):
                # Only the first decision joins: the last one's answer must be the whole truth.
                shard.joining.setdefault(transactional_id, []).append(join)
            first[0] = False
            return decision
        return (await self._decide(transactional_id, decide, CONCURRENT_WAIT_S)).error

    async def verify_partition(self, transactional_id: str, producer_id: int, producer_epoch: int,
                               topic: str, partition: int, add: bool) -> ErrorCode:
        """The partition leader's question (KIP-890): is (topic, partition) in the ongoing
        transaction (add=False), or add it (add=True, TV2). This node must be the coordinator."""
        if add:
            return await self.add_partitions(transactional_id, producer_id, producer_epoch, [(topic, partition)],
                                             tv2=True)
        try:
            shard = await self._loaded_shard(transactional_id)
        except TxnError as exc:
            return exc.error_code
        return ts.verify_partition(shard.store.get(transactional_id), producer_id, producer_epoch,
                                   (topic, partition))

    async def end_txn(self, transactional_id: str, producer_id: int, producer_epoch: int, commit: bool,
                      *, tv2: bool = False) -> ts.Decision:
        """Answered once the PrepareCommit / PrepareAbort record is committed; the markers
        and the Complete record follow (a completion)."""
        self.counts["end_txn_v2" if tv2 else "end_txn_v1"] += 1
        requested_at = trio.current_time()

        async def decide(shard: _Shard) -> ts.Decision:
            current = shard.store.get(transactional_id)
            new_pid = (await self.node.allocate_producer_id()
                       if ts.end_txn_needs_new_producer_id(current, tv2) else -1)
            decision = ts.end_txn(current, producer_id, producer_epoch, commit, self.node.wall_clock_ms(),
                                  tv2=tv2, new_producer_id=new_pid)
            if decision.write is not None:
                await self._write(shard, transactional_id, decision.write)
                self._start_completion(shard, transactional_id, requested_at)
            return decision
        decision = await self._decide(transactional_id, decide, CONCURRENT_WAIT_S)
        if decision.write is not None:
            self.observe("end_txn", trio.current_time() - requested_at)
        return decision

    async def describe(self, transactional_id: str) -> TxnMetadata:
        """Raises TxnError (TRANSACTIONAL_ID_NOT_FOUND for an unknown id)."""
        meta = (await self._loaded_shard(transactional_id)).store.get(transactional_id)
        if meta is None:
            raise TxnError(f"unknown transactional id {transactional_id!r}", ErrorCode.transactional_id_not_found)
        return meta

    def list_transactions(self) -> list[TxnMetadata]:
        """Every transactional id this node coordinates (loaded shards only)."""
        return [meta for shard in self.shards.values() if shard.loaded and shard.current
                for meta in shard.store.txns.values()]

    def coordinator_loading(self) -> bool:
        return any(not shard.loaded for shard in self.shards.values() if shard.current)
