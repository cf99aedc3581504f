"""Many partitions on three real nodes (issue 20): every partition of a topic created in
bulk gets a leader and takes an acks=all write, each node holds one whole directory per
partition (none left half-built), and after one node is SIGKILLed every partition it led
takes a write again through the survivors. The client is the bench's raw one
(chronik_trio/tools/bench_partitions.py): one Produce request per node per round."""

from __future__ import annotations

import os
import time

import pytest

from chronik_trio.node.replicas import CREATING_SUFFIX
from chronik_trio.tools import bench_partitions as bp
from tests.cluster.cluster import ClusterProcesses

PARTITIONS = 200  # more than one creation chunk (OPEN_CHUNK_PARTITIONS)
WRITABLE_TIMEOUT_S = 120.0
FAILOVER_TIMEOUT_S = 120.0
METADATA_TIMEOUT_S = 60.0
QUIET_TIMEOUT_S = 60.0
IDLE_S = 2.0  # forty tick intervals: any group still ticking would show

pytestmark = pytest.mark.timeout(400)


def _conns(cluster: ClusterProcesses, ids: list[int]) -> dict[int, bp.Conn]:
    return {n: bp.Conn(f"127.0.0.1:{cluster.port(n)}") for n in ids}


def _meta_applied(cluster: ClusterProcesses, n: int) -> int:
    return int(cluster.raft_metric(n, "chronik_raft_applied_index", 'group="__meta"'))


def _wait_all_quiet(cluster: ClusterProcesses, ids: list[int]) -> dict[int, float]:
    """Until no group is awake on any of ids; each node's group ticks so far."""
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    while True:
        awake = {n: cluster.raft_metric(n, "chronik_raft_awake_groups") for n in ids}
        if not any(awake.values()):
            return {n: cluster.raft_metric(n, "chronik_raft_group_ticks") for n in ids}
        assert time.monotonic() < deadline, f"groups still awake after {QUIET_TIMEOUT_S} s: {awake}"
        time.sleep(0.2)


def _wait_isr_check_pass(cluster: ClusterProcesses, ids: list[int]) -> None:
    """Until the ISR check of each of ids has run once more from now: the groups that went
    quiet before now, which its next run looks at once, are then behind it."""
    passes = {n: cluster.raft_metric(n, "chronik_isr_check_passes_total") for n in ids}
    deadline = time.monotonic() + QUIET_TIMEOUT_S
    while any(cluster.raft_metric(n, "chronik_isr_check_passes_total") <= passes[n] for n in ids):
        assert time.monotonic() < deadline, f"no ISR check ran in {QUIET_TIMEOUT_S} s"
        time.sleep(0.2)


def _isr_checks(cluster: ClusterProcesses, n: int) -> tuple[float, float]:
    """Node n's replicas looked at by its ISR check, and its checks of every replica."""
    return (cluster.raft_metric(n, "chronik_isr_checks_total"),
            cluster.raft_metric(n, "chronik_isr_full_checks_total"))


def test_every_partition_leads_takes_writes_and_fails_over(cluster_factory):
    cluster = cluster_factory(3).start()
    conns = _conns(cluster, cluster.ids)
    try:
        first = conns[1]
        meta_before = _meta_applied(cluster, 1)
        assert bp.create_topic(first, "many", PARTITIONS, 3) == 0
        # Leader reports go to __meta in batches (PartitionLeadersChanged): the topic and
        # its 200 leaders are a handful of entries, not one per partition.
        meta_entries = _meta_applied(cluster, 1) - meta_before
        assert meta_entries < PARTITIONS // 4, meta_entries
        writer = bp.Writer("many", set(range(PARTITIONS)), b"v" * 100)
        writer.to_leaders(conns, time.perf_counter() + WRITABLE_TIMEOUT_S)
        assert not writer.pending, f"partitions never written: {sorted(writer.pending)[:20]}"
        # Written once, every group goes quiet; then the tick loops tick nothing.
        ticks = _wait_all_quiet(cluster, cluster.ids)
        _wait_isr_check_pass(cluster, cluster.ids)  # it has taken the groups that just went quiet
        checks = {n: _isr_checks(cluster, n) for n in cluster.ids}
        time.sleep(IDLE_S)
        assert {n: cluster.raft_metric(n, "chronik_raft_group_ticks") for n in cluster.ids} == ticks
        # Nor does the leaders' ISR check look at quiet groups again, unless node liveness
        # changed (a loaded machine's hiccup can make a peer count as inactive for a moment):
        # then every replica once.
        for n, (looked, full) in checks.items():
            looked_after, full_after = _isr_checks(cluster, n)
            assert looked > 0  # it looked at them while they were awake
            assert looked_after - looked == PARTITIONS * (full_after - full), (n, looked, looked_after, full, full_after)

        for n in cluster.ids:  # the chunk's objects were frozen out of the collector's scans
            assert "objects frozen out of the garbage collector's scans" in cluster.log(n)
        for n in cluster.ids:  # one whole directory per partition, nothing half-built
            names = os.listdir(cluster.root / f"node{n}" / "data" / "partitions")
            assert not [d for d in names if d.endswith(CREATING_SUFFIX)], names
            assert len([d for d in names if d.startswith("many-")]) == PARTITIONS

        _, leaders, _ = bp.metadata(first, "many")
        led: dict[int, list[int]] = {}
        for p, leader in leaders.items():
            led.setdefault(leader, []).append(p)
        assert set(led) <= set(cluster.ids), led
        victim = max(led, key=lambda n: len(led[n]))
        for c in conns.values():
            c.close()
        cluster.kill(victim)
        survivors = _conns(cluster, [n for n in cluster.ids if n != victim])
        conns = survivors
        writer = bp.Writer("many", set(led[victim]), b"w" * 100)
        writer.to_every_node(survivors, time.perf_counter() + FAILOVER_TIMEOUT_S)
        assert not writer.pending, (f"{len(writer.pending)} of the {len(led[victim])} partitions node {victim} "
                                    f"led took no write after it died: {sorted(writer.pending)[:20]}")
        # __meta learns each new leader from its report, which may come after the write: wait.
        deadline = time.monotonic() + METADATA_TIMEOUT_S
        while True:
            _, leaders, _ = bp.metadata(next(iter(survivors.values())), "many")
            stale = [p for p in led[victim] if leaders[p] not in survivors]
            if not stale or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not stale, f"Metadata still names no live leader of {len(stale)} partitions: {stale[:20]}"
    finally:
        for c in conns.values():
            c.close()
