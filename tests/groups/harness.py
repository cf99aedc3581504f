"""Group consumers as processes (consumer_proc.py, kafkajs_consumer.js) and the checks the
group tests share: who has which partitions, what was consumed, what was committed.

Every process is started, signalled and reaped by PID; every wait is bounded.
"""

from __future__ import annotations

import collections
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

from tests.kafka_wire import KafkaWire, Record, build_batch

ROOT = pathlib.Path(__file__).resolve().parents[2]
NODE_BIN = "node"
STOP_TIMEOUT_S = 20.0
POLL_S = 0.05
SESSION_MS = 6000  # the broker's minimum (group.min.session.timeout.ms)
HEARTBEAT_MS = 500

# What a test's broker runs with: members that start together join together (Kafka's
# initial delay is 3 s; 1 s keeps the tests short).
GROUP_CONFIG = "group_initial_rebalance_delay_ms = 1000\noffsets_topic_num_partitions = 4\n"

OFFSET_COMMIT = 8
OFFSET_FETCH = 9
FIND_COORDINATOR = 10
JOIN_GROUP = 11
HEARTBEAT = 12
LEAVE_GROUP = 13
SYNC_GROUP = 14
DESCRIBE_GROUPS = 15
LIST_GROUPS = 16
DELETE_GROUPS = 42
OFFSET_DELETE = 47


class ConsumerProc:
    """One group consumer process writing events to its own file."""

    def __init__(self, workdir: pathlib.Path, name: str, client: str, bootstrap: str, group: str, topic: str,
                 *, assignor: str = "range", instance_id: str | None = None) -> None:
        self.name = name
        self.client = client
        self.out = workdir / f"{name}.jsonl"
        self.log = workdir / f"{name}.log"
        spec = {"client": client, "bootstrap": bootstrap, "group": group, "topic": topic, "out": str(self.out),
                "assignor": assignor, "instance_id": instance_id, "session_ms": SESSION_MS,
                "heartbeat_ms": HEARTBEAT_MS}
        self.spec_path = workdir / f"{name}.json"
        self.spec_path.write_text(json.dumps(spec))
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ConsumerProc":
        if self.client == "kafkajs":
            args = [NODE_BIN, str(ROOT / "tests" / "groups" / "kafkajs_consumer.js"), str(self.spec_path)]
        else:
            args = [sys.executable, "-m", "tests.groups.consumer_proc", str(self.spec_path)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM (a clean close: the client leaves the group), SIGKILL if it hangs."""
        if not self.running:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} did not close within {STOP_TIMEOUT_S}s:\n{self.log_text()}")

    def kill(self) -> None:
        if self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def events(self) -> list[dict]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line being written
        return out

    def assigned(self) -> list[int] | None:
        parts = [e["parts"] for e in self.events() if e["e"] == "assigned"]
        return parts[-1] if parts else None

    def records(self) -> list[tuple[int, int]]:
        return [(e["p"], e["o"]) for e in self.events() if e["e"] == "rec"]


def produce(port: int, topic: str, partitions: int, per_partition: int, tag: str) -> None:
    """per_partition records to each partition, acks=all."""
    with KafkaWire.connect(port) as wire:
        batches = {p: build_batch([Record(None, f"{tag}-{p}-{i}".encode()) for i in range(per_partition)])
                   for p in range(partitions)}
        for p, r in wire.produce_many(topic, batches).items():
            assert r.error_code == 0, (p, r)


def wait_until(what: str, check, timeout_s: float, describe=lambda: "") -> float:
    """Poll check() until true; returns the time it became true. Bounded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return time.time()
        time.sleep(POLL_S)
    raise AssertionError(f"{what}: not within {timeout_s}s. {describe()}")


def consumed(procs: Iterable[ConsumerProc]) -> list[tuple[int, int]]:
    return [r for c in procs for r in c.records()]


def split_ok(procs: Sequence[ConsumerProc], partitions: int) -> bool:
    """The live consumers' current assignments are disjoint and cover every partition, and
    each has some (with no more consumers than partitions)."""
    live = [c for c in procs if c.running]
    parts = [c.assigned() for c in live]
    if any(p is None for p in parts):
        return False
    flat = [p for ps in parts for p in ps]
    return sorted(flat) == list(range(partitions)) and all(parts)


def stable_since(procs: Sequence[ConsumerProc], after: float) -> float:
    """When the live consumers last changed their assignment (after `after`)."""
    times = [e["t"] for c in procs if c.running for e in c.events() if e["e"] == "assigned" and e["t"] >= after]
    return max(times, default=after)


def check_takeovers(procs: Sequence[ConsumerProc], partitions: int) -> None:
    """A consumer that gets a partition starts at or after every commit logged before then."""
    commits = []  # (time, partition, offset)
    for c in procs:
        for e in c.events():
            if e["e"] == "commit":
                commits += [(e["t"], int(p), o) for p, o in e["offsets"].items()]
    for c in procs:
        seen_first: set[int] = set()
        assigned_at: dict[int, float] = {}
        for e in c.events():
            if e["e"] == "assigned":
                seen_first -= set(range(partitions)) - set(e["parts"])
                for p in e["parts"]:
                    assigned_at.setdefault(p, e["t"])
                for p in set(range(partitions)) - set(e["parts"]):
                    assigned_at.pop(p, None)
            elif e["e"] == "rec" and e["p"] not in seen_first:
                seen_first.add(e["p"])
                since = assigned_at.get(e["p"], e["t"])
                known = max((o for t, p, o in commits if p == e["p"] and t < since), default=0)
                assert e["o"] >= known, (f"{c.name} started p{e['p']} at {e['o']}, below the offset "
                                         f"{known} committed before it was assigned")


def check_consumed(procs: Sequence[ConsumerProc], expected: set[tuple[int, int]], what: str,
                   partitions: int) -> None:
    """Every expected record consumed; each once, unless a commit failed (a rebalance raced
    it), after which the new owner may read again from the last commit, never before it."""
    got = consumed(procs)
    missing = expected - set(got)
    assert not missing, f"{what}: {len(missing)} records never consumed, e.g. {sorted(missing)[:5]}"
    dups = sorted(r for r, n in collections.Counter(got).items() if n > 1 and r in expected)
    failed = [e for c in procs for e in c.events() if e["e"] == "commit_failed"]
    assert not dups or failed, f"{what}: records consumed twice with every commit answered: {dups[:10]}"
    check_takeovers(procs, partitions)


def describe(procs: Sequence[ConsumerProc]) -> str:
    return "; ".join(f"{c.name}: running={c.running} assigned={c.assigned()} records={len(c.records())}"
                     f"{'' if c.running else ' log: ' + c.log_text()[-800:]}" for c in procs)


def committed(port: int, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, from the coordinator, through OffsetFetch v8."""
    with KafkaWire.connect(port) as wire:
        r = wire.request(OFFSET_FETCH, {"groups": [{"group_id": group, "topics": [
            {"name": topic, "partition_indexes": list(range(partitions))}]}], "require_stable": False},
            version=8)
    (g,) = r.groups
    assert g.error_code == 0, g
    return {p.partition_index: p.committed_offset for t in g.topics for p in t.partitions}


def coordinator(port: int, group: str, timeout_s: float = 20.0) -> int:
    """The coordinator's node id (FindCoordinator v4, batched), retried while none."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            with KafkaWire.connect(port) as wire:
                r = wire.request(FIND_COORDINATOR, {"key_type": 0, "coordinator_keys": [group]}, version=4)
            (c,) = r.coordinators
            if c.error_code == 0:
                return c.node_id
            last = c
        except OSError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"no coordinator for {group} within {timeout_s}s: {last}")
