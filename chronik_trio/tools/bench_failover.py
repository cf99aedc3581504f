"""For `chronik-trio bench --modes failover` (the tool's own 3-node cluster only).

One trial: a fresh topic (3 partitions, replication factor 3); a confluent-kafka producer
(acks=all, linger.ms 5, librdkafka's default retries and metadata refresh, idempotence off)
sends records paced at `rate` per second round-robin over the partitions; after `KILL_AFTER_S`
the process leading partition 0 is SIGKILLed. **Failover time** = from just before the
SIGKILL to the first acknowledgement of a partition-0 record that was *produced after* the
kill, so the dead leader cannot have acknowledged it: it includes the followers noticing,
the election, the new leader reaching `__meta`, and the client's own reaction (connection
loss, metadata refresh, retry). The killed node is restarted before the next trial.
"""

from __future__ import annotations

import statistics
import time
import uuid

KILL_AFTER_S = 1.0  # of paced produce before the kill, so the stream is steady
STREAM_AFTER_KILL_S = 5.0  # produced after the kill; a failover beyond this counts as none
SETTLE_S = 2.0  # after creating the topic: preferred leaders take over (balance interval 1 s)
METADATA_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 30.0


def _leader_of(bootstrap: str, topic: str, partition: int) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic, timeout=METADATA_TIMEOUT_S)
    return md.topics[topic].partitions[partition].leader


def _trial(cluster, rate: float, record_bytes: int) -> dict:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"failover-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    admin.create_topics([NewTopic(topic, 3, 3)])[topic].result(timeout=60)
    time.sleep(SETTLE_S)
    victim = _leader_of(cluster.bootstrap, topic, 0)
    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "linger.ms": 5,
                         "enable.idempotence": False})
    value = bytes(record_bytes)
    acked_after_kill: list[float] = []  # ack times of partition-0 records produced after the kill
    errors = [0]
    killed_at = [float("inf")]

    def on_delivery(produced_at: float):
        def cb(err, msg) -> None:
            if err is not None:
                errors[0] += 1
            elif msg.partition() == 0 and produced_at > killed_at[0]:
                acked_after_kill.append(produced_at + msg.latency())
        return cb

    start = time.perf_counter()
    total = int(rate * (KILL_AFTER_S + STREAM_AFTER_KILL_S))
    for i in range(total):
        due = start + i / rate
        while (now := time.perf_counter()) < due:
            producer.poll(min(due - now, 0.001))
        if killed_at[0] == float("inf") and now - start >= KILL_AFTER_S:
            killed_at[0] = cluster.kill(victim)
        now = time.perf_counter()
        producer.produce(topic, value, partition=i % 3, on_delivery=on_delivery(now))
    unflushed = producer.flush(FLUSH_TIMEOUT_S)
    cluster.restart(victim)
    first = min(acked_after_kill) if acked_after_kill else None
    return {"topic": topic, "killed_node": victim, "sent": total, "errors": errors[0],
            "unflushed": unflushed,
            "failover_s": round(first - killed_at[0], 3) if first is not None else None}


def failover_trials(cluster, trials: int, rate: float, record_bytes: int) -> dict:
    runs = [_trial(cluster, rate, record_bytes) for _ in range(trials)]
    times = sorted(r["failover_s"] for r in runs if r["failover_s"] is not None)
    return {"trials": runs, "failed_over": len(times),
            "median_s": statistics.median(times) if times else None,
            "max_s": times[-1] if times else None, "min_s": times[0] if times else None}
