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
  its leader report) through the __meta leader and through a follower; CreateTopics with
  RF 3 (what a client sees by default: it also waits for a 3-voter partition group to
  elect); then DeleteTopics of the RF-1 topics (one __meta commit each, then the local
  group is closed).

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

from tests.cluster.cluster import (CONNECTION_ERRORS, META_GROUP, TOPIC_ALREADY_EXISTS,
                                   ClusterProcesses, cpu_seconds, create_topics,
                                   create_until_committed, delete_topics, parse_leader_lines,
                                   wait_topics_equal)
from tests.cluster.test_stability import wait_settled

LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.M)
PARTITIONS_PER_TOPIC = 100
CREATE_ATTEMPTS_MAX = 5
SETTLE_MAX_S = 300.0


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


def _log_count(cluster: ClusterProcesses, needle: str) -> int:
    return sum(cluster.log(n).count(needle) for n in cluster.ids)


def grow_to(cluster: ClusterProcesses, groups: int, have: int) -> bool:
    """Create 100-partition RF-3 topics up to `groups` partitions, letting each settle
    before the next (a timed-out CreateTopics is retried: the cluster can stall for a minute
    or more past a few hundred groups); False (after saying why) if it did not keep up."""
    with cluster.connect(1, timeout_s=300) as conn:
        for t in range(have // PARTITIONS_PER_TOPIC, groups // PARTITIONS_PER_TOPIC):
            name = f"idle-{t}"
            started = time.monotonic()
            answers = []
            for _ in range(CREATE_ATTEMPTS_MAX):
                answers.append(create_topics(conn, [name], partitions=PARTITIONS_PER_TOPIC,
                                             replication_factor=3, timeout_ms=60_000)[name][0])
                if answers[-1] == 0 or (answers[-1] == TOPIC_ALREADY_EXISTS and len(answers) > 1):
                    break
            created_s = time.monotonic() - started
            try:
                wait_settled(cluster, (t + 1) * PARTITIONS_PER_TOPIC, max_s=SETTLE_MAX_S)
                settled = True
            except AssertionError:
                settled = False
            print(f"  CreateTopics {name} ({PARTITIONS_PER_TOPIC} partitions, RF 3): answers "
                  f"{answers} after {created_s:.1f} s, settled {'' if settled else 'NOT '}after "
                  f"{time.monotonic() - started:.1f} s; in the logs so far: "
                  f"{_log_count(cluster, 'could not report leadership')} 'could not report "
                  f"leadership', {_log_count(cluster, 'silent for')} 'silent for' lines",
                  flush=True)
            if not settled:
                return False
    return True


def measure_cpu(root: pathlib.Path, idle_s: float) -> None:
    cluster = ClusterProcesses(root / "cpu", 3)
    try:
        cluster.start()
        print(f"3 nodes, no partitions: CPU % of a core over {idle_s:.0f} s: "
              f"{_fmt(idle_cpu(cluster, idle_s))}", flush=True)
        have = 0
        for groups in (300, 1000):
            settled = grow_to(cluster, groups, have)
            have = groups
            lines = len(cluster.leader_lines())
            cpu = idle_cpu(cluster, idle_s)
            changed = len(cluster.leader_lines()) - lines
            print(f"3 nodes, {groups} partition groups each{'' if settled else ' (NOT settled)'}: "
                  f"CPU % of a core over {idle_s:.0f} s: {_fmt(cpu)}; leader lines logged "
                  f"meanwhile: {changed}", flush=True)
            if not settled:
                return
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


def _create_round_trips(cluster: ClusterProcesses, via: int, names: list[str], **kwargs) -> list[float]:
    times = []
    with cluster.connect(via) as conn:
        for name in names:
            started = time.perf_counter()
            code, message = create_topics(conn, [name], **kwargs)[name]
            times.append(time.perf_counter() - started)
            assert code == 0, (name, code, message)
    return times


def _delete_round_trips(cluster: ClusterProcesses, via: int, names: list[str]) -> list[float]:
    """Stops early if the node drops the connection (DeleteTopics once crashed a node: see
    docs/cluster-measurements.md), and says so."""
    times = []
    try:
        with cluster.connect(via) as conn:
            for name in names:
                started = time.perf_counter()
                assert delete_topics(conn, [name])[name] == 0
                times.append(time.perf_counter() - started)
    except CONNECTION_ERRORS as exc:
        print(f"  DeleteTopics through node {via}: connection lost after {len(times)} deletes "
              f"({exc!r}); node running: {cluster.is_running(via)}", flush=True)
    return times


def measure_latency(root: pathlib.Path, samples: int) -> None:
    cluster = ClusterProcesses(root / "latency", 3)
    try:
        cluster.start()
        leader = cluster.wait_meta_leader(cluster.ids)
        follower = next(n for n in cluster.ids if n != leader)
        created = {}
        for role, via in (("leader", leader), ("follower", follower)):
            names = created[role] = [f"lat-{role}-{i}" for i in range(samples)]
            creates = _create_round_trips(cluster, via, names, assignment=[[via]])
            print(f"CreateTopics (RF 1, local) through the __meta {role}: {summary_ms(creates)}",
                  flush=True)
        rf3_names = [f"lat-rf3-{i}" for i in range(max(samples // 4, 1))]
        rf3 = _create_round_trips(cluster, follower, rf3_names, replication_factor=3)
        print(f"CreateTopics (RF 3) through a follower: {summary_ms(rf3)}", flush=True)
        for role, via in (("leader", leader), ("follower", follower)):
            deletes = _delete_round_trips(cluster, via, created[role])
            if deletes:
                print(f"DeleteTopics through the __meta {role}: {summary_ms(deletes)}", flush=True)
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
    root = pathlib.Path(tempfile.mkdtemp(prefix="chronik-measure-"))
    print(f"node logs and data under {root} (kept; remove when done)", flush=True)
    if True:
        only = set(args.only or ["cpu", "failover", "latency"])
        if "latency" in only:
            measure_latency(root, args.samples)
        if "failover" in only:
            measure_failover(root, args.trials)
        if "cpu" in only:
            measure_cpu(root, args.idle_s)


if __name__ == "__main__":
    main()
