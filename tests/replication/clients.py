"""The single-node client drivers (tests/integration/clients_python.py), creating topics
with replication factor 3; and the kafkajs run for a replicated topic.

Everything else (produce, list offsets, consume, the checks) is the drivers' own code, so a
client behaves here exactly as in the single-node tests.
"""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import subprocess
from collections.abc import Mapping

from tests.integration.clients_common import Rec
from tests.integration.clients_python import (AioKafkaDriver, ConfluentDriver,
                                              KafkaPythonDriver)

REPLICATION_FACTOR = 3
JS_DIR = pathlib.Path(__file__).resolve().parents[1] / "js"
KAFKAJS_SCRIPT = JS_DIR / "kafkajs_client.js"
KAFKAJS_TIMEOUT_S = 150.0


class ConfluentRF3(ConfluentDriver):
    replication_factor = REPLICATION_FACTOR


class KafkaPythonRF3(KafkaPythonDriver):
    replication_factor = REPLICATION_FACTOR


class AioKafkaRF3(AioKafkaDriver):
    replication_factor = REPLICATION_FACTOR


RF3_DRIVERS = {d.name: d for d in (ConfluentRF3, KafkaPythonRF3, AioKafkaRF3)}


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def kafkajs_create_and_produce(brokers: list[str], topic: str, partitions: int, recs: list[Rec],
                               work_dir: pathlib.Path, *, chunk: int = 1000) -> list[tuple[int, int]]:
    """kafkajs creates `topic` (replication factor 3) and produces `recs` with acks=-1;
    returns the (partition, offset) each record was told."""
    spec = {"brokers": brokers, "chunk": chunk, "offsetsByTimestamp": [],
            "create": [{"topic": topic, "partitions": partitions, "replicationFactor": REPLICATION_FACTOR}],
            "produce": [{"topic": topic, "codec": "none", "acks": -1, "idempotent": False,
                         "records": [{"p": r.partition, "k": _b64(r.key), "v": _b64(r.value),
                                      "h": [[k, _b64(v)] for k, v in r.headers], "t": r.timestamp_ms}
                                     for r in recs]}]}
    spec_path, out_path = work_dir / f"{topic}-spec.json", work_dir / f"{topic}-out.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([shutil.which("node"), str(KAFKAJS_SCRIPT), str(spec_path), str(out_path)],
                          cwd=JS_DIR, capture_output=True, text=True, timeout=KAFKAJS_TIMEOUT_S)
    assert proc.returncode == 0, f"kafkajs run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    out = json.loads(out_path.read_text())
    assert out["created"] is True, out
    return [(r.partition, o) for r, o in zip(recs, out["produced"][topic])]


def confluent_consume_in_rack(bootstrap: str, rack: str, topic: str, ends: Mapping[int, int],
                              timeout_s: float) -> tuple[dict[int, list], list[str]]:
    """confluent-kafka consumer with client.rack=rack (Fetch v11+ with rack_id): leaders
    name the in-sync replica in that rack as preferred read replica (KIP-392) and the
    consumer fetches from it. Returns (records per partition, librdkafka's log lines about
    preferred replicas, which show where it fetched from)."""
    import logging

    from confluent_kafka import Consumer, TopicPartition

    from tests.integration.clients_common import Got, drain

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if "preferred" in message.lower():
                lines.append(message)
    logger = logging.getLogger(f"rdkafka-{rack}-{topic}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(Collect())
    c = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
                  "group.id": "chronik-trio-tests-never-joined", "enable.auto.commit": False,
                  "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                  "fetch.wait.max.ms": 100, "client.rack": rack, "debug": "fetch", "logger": logger})
    try:
        c.assign([TopicPartition(topic, p, 0) for p in ends])

        def poll():
            out = []
            for m in c.consume(2000, 0.5):
                assert m.error() is None, m.error()
                out.append(Got(m.partition(), m.offset(), m.key(), m.value(),
                               tuple(m.headers() or ()), m.timestamp()[1]))
            return out
        return drain(poll, ends, timeout_s=timeout_s), lines
    finally:
        c.close()
