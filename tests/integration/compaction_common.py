"""What the compacted-topic tests share (one node: test_compaction.py; three nodes:
tests/replication/test_compaction_rf3.py): keyed records with tombstones, the expected
compacted log, produce with kafkajs, and waiting for the cleaner."""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from tests.integration.clients_common import Rec

KEYS = 12
TIMEOUT_S = 20
CLEANED_TIMEOUT_S = 40
# Aggressive cleaning: tiny segments that roll after 300 ms, every dirty byte worth a pass.
COMPACT_CONFIGS = {"cleanup.policy": "compact", "segment.bytes": "1024", "segment.ms": "300",
                   "min.cleanable.dirty.ratio": "0.01", "min.compaction.lag.ms": "0",
                   "delete.retention.ms": "3600000"}
# What the nodes run with: a cleaner pass every 100 ms.
CLEANER_ARGS = ["--log-cleaner-backoff-ms", "100"]


def keyed_records(tag: str, n: int, *, keys: int = KEYS) -> list[Rec]:
    """n records on partition 0 cycling over `keys` keys; two keys end with a tombstone."""
    now = int(time.time() * 1000)
    recs = []
    for i in range(n):
        key = f"{tag}-k{i % keys:02d}".encode()
        last_round = i >= n - keys
        value = None if last_round and i % keys in (3, 7) else f"{tag}-v{i:04d}".encode() + b"." * (i % 50)
        recs.append(Rec(0, key, value, (), now + i))
    return recs


def latest(recs: Sequence[Rec], told: Sequence[tuple[int, int] | None], *, tombstones: bool
           ) -> list[tuple[int, bytes | None, bytes | None]]:
    """The compacted log: (offset, key, value) of each key's latest record, by offset;
    without the tombstones once they are removed."""
    by_key: dict[bytes | None, tuple[int, bytes | None, bytes | None]] = {}
    for r, t in zip(recs, told):
        assert t is not None
        by_key[r.key] = (t[1], r.key, r.value)
    return sorted(v for v in by_key.values() if tombstones or v[2] is not None)


def wait_compacted(read: Callable[[int], list], want: list[tuple[int, bytes | None, bytes | None]],
                   what: str, timeout_s: float = CLEANED_TIMEOUT_S) -> None:
    """Until read(count) (the first count records from offset 0, as (offset, key, value))
    is exactly `want`: every key once, at its latest offset, with its latest value."""
    deadline = time.monotonic() + timeout_s
    got: list = []
    while time.monotonic() < deadline:
        got = read(len(want))
        if got == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not compacted within {timeout_s}s; want {want[:4]}... "
                         f"({len(want)}), read {got[:4]}... ({len(got)})")


SENTINEL_KEY = b"~sentinel"
SENTINEL_WAIT_S = 4.0


def settle(bootstrap: str, topic: str, reads: Sequence[Callable[[int], list]],
           want: list[tuple[int, bytes | None, bytes | None]], what: str,
           timeout_s: float = CLEANED_TIMEOUT_S) -> list[tuple[int, bytes | None, bytes | None]]:
    """Until every reader sees exactly `want` plus the latest sentinel. The cleaner never
    touches the segment holding a log's last batch (Kafka never cleans its active segment),
    so, as in Kafka, the last records are cleaned once a later record lands in a newer
    segment: a sentinel record (one key) is produced now and again (after segment.ms has
    rolled the segment) until the records before it are compacted everywhere (each sentinel
    with a key of its own, so every one stays). Returns the
    compacted log it waited for."""
    from tests.integration.clients_python import ConfluentDriver
    producer = ConfluentDriver(bootstrap)
    deadline = time.monotonic() + timeout_s
    sentinels = []
    # segment.ms (300 ms) and a cleaner pass (100 ms): the segment holding the last records
    # has rolled, so the first sentinel usually lands in a new one.
    time.sleep(0.6)
    for n in range(1000):
        key = SENTINEL_KEY + b"-%d" % n  # each its own key: the last one is never cleaned
        [(_, offset)] = producer.produce(topic, [Rec(0, key, b"s", (), int(time.time() * 1000))])
        sentinels.append((offset, key, b"s"))
        full = sorted([*want, *sentinels])
        try:
            for read in reads:
                wait_compacted(read, full, what, timeout_s=min(SENTINEL_WAIT_S, max(deadline - time.monotonic(), 0.1)))
            return full
        except AssertionError:
            if time.monotonic() > deadline:
                raise
    raise AssertionError("settle: too many rounds")


def reader(driver, topic: str) -> Callable[[int], list]:
    def read(count: int) -> list:
        return [(g.offset, g.key, g.value) for g in driver.read_from(topic, 0, 0, count, timeout_s=3)]
    return read


def set_topic_config(bootstrap: str, topic: str, key: str, value: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=TIMEOUT_S)


def create_compacted(bootstrap: str, topic: str, replication_factor: int) -> None:
    from confluent_kafka.admin import NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, 1, replication_factor, config=COMPACT_CONFIGS)],
                        operation_timeout=TIMEOUT_S)[topic].result(timeout=TIMEOUT_S)


def _b64(b: bytes | None) -> str | None:
    return None if b is None else base64.b64encode(b).decode()


def kafkajs_produce(js_dir: pathlib.Path, brokers: list[str], topic: str, recs: list[Rec],
                    work_dir: pathlib.Path, *, chunk: int = 5) -> list[tuple[int, int]]:
    """kafkajs produces `recs` (acks=-1, `chunk` records a batch) to an existing topic;
    returns the (partition, offset) each record was told."""
    spec = {"brokers": brokers, "chunk": chunk, "create": [], "offsetsByTimestamp": [],
            "produce": [{"topic": topic, "codec": "none", "acks": -1, "idempotent": False,
                         "records": [{"p": r.partition, "k": _b64(r.key), "v": _b64(r.value), "h": [],
                                      "t": r.timestamp_ms} for r in recs]}]}
    spec_path, out_path = work_dir / f"{topic}-spec.json", work_dir / f"{topic}-out.json"
    spec_path.write_text(json.dumps(spec))
    proc = subprocess.run([shutil.which("node"), str(js_dir / "kafkajs_client.js"), str(spec_path),
                           str(out_path)], cwd=js_dir, capture_output=True, text=True, timeout=150)
    assert proc.returncode == 0, f"kafkajs run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return [(r.partition, o) for r, o in zip(recs, json.loads(out_path.read_text())["produced"][topic])]
