"""Measurements for issue 5's closing note: `python -m tests.replication.measure [--records N]
[--repeat N] [--trials N] [--json FILE]`.

1. acks=all throughput and delivery latency, single node vs 3-node cluster with replication
   factor 3, with `chronik-trio bench`'s own produce and consume code (chronik_trio/tools/bench.py)
   and the same settings for both. The bench CLI creates its topic with replication factor
   1, so this script creates the topic itself (replication factor = cluster size) and then
   runs the bench's _produce/_consume on it.
2. Paced (open-loop) acks=all latency: records sent one at a time at a fixed low rate with
   linger.ms=0, so the figure is the broker's commit latency rather than client queueing.
3. Failover: a partition leader SIGKILLed in the middle of an acks=all stream (failover.py),
   time to the first acknowledged record written by the new leader; several trials, each on
   a fresh 3-partition topic, killing the leader of one partition, restarting it and
   checking that every acknowledged record is on every replica before the next trial.
   The nodes are killed in turn (1, 2, 3, 1, ...).

Results are printed and written as JSON (--json, default replication-measurements.json in
the current directory). Real processes on 127.0.0.1, stopped by PID.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import statistics
import sys
import tempfile
import time

from chronik_trio.tools import bench, bench_kafka
from tests.brokers import BrokerProcess
from tests.replication.cluster import NONE, Cluster, wait_balanced
from tests.replication.failover import (KILL_AT_RECORD, STREAM_RATE_PER_S, STREAM_RECORDS,
                                        check_acknowledged_present, produce_killing_leader)

CLUSTER_CONFIG = "replica_lag_time_max_ms = 2000\nleader_balance_interval_ms = 1000\n"
PACED_RECORDS = 2000
PACED_RATE_PER_S = 200


def bench_args(records: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", "--records", str(records)])


def create(bootstrap: str, topic: str, partitions: int, replication_factor: int) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, replication_factor)])[topic].result(timeout=60)


def bench_runs(bootstrap: str, replication_factor: int, args: argparse.Namespace, repeat: int,
               tag: str) -> list[dict]:
    runs = []
    for i in range(repeat):
        topic = f"bench-{tag}-{i}"
        create(bootstrap, topic, args.partitions, replication_factor)
        time.sleep(3)  # leaders settle on their preferred replicas first (balance interval 1 s)
        produced = bench_kafka.produce_parallel(bootstrap, topic, args)
        consumed = bench_kafka.consume(bootstrap, topic, args.partitions, produced["acked"])
        runs.append({"topic": topic, "produce": produced, "consume": consumed})
        print(f"  {tag} run {i + 1}: produce {produced['records_per_s']:,} rec/s "
              f"p50 {produced['delivery_latency_ms']['p50']} ms p99 {produced['delivery_latency_ms']['p99']} ms "
              f"errors {produced['errors']}; consume {consumed['records_per_s']:,} rec/s", flush=True)
    return runs


def paced_latency(bootstrap: str, replication_factor: int, tag: str) -> dict:
    """PACED_RECORDS single records at PACED_RATE_PER_S, acks=all, linger.ms=0."""
    from confluent_kafka import Producer
    topic = f"paced-{tag}"
    create(bootstrap, topic, 3, replication_factor)
    time.sleep(3)
    latencies_s: list[float] = []
    errors = [0]

    def delivered(err, msg):
        if err is not None:
            errors[0] += 1
        else:
            latencies_s.append(msg.latency())
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0,
                         "enable.idempotence": False})
    start = time.monotonic()
    for i in range(PACED_RECORDS):
        target = start + i / PACED_RATE_PER_S
        for _ in range(1000):
            now = time.monotonic()
            if now >= target:
                break
            producer.poll(min(target - now, 0.005))
        producer.produce(topic, os.urandom(100), partition=i % 3, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(60) == 0
    pct = bench_kafka.percentiles_ms(latencies_s)
    print(f"  {tag} paced: {len(latencies_s)} records, latency {pct}, errors {errors[0]}", flush=True)
    return {"records": PACED_RECORDS, "rate_per_s": PACED_RATE_PER_S, "acked": len(latencies_s),
            "errors": errors[0], "latency_ms": pct}


LEADER_LINE = re.compile(r"^(\S+ \S+) INFO \S+: group (\S+): leader is node (\d+) at term (\d+) \(seen by node (\d+)\)",
                         re.MULTILINE)


def election_s(cluster: Cluster, result) -> float | None:
    """SIGKILL to the first `leader is node L at term T` line (T above the killed leader's
    epoch) for the partition's group in a survivor's log: the broker side of the failover."""
    topic_id = cluster.metadata(cluster.running()[0], [result.topic]).topics[0].topic_id
    group = f"{topic_id.hex}-{result.partition}"
    seen = []
    for n in cluster.ids:
        if n == result.victim:
            continue
        for stamp, g, _, term, _ in LEADER_LINE.findall(cluster.nodes[n].log_text()):
            if g == group and int(term) > result.old_epoch:
                seen.append(datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return min(seen) - result.kill_wall_s if seen else None


def failover_trials(cluster: Cluster, trials: int) -> list[dict]:
    partitions = 3
    out = []
    for trial in range(trials):
        # A fresh topic per trial, so its offsets are the stream's alone.
        trial_topic = f"failover-measure-{trial}"
        entry = cluster.create_topic(1 + trial % 3, trial_topic, partitions)
        assert entry.error_code == NONE, entry
        leaders = wait_balanced(cluster, trial_topic, timeout_s=60)
        # Kill nodes 1, 2, 3, 1, ... in turn: the partition the next one leads.
        victim = cluster.ids[trial % len(cluster.ids)]
        partition = min(p for p, info in leaders.items() if info.leader == victim)
        result = produce_killing_leader(cluster, trial_topic, partitions, leaders, partition=partition)
        cluster.restart(result.victim)
        duplicates = check_acknowledged_present(cluster, result, partitions)
        seconds = result.failover_s()
        elected = election_s(cluster, result)
        out.append({"trial": trial, "killed_node": result.victim, "partition": result.partition,
                    "old_epoch": result.old_epoch, "failover_s": round(seconds, 3),
                    "new_leader_logged_s": None if elected is None else round(elected, 3),
                    "acked": len(result.acked), "delivery_errors": len(result.errors),
                    "duplicates": duplicates})
        print(f"  failover trial {trial}: node {result.victim} (leader of {trial_topic}-{result.partition}) "
              f"killed; new leader logged after {elected if elected is None else round(elected, 2)} s, "
              f"first acked write on it after {seconds:.2f} s; "
              f"{len(result.acked)} acked, {len(result.errors)} errors, {duplicates} duplicates", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.replication.measure")
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--json", type=pathlib.Path, default=pathlib.Path("replication-measurements.json"))
    opts = parser.parse_args(argv)
    args = bench_args(opts.records)
    report: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg_at_start": os.getloadavg()},
        "bench_method": bench._methods(args, "see 'targets'", 3)["throughput"],
        "targets": {"single": "one chronik-trio node (no peers), topic replication factor 1",
                    "cluster": "three chronik-trio nodes on this machine, topic replication factor 3, "
                               "min.insync.replicas 2, replica_lag_time_max_ms 2000, "
                               "leader_balance_interval_ms 1000"},
        "failover_method": (f"confluent-kafka producer, acks=all, retries on (librdkafka defaults), "
                            f"idempotence off, linger.ms 5, {STREAM_RECORDS} records paced at "
                            f"{STREAM_RATE_PER_S}/s round-robin over 3 partitions; the leader of one "
                            f"partition is SIGKILLed after {KILL_AT_RECORD} records; failover time = "
                            f"SIGKILL to the first delivery report of a record whose batch carries a "
                            f"leader epoch above the killed leader's (so the client's reaction is included)"),
    }
    with tempfile.TemporaryDirectory(prefix="chronik-measure-") as tmp:
        root = pathlib.Path(tmp)
        print("single node:", flush=True)
        single = BrokerProcess(root / "single" / "data", extra_args=["--log-level", "warning"]).start()
        try:
            report["single"] = {"bench": bench_runs(single.bootstrap, 1, args, opts.repeat, "single"),
                                "paced": paced_latency(single.bootstrap, 1, "single")}
        finally:
            single.stop()
        print("3-node cluster, replication factor 3:", flush=True)
        cluster = Cluster(root / "cluster", 3, config_text=CLUSTER_CONFIG).start()
        try:
            report["cluster"] = {"bench": bench_runs(cluster.bootstrap(), 3, args, opts.repeat, "cluster"),
                                 "paced": paced_latency(cluster.bootstrap(), 3, "cluster")}
            report["failover"] = failover_trials(cluster, opts.trials)
        finally:
            cluster.close()
    for target in ("single", "cluster"):
        runs = report[target]["bench"]
        report[target]["median"] = {
            "produce_records_per_s": statistics.median(r["produce"]["records_per_s"] for r in runs),
            "produce_mb_per_s": statistics.median(r["produce"]["mb_per_s"] for r in runs),
            "produce_latency_p50_ms": statistics.median(r["produce"]["delivery_latency_ms"]["p50"] for r in runs),
            "produce_latency_p99_ms": statistics.median(r["produce"]["delivery_latency_ms"]["p99"] for r in runs),
            "produce_errors": sum(r["produce"]["errors"] for r in runs),
            "consume_records_per_s": statistics.median(r["consume"]["records_per_s"] for r in runs)}
    times = sorted(t["failover_s"] for t in report["failover"])
    elected = sorted(t["new_leader_logged_s"] for t in report["failover"] if t["new_leader_logged_s"] is not None)
    report["failover_summary"] = {"trials": len(times), "median_s": statistics.median(times),
                                  "max_s": times[-1], "min_s": times[0],
                                  "new_leader_logged_median_s": statistics.median(elected) if elected else None,
                                  "new_leader_logged_max_s": elected[-1] if elected else None,
                                  "lost_acknowledged": 0,  # check_acknowledged_present asserts it
                                  "duplicates_total": sum(t["duplicates"] for t in report["failover"])}
    opts.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k]["median"] for k in ("single", "cluster")}, indent=2))
    print(json.dumps({k: report[k]["paced"]["latency_ms"] for k in ("single", "cluster")}, indent=2))
    print(json.dumps(report["failover_summary"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
