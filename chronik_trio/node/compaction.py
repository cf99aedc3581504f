"""The log cleaner's task: every log.cleaner.backoff.ms, each replica of a topic whose
cleanup.policy includes compact rolls its active segment if segment.ms says so, then
cleans its closed segments (storage/cleaner.py; docs/compaction.md).

Each replica cleans its own log, only below what it has applied (so committed: committed
entries are never truncated) and has fsynced. The Raft group keeps running meanwhile: the
plan and the swap are synchronous steps on the event loop between Ready passes, the key
map and the new segment files are built in a worker thread, and the log keeps the files of
the segments being read open while it is pinned. Entries keep their index and term, so a
follower further behind is sent the compacted entries and its log is a valid Raft log.

Configs are read at every pass, so AlterConfigs changes take effect at the next one.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import typing

import attrs
import trio

from chronik_trio.cluster.configs import parse_list
from chronik_trio.record_batch import BatchHeader
from chronik_trio.storage import DiskError
from chronik_trio.storage.cleaner import (ABORTED, CLEAN, KEEP, CleanPlan, CleanResult, CleanSettings, TxnRule,
                                          plan_clean, run_clean)
from chronik_trio.storage.log import INDEX_INTERVAL_BYTES_DEFAULT

from .meta_group import MetaMachine
from .partition_group import PartitionReplica
from .replicas import HostedReplicas
from .seams import RunSync

log = logging.getLogger(__name__)

# While a pass runs in its worker thread, the interpreter's switch interval (how long a thread
# waiting for the GIL waits before it makes the holder drop it) is lowered from CPython's 5 ms
# to this: every system call of the event loop's thread (a socket read or write, an fsync
# handed to a thread, the wait for events) gives the GIL away and must get it back from the
# cleaner's CPU-bound thread, so a Ready pass would wait up to 5 ms per call
# (docs/compaction.md, "The GIL").
CLEANER_SWITCH_INTERVAL_S = 0.0005


class _SwitchInterval:
    """CLEANER_SWITCH_INTERVAL_S while at least one pass of this process runs (several nodes
    may share one process, as in the simulator)."""

    def __init__(self) -> None:
        self._running = 0
        self._before = 0.0

    @contextlib.contextmanager
    def short(self) -> typing.Iterator[None]:
        if self._running == 0:
            self._before = sys.getswitchinterval()
            sys.setswitchinterval(min(self._before, CLEANER_SWITCH_INTERVAL_S))
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            if self._running == 0:
                sys.setswitchinterval(self._before)


_switch_interval = _SwitchInterval()


@attrs.define
class CleanerStats:
    """What the cleaner did since the node started (bench and metrics read it)."""

    passes: int = 0
    segments_replaced: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    records_dropped: int = 0
    tombstones_dropped: int = 0
    aborted_dropped: int = 0
    markers_dropped: int = 0  # transaction markers emptied past their delete horizon
    seconds: float = 0.0
    bytes_cleaned: int = 0  # the size of the segments passes went over ("MB of log cleaned")


def transactions_rule(replica: PartitionReplica, plan: CleanPlan) -> TxnRule:
    """What the cleaner does with each transactional batch of the plan's segments, from the
    replica's applied transactions (taken now, on the loop: the plan is below the applied
    index, so every transaction with a batch there is open or ended in this state):
    still open -> KEEP; ended by an abort marker -> ABORTED; else (ended by a commit) ->
    CLEAN."""
    open_first = dict(txns.open) if (txns := replica.machine.transactions) is not None else {}
    lo = min(seg.offset_lo for seg in plan.segments)
    hi = max(seg.next_offset for seg in plan.segments)
    aborted: dict[int, list[tuple[int, int]]] = {}
    for txn in replica.aborted_transactions(lo, hi):
        aborted.setdefault(txn.producer_id, []).append((txn.first_offset, txn.last_offset))

    def rule(header: BatchHeader) -> str:
        first = open_first.get(header.producer_id)
        if first is not None and header.base_offset >= first:
            return KEEP
        for first, last in aborted.get(header.producer_id, ()):
            if first <= header.base_offset <= last:
                return ABORTED
        return CLEAN
    return rule


def forget_aborted(replica: PartitionReplica, markers: typing.Iterable[tuple[int, int]]) -> None:
    txns = replica.machine.transactions
    if txns is not None:
        for producer_id, offset in markers:
            txns.forget_aborted(producer_id, offset)


class LogCleaner:
    def __init__(self, replicas: HostedReplicas, meta: MetaMachine, *,
                 wall_clock_ms: typing.Callable[[], int], run_sync: RunSync) -> None:
        self._replicas = replicas
        self._meta = meta
        self._wall_clock_ms = wall_clock_ms
        self._run_sync = run_sync
        # Per replica: the Kafka offset below which its log is clean, the timestamp of
        # the oldest tombstone kept and the earliest delete horizon of a marker waiting for
        # it (in memory: after a restart the first pass reads everything once and finds
        # little to change).
        self._clean_offsets: dict[int, tuple[PartitionReplica, int, int | None, int | None]] = {}
        self.stats = CleanerStats()

    async def run(self) -> None:
        while True:  # log.cleaner.backoff.ms: the node's setting, or a dynamic one in __meta
            await trio.sleep(int(self._replicas.broker_config("log.cleaner.backoff.ms")) / 1000)
            await self.pass_once()

    async def pass_once(self) -> None:
        self._clean_offsets = {k: v for k, v in self._clean_offsets.items() if not v[0].closed}
        for (name, partition), replica in self._replicas.items():
            if replica.closed or name not in self._meta.state.topics:
                continue
            if "compact" not in parse_list(self._replicas.topic_config(name, "cleanup.policy")):
                continue
            try:
                await self.clean_replica(name, replica)
            except DiskError as exc:
                # Only the cleaner's own copy was being written: the log is unchanged.
                log.warning("cleaning %s-%d failed, retried next pass: %s", name, partition, exc)

    def _settings(self, name: str, now_ms: int, transactional: TxnRule) -> CleanSettings:
        config = self._replicas.topic_config
        rate = float(self._replicas.broker_config("log.cleaner.io.max.bytes.per.second"))
        return CleanSettings(
            now_ms=now_ms, delete_retention_ms=int(config(name, "delete.retention.ms")),
            key_map_bytes=int(self._replicas.broker_config("log.cleaner.dedupe.buffer.size")),
            io_bytes_per_s=rate if rate < 1e300 else None,
            index_interval_bytes=INDEX_INTERVAL_BYTES_DEFAULT, transactional=transactional)

    async def clean_replica(self, name: str, replica: PartitionReplica) -> CleanResult | None:
        config = self._replicas.topic_config
        now_ms = self._wall_clock_ms()
        seg_log = replica.log
        if seg_log.roll_if_older(now_ms, int(config(name, "segment.ms"))):
            log.debug("%s-%d: segment.ms rolled the active segment", name, replica.partition)
        known = self._clean_offsets.get(id(replica))
        if known is None or known[0] is not replica:
            known = (replica, 0, None, None)
        _, clean_offset, oldest_tombstone_ms, marker_horizon_ms = known
        delete_retention_ms = int(config(name, "delete.retention.ms"))
        tombstones_due = (oldest_tombstone_ms is not None and oldest_tombstone_ms < now_ms - delete_retention_ms) \
            or (marker_horizon_ms is not None and marker_horizon_ms <= now_ms)
        upto_index = min(replica.machine.applied_index, seg_log.durable_index) + 1
        plan = plan_clean(seg_log.segments, upto_index=upto_index, clean_offset=clean_offset,
                          now_ms=now_ms, min_lag_ms=int(config(name, "min.compaction.lag.ms")),
                          max_lag_ms=int(config(name, "max.compaction.lag.ms")),
                          min_dirty_ratio=float(config(name, "min.cleanable.dirty.ratio")),
                          tombstones_due=tombstones_due)
        if plan is None:
            return None
        settings = self._settings(name, now_ms, transactions_rule(replica, plan))
        seg_log.pin()
        try:
            with _switch_interval.short():
                result = await self._run_sync(run_clean, self._replicas.disk, plan, settings)
            replaced = handed = 0
            try:
                for old, new in result.replacements:
                    if handed:  # each swap is a close, a rename and an open: let the loop run
                        await trio.lowlevel.checkpoint()
                    handed += 1  # replace_segment owns new.file from here on
                    replaced += seg_log.replace_segment(old, new)
                    # The abort markers this copy removed are no longer served (swapped in,
                    # or the segment was already gone): forget their aborted entries now.
                    forget_aborted(replica, result.aborts_removed.get(old.first_index, ()))
            finally:  # cancelled between swaps: the copies left are closed (open() deletes them)
                for _, new in result.replacements[handed:]:
                    self._replicas.disk.close(new.file)
        finally:
            seg_log.unpin()
        self._clean_offsets[id(replica)] = (replica, max(clean_offset, result.clean_offset),
                                            result.oldest_tombstone_ms, result.marker_horizon_ms)
        stats = self.stats
        stats.passes += 1
        stats.segments_replaced += replaced
        stats.bytes_read += result.bytes_read
        stats.bytes_written += result.bytes_written
        stats.records_dropped += result.records_dropped
        stats.tombstones_dropped += result.tombstones_dropped
        stats.aborted_dropped += result.aborted_dropped
        stats.markers_dropped += result.markers_dropped
        stats.seconds += result.seconds
        stats.bytes_cleaned += result.bytes_cleaned
        log.info("cleaned %s-%d (%s): %d of %d segment(s) rewritten, %d record(s), %d tombstone(s) and %d "
                 "aborted record(s) and %d marker(s) removed, %.1f MB cleaned in %.2f s; clean below offset %d", name,
                 replica.partition, plan.reason, replaced, len(plan.segments), result.records_dropped,
                 result.tombstones_dropped, result.aborted_dropped, result.markers_dropped, result.bytes_cleaned / 1e6, result.seconds,
                 result.clean_offset)
        return result
