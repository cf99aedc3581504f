"""One chaos run, start to verdict: cluster, topics, workload + nemesis, heal, final reads,
replica logs, checks, report.

The run directory holds scenario.yaml (as run, with the seed), nodes/ (data dirs and one
log per node), clients.log, history.jsonl, report.md and timeline.png.
"""

from __future__ import annotations

import functools
import logging
import pathlib
import random
import shutil
import sys
import threading
import time

import attrs
import trio

from . import checker, nemesis as nemesis_mod, report, workload
from .apache_kafka import ApacheKafkaCluster
from .cluster import Cluster, ClusterError
from .history import History, read_history
from .scenario import Scenario

log = logging.getLogger(__name__)

TOPIC_CREATE_TIMEOUT_S = 60.0
WORKLOAD_STOP_TIMEOUT_S = 90.0
PROGRESS_INTERVAL_S = 0.5
PROGRESS_LINE_INTERVAL_S = 10.0  # when stderr is not a terminal
LSO_SAMPLE_INTERVAL_S = 0.5  # transactional runs: each replica's last stable offset, this often
LSO_SAMPLE_TIMEOUT_S = 2.0


@attrs.frozen
class RunResult:
    run_dir: pathlib.Path
    passed: bool
    verdict_line: str
    results: tuple[checker.CheckResult, ...]


async def create_topics(bootstrap: str, scenario: Scenario, logger: logging.Logger) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": logger})
    deadline = time.monotonic() + TOPIC_CREATE_TIMEOUT_S
    pending = {t.name: t for t in scenario.topics}
    errors: dict[str, str] = {}
    while pending:
        if time.monotonic() > deadline:
            raise ClusterError(f"could not create topics {sorted(pending)}: {errors}")
        futures = admin.create_topics([NewTopic(t.name, t.partitions, t.replication_factor,
                                                config=dict(t.configs))
                                       for t in pending.values()], request_timeout=30)
        for name, future in futures.items():
            try:
                await trio.to_thread.run_sync(future.result, 35)
                del pending[name]
            except Exception as exc:  # a KafkaException or a timeout: retried until the deadline
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    del pending[name]
                else:
                    errors[name] = str(exc)
        if pending:
            await trio.sleep(1.0)


class Progress:
    """One status line: elapsed/duration bar, acked/failed sends, the fault being held."""

    def __init__(self, history: History, duration_s: float, nemesis, stream=sys.stderr,
                 enabled: bool = True) -> None:
        self.history, self.duration_s, self.nemesis = history, duration_s, nemesis
        self.stream = stream
        self.enabled = enabled
        self.tty = enabled and stream.isatty()
        self.phase = "workload"

    def line(self, t0: float) -> str:
        elapsed = max(0.0, self.history.now() - t0)
        frac = min(1.0, elapsed / self.duration_s)
        bar = "#" * int(frac * 30) + "-" * (30 - int(frac * 30))
        fault = self.nemesis.active or "-"
        return (f"[{bar}] {elapsed:5.0f}/{self.duration_s:.0f} s  acked {self.history.acked}  "
                f"not acked {self.history.failed}  fault {fault}  ({self.phase})")

    async def run(self, t0: float) -> None:
        if not self.enabled:
            return
        last_line = 0.0
        while True:
            text = self.line(t0)
            if self.tty:
                self.stream.write("\r" + text[:150].ljust(150))
                self.stream.flush()
            elif time.monotonic() - last_line >= PROGRESS_LINE_INTERVAL_S:
                self.stream.write(text + "\n")
                self.stream.flush()
                last_line = time.monotonic()
            await trio.sleep(PROGRESS_INTERVAL_S)

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


async def _workload_and_nemesis(scenario: Scenario, cluster: Cluster, history: History,
                                nem: nemesis_mod.Nemesis, planned, logger, progress: Progress,
                                target: workload.Target, consumer_stop: threading.Event) -> list:
    """Producers, consumers and the nemesis for duration_s; heal; final reads; consumers drain.
    Returns the notes of the final heal."""
    topics = [(t.name, t.partitions) for t in scenario.topics]
    spec = scenario.workload
    sources = [t for t in topics if t[0] != spec.copy_to]  # what producers write
    stop = threading.Event()
    copier_done = threading.Event()
    bootstrap = cluster.bootstrap_servers
    t0 = history.now()
    history.record({"type": "workload-start", "t": round(t0, 6)})
    notes: list[str] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(progress.run, t0)
            if spec.transactional and isinstance(cluster, Cluster):
                nursery.start_soon(sample_stable_offsets, cluster, history)
            async with trio.open_nursery() as producers:
                produce, consume = _client_tasks(spec.client, spec.transactional)
                for i in range(spec.producers):
                    producers.start_soon(produce, f"p{i}", bootstrap, spec, sources, history, stop, logger)
                if spec.copy_to is not None:
                    out = next(t for t in topics if t[0] == spec.copy_to)
                    nursery.start_soon(trio.to_thread.run_sync, workload.run_copier, bootstrap, spec, sources,
                                       out, history, stop, consumer_stop, copier_done, logger)
                for i in range(spec.consumers):
                    nursery.start_soon(consume, f"c{i}", bootstrap, topics, history, consumer_stop,
                                       target, logger)
                try:
                    async with trio.open_nursery() as faults:
                        faults.start_soon(nem.run, planned, t0)
                        await trio.sleep(scenario.duration_s)
                        faults.cancel_scope.cancel()
                    progress.phase = "healing"
                    notes = await nem.heal_all()
                    progress.phase = "stopping producers"
                except BaseException:
                    consumer_stop.set()  # the worker threads end only on their events
                    raise
                finally:
                    stop.set()
            if spec.copy_to is not None:  # the copier catches up before the final reads
                progress.phase = "copier catching up"
                await trio.to_thread.run_sync(copier_done.wait, spec.final_read_timeout_s)
            await _after_workload(scenario, cluster, history, logger, progress, target, nursery)
    finally:
        stop.set()
        consumer_stop.set()
    progress.done()
    return notes


async def sample_stable_offsets(cluster: Cluster, history: History) -> None:
    """Every LSO_SAMPLE_INTERVAL_S until cancelled (with the progress task, after the final
    reads): each running, unpaused node's last stable offsets from /health
    (`stable_offsets`: the replicas that have seen a transactional producer), one `lso`
    event per replica, with the node's pid so that a restart (which replays the log from
    its start) begins a new series. checker.check_lso_monotonic reads them."""
    while True:
        for n, node in list(cluster.nodes.items()):
            pid = node.pid
            if not node.running or node.paused or pid is None:
                continue
            answer = await trio.to_thread.run_sync(node.process.health, LSO_SAMPLE_TIMEOUT_S)
            t = history.now()
            for name, (lso, hw) in sorted(((answer or {}).get("stable_offsets") or {}).items()):
                topic, _, partition = name.rpartition("-")
                history.record({"type": "lso", "t": round(t, 6), "node": n, "pid": pid, "topic": topic,
                                "partition": int(partition), "lso": int(lso), "hw": int(hw)})
        await trio.sleep(LSO_SAMPLE_INTERVAL_S)


def _client_tasks(client: str, transactional: bool = False):
    """(producer task, consumer task) for a client library: the blocking ones in a worker
    thread each, aiokafka in the harness's trio run through trio-asyncio. Transactional:
    confluent-kafka transactions and read_committed consumers."""
    if client == "aiokafka":
        return workload.run_producer_aiokafka, workload.run_consumer_aiokafka
    produce, consume = {"confluent-kafka": (workload.run_producer, workload.run_consumer),
                        "kafka-python": (workload.run_producer_kafka_python,
                                         workload.run_consumer_kafka_python)}[client]
    if transactional:
        produce = workload.run_producer_txn
        consume = functools.partial(workload.run_consumer, isolation="read_committed")

    async def in_thread(fn, *args):
        await trio.to_thread.run_sync(fn, *args)
    return (lambda *args: in_thread(produce, *args)), (lambda *args: in_thread(consume, *args))


async def _after_workload(scenario, cluster, history, logger, progress, target, nursery) -> None:
    """Final reads, then the consumers drain to the high watermarks (bounded)."""
    history.record({"type": "workload-end"})
    progress.phase = "final read"
    await _final_reads(scenario, cluster, history, target, logger)
    progress.phase = "consumers draining"
    target.set.set()
    nursery.cancel_scope.deadline = trio.current_time() + scenario.workload.final_read_timeout_s + 30
    # progress.run never ends by itself; consumers end on the target (or their deadline)
    await _wait_threads_then_cancel(nursery)


async def _wait_threads_then_cancel(nursery: trio.Nursery) -> None:
    # Consumers stop themselves on the target; what is left in the nursery after that is the
    # progress task, cancelled once only it remains.
    while len(nursery.child_tasks) > 1:
        await trio.sleep(0.2)
    nursery.cancel_scope.cancel()


async def _final_reads(scenario: Scenario, cluster: Cluster, history: History,
                       target: workload.Target, logger) -> None:
    timeout_s = scenario.workload.final_read_timeout_s
    for topic in scenario.topics:
        for p in range(topic.partitions):
            try:
                high, records = await trio.to_thread.run_sync(
                    workload.final_read, cluster.bootstrap_servers, topic.name, p, timeout_s, logger,
                    history.now, "read_committed" if scenario.workload.transactional else "read_uncommitted")
            except Exception as exc:  # a timeout or any client failure: reported, lost_writes fails
                history.record({"type": "final-read-failed", "topic": topic.name, "partition": p,
                                "error": repr(exc)})
                continue
            target.high_watermarks[(topic.name, p)] = high
            history.record({"type": "final-read", "topic": topic.name, "partition": p,
                            "high_watermark": high, "records": records})
    target.deadline = time.monotonic() + timeout_s


def make_run_dir(base: pathlib.Path, scenario: Scenario) -> pathlib.Path:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_dir = base / f"{scenario.name}-seed{scenario.seed}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = base / f"{scenario.name}-seed{scenario.seed}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


async def run_scenario(scenario: Scenario, run_dir: pathlib.Path, *, progress: bool = True,
                       keep_data: bool = True, argv: list[str] | None = None) -> RunResult:
    """Run one scenario into `run_dir` and check it."""
    report.write_scenario(run_dir, scenario)
    history = History(run_dir / "history.jsonl")
    logger = workload.client_logger(run_dir / "clients.log")
    history.record({"type": "run", "scenario": scenario.name, "seed": scenario.seed,
                    "broker": scenario.cluster.broker,
                    "path": str(scenario.path), "idempotence": scenario.workload.idempotence,
                    "client": scenario.workload.client, "duration_s": scenario.duration_s})
    rng = random.Random(scenario.seed)
    planned = nemesis_mod.plan(scenario.nemesis, scenario.duration_s, rng)
    for p in planned:
        history.record({"type": "fault-planned", "at_s": p.at_s, "desc": nemesis_mod.describe(p.fault)})
    cluster_class = ApacheKafkaCluster if scenario.cluster.broker == "apache-kafka" else Cluster
    spares = {"spares": scenario.cluster.spares} if cluster_class is Cluster else {}
    cluster = cluster_class(run_dir, scenario.cluster.nodes, fault_injection=scenario.cluster.fault_injection,
                            node_args=scenario.cluster.node_args, record=history.record,
                            ready_timeout_s=scenario.cluster.ready_timeout_s, network=scenario.cluster.network,
                            peer_tls=scenario.cluster.peer_tls, **spares)
    notes: list[str] = []
    target = workload.Target()
    consumer_stop = threading.Event()
    try:
        async with trio.open_nursery() as nursery:
            try:
                await cluster.start(nursery)
                await create_topics(cluster.bootstrap_servers, scenario, logger)
                nem = nemesis_mod.Nemesis(cluster, history, rng,
                                          (scenario.topics[0].name, scenario.topics[0].partitions))
                prog = Progress(history, scenario.duration_s, nem, enabled=progress)
                notes = await _workload_and_nemesis(scenario, cluster, history, nem, planned, logger,
                                                    prog, target, consumer_stop)
            finally:
                consumer_stop.set()
                with trio.CancelScope(shield=True):
                    await cluster.stop()
                nursery.cancel_scope.cancel()
        cluster.record_replica_logs(scenario.topics, target.high_watermarks, history.record)
    finally:
        cluster.kill_all_now()
        history.close()
    events = list(read_history(run_dir / "history.jsonl"))
    results = checker.check_history(events, checker.options_for(scenario))
    passed = checker.verdict(results)
    report.write_report(run_dir, scenario, events, results, passed, notes, argv)
    report.write_timeline(run_dir, events)
    if not keep_data:
        for n in cluster.ids:
            shutil.rmtree(cluster.nodes[n].data_dir, ignore_errors=True)
    line = report.verdict_line(scenario, results, passed, run_dir)
    return RunResult(run_dir, passed, line, tuple(results))
