"""A group consumer in its own process, for tests/groups: one of confluent-kafka, kafka-python,
aiokafka (kafkajs: kafkajs_consumer.js), subscribed to one topic in one group.

usage: python -m tests.groups.consumer_proc SPEC.json
SPEC: {client, bootstrap, group, topic, out, assignor, instance_id, session_ms, heartbeat_ms}

It appends JSON lines to SPEC.out (flushed at once, so the test reads them while it runs):
  {"t": time, "e": "assigned", "parts": [p, ...]}  whenever its assignment changes
  {"t": time, "e": "rec", "p": p, "o": offset}       every record consumed
  {"t": time, "e": "commit", "offsets": {p: next}}   after each synchronous commit succeeded
  {"t": time, "e": "commit_failed", "error": "..."}
  {"t": time, "e": "closed"}                          after a clean close (SIGTERM)
Each batch of records is committed (synchronously) before the next poll; a commit that a
rebalance refused is retried after the next poll while the partition is still assigned, and
once more at a clean close. A partition lost before its commit succeeded is read again by
its next owner from the last commit.
Runs until SIGTERM (a clean close: LeaveGroup) or SIGKILL; bounded by RUN_S_MAX.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

RUN_S_MAX = 240.0
POLL_S = 0.2


class Out:
    def __init__(self, path: str) -> None:
        self.f = open(path, "a", buffering=1)
        self.parts: list[int] | None = None

    def write(self, event: str, **fields) -> None:
        self.f.write(json.dumps({"t": time.time(), "e": event, **fields}) + "\n")

    def assignment(self, parts) -> None:
        parts = sorted(parts)
        if parts != self.parts:
            self.parts = parts
            self.write("assigned", parts=parts)


STOP = []


def commit_pending(out: Out, pending: dict[int, int], assigned: set[int], commit, errors) -> None:
    """Commit what was consumed of the partitions still assigned; a failed commit (a
    rebalance raced it) is retried after the next poll, while the partition stays ours."""
    offsets = {p: o for p, o in pending.items() if p in assigned}
    pending.clear()
    if not offsets:
        return
    try:
        commit(offsets)
        out.write("commit", offsets=offsets)
    except errors as exc:
        out.write("commit_failed", error=str(exc))
        pending.update(offsets)


def _stop(*_):
    STOP.append(True)


def run_confluent(spec, out: Out) -> None:
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    conf = {"bootstrap.servers": spec["bootstrap"], "broker.address.family": "v4", "group.id": spec["group"],
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "session.timeout.ms": spec["session_ms"], "heartbeat.interval.ms": spec["heartbeat_ms"],
            "partition.assignment.strategy": spec["assignor"], "fetch.wait.max.ms": 100,
            "topic.metadata.refresh.interval.ms": 1000}
    if spec.get("instance_id"):
        conf["group.instance.id"] = spec["instance_id"]
    c = Consumer(conf)
    c.subscribe([spec["topic"]])

    def commit(offsets):
        c.commit(offsets=[TopicPartition(spec["topic"], p, o) for p, o in offsets.items()], asynchronous=False)

    deadline = time.monotonic() + RUN_S_MAX
    pending: dict[int, int] = {}
    while not STOP and time.monotonic() < deadline:
        msgs = c.consume(500, POLL_S)
        out.assignment(tp.partition for tp in c.assignment())
        for m in msgs:
            if m.error():
                continue
            out.write("rec", p=m.partition(), o=m.offset())
            pending[m.partition()] = m.offset() + 1
        commit_pending(out, pending, {tp.partition for tp in c.assignment()}, commit, KafkaException)
    commit_pending(out, pending, {tp.partition for tp in c.assignment()}, commit, KafkaException)
    c.close()
    out.write("closed")


def run_kafka_python(spec, out: Out) -> None:
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
    from kafka.coordinator.assignors.range import RangePartitionAssignor
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.errors import KafkaError
    assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}[spec["assignor"]]
    extra = {"group_instance_id": spec["instance_id"]} if spec.get("instance_id") else {}
    c = KafkaConsumer(spec["topic"], bootstrap_servers=spec["bootstrap"], group_id=spec["group"],
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      session_timeout_ms=spec["session_ms"], heartbeat_interval_ms=spec["heartbeat_ms"],
                      partition_assignment_strategy=[assignor], fetch_max_wait_ms=100,
                      metadata_max_age_ms=1000, **extra)
    def commit(offsets):
        c.commit({TopicPartition(spec["topic"], p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})

    deadline = time.monotonic() + RUN_S_MAX
    pending: dict[int, int] = {}
    while not STOP and time.monotonic() < deadline:
        batches = c.poll(timeout_ms=int(POLL_S * 1000), max_records=500)
        out.assignment(tp.partition for tp in c.assignment())
        for tp, records in batches.items():
            for r in records:
                out.write("rec", p=tp.partition, o=r.offset)
                pending[tp.partition] = r.offset + 1
        commit_pending(out, pending, {tp.partition for tp in c.assignment()}, commit, KafkaError)
    commit_pending(out, pending, {tp.partition for tp in c.assignment()}, commit, KafkaError)
    c.close()
    out.write("closed")


async def _aiokafka(spec, out: Out) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.coordinator.assignors.range import RangePartitionAssignor
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.errors import KafkaError
    assignor = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}[spec["assignor"]]
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, _stop)
    c = AIOKafkaConsumer(spec["topic"], bootstrap_servers=spec["bootstrap"], group_id=spec["group"],
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         session_timeout_ms=spec["session_ms"], heartbeat_interval_ms=spec["heartbeat_ms"],
                         partition_assignment_strategy=[assignor], fetch_max_wait_ms=100,
                         metadata_max_age_ms=1000)
    await c.start()
    deadline = time.monotonic() + RUN_S_MAX
    pending: dict[int, int] = {}

    async def commit_all() -> None:
        offsets = {p: o for p, o in pending.items() if p in {tp.partition for tp in c.assignment()}}
        pending.clear()
        if not offsets:
            return
        try:
            await c.commit({TopicPartition(spec["topic"], p): o for p, o in offsets.items()})
            out.write("commit", offsets=offsets)
        except KafkaError as exc:
            out.write("commit_failed", error=repr(exc))
            pending.update(offsets)

    while not STOP and time.monotonic() < deadline:
        batches = await c.getmany(timeout_ms=int(POLL_S * 1000), max_records=500)
        out.assignment(tp.partition for tp in c.assignment())
        for tp, records in batches.items():
            for r in records:
                out.write("rec", p=tp.partition, o=r.offset)
                pending[tp.partition] = r.offset + 1
        await commit_all()
    await commit_all()
    await c.stop()
    out.write("closed")


def main() -> int:
    spec = json.load(open(sys.argv[1]))
    out = Out(spec["out"])
    signal.signal(signal.SIGTERM, _stop)
    if spec["client"] == "confluent-kafka":
        run_confluent(spec, out)
    elif spec["client"] == "kafka-python":
        run_kafka_python(spec, out)
    elif spec["client"] == "aiokafka":
        asyncio.run(_aiokafka(spec, out))
    else:
        raise SystemExit(f"unknown client {spec['client']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
