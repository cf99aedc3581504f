"""One simulated run per seed: `run_seed` builds the world from one random.Random(seed),
runs it in trio.run under MockClock(autojump_threshold=0) with trio's deterministic
scheduling on, checks the history with chaos/checker.py, and returns the history's hash.

Determinism: every choice comes from the seed (the nemesis plan and choices, the network's
latencies, the disks, the clients, each node's rng, Node's seam), trio's run
queue is ordered by task creation and shuffled by a generator seeded from the seed (the hook
trio keeps for Hypothesis: `trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING` and `_r`), and
the history's times are virtual. String hashing must be fixed too (iteration order of sets):
the CLI re-runs itself with PYTHONHASHSEED=0 when it is not set.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import pathlib
import random
import shutil
import tempfile
import time

import attrs
import trio
import trio._core._run as trio_run
import trio.testing

from .. import checker, nemesis as nemesis_mod
from ..history import History, read_history
from ..replica_log import record_replica_logs
from ..scenario import Scenario
from . import client as sim_client
from .net import SimNetwork
from .world import SimCluster

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
HEAL_SETTLE_S = 10.0
LIVENESS_BOUND_S = 30.0  # after the last heal, every partition takes a write within this
# After the last heal, each consumer group settles within this: every member in one
# generation, their shares disjoint and covering every partition, for GROUP_STABLE_S.
# (A dead coordinator is noticed in a request timeout, a member a session timeout (10 s) later
# at most, and a rebalance waits up to the rebalance timeout (10 s) for the members.)
GROUP_SETTLE_BOUND_S = 40.0
GROUP_STABLE_S = 3.0
GROUP_ID = "chaos-sim-group"
# The cyclic garbage collector during a seed (docs/simulation.md, "Measured"): a seed
# allocates millions of short-lived objects (trio's task steps, Raft messages, HTTP/2 frames,
# records) and keeps few, and the default thresholds (700, 10, 10) collect every 700
# allocations, each time scanning much of what the imported node keeps alive. During a seed,
# what was alive before it is frozen out of the scans (gc.freeze) and the young generation
# is collected every GC_THRESHOLDS[0] allocations. Nothing of a run depends on when the
# collector runs (the same hashes with and without: the determinism test, "Measured").
GC_THRESHOLDS = (50_000, 20, 20)


@attrs.frozen
class SeedResult:
    seed: int
    passed: bool
    digest: str
    simulated_s: float
    real_s: float
    failed: tuple[str, ...]
    history: pathlib.Path
    # CPU seconds of this process for the seed (time.process_time: the run, the checker),
    # the load-independent measure of its cost (real time depends on what else runs).
    cpu_s: float = 0.0

    @property
    def per_cpu_s(self) -> float:
        """Simulated seconds per CPU second."""
        return self.simulated_s / self.cpu_s if self.cpu_s else 0.0


def history_digest(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_seed(scenario: Scenario, seed: int, out_dir: pathlib.Path, *, trace: bool = False,
             node_patch=None, keep_data: bool = False, crash_after_vote: float = 0.0) -> SeedResult:
    """Simulate `scenario` with `seed`; history.jsonl (and trace.jsonl) go to out_dir.
    crash_after_vote (simulation only): the chance that a node is killed right after it
    grants a Raft vote and restarted 50-300 ms later (world.SimCluster)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sub = {name: random.Random(rng.getrandbits(64)) for name in
           ("trio", "plan", "net", "disk", "clients", "node")}
    history_path = out_dir / "history.jsonl"
    history_path.unlink(missing_ok=True)
    root = pathlib.Path(tempfile.mkdtemp(prefix="chaos-sim-", dir=_scratch()))
    started, started_cpu = time.perf_counter(), time.process_time()
    saved_flag = trio_run._ALLOW_DETERMINISTIC_SCHEDULING
    saved_r = trio_run._r.getstate()
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True
    trio_run._r.seed(sub["trio"].getrandbits(64))
    clock = sim_clock()
    box: dict = {}
    # The nodes' log lines go to the seed's sim.log, not the terminal.
    handler = logging.FileHandler(out_dir / "sim.log", mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root_logger = logging.getLogger()
    saved_handlers, saved_level = root_logger.handlers[:], root_logger.level
    root_logger.handlers[:] = [handler]
    root_logger.setLevel(os.environ.get("CHAOS_SIM_LOG_LEVEL", "WARNING").upper())
    try:
        with _collector_tuned():
            trio.run(_main, scenario, seed, sub, root, history_path, trace, node_patch, box,
                     crash_after_vote, clock=clock)
    finally:
        root_logger.handlers[:] = saved_handlers
        root_logger.setLevel(saved_level)
        handler.close()
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag
        trio_run._r.setstate(saved_r)
        if not keep_data:
            shutil.rmtree(root, ignore_errors=True)
    real_s = time.perf_counter() - started
    events = list(read_history(history_path))
    results = checker.check_history(events, checker.options_for(scenario))
    failed = [f"{r.name}: {r.summary} {list(r.examples[:2])}" for r in results
              if not r.passed and not r.report_only]
    failed += box.get("liveness", [])
    failed += box.get("safety", [])
    digest = history_digest(history_path)
    return SeedResult(seed, not failed, digest, box.get("simulated_s", 0.0), real_s, tuple(failed),
                      history_path, time.process_time() - started_cpu)


def sim_clock() -> trio.testing.MockClock:
    """A MockClock at rate 0 with autojump (time moves only by jumps, whenever every task
    waits) that answers without reading the real clock: MockClock's current_time is
    virtual base + rate x (real clock - real base), at rate 0 the virtual base itself, and
    trio asks for it several times a scheduler pass; its autojump reads the next deadline
    directly instead of building trio's run statistics for it. The same times as a plain
    MockClock's, bit for bit. (MockClock cannot be subclassed: the instance's methods are
    replaced.)"""
    clock = trio.testing.MockClock(autojump_threshold=0)

    def current_time() -> float:
        return clock._virtual_base

    def autojump() -> None:
        jump = trio_run.GLOBAL_RUN_CONTEXT.runner.deadlines.next_deadline() - clock._virtual_base
        if 0 < jump < math.inf:
            clock.jump(jump)
    clock.current_time = current_time
    clock._autojump = autojump
    return clock


def _poll_only_when_woken() -> None:
    """Nothing in a simulation waits on a file descriptor (the network is in memory, the
    disks synchronous), yet trio's loop asks the operating system for I/O events at every
    scheduler pass (an epoll call with timeout 0: the autojumping clock never lets it
    sleep). The run's I/O manager is wrapped so that the call is skipped while no file
    descriptor but trio's own wake-up socket is registered and trio's entry queue
    (callbacks from threads and signal handlers, which that socket announces) is empty;
    otherwise it polls as trio does. (Private trio names, like the deterministic
    scheduling hook: pinned by the trio version in pyproject.)"""
    runner = trio_run.GLOBAL_RUN_CONTEXT.runner
    if hasattr(runner.io_manager, "_registered"):  # the epoll backend (Linux)
        runner.io_manager = _QuietIO(runner.io_manager, runner.entry_queue)


class _QuietIO:
    def __init__(self, io, entry) -> None:
        self._io, self._entry, self._registered = io, entry, io._registered
        self.process_events = io.process_events

    def get_events(self, timeout: float):
        entry = self._entry
        if timeout > 0 or len(self._registered) > 1 or entry.queue or entry.idempotent_queue:
            return self._io.get_events(timeout)
        return []

    def __getattr__(self, name: str):
        return getattr(self._io, name)


@contextlib.contextmanager
def _collector_tuned():
    """GC_THRESHOLDS for the block, with what is alive now frozen out of the scans."""
    saved = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


def _scratch() -> str | None:
    shm = pathlib.Path("/dev/shm")
    return str(shm) if shm.is_dir() else None


async def _main(scenario: Scenario, seed: int, sub, root, history_path, trace, node_patch, box,
                crash_after_vote: float) -> None:
    _poll_only_when_woken()
    history = History(history_path, clock=trio.current_time)
    tracer = None
    if trace:
        tracer = open(history_path.with_name("trace.jsonl"), "w", encoding="utf-8")
        record = history.record

        def traced(event: dict) -> None:
            record(event)
            tracer.write(json.dumps({"t": round(trio.current_time() - history.t0, 6), **event},
                                    separators=(",", ":")) + "\n")
        history.record = traced
    history.record({"type": "run", "scenario": scenario.name, "seed": seed, "path": "simulation",
                    "idempotence": scenario.workload.idempotence, "client": "sim",
                    "duration_s": scenario.duration_s})
    planned = nemesis_mod.plan(scenario.nemesis, scenario.duration_s, sub["plan"])
    for p in planned:
        history.record({"type": "fault-planned", "at_s": p.at_s, "desc": nemesis_mod.describe(p.fault)})
    net = SimNetwork(sub["net"], trace=tracer)
    try:
        async with trio.open_nursery() as nursery:
            cluster = SimCluster(root, scenario.cluster.nodes, sub["disk"], net, history.record,
                                 nursery, node_patch=node_patch, node_rng=sub["node"],
                                 crash_after_vote=crash_after_vote,
                                 node_args=scenario.cluster.node_args,
                                 spares=scenario.cluster.spares)
            await cluster.start_all()
            await _workload(scenario, cluster, history, planned, sub, box)
            for n in cluster.ids:
                await cluster.kill(n)
            box["safety"] = cluster.safety
            record_replica_logs(scenario.topics, {n: cluster.nodes[n].data_dir for n in cluster.ids},
                                box.get("high", {}), history.record)
            nursery.cancel_scope.cancel()
    finally:
        box["simulated_s"] = trio.current_time() - history.t0
        history.close()
        if tracer is not None:
            tracer.close()


async def _workload(scenario: Scenario, cluster: SimCluster, history: History, planned, sub, box) -> None:
    spec = scenario.workload
    topics = [(t.name, t.partitions) for t in scenario.topics]
    rng = sub["clients"]

    def client(reader: bool = False) -> sim_client.Client:
        c = sim_client.Client(cluster.net, cluster.bootstrap, random.Random(rng.getrandbits(64)),
                              spec.request_timeout_s)
        c.read_committed = reader and spec.transactional  # readers of transactions: read_committed
        return c
    admin = client()
    await sim_client.create_topics(admin, scenario.topics, START_TIMEOUT_S)
    if any(f.kind in ("membership", "join-remove") for entry in scenario.nemesis.schedule for f in entry.faults):
        cluster.admin = sim_client.Admin(client())  # (drawn only then: other seeds keep their runs)
    nem = nemesis_mod.Nemesis(cluster, history, sub["plan"], topics[0])
    target: dict = {}
    t0 = history.now()
    history.record({"type": "workload-start", "t": round(t0, 6)})
    stop_producers, stop_consumers = trio.Event(), trio.Event()
    members = [f"g{i}" for i in range(spec.group_consumers)]
    view = sim_client.GroupView(GROUP_ID, members, [(t, p) for t, n in topics for p in range(n)])
    sources = [t for t in topics if t[0] != spec.copy_to]  # what producers write (chaos run's rule)
    copier_go, copier_done = trio.Event(), trio.Event()  # copier_go: no more input will come
    async with trio.open_nursery() as consumers:
        for i in range(spec.consumers):
            consumers.start_soon(sim_client.run_consumer, f"c{i}", client(True), topics, history,
                                 stop_consumers, target)
        for name in members:
            consumers.start_soon(sim_client.run_group_consumer, name, client(True), view, history,
                                 stop_consumers, target)
        if spec.copy_to is not None:
            out = next(t for t in topics if t[0] == spec.copy_to)
            consumers.start_soon(sim_client.run_copier, client(True), spec, sources, out, history, copier_go,
                                 stop_consumers, copier_done)
        async with trio.open_nursery() as producers:
            for i in range(spec.producers):
                run = sim_client.run_txn_producer if spec.transactional else sim_client.run_producer
                producers.start_soon(run, f"p{i}", client(), spec, sources, history, stop_producers)
            async with trio.open_nursery() as faults:
                faults.start_soon(nem.run, planned, t0)
                await trio.sleep(scenario.duration_s)
                faults.cancel_scope.cancel()
            await nem.heal_all()
            healed = history.now()
            stop_producers.set()
        history.record({"type": "workload-end"})
        box["liveness"] = await _liveness(client(), topics, history, healed)
        if members:
            box["liveness"] += await _group_settles(view, history, healed)
        if spec.copy_to is not None:  # the copier copies the liveness writes too, then idles out
            copier_go.set()
            with trio.move_on_after(spec.final_read_timeout_s):
                await copier_done.wait()
        high = box["high"] = {}
        reader = client(True)
        for name, partitions in topics:
            for p in range(partitions):
                try:
                    hw, records = await sim_client.final_read(reader, name, p, spec.final_read_timeout_s)
                except trio.TooSlowError:
                    history.record({"type": "final-read-failed", "topic": name, "partition": p,
                                    "error": "timed out"})
                    continue
                high[(name, p)] = target[(name, p)] = hw
                history.record({"type": "final-read", "topic": name, "partition": p,
                                "high_watermark": hw, "records": [[o, v] for o, v in records]})
        stop_consumers.set()
        consumers.cancel_scope.deadline = trio.current_time() + spec.final_read_timeout_s


async def _liveness(client: sim_client.Client, topics, history: History, healed: float) -> list[str]:
    """After the last heal, every partition takes an acknowledged write within the bound."""
    spec = attrs.evolve(_LIVENESS_SPEC)
    problems = []
    for name, partitions in topics:
        for p in range(partitions):
            value = f"liveness-{name}-{p}"
            batch = sim_client.encode_batch(sim_client._record(b"live", value.encode()), record_count=1,
                                            base_timestamp_ms=0, max_timestamp_ms=0)
            start = history.now()
            outcome = await sim_client._send_one(client, spec, (name, p), batch)
            took = history.now() - healed
            history.record({"type": "send", "process": "liveness", "seq": p, "topic": name, "partition": p,
                            "key": "live", "value": value, "t_start": round(start, 6),
                            "t_end": round(history.now(), 6), "outcome": outcome[0],
                            **({"offset": outcome[1]} if outcome[0] == "ok" else {"error": outcome[1]})})
            if outcome[0] != "ok":
                problems.append(f"liveness: {name}-{p} took no write within {LIVENESS_BOUND_S:g} s "
                                f"of the last heal ({outcome[1]})")
            elif took > LIVENESS_BOUND_S:
                problems.append(f"liveness: {name}-{p} took a write only {took:.1f} s after the last heal")
    return problems


async def _group_settles(view, history: History, healed: float) -> list[str]:
    """After the last heal, the group settles (view.settled_at) and stays so GROUP_STABLE_S,
    within GROUP_SETTLE_BOUND_S."""
    deadline = healed + GROUP_SETTLE_BOUND_S
    while True:
        settled = view.settled_at()
        now = history.now()
        if settled is not None and now - max(settled, healed) >= GROUP_STABLE_S:
            history.record({"type": "group-settled", "group": view.group,
                            "generation": view.held[min(view.held)][0],
                            "after_heal_s": round(max(settled - healed, 0.0), 6)})
            return []
        if now > deadline + GROUP_STABLE_S:
            held = {m: (g, sorted(parts)) for m, (g, parts, _) in sorted(view.held.items())}
            return [f"liveness: group {view.group} not settled {GROUP_SETTLE_BOUND_S:g} s after the last "
                    f"heal (members' generation and share: {held})"]
        await trio.sleep(0.5)


@attrs.frozen
class _LivenessSpec:
    acks: str = "all"
    request_timeout_s: float = 5.0
    delivery_timeout_s: float = LIVENESS_BOUND_S


_LIVENESS_SPEC = _LivenessSpec()


