"""The figures issue 4's closing note asks for, from real node processes on 127.0.0.1.

    python -m tests.cluster.measure [--idle-s 45] [--trials 20] [--samples 200] [--only cpu]

- idle CPU per node (percent of one core, from /proc/<pid>/stat utime+stime over the idle
  window) of a 3-node cluster with 300, then 1,000 partition groups (RF 3, so every node
  hosts every group), measured once creation has settled;
- failover: SIGKILL the __meta leader, then CreateTopics (one partition whose one replica is
  the answering node) through the survivors until one commits; the time from the signal to
  that answer, and from the signal to the first survivor's log line naming a new __meta
  leader. The killed node is restarted and caught up between trials;
- commit latency on an idle 3-node cluster: round trips of CreateTopics (one partition, RF 1
  on the answering node: the TopicCreated commit, the local group's election, the commit of
  its leader report) and DeleteTopics (one __meta commit), through the __meta leader and
  through a follower; and CreateTopics with RF 3 (what a client sees by default: it also
  waits for a 3-voter partition group to elect).

Results go to stdout; docs/cluster-measurements.md records a run. Nothing here asserts a
number (design.md: performance is measured, not asserted).
"""

from __future__ import annotations

import argparse
import datetime
import pathlib
import re
import statistics
import subprocess
import tempfile
import time

from tests.cluster.cluster import (META_GROUP, ClusterProcesses, cpu_seconds, create_topics,
                                   create_until_committed, delete_topics, parse_leader_lines,
                                   wait_topics_equal)
from tests.cluster.test_stability import wait_settled

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)
PARTITIONS_PER_TOPIC = 100


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def summary_ms(values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (f"n={len(ms)} median {statistics.median(ms):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
            f"min {min(ms):.1f} ms, max {max(ms):.1f} ms")


def idle_cpu(cluster: ClusterProcesses, idle_s: float) -> dict[int, float]:
    before = {n: cpu_seconds(cluster.pid(n)) for n in cluster.ids}
    started = time.monotonic()
    time.sleep(idle_s)
    elapsed = time.monotonic() - started
    return {n: (cpu_seconds(cluster.pid(n)) - before[n]) / elapsed * 100 for n in cluster.ids}


def grow_to(cluster: ClusterProcesses, groups: int, have: int) -> int:
    with cluster.connect(1, timeout_s=300) as conn:
        for t in range(have // PARTITIONS_PER_TOPIC, groups // PARTITIONS_PER_TOPIC):
            name = f"idle-{t}"
            started = time.monotonic()
            answer = create_topics(conn, [name], partitions=PARTITIONS_PER_TOPIC,
                                   replication_factor=3, timeout_ms=120_000)
            assert answer[name][0] == 0, answer
            print(f"  created {name} ({PARTITIONS_PER_TOPIC} partitions, RF 3) in "
                  f"{time.monotonic() - started:.1f} s", flush=True)
    wait_settled(cluster, groups)
    return groups


def measure_cpu(root: pathlib.Path, idle_s: float) -> None:
    cluster = ClusterProcesses(root / "cpu", 3)
    try:
        cluster.start()
        print(f"3 nodes, no partitions: CPU % of a core over {idle_s:.0f} s: "
              f"{_fmt(idle_cpu(cluster, idle_s))}", flush=True)
        have = 0
        for groups in (300, 1000):
            have = grow_to(cluster, groups, have)
            lines = sum(len(parse_leader_lines(cluster.log(n))) for n in cluster.ids)
            cpu = idle_cpu(cluster, idle_s)
            changed = sum(len(parse_leader_lines(cluster.log(n))) for n in cluster.ids) - lines
            print(f"3 nodes, {groups} partition groups each: CPU % of a core over {idle_s:.0f} s: "
                  f"{_fmt(cpu)}; leader lines logged meanwhile: {changed}", flush=True)
    finally:
        cluster.close()


def _fmt(cpu: dict[int, float]) -> str:
    return ", ".join(f"node {n} {pct:.1f}" for n, pct in cpu.items())


def _first_new_leader_s(cluster: ClusterProcesses, survivors: list[int], old_term: int,
                        killed_wall: float) -> float | None:
    """Seconds from the kill to the earliest survivor log line naming a __meta leader of a
    later term (log timestamps have millisecond resolution)."""
    times = []
    for n in survivors:
        for line in cluster.current_log(n).splitlines():
            seen = parse_leader_lines(line)
            stamp = LOG_TIME.match(line)
            if seen and stamp and seen[0].group == META_GROUP and seen[0].term > old_term:
                t = datetime.datetime.strptime(stamp[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                times.append(t - killed_wall)
    return min(times) if times else None


def measure_failover(root: pathlib.Path, trials: int) -> None:
    cluster = ClusterProcesses(root / "failover", 3)
    commit_s, elected_s = [], []
    try:
        cluster.start()
        for trial in range(trials):
            old = cluster.wait_meta_leader(cluster.ids)
            old_term = max(s.term for s in cluster.leader_lines(META_GROUP))
            survivors = [n for n in cluster.ids if n != old]
            # the survivors' current logs start now, so their earlier lines are not searched
            for n in survivors:
                cluster.forget_log_so_far(n)
            killed_wall = time.time()
            killed_at = cluster.kill(old)
            create_until_committed(cluster, survivors, f"failover-{trial}")
            commit_s.append(time.monotonic() - killed_at)
            elected = _first_new_leader_s(cluster, survivors, old_term, killed_wall)
            if elected is not None:
                elected_s.append(elected)
            print(f"  trial {trial}: killed node {old}; committed after {commit_s[-1] * 1000:.0f} ms"
                  f" (new leader logged after {elected * 1000 if elected else float('nan'):.0f} ms)",
                  flush=True)
            cluster.restart(old)
            wait_topics_equal(cluster, cluster.ids)
        print(f"failover, SIGKILL of the __meta leader -> CreateTopics committed: {summary_ms(commit_s)}")
        if elected_s:
            print(f"failover, SIGKILL of the __meta leader -> new leader in a log: {summary_ms(elected_s)}")
    finally:
        cluster.close()


def _round_trips(cluster: ClusterProcesses, via: int, samples: int, prefix: str) -> tuple[list, list]:
    creates, deletes = [], []
    with cluster.connect(via) as conn:
        for i in range(samples):
            name = f"{prefix}-{i}"
            started = time.perf_counter()
            code, message = create_topics(conn, [name], assignment=[[via]])[name]
            creates.append(time.perf_counter() - started)
            assert code == 0, (code, message)
            started = time.perf_counter()
            assert delete_topics(conn, [name])[name] == 0
            deletes.append(time.perf_counter() - started)
    return creates, deletes


def measure_latency(root: pathlib.Path, samples: int) -> None:
    cluster = ClusterProcesses(root / "latency", 3)
    try:
        cluster.start()
        leader = cluster.wait_meta_leader(cluster.ids)
        follower = next(n for n in cluster.ids if n != leader)
        for role, via in (("leader", leader), ("follower", follower)):
            creates, deletes = _round_trips(cluster, via, samples, f"lat-{role}")
            print(f"CreateTopics (RF 1, local) through the __meta {role}: {summary_ms(creates)}")
            print(f"DeleteTopics through the __meta {role}: {summary_ms(deletes)}", flush=True)
        rf3 = []
        with cluster.connect(follower) as conn:
            for i in range(max(samples // 4, 1)):
                name = f"lat-rf3-{i}"
                started = time.perf_counter()
                assert create_topics(conn, [name], replication_factor=3)[name][0] == 0
                rf3.append(time.perf_counter() - started)
                assert delete_topics(conn, [name])[name] == 0
        print(f"CreateTopics (RF 3) through a follower: {summary_ms(rf3)}")
    finally:
        cluster.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.measure")
    parser.add_argument("--idle-s", type=float, default=45.0)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--only", choices=["cpu", "failover", "latency"], action="append")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, "
          f"load average {open('/proc/loadavg').read().split()[:3]}", flush=True)
    with tempfile.TemporaryDirectory(prefix="chronik-measure-") as tmp:
        root = pathlib.Path(tmp)
        only = set(args.only or ["cpu", "failover", "latency"])
        if "latency" in only:
            measure_latency(root, args.samples)
        if "failover" in only:
            measure_failover(root, args.trials)
        if "cpu" in only:
            measure_cpu(root, args.idle_s)


if __name__ == "__main__":
    main()
