"""The node's Prometheus metrics, served by the transport's /metrics.

Per-group numbers (term, commit, applied, leadership) are read when Prometheus scrapes, by
a collector, so the Raft hot path pays nothing for them; Ready pass and fsync durations are
histograms observed once per pass.
"""

from __future__ import annotations

import typing

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .raft_runtime import RaftRuntime

# Buckets from 0.1 ms to 2.5 s: a Ready pass is sub-millisecond when idle, fsyncs ~0.2-5 ms.
DURATION_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                      0.25, 0.5, 1.0, 2.5)
TXN_BUCKETS_S = DURATION_BUCKETS_S + (5.0, 10.0)
TXN_PHASES = {
    "end_txn": "EndTxn received -> answered (its PrepareCommit / PrepareAbort record committed)",
    "markers": "EndTxn received -> every marker of the transaction durable (a completion resumed by a new "
               "coordinator, or of a timed-out or fenced transaction: from its start)",
    "completion": "EndTxn received -> CompleteCommit / CompleteAbort committed (the id free for its next transaction)",
}


class NodeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.ready_pass_seconds = Histogram(
            "chronik_ready_pass_seconds", "Time of one Ready pass over every active group",
            buckets=DURATION_BUCKETS_S, registry=registry)
        self.fsync_seconds = Histogram(
            "chronik_fsync_round_seconds", "Time of one group-commit fsync round (worker thread)",
            buckets=DURATION_BUCKETS_S, registry=registry)
        # A transaction's commit or abort, on its coordinator (node/txn_coordinator.py)
        self.txn_seconds = {phase: Histogram(f"chronik_txn_{phase}_seconds", doc, buckets=TXN_BUCKETS_S,
                                             registry=registry)
                            for phase, doc in TXN_PHASES.items()}

    def observe_txn(self, phase: str, seconds: float) -> None:
        self.txn_seconds[phase].observe(seconds)

    def collect_groups(self, runtime: RaftRuntime) -> None:
        """Read the runtime's groups at every scrape."""
        self.registry.register(_GroupCollector(runtime))

    def collect_request_errors(self, request_errors) -> None:
        """Count the Kafka requests whose handler failed unexpectedly, at every scrape."""
        self.registry.register(_RequestErrorCollector(request_errors))

    def collect_cleaner(self, stats) -> None:
        """The log cleaner's totals (node/compaction.py CleanerStats), at every scrape."""
        self.registry.register(_CleanerCollector(stats))

    def collect_isr_checks(self, leader_reports) -> None:
        """How many replicas the ISR check (node/leader_reports.py) has looked at."""
        self.registry.register(_CounterCollector(
            "chronik_isr_checks", "Partition replicas the leaders' ISR check looked at (every replica "
            "when node liveness changes, else the awake ones and those that just went quiet)",
            lambda: leader_reports.isr_checks))
        self.registry.register(_CounterCollector(
            "chronik_isr_full_checks", "ISR checks that looked at every replica (node liveness changed)",
            lambda: leader_reports.isr_full_checks))
        self.registry.register(_CounterCollector(
            "chronik_isr_check_passes", "Runs of the leaders' ISR check (one every second)",
            lambda: leader_reports.isr_check_passes))

    def collect_auth_failures(self, failures) -> None:
        """Count refused TLS handshakes and SASL exchanges (node/listeners.py), at every scrape."""
        self.registry.register(_AuthFailureCollector(failures))

    def collect_fetch_sessions(self, cache) -> None:
        """Fetch sessions (kafka/fetch_sessions.py FetchSessionCache), at every scrape."""
        self.registry.register(_FetchSessionCollector(cache))

    def collect_txn(self, counts) -> None:
        """The transaction coordinator's request counts (node/txn_coordinator.py), at every scrape."""
        self.registry.register(_TxnCollector(counts))

    def collect_throttle(self, throttle) -> None:
        """The catch-up throttle of partition moves (node/throttle.py), at every scrape."""
        self.registry.register(_ThrottleCollector(throttle))


class _FetchSessionCollector:
    COUNTERS = (  # (metric, help, FetchSessionStats field)
        ("chronik_fetch_full", "Fetches that named every partition (no session, or opening one)", "full"),
        ("chronik_fetch_incremental", "Incremental fetches served from a fetch session (KIP-227)",
         "incremental"),
        ("chronik_fetch_sessions_created", "Fetch sessions opened", "created"),
        ("chronik_fetch_sessions_closed", "Fetch sessions closed by their client", "closed"),
        ("chronik_fetch_sessions_evicted", "Fetch sessions evicted to make room for another", "evicted"),
        ("chronik_fetch_sessions_not_created", "Full fetches refused a session (cache full)", "not_created"),
        ("chronik_fetch_session_errors", "Fetches answered with a fetch session error", "errors"),
        ("chronik_fetch_partitions_left_out",
         "Partitions an incremental fetch answer left out (nothing new)", "partitions_left_out"),
        ("chronik_fetch_parked", "Fetches that found less than min_bytes and waited for new data (long poll)",
         "parked"),
        ("chronik_fetch_record_bytes", "Bytes of record batches answered by fetches", "record_bytes"),
    )

    def __init__(self, cache) -> None:
        self.cache = cache

    def collect(self) -> typing.Iterator:
        for name, help_text, field in self.COUNTERS:
            yield CounterMetricFamily(name, help_text, value=getattr(self.cache.stats, field))
        yield GaugeMetricFamily("chronik_fetch_sessions", "Fetch sessions in the cache", value=len(self.cache))
        yield GaugeMetricFamily("chronik_fetch_session_partitions", "Partitions over every cached fetch session",
                                value=self.cache.partition_count)


class _TxnCollector:
    def __init__(self, counts) -> None:
        self.counts = counts

    def collect(self) -> typing.Iterator:
        family = CounterMetricFamily("chronik_txn_requests", "Transaction coordinator requests by kind: "
                                     "client_add (AddPartitionsToTxn / AddOffsetsToTxn), implicit_add (a partition "
                                     "leader's or group coordinator's add under transaction version 2), "
                                     "end_txn_v1 / end_txn_v2 (EndTxn below v5 / v5+); concurrent_transactions: "
                                     "requests answered CONCURRENT_TRANSACTIONS (a completion still running)",
                                     labels=["kind"])
        for kind, count in sorted(self.counts.items()):
            family.add_metric([kind], count)
        yield family


class _CleanerCollector:
    COUNTERS = (  # (metric, help, CleanerStats field)
        ("chronik_cleaner_passes", "Cleaner passes that cleaned a log", "passes"),
        ("chronik_cleaner_segments_replaced", "Segments rewritten by the cleaner", "segments_replaced"),
        ("chronik_cleaner_read_bytes", "Bytes of log the cleaner read (twice per pass: key map, copies)",
         "bytes_read"),
        ("chronik_cleaner_cleaned_bytes", "Bytes of log that cleaning passes went over", "bytes_cleaned"),
        ("chronik_cleaner_written_bytes", "Bytes the cleaner wrote", "bytes_written"),
        ("chronik_cleaner_records_removed", "Superseded records removed", "records_dropped"),
        ("chronik_cleaner_tombstones_removed", "Tombstones removed", "tombstones_dropped"),
        ("chronik_cleaner_aborted_records_removed", "Records of aborted transactions removed", "aborted_dropped"),
        ("chronik_cleaner_markers_removed", "Transaction markers removed past their delete horizon", "markers_dropped"),
        ("chronik_cleaner_busy_seconds", "Time in cleaning passes (worker thread)", "seconds"),
    )

    def __init__(self, stats) -> None:
        self.stats = stats

    def collect(self) -> typing.Iterator:
        for name, help_text, field in self.COUNTERS:
            yield CounterMetricFamily(name, help_text, value=getattr(self.stats, field))


class _ThrottleCollector:
    def __init__(self, throttle) -> None:
        self.throttle = throttle

    def collect(self) -> typing.Iterator:
        yield CounterMetricFamily("chronik_catch_up_throttled_bytes",
                                  "Bytes to learners that waited for leader.replication.throttled.rate",
                                  value=self.throttle.throttled_bytes)


class _AuthFailureCollector:
    def __init__(self, failures) -> None:
        self.failures = failures

    def collect(self) -> typing.Iterator:
        family = CounterMetricFamily("chronik_authentication_failures",
                                     "Client connections refused for authentication: a failed or stalled TLS handshake, "
                                     "a failed SASL exchange or one not finished in time", labels=["listener", "reason"])
        for (listener, reason), count in sorted(self.failures.counts.items()):
            family.add_metric([listener, reason], count)
        yield family


class _CounterCollector:
    """One unlabelled counter read at every scrape."""

    def __init__(self, name: str, documentation: str, read: typing.Callable[[], float]) -> None:
        self.name, self.documentation, self.read = name, documentation, read

    def collect(self) -> typing.Iterator:
        yield CounterMetricFamily(self.name, self.documentation, value=self.read())


class _RequestErrorCollector:
    """Kafka requests whose handler failed unexpectedly (node/kafka_server.py RequestErrors):
    answered with UNKNOWN_SERVER_ERROR or their connection closed; the node kept serving."""

    def __init__(self, request_errors) -> None:
        self.request_errors = request_errors

    def collect(self) -> typing.Iterator:
        family = CounterMetricFamily("chronik_kafka_request_errors",
                                     "Kafka requests that failed with an unexpected exception "
                                     "(answered UNKNOWN_SERVER_ERROR or connection closed)",
                                     labels=["api_key", "api_version"])
        for (api_key, api_version), count in sorted(self.request_errors.counts.items()):
            family.add_metric([str(api_key), str(api_version)], count)
        yield family


class _GroupCollector:
    def __init__(self, runtime: RaftRuntime) -> None:
        self.runtime = runtime

    def collect(self) -> typing.Iterator:
        labels = ["group"]
        term = GaugeMetricFamily("chronik_raft_term", "Current Raft term of the group", labels=labels)
        commit = GaugeMetricFamily("chronik_raft_commit_index", "Commit index", labels=labels)
        applied = GaugeMetricFamily("chronik_raft_applied_index", "Applied index", labels=labels)
        leader = GaugeMetricFamily("chronik_raft_is_leader", "1 if this node leads the group", labels=labels)
        changes = CounterMetricFamily("chronik_raft_leader_changes", "Leader changes seen", labels=labels)
        dropped = CounterMetricFamily("chronik_raft_inbox_dropped", "Peer messages dropped (inbox full)",
                                      labels=labels)
        for group in list(self.runtime.groups.values()):
            node, key = group.node, [group.group_id]
            term.add_metric(key, node.term)
            commit.add_metric(key, node.committed_index)
            applied.add_metric(key, node.applied_index)
            leader.add_metric(key, 1 if group.is_leader else 0)
            changes.add_metric(key, group.leader_changes)
            dropped.add_metric(key, group.dropped_messages)
        groups = list(self.runtime.groups.values())
        yield from (term, commit, applied, leader, changes, dropped)
        yield GaugeMetricFamily("chronik_raft_groups", "Raft groups hosted", value=len(groups))
        yield GaugeMetricFamily("chronik_raft_quiesced_groups", "Groups quiesced (idle, not ticking)",
                                value=self.runtime.quiesced_count)
        yield GaugeMetricFamily("chronik_raft_awake_groups", "Groups not quiesced (the tick loop visits only these)",
                                value=len(self.runtime.awake))
        yield CounterMetricFamily("chronik_raft_group_ticks", "Ticks given to groups by the tick loop",
                                  value=self.runtime.ticks)
        yield CounterMetricFamily("chronik_raft_early_quiesces",
                                  "Times a group went quiet right after its election (nothing proposed since)",
                                  value=sum(g.early_quiesces for g in groups))
        yield CounterMetricFamily("chronik_ready_passes", "Ready passes run", value=self.runtime.passes)
        yield CounterMetricFamily("chronik_raft_unknown_group_dropped",
                                  "Peer messages dropped because no such group is hosted here",
                                  value=self.runtime.unknown_group_drops)
        yield CounterMetricFamily("chronik_raft_malformed_dropped",
                                  "Peer messages dropped because no peer may send them (a type or entry "
                                  "type outside the protocol, or a local-only type)",
                                  value=self.runtime.malformed_drops)
