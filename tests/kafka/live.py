"""A live single node for the Kafka-layer tests that need one (conformance sweep, fuzzer):
started by PID with /health and /metrics on an admin port, no auto-created topics (a
request for a missing topic must say so), and no initial rebalance delay (a JoinGroup
answers at once)."""

from __future__ import annotations

import json
import pathlib
import time
import urllib.request
import uuid

from tests.brokers import BrokerProcess, free_port
from tests.kafka_wire import NONE, KafkaWire, Record, build_batch, parse_batches

NODE_CONFIG = "group_initial_rebalance_delay_ms = 0\n"
NODE_ARGS = ["--no-auto-create-topics"]
HTTP_TIMEOUT_S = 10.0
REQUEST_ERRORS_METRIC = "chronik_kafka_request_errors_total"


def config_file(root: pathlib.Path) -> pathlib.Path:
    path = root / "node.toml"
    path.write_text(NODE_CONFIG)
    return path


def start_node(root: pathlib.Path) -> tuple[BrokerProcess, int]:
    """A running node and its admin (HTTP) port; the caller stops it."""
    root.mkdir(parents=True, exist_ok=True)
    broker = BrokerProcess(root / "data", extra_args=[*NODE_ARGS, "--config", str(config_file(root))])
    admin_port = free_port()
    while admin_port == broker.port:
        admin_port = free_port()
    broker.extra_args += ["--admin-listen", f"127.0.0.1:{admin_port}"]
    broker.start()
    return broker, admin_port


def http_get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=HTTP_TIMEOUT_S) as response:
        assert response.status == 200, (path, response.status)
        return response.read().decode()


def health(port: int) -> dict:
    return json.loads(http_get(port, "/health"))


def metric(port: int, name: str) -> float:
    """Sum over labels of one counter or gauge of a node's /metrics."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in http_get(port, "/metrics").splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


WAIT_TIMEOUT_S = 15.0


def wait_for(condition, *, what: str, timeout_s: float = WAIT_TIMEOUT_S) -> None:
    """Poll condition() until true; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout_s} s"
        time.sleep(0.05)


def metric_labelled(port: int, name: str, **labels: str) -> float:
    """Sum of one metric's samples whose labels include all of `labels`."""
    total = 0.0
    for line in http_get(port, "/metrics").splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def create_topic(conn: KafkaWire, name: str, partitions: int = 1) -> uuid.UUID:
    """Create a topic; its id."""
    assert conn.create_topics([name], partitions=partitions) == {name: NONE}
    (topic,) = conn.metadata([name]).topics
    assert topic.error_code == NONE, topic
    return topic.topic_id


def round_trip(port: int, topic: str, tag: bytes = b"alive") -> None:
    """On a fresh connection: produce one record to topic-0 and read it back."""
    with KafkaWire.connect(port) as conn:
        r = conn.produce(topic, 0, build_batch([Record(b"k", tag)]))
        assert r.error_code == NONE, r
        p = conn.fetch(topic, 0, int(r.base_offset))
        assert p.error_code == NONE, p
        got = [rec.value for b in parse_batches(p.records or b"") if b.base_offset == r.base_offset
               for rec in b.records]
        assert got == [tag], got
