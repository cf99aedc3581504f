"""`chronik-trio bench`: measure a Kafka broker (ours or any other), and chronik-trio's parts.

    chronik-trio bench --cluster 3 --record-bytes 1000 --records 200000          # 3 local nodes
    chronik-trio bench --bootstrap 127.0.0.1:9092 --acks 1 --json out.json      # any broker
    chronik-trio bench --cluster 3 --modes latency --rate 500 --plot latency.png
    chronik-trio bench --modes raft                                               # no broker

Modes (`--modes`, comma-separated; default `throughput,latency`):

- `throughput`: closed-loop produce of `--records` records (`--producers` processes, round
  robin over `--partitions`), then one consumer reads the topic from offset 0;
- `latency`: open loop at `--rate` records/s for `--warmup-s` + `--duration-s`: produce
  latency from when each record was *due* to its acknowledgement, and end-to-end latency
  from due to consumed (a consumer reading the same partitions in another thread);
- `consume`: one topic filled once with `--records` records, then `--repeat` consumers, one
  after the other, each reading it all from offset 0 (the read path alone, with no produce
  running beside it);
- `raft`: the Raft core alone, an in-memory 3-node group in this process (raft/bench.py);
- `node`: with the tool's own cluster (or `--metrics HOST:PORT,...`), every node's Ready pass
  and fsync-round histograms over the run, and its CPU time and RSS (own cluster only).
  Added automatically when the tool starts the cluster;
- `failover` (`--cluster 3` only): `--failover-trials` times, SIGKILL the leader of a
  partition under a paced acks=all stream and time the first acknowledgement of a record
  produced after the kill; the node is restarted between trials (bench_failover.py);
- `partitions` (`--cluster 3` only): one topic of `--partitions` partitions, replication
  factor 3: time to create it and to have every partition take a write, idle CPU, RSS,
  open files per node, then SIGKILL the node leading most partitions and time, per
  partition it led, the first acknowledged write (bench_partitions.py), e.g.
  `chronik-trio bench --cluster 3 --modes partitions --partitions 10000`.

`--security-protocol SSL|SASL_SSL` (with the tool's own cluster): every node gets a second
listener of that protocol (bench_security.py), and each throughput and latency run is done
over PLAINTEXT and over it, alternately, on the same nodes; the report gives both and the
ratio of throughputs and the extra latency per request (difference of the medians).

`--cluster 1|3` starts real `chronik-trio node` processes on 127.0.0.1 (temporary data dir,
stopped by PID afterwards). Every figure in the report says how it was measured, and the
report carries the load average, since this machine is shared. Nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import platform
import statistics
import sys
import threading
import time
import uuid

from chronik_trio.raft import bench as raft_bench
from chronik_trio.tools import bench_failover, bench_kafka, bench_local, bench_partitions, bench_security

MODES = ("throughput", "latency", "consume", "raft", "node", "failover", "partitions")
TOPIC_CREATE_TIMEOUT_S = 60.0


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="measure a Kafka broker (ours or any), and chronik-trio's parts")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--bootstrap", help="HOST:PORT[,...] of any Kafka broker")
    target.add_argument("--cluster", type=int, choices=[1, 3], default=None,
                        help="start 1 or 3 local chronik-trio nodes for the run (default 1 without --bootstrap)")
    p.add_argument("--modes", default="throughput,latency",
                   help=f"comma-separated, from {','.join(MODES)} (default throughput,latency)")
    p.add_argument("--records", type=int, default=500_000, help="throughput: records per run")
    p.add_argument("--record-bytes", type=int, default=100)
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--topic-config", action="append", default=[], metavar="KEY=VALUE",
                   help="a config of the bench topic, e.g. retention.bytes=1073741824 to bound the "
                        "disk a long run uses (repeatable)")
    p.add_argument("--replication-factor", type=int, default=None,
                   help="of the bench topic (default: the cluster's size, or 1 with --bootstrap)")
    p.add_argument("--keys", type=int, default=0,
                   help="give record i the key k<i mod KEYS> (0: no keys); with --topic-config "
                        "cleanup.policy=compact the cleaner has work (its rate is in the node report)")
    p.add_argument("--broker-config", action="append", default=[], metavar="KEY=VALUE",
                   help="with the tool's own cluster: a dynamic broker config set on every node before "
                        "the run (e.g. log.cleaner.backoff.ms=1000)")
    p.add_argument("--consumer-config", action="append", default=[], metavar="KEY=VALUE",
                   help="throughput, consume: a librdkafka setting of the bench consumer over the tool's own "
                        "(bench_kafka.CONSUMER_CONFIG), e.g. fetch.queue.backoff.ms=1000 for librdkafka's "
                        "default (repeatable)")
    p.add_argument("--consume-clients", default="confluent-kafka",
                   help="consume: comma-separated consumers, from confluent-kafka,franz-go, each run once per "
                        "--repeat, alternating (franz-go: the repository's tests/go program, needs go on PATH); "
                        "the report's median is the first one's, with every client's beside it")
    p.add_argument("--count-fetch-backoffs", action="store_true",
                   help="consume: run the confluent-kafka consumer with librdkafka's fetch debug log and count "
                        "its queue-full fetch backoffs (each a pause with no fetch sent for that partition)")
    p.add_argument("--producers", type=int, default=1,
                   help="throughput: producer processes (with --transactional, as many transactional producers too)")
    p.add_argument("--transactional", action="store_true",
                   help="throughput: also --producers transactional producers on the same settings, alternating with the "
                        "plain runs (transactional throughput beside the plain figure, and the commit time)")
    p.add_argument("--txn-records", type=int, default=100, help="--transactional: records per transaction")
    p.add_argument("--acks", choices=["0", "1", "all"], default="all")
    p.add_argument("--linger-ms", type=int, default=5)
    p.add_argument("--batch-bytes", type=int, default=1_000_000, help="librdkafka batch.size")
    p.add_argument("--compression", default="none", choices=["none", "gzip", "snappy", "lz4", "zstd"])
    p.add_argument("--rate", type=float, default=500.0, help="latency: offered records/s (open loop)")
    p.add_argument("--latency-linger-ms", type=int, default=0,
                   help="latency: linger.ms of the paced producer (default 0: send at once)")
    p.add_argument("--warmup-s", type=float, default=2.0,
                   help="latency: seconds sent first and not counted; throughput: seconds produced "
                        "to the topic before the measured run")
    p.add_argument("--duration-s", type=float, default=10.0, help="latency: measured seconds")
    p.add_argument("--raft-entries", type=int, default=50_000, help="raft: committed entries per run")
    p.add_argument("--failover-trials", type=int, default=20, help="failover: SIGKILLs")
    p.add_argument("--failover-rate", type=float, default=1000.0, help="failover: records/s of the stream")
    p.add_argument("--idle-settle-s", type=float, default=5.0,
                   help="partitions: seconds after every partition took a write before the idle window")
    p.add_argument("--idle-s", type=float, default=30.0, help="partitions: the idle window, seconds")
    p.add_argument("--security-protocol", default="PLAINTEXT", choices=("PLAINTEXT", *bench_security.SECURED_PROTOCOLS),
                   help="also measure every throughput/latency run over a listener of this protocol, "
                        "alternating with PLAINTEXT (own cluster only)")
    p.add_argument("--sasl-mechanism", default="SCRAM-SHA-512", choices=("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                   help="with --security-protocol SASL_SSL")
    p.add_argument("--repeat", type=int, default=3, help="runs of each mode; the report gives each and the median")
    p.add_argument("--metrics", help="node mode against --bootstrap: HOST:PORT[,...] of chronik-trio /metrics")
    p.add_argument("--json", type=pathlib.Path, help="also write the report as JSON here")
    p.add_argument("--plot", type=pathlib.Path, help="write a latency-over-time PNG here (latency mode)")


def _modes(args) -> list[str]:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise SystemExit(f"chronik-trio bench: unknown mode(s) {unknown}; choose from {','.join(MODES)}")
    return modes


def _needs_broker(modes: list[str]) -> bool:
    return any(m in ("throughput", "latency", "consume", "failover", "partitions") for m in modes)


def _consumer_config(args) -> dict[str, str]:
    return _topic_configs(getattr(args, "consumer_config", None) or [], "--consumer-config")


def _topic_configs(items: list[str], flag: str = "--topic-config") -> dict[str, str]:
    configs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"chronik-trio bench: {flag} {item!r} is not KEY=VALUE")
        configs[key.strip()] = value.strip()
    return configs


def _create_topic(bootstrap: str, args, replication_factor: int) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"bench-{uuid.uuid4().hex[:8]}"
    # must outlive the future
    admin = AdminClient({**(getattr(args, "client_config", None) or {}), "bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, args.partitions, replication_factor,
                                  config=_topic_configs(args.topic_config))],
                        request_timeout=TOPIC_CREATE_TIMEOUT_S)[topic].result(timeout=TOPIC_CREATE_TIMEOUT_S)
    return topic


def _set_broker_configs(bootstrap: str, configs: dict[str, str], nodes: int) -> None:
    """Set on each of the tool's nodes (ids 1..nodes: librdkafka refuses the cluster-wide
    default's empty broker name)."""
    from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource(ResourceType.BROKER, str(n), incremental_configs=[
        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()])
        for n in range(1, nodes + 1)]
    for future in admin.incremental_alter_configs(resources).values():
        future.result(timeout=TOPIC_CREATE_TIMEOUT_S)


# --- the modes ----------------------------------------------------------------------------------

def _throughput_run(bootstrap: str, args, rf: int) -> dict:
    topic = _create_topic(bootstrap, args, rf)
    warmed = None
    if args.warmup_s > 0:
        warmed = bench_kafka.produce_parallel(bootstrap, topic, args, seconds=args.warmup_s)
    produced = bench_kafka.produce_parallel(bootstrap, topic, args)
    expected = produced["acked"] + (warmed["acked"] if warmed else 0)
    consumed = bench_kafka.consume(bootstrap, topic, args.partitions, expected, getattr(args, "client_config", None),
                                   _consumer_config(args))
    return {"topic": topic, "warmup_records": warmed["acked"] if warmed else 0,
            "produce": produced, "consume": consumed}


def _txn_throughput_run(bootstrap: str, args, rf: int) -> dict:
    topic = _create_topic(bootstrap, args, rf)
    produced = bench_kafka.produce_transactional(bootstrap, topic, args)
    consumed = bench_kafka.consume(bootstrap, topic, args.partitions, produced["records"],
                                   {**(getattr(args, "client_config", None) or {}), "isolation.level": "read_committed"},
                                   _consumer_config(args))
    return {"topic": topic, "produce": produced, "consume": consumed}


def _latency_run(bootstrap: str, args, rf: int) -> dict:
    topic = _create_topic(bootstrap, args, rf)
    paced = argparse.Namespace(**{**vars(args), "linger_ms": args.latency_linger_ms})
    result = bench_kafka.open_loop(bootstrap, topic, paced, args.rate, args.warmup_s,
                                   args.duration_s, end_to_end=True)
    result["topic"] = topic
    return result


def _consume_runs(bootstrap: str, args, rf: int) -> dict:
    """Fill one topic, then read all of it --repeat times, one consumer after the other."""
    topic = _create_topic(bootstrap, args, rf)
    produced = bench_kafka.produce_parallel(bootstrap, topic, args)
    config = getattr(args, "client_config", None)
    readers = {"confluent-kafka": lambda: bench_kafka.consume(bootstrap, topic, args.partitions, produced["acked"],
                                                              config, _consumer_config(args),
                                                              getattr(args, "count_fetch_backoffs", False)),
               "franz-go": lambda: bench_kafka.consume_franz_go(bootstrap, topic, args.partitions, produced["acked"])}
    clients = _consume_clients(args)
    by_client: dict[str, list] = {c: [] for c in clients}
    for _ in range(args.repeat):
        for client in clients:  # alternating, so each client sees the same load over the runs
            by_client[client].append(readers[client]())
    runs = by_client[clients[0]]
    return {"topic": topic, "records": produced["acked"], "runs": runs, "client": clients[0],
            "median_records_per_s": _median(r["records_per_s"] for r in runs),
            "median_mb_per_s": _median(r["mb_per_s"] for r in runs),
            "clients": {c: {"runs": rs, "median_mb_per_s": _median(r["mb_per_s"] for r in rs)}
                        for c, rs in by_client.items()}}


CONSUME_CLIENTS = ("confluent-kafka", "franz-go")


def _consume_clients(args) -> list[str]:
    clients = [c.strip() for c in getattr(args, "consume_clients", "confluent-kafka").split(",") if c.strip()]
    unknown = [c for c in clients if c not in CONSUME_CLIENTS]
    if unknown or not clients:
        raise SystemExit(f"chronik-trio bench: --consume-clients {unknown or clients} not among {', '.join(CONSUME_CLIENTS)}")
    return clients


def _raft_runs(args) -> dict:
    out = {}
    for entry_bytes in sorted({100, args.record_bytes}):
        runs = [raft_bench.run(entry_bytes, args.raft_entries, time.perf_counter) for _ in range(args.repeat)]
        out[f"{entry_bytes}B"] = {
            "runs": [{"entries": r.entries, "elapsed_s": round(r.elapsed_s, 3),
                      "entries_per_s": round(r.entries_per_s)} for r in runs],
            "median_entries_per_s": round(statistics.median(r.entries_per_s for r in runs)),
            "median_mb_per_s": round(statistics.median(r.entries_per_s for r in runs) * entry_bytes / 1e6, 1)}
    return out


class _NodeWatch:
    """Scrapes every node before and after the broker modes; CPU and RSS of own processes."""

    HISTOGRAMS = {"ready_pass": "chronik_ready_pass_seconds", "fsync_round": "chronik_fsync_round_seconds",
                  # a transaction's coordinator (--transactional): EndTxn -> answer, EndTxn ->
                  # markers durable, EndTxn -> Complete record committed
                  "txn_end_txn": "chronik_txn_end_txn_seconds", "txn_markers": "chronik_txn_markers_seconds",
                  "txn_completion": "chronik_txn_completion_seconds"}

    RSS_SAMPLE_INTERVAL_S = 10.0  # for memory flatness over a long run

    def __init__(self, addresses: list[str], pids: list[int]) -> None:
        self.addresses, self.pids = addresses, pids
        self.before = [self._scrape(a) for a in addresses]
        self.cpu_before = [bench_local.cpu_seconds(p) for p in pids]
        self.rss_before = [bench_local.rss_bytes(p) for p in pids]
        self.started = time.monotonic()
        self.rss_series: list[list] = [[] for _ in pids]  # (seconds since start, MB)
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)
        self._sampler.start()

    def _sample_rss(self) -> None:
        while not self._stop.wait(self.RSS_SAMPLE_INTERVAL_S):
            t = round(time.monotonic() - self.started, 1)
            for k, pid in enumerate(self.pids):
                try:
                    self.rss_series[k].append((t, round(bench_local.rss_bytes(pid) / 1e6, 1)))
                except OSError:
                    pass

    @staticmethod
    def _scrape(address: str) -> dict:
        try:
            text = bench_local.scrape(address)
        except OSError as exc:
            return {"error": str(exc)}
        return {**bench_local.histograms(text), "cleaner": bench_local.cleaner_counters(text),
                "sent": bench_local.transport_sent(text)}

    def report(self) -> list[dict]:
        self._stop.set()
        self._sampler.join()
        elapsed = max(time.monotonic() - self.started, 1e-3)
        out = []
        for k, address in enumerate(self.addresses):
            after, before = self._scrape(address), self.before[k]
            node = {"metrics": address}
            if "error" in after or "error" in before:
                node["error"] = after.get("error") or before.get("error")
            else:
                for key, name in self.HISTOGRAMS.items():
                    if name in after:
                        node[key] = bench_local.histogram_delta(before.get(name), after[name])
                node["sent_messages"] = int(after["sent"]["messages"] - before["sent"]["messages"])
                node["sent_batches"] = int(after["sent"]["batches"] - before["sent"]["batches"])
                cleaned = {k: v - before["cleaner"].get(k, 0.0) for k, v in after["cleaner"].items()}
                if cleaned.get("chronik_cleaner_passes"):
                    busy = cleaned["chronik_cleaner_busy_seconds"]
                    read_mb = cleaned["chronik_cleaner_read_bytes"] / 1e6
                    cleaned_mb = cleaned.get("chronik_cleaner_cleaned_bytes", 0.0) / 1e6
                    node["cleaner"] = {
                        "passes": int(cleaned["chronik_cleaner_passes"]), "read_mb": round(read_mb, 2),
                        "cleaned_mb": round(cleaned_mb, 2),
                        "cleaned_mb_per_busy_s": round(cleaned_mb / busy, 1) if busy else None,
                        "written_mb": round(cleaned["chronik_cleaner_written_bytes"] / 1e6, 2),
                        "records_removed": int(cleaned["chronik_cleaner_records_removed"]),
                        "busy_s": round(busy, 2),
                        "read_mb_per_busy_s": round(read_mb / busy, 1) if busy else None}
            if k < len(self.pids):
                pid = self.pids[k]
                node["cpu_percent_of_a_core"] = round(
                    (bench_local.cpu_seconds(pid) - self.cpu_before[k]) / elapsed * 100, 1)
                node["rss_mb_before"] = round(self.rss_before[k] / 1e6, 1)
                node["rss_mb_after"] = round(bench_local.rss_bytes(pid) / 1e6, 1)
                node["rss_mb_series"] = self.rss_series[k]  # every RSS_SAMPLE_INTERVAL_S
            out.append(node)
        return out


# --- the report -----------------------------------------------------------------------------------

def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _methods(args, target: str, rf: int) -> dict:
    common = (f"confluent-kafka {_client_version()} (librdkafka); {args.record_bytes}-byte random records "
              f"(compression {args.compression}); topic of {args.partitions} partitions, replication "
              f"factor {rf}, fresh for every run"
              + "".join(f", {k}={v}" for k, v in _topic_configs(args.topic_config).items())
              + f"; acks={args.acks}; idempotence off; target: {target}")
    return {
        "throughput": (f"{common}. Produce: {args.producers} producer process(es), each producing its share of "
                       f"{args.records} records round-robin over the partitions as fast as librdkafka takes "
                       f"them, linger.ms={args.linger_ms}, batch.size={args.batch_bytes}, after "
                       f"{args.warmup_s} s of warm-up produce to the same topic; throughput = acknowledged "
                       f"records / time from the first produce() to the last flush() returning; delivery "
                       f"latency = librdkafka's produce()-to-report time at full speed (closed loop, so it "
                       f"includes client queueing). Consume: one consumer, assign() from offset 0, until "
                       f"every acknowledged record (warm-up included) is read "
                       f"({bench_kafka.consumer_config_text(_consumer_config(args))})."
                       + (f" Transactional (--transactional), alternating with each plain run: the same "
                          f"{args.producers} producer process(es), each a confluent-kafka producer with its own "
                          f"transactional.id (idempotence on, acks=all, the same linger, batch size, record size "
                          f"and partitions, no warm-up), producing its share of {args.records} records in "
                          f"transactions of {args.txn_records}, each flush()ed then committed; throughput = "
                          f"records / time from the first produce() to the last commit; first ack = a "
                          f"transaction's first produce() to its first record acknowledged (AddPartitionsToTxn, "
                          f"which waits for the previous transaction's markers, then the Produce); flush = first "
                          f"produce() to every record acknowledged; commit = commit_transaction() after the "
                          f"flush: EndTxn to its answer, given once the PrepareCommit record is durable (the "
                          f"markers and the Complete record follow); consume with "
                          f"isolation.level=read_committed." if args.transactional else "")),
        "latency": (f"{common}. Open loop: one producer, linger.ms={args.latency_linger_ms}, record i due "
                    f"at t0 + i/{args.rate:g} s whatever the broker does; {args.warmup_s} s warm-up not "
                    f"counted, then {args.duration_s} s measured; produce latency = (time the sender loop "
                    f"was late for the record) + librdkafka's produce()-to-acknowledgement time; "
                    f"end-to-end = wall time the record was due -> consumed by a consumer (same process, "
                    f"other thread, fetch.wait.max.ms={bench_kafka.E2E_FETCH_WAIT_MS}, a long poll the broker answers "
                    f"when a record commits) reading the partitions from their end."),
        "consume": (f"{common}. One topic filled once with {args.records} records ({args.producers} producer "
                    f"process(es), linger.ms={args.linger_ms}), then {args.repeat} consumers of each of "
                    f"{', '.join(_consume_clients(args))} (alternating), one after the "
                    f"other, each assign() from offset 0 until it has read every acknowledged record "
                    f"(confluent-kafka: {bench_kafka.consumer_config_text(_consumer_config(args))}; franz-go, "
                    f"its own process, partitions assigned: the same fetch.max.bytes and max.partition.fetch.bytes); "
                    f"rate = records (bytes of values) / time from the consumer's start to its last record."),
        "raft": (f"raft/bench.py: three RawNodes with MemoryStorage in this process, Ready handled "
                 f"synchronously, up to 512 proposals in flight; committed entries per second at the "
                 f"leader, {args.raft_entries} entries per run; the cost of the Raft logic alone, no "
                 f"disk or network."),
        "partitions": bench_partitions.describe(args.partitions, args.idle_settle_s, args.idle_s),
        "failover": (f"{args.failover_trials} trials on the tool's 3-node cluster, each on a fresh topic of 3 "
                     f"partitions (replication factor 3): a producer (acks=all, linger.ms 5, librdkafka's "
                     f"default retries and metadata refresh, idempotence off) sends {args.record_bytes}-byte "
                     f"records paced at {args.failover_rate:g}/s round-robin; after 1 s the node leading "
                     f"partition 0 is SIGKILLed; failover = SIGKILL to the first acknowledgement of a "
                     f"partition-0 record produced after the kill (election, __meta update and the "
                     f"client's metadata refresh and retry included); the node is restarted between trials."),
        "node": ("chronik_ready_pass_seconds and chronik_fsync_round_seconds histograms scraped from each "
                 "node's /metrics before and after the broker modes: count, mean, and percentiles as "
                 "bucket upper bounds (with --transactional also the coordinator's chronik_txn_end_txn_seconds: "
                 "EndTxn received -> answered, chronik_txn_markers_seconds: EndTxn received -> every "
                 "marker durable, chronik_txn_completion_seconds: EndTxn received -> CompleteCommit committed); CPU = process user+system time over the same window / wall time; "
                 "RSS from /proc (VmRSS), also sampled every 10 s during the run; the log cleaner's "
                 "counters over the same window (cleaner rate = bytes of log the cleaning passes went over / "
                 "time inside those passes, in the worker thread, while produce continues; each pass reads "
                 "those bytes twice, so MB read is about twice MB cleaned); Raft messages and RaftBatch "
                 "frames the node's transport wrote to its peers over the window (liveness messages "
                 "included)."),
    }


def _client_version() -> str:
    try:
        import confluent_kafka
        version = confluent_kafka.version()
        return version if isinstance(version, str) else version[0]
    except ImportError:
        return "(not installed)"


def _load() -> list[float]:
    try:
        return [float(x) for x in pathlib.Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _summary(results: dict) -> dict:
    s = _mode_summary(results, "")
    if "throughput_secured" in results or "latency_secured" in results:
        secured = _mode_summary({m: results[f"{m}_secured"] for m in ("throughput", "latency")
                                 if f"{m}_secured" in results}, "secured_")
        s.update(secured)
        if "produce_records_per_s" in s and s.get("secured_produce_records_per_s") is not None:
            s["secured_produce_fraction_of_plaintext"] = round(
                s["secured_produce_records_per_s"] / s["produce_records_per_s"], 3)
            s["secured_consume_fraction_of_plaintext"] = round(
                s["secured_consume_records_per_s"] / s["consume_records_per_s"], 3)
        for q in ("p50", "p99"):
            plain, sec = s.get(f"produce_latency_{q}_ms"), s.get(f"secured_produce_latency_{q}_ms")
            if plain is not None and sec is not None:
                s[f"secured_extra_produce_latency_{q}_ms"] = round(sec - plain, 3)
    if "throughput_txn" in results:
        runs = results["throughput_txn"]
        s["txn_produce_records_per_s"] = _median(r["produce"]["records_per_s"] for r in runs)
        s["txn_consume_records_per_s"] = _median(r["consume"]["records_per_s"] for r in runs)
        s["txn_commit_p50_ms"] = _median(r["produce"]["commit_latency_ms"]["p50"] for r in runs)
        s["txn_commit_p99_ms"] = _median(r["produce"]["commit_latency_ms"]["p99"] for r in runs)
        s["txn_first_ack_p50_ms"] = _median(r["produce"]["first_ack_latency_ms"]["p50"] for r in runs)
        s["txn_flush_p50_ms"] = _median(r["produce"]["flush_latency_ms"]["p50"] for r in runs)
        if s.get("produce_records_per_s"):
            s["txn_produce_fraction_of_plain"] = round(s["txn_produce_records_per_s"] / s["produce_records_per_s"], 3)
    if "raft" in results:
        for size, r in results["raft"].items():
            s[f"raft_{size}_entries_per_s"] = r["median_entries_per_s"]
    if "consume" in results:
        s["consume_only_records_per_s"] = results["consume"]["median_records_per_s"]
        s["consume_only_mb_per_s"] = results["consume"]["median_mb_per_s"]
    if "failover" in results:
        f = results["failover"]
        s.update(failover_median_s=f["median_s"], failover_max_s=f["max_s"],
                 failover_trials=len(f["trials"]), failover_failed_over=f["failed_over"])
    return s


def _mode_summary(results: dict, prefix: str) -> dict:
    s: dict = {}
    if "throughput" in results:
        runs = results["throughput"]
        s["produce_records_per_s"] = _median(r["produce"]["records_per_s"] for r in runs)
        s["produce_mb_per_s"] = _median(r["produce"]["mb_per_s"] for r in runs)
        s["consume_records_per_s"] = _median(r["consume"]["records_per_s"] for r in runs)
        s["consume_mb_per_s"] = _median(r["consume"]["mb_per_s"] for r in runs)
    if "latency" in results:
        runs = results["latency"]
        for kind in ("produce_latency_ms", "end_to_end_latency_ms"):
            for q in ("p50", "p90", "p99", "p99_9", "max"):
                s[f"{kind[:-3]}_{q}_ms"] = _median(r.get(kind, {}).get(q) for r in runs)
    return {prefix + k: v for k, v in s.items()}


def run(args: argparse.Namespace) -> int:
    modes = _modes(args)
    secured = args.security_protocol != "PLAINTEXT"
    if secured and args.bootstrap:
        raise SystemExit("chronik-trio bench: --security-protocol needs the tool's own cluster (--cluster), "
                         "whose nodes it gives a secured listener")
    for mode in ("failover", "partitions"):
        if mode in modes and args.cluster != 3:
            raise SystemExit(f"chronik-trio bench: --modes {mode} needs --cluster 3 (it kills nodes)")
    if _needs_broker(modes):
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:
            print("chronik-trio bench needs confluent-kafka: pip install 'chronik-trio[bench]'", file=sys.stderr)
            return 2
    load_before = _load()
    results: dict = {}
    with contextlib.ExitStack() as stack:
        cluster = None
        if args.bootstrap:
            bootstrap, target, rf = args.bootstrap, f"broker at {args.bootstrap}", args.replication_factor or 1
            metrics = [a for a in (args.metrics or "").split(",") if a]
        elif _needs_broker(modes) or "node" in modes:
            size = args.cluster or 1
            cluster = stack.enter_context(bench_local.local_cluster(
                size, security_protocol=args.security_protocol, sasl_mechanism=args.sasl_mechanism))
            bootstrap, metrics, rf = cluster.bootstrap, cluster.metrics_addresses, args.replication_factor or size
            target = (f"{size} local chronik-trio node process(es) started by the tool on 127.0.0.1 "
                      f"(every acknowledged write fsynced)")
            if "node" not in modes and any(m in modes for m in ("throughput", "latency", "consume")):
                modes.append("node")
        else:
            bootstrap, target, rf, metrics = "", "none (in-process)", 1, []
        if cluster is not None and args.broker_config:
            _set_broker_configs(bootstrap, _topic_configs(args.broker_config, "--broker-config"), args.cluster or 1)
        watch = _NodeWatch(metrics, cluster.pids if cluster else []) if "node" in modes and metrics else None
        # Over PLAINTEXT and, with --security-protocol, over the secured listener, alternately.
        targets = [("", bootstrap, args)]
        if secured and cluster is not None and cluster.secured is not None:
            secured_args = argparse.Namespace(**vars(args), client_config=cluster.secured.client_config)
            targets.append(("_secured", cluster.secured.bootstrap, secured_args))
            target += f"; and over each node's {args.security_protocol} listener" + (
                f" (SASL {args.sasl_mechanism})" if args.security_protocol == "SASL_SSL" else "")
        for mode, one_run in (("throughput", _throughput_run), ("latency", _latency_run)):
            if mode in modes:
                for suffix, _, _ in targets:
                    results[mode + suffix] = []
                if mode == "throughput" and args.transactional:
                    results["throughput_txn"] = []
                for _ in range(args.repeat):
                    for suffix, address, run_args in targets:
                        results[mode + suffix].append(one_run(address, run_args, rf))
                    if mode == "throughput" and args.transactional:
                        results["throughput_txn"].append(_txn_throughput_run(bootstrap, args, rf))
        if "consume" in modes:
            results["consume"] = _consume_runs(bootstrap, args, rf)
        if watch is not None:
            results["node"] = watch.report()
        if "partitions" in modes:  # last: it leaves a node killed
            results["partitions"] = bench_partitions.run(cluster, args.partitions, args.idle_settle_s, args.idle_s,
                                                         args.record_bytes)
        if "failover" in modes:
            results["failover"] = bench_failover.failover_trials(cluster, args.failover_trials,
                                                                 args.failover_rate, args.record_bytes)
    if "raft" in modes:
        results["raft"] = _raft_runs(args)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "load_average": {"before": load_before, "after": _load()},
              "modes": modes, "target": target,
              "method": {m: t for m, t in _methods(args, target, rf).items() if m in modes},
              "results": results, "summary": _summary(results)}
    _print(report)
    if args.plot and "latency" in results:
        _plot(results["latency"], args.plot, report)
    if args.json:
        slim = json.loads(json.dumps(report))
        for r in slim["results"].get("latency", []) + slim["results"].get("latency_secured", []):  # for the plot
            r.pop("series", None)
            r.pop("e2e_series", None)
        args.json.write_text(json.dumps(slim, indent=2) + "\n")
    return 1 if _failed(results) else 0


def _failed(results: dict) -> bool:
    if "partitions" in results:
        r = results["partitions"]
        if r["not_writable"] or r.get("failover", {}).get("not_written"):
            return True
    for r in results.get("throughput", []) + results.get("throughput_secured", []) + results.get("throughput_txn", []):
        if r["produce"]["errors"] or r["produce"]["unflushed"]:
            return True
    if "failover" in results and results["failover"]["failed_over"] < len(results["failover"]["trials"]):
        return True
    return any(r["errors"] or r["unflushed"] for r in results.get("latency", []) + results.get("latency_secured", []))


def _print(report: dict) -> None:
    print(f"chronik-trio bench, {report['date']}, load average {report['load_average']['before']} -> "
          f"{report['load_average']['after']}; target: {report['target']}")
    for mode, text in report["method"].items():
        print(f"  [{mode}] {text}")
    res = report["results"]
    _print_broker_modes(report, res, "", "")
    if "throughput_secured" in res or "latency_secured" in res:
        print("over the secured listener:")
        _print_broker_modes(report, {m: res[f"{m}_secured"] for m in ("throughput", "latency")
                                     if f"{m}_secured" in res}, "secured_", "secured ")
        m = report["summary"]
        print("secured/plaintext: " + ", ".join(f"{k.removeprefix('secured_')} {v}" for k, v in m.items()
                                                 if k.startswith(("secured_produce_fraction", "secured_consume_fraction",
                                                                  "secured_extra"))))
    if "throughput_txn" in res:
        print(f"transactional, {res['throughput_txn'][0]['produce']['txn_records']} records per transaction:")
        print(f"{'run':>4} {'producers':>9} {'produce rec/s':>14} {'MB/s':>7} {'txns':>6} {'1st ack p50':>11} "
              f"{'flush p50':>10} {'commit p50':>11} {'commit p99':>11} {'consume rec/s':>14} {'errors':>7}")
        for i, r in enumerate(res["throughput_txn"], 1):
            p, c = r["produce"], r["consume"]
            print(f"{i:>4} {p['producers']:>9} {p['records_per_s']:>14,} {p['mb_per_s']:>7} {p['transactions']:>6} "
                  f"{p['first_ack_latency_ms']['p50']!s:>11} {p['flush_latency_ms']['p50']!s:>10} "
                  f"{p['commit_latency_ms']['p50']!s:>11} {p['commit_latency_ms']['p99']!s:>11} "
                  f"{c['records_per_s']:>14,} {p['errors']:>7}")
        m = report["summary"]
        print(f"transactional median: produce {m['txn_produce_records_per_s']:,} rec/s "
              f"({m.get('txn_produce_fraction_of_plain')} of plain); commit p50 {m['txn_commit_p50_ms']} ms, "
              f"p99 {m['txn_commit_p99_ms']} ms")
    _print_other_modes(res)
    if "partitions" in res:
        bench_partitions.print_report(res["partitions"])


def _print_broker_modes(report: dict, res: dict, prefix: str, label: str) -> None:
    if "throughput" in res:
        print(f"{'run':>4} {'produce rec/s':>14} {'MB/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'consume rec/s':>14} {'MB/s':>7} {'errors':>7}")
        for i, r in enumerate(res["throughput"], 1):
            p, c, lat = r["produce"], r["consume"], r["produce"]["delivery_latency_ms"]
            print(f"{i:>4} {p['records_per_s']:>14,} {p['mb_per_s']:>7} {lat['p50']:>8} {lat['p99']:>8} "
                  f"{lat['max']:>8} {c['records_per_s']:>14,} {c['mb_per_s']:>7} {p['errors'] + p['unflushed']:>7}")
        m = {k.removeprefix(prefix): v for k, v in report["summary"].items() if k.startswith(prefix)}
        print(f"{label}median: produce {m['produce_records_per_s']:,} rec/s {m['produce_mb_per_s']} MB/s; "
              f"consume {m['consume_records_per_s']:,} rec/s {m['consume_mb_per_s']} MB/s")
    if "latency" in res:
        print(f"{'run':>4} {'rate/s':>8} {'what':>10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
              f"{'p99.9 ms':>9} {'max ms':>8} {'n':>7}")
        for i, r in enumerate(res["latency"], 1):
            for what, key in (("produce", "produce_latency_ms"), ("end-to-end", "end_to_end_latency_ms")):
                q = r.get(key)
                if q:
                    print(f"{i:>4} {r['offered_rate_per_s']:>8g} {what:>10} {q['p50']!s:>8} {q['p90']!s:>8} "
                          f"{q['p99']!s:>8} {q['p99_9']!s:>9} {q['max']!s:>8} {q['count']:>7}")


def _print_other_modes(res: dict) -> None:
    if "consume" in res:
        c = res["consume"]
        for client, cr in c.get("clients", {c.get("client", "confluent-kafka"): c}).items():
            print(f"consume ({c['records']:,} records, {client}): median "
                  f"{_median(r['records_per_s'] for r in cr['runs']):,} rec/s {cr['median_mb_per_s']} MB/s; per run: "
                  + ", ".join(f"{r['mb_per_s']} MB/s ({r['records']:,} in {r['elapsed_s']} s"
                              + (f"; {r['queue_full_backoffs']} queue-full backoffs, {r['queue_full_backoff_ms']} ms"
                                 if "queue_full_backoffs" in r else "") + ")" for r in cr["runs"]))
    if "raft" in res:
        for size, r in res["raft"].items():
            print(f"raft core, {size} entries: {r['median_entries_per_s']:,} committed entries/s "
                  f"({r['median_mb_per_s']} MB/s), median of {len(r['runs'])}")
    if "failover" in res:
        f = res["failover"]
        print(f"failover: {f['failed_over']} of {len(f['trials'])} trials failed over; median {f['median_s']} s, "
              f"max {f['max_s']} s, min {f['min_s']} s; per trial: "
              f"{', '.join(str(t['failover_s']) for t in f['trials'])}")
    for node in res.get("node", []):
        parts = [f"node {node['metrics']}:"]
        for key in ("ready_pass", "fsync_round", "txn_end_txn", "txn_markers", "txn_completion"):
            h = node.get(key)
            if h and h["count"]:
                parts.append(f"{key} n={h['count']} mean {h['mean_ms']} ms p50<={h['p50_ms_at_most']} "
                             f"p99<={h['p99_ms_at_most']} ms;")
        if "sent_messages" in node:
            parts.append(f"sent {node['sent_messages']} Raft messages in {node['sent_batches']} batches;")
        if "cpu_percent_of_a_core" in node:
            parts.append(f"CPU {node['cpu_percent_of_a_core']} % of a core; RSS {node['rss_mb_before']} -> "
                         f"{node['rss_mb_after']} MB")
        if "cleaner" in node:
            c = node["cleaner"]
            parts.append(f"cleaner: {c['passes']} pass(es), {c['cleaned_mb']} MB cleaned ({c['read_mb']} MB read), "
                         f"{c['written_mb']} MB written, {c['records_removed']} records removed, {c['busy_s']} s "
                         f"busy: {c['cleaned_mb_per_busy_s']} MB/s cleaned")
        if "error" in node:
            parts.append(f"scrape failed: {node['error']}")
        print(" ".join(parts))


def _plot(runs: list[dict], path: pathlib.Path, report: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    offset = 0.0
    for i, r in enumerate(runs):
        for key, label, marker in (("series", "produce (due -> ack)", "."), ("e2e_series", "end to end", "x")):
            pts = r.get(key) or []
            if pts:
                ax.scatter([offset + t for t, _ in pts], [ms for _, ms in pts], s=2, marker=marker,
                           label=label if i == 0 else None, alpha=0.5)
        offset += r["warmup_s"] + r["duration_s"]
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the first record was due (runs back to back)")
    ax.set_ylabel("latency, ms (log)")
    ax.set_title(f"open loop at {runs[0]['offered_rate_per_s']:g} records/s; {report['target'][:80]}",
                 fontsize=8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
