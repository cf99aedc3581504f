"""The driver both fuzzers (tests/kafka/fuzz.py, tests/transport/fuzz.py) share: worker
threads drawing frames from one budget, a health check of the node every HEALTH_INTERVAL_S
and at the end, the report's common counts, and the command line around a run.

A fuzzer supplies its own Report (a subclass of FuzzReport with its counts and how it shows
what was in flight) and a worker: work(shared, rng, worker_index), which takes frames with
shared.take(n) until it gets 0 and counts what it saw under shared.lock.
"""

from __future__ import annotations

import argparse
import collections
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.kafka import live

HEALTH_INTERVAL_S = 5.0
HEALTH_TOPIC = "fuzz-health"


@dataclass
class FuzzReport:
    frames: int = 0
    health_checks: int = 0
    node_exits: int = 0
    seconds: float = 0.0
    mutations: collections.Counter = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    in_flight: dict[int, Any] = field(default_factory=dict)  # each worker's frame in flight, to replay a failure

    def in_flight_text(self) -> str:
        """The frames in flight, to replay a failure (a fuzzer's own format)."""
        raise NotImplementedError

    def line(self) -> str:
        """The run in one line."""
        raise NotImplementedError


class Shared:
    """What the workers of one run share: the report, its lock, the frame budget, the stop."""

    def __init__(self, report: FuzzReport, frames: int) -> None:
        self.report = report
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self._frames_left = frames

    def take(self, most: int) -> int:
        """Up to `most` frames of the budget; 0 once it is spent or the run stops."""
        if self.stop.is_set():
            return 0
        with self.lock:
            n = max(min(most, self._frames_left), 0)
            self._frames_left -= n
        return n


def ensure_health_topic(conn) -> None:
    """The topic the health check round-trips through, made on conn's node if it is missing."""
    if HEALTH_TOPIC not in conn.topic_names():
        live.create_topic(conn, HEALTH_TOPIC)


def check_health(kafka_port: int, admin_port: int, alive: Callable[[], bool]) -> str | None:
    """None if the node is alive, says it serves, and round-trips a record; else why not."""
    if not alive():
        return "the node process exited"
    try:
        if not live.health(admin_port).get("serving_kafka"):
            return "/health says the node is not serving Kafka"
        live.round_trip(kafka_port, HEALTH_TOPIC)
    except Exception as exc:
        return f"health check failed: {type(exc).__name__}: {exc}"
    return None


def run_workers(work: Callable[[Shared, random.Random, int], None], report: FuzzReport, *,
                kafka_port: int, admin_port: int, alive: Callable[[], bool], frames: int, seconds: float,
                seed: int, workers: int, progress: Callable[[Any], None] | None = None) -> Any:
    """Run `workers` threads of `work` until `frames` frames were taken or `seconds` passed,
    checking the node's health throughout and at the end; returns report."""
    shared = Shared(report, frames)
    start = time.monotonic()
    threads = [threading.Thread(target=work, args=(shared, random.Random(seed * 1000 + i), i), daemon=True)
               for i in range(workers)]
    for t in threads:
        t.start()
    try:
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=HEALTH_INTERVAL_S / len(threads))
            report.seconds = time.monotonic() - start
            problem = check_health(kafka_port, admin_port, alive)
            report.health_checks += 1
            if problem:
                report.failures.append(f"after {report.frames} frames: {problem}; {report.in_flight_text()}")
                report.node_exits += not alive()
                break
            if progress:
                progress(report)
            if report.seconds >= seconds:
                break
    finally:
        shared.stop.set()
        for t in threads:
            t.join()
    report.seconds = time.monotonic() - start
    problem = check_health(kafka_port, admin_port, alive)
    report.health_checks += 1
    if problem:
        report.failures.append(f"at the end: {problem}")
        report.node_exits += not alive() and not report.node_exits
    return report


# --------------------------------------------------------------------------- the command line


def arguments(doc: str, *, workers: int) -> argparse.ArgumentParser:
    """The options every fuzzer takes: --frames, --seconds, --seed, --workers."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=24 * 3600.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workers", type=int, default=workers)
    return parser


def seed_of(args: argparse.Namespace) -> int:
    """--seed, or a fresh one, printed so the run can be replayed."""
    seed = args.seed if args.seed is not None else random.randrange(2**31)
    print(f"seed {seed}", flush=True)
    return seed


def progress_printer(every_s: float = 60.0) -> Callable[[FuzzReport], None]:
    """A progress callback printing the report's line at most every `every_s` of the run."""
    last = [0.0]

    def progress(report: FuzzReport) -> None:
        if report.seconds - last[0] >= every_s:
            last[0] = report.seconds
            print(report.line(), flush=True)

    return progress


def conclude(report: FuzzReport, stopped: str | None, *, failure_chars: int | None = None) -> int:
    """Print the report (and `stopped`, how the node ended), its failures; the exit code."""
    print(report.line())
    if stopped is not None:
        print(stopped)
    for failure in report.failures:
        print("FAILURE:", failure[:failure_chars])
    return 1 if report.failures or report.node_exits else 0
