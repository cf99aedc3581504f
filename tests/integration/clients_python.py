"""One small driver per Python Kafka client, all with the same methods, so the same test
body runs against confluent-kafka (librdkafka), kafka-python and aiokafka.

These drivers test produce and fetch, so every consumer is manually assigned, starts from
the earliest offset and never commits (tests/groups/ drives the clients' group consumers). confluent-kafka refuses to build a consumer without a group.id,
so it gets one that is never joined (no subscribe, auto commit off, offset store off).

Every call is bounded: producers flush with a timeout and fail on any delivery error or
undelivered record; consumers drain with `clients_common.drain` (bounded by time and count).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Mapping, Sequence

from tests.integration.clients_common import Got, Rec, drain

ALL_CODECS = ("none", "gzip", "snappy", "lz4", "zstd")
OP_TIMEOUT_S = 30.0
# small_fetches: per-partition and per-response limits far below one large record, so the
# broker must still answer with the first whole batch (KIP-74) for the consumer to progress.
SMALL_PARTITION_FETCH_BYTES = 64 * 1024
SMALL_FETCH_BYTES = 128 * 1024
FLUSH_TIMEOUT_S = 90.0


# What kafka-python and aiokafka import for each codec (confluent-kafka has all built in).
CODEC_PACKAGES = {
    "kafka-python": {"snappy": "python-snappy==0.7.3 (with cramjam)", "lz4": "lz4==4.4.5",
                     "zstd": "zstandard==0.25.0"},
    "aiokafka": {"snappy": "cramjam==2.14.0", "lz4": "cramjam==2.14.0", "zstd": "cramjam==2.14.0"},
}


def require_codec(client: str, codec: str) -> None:
    """Fail (not skip) with the package to install when a client cannot compress `codec`."""
    if codec in ("none", "gzip") or client not in CODEC_PACKAGES:
        return
    import aiokafka.codec
    import kafka.codec
    mod = kafka.codec if client == "kafka-python" else aiokafka.codec
    assert getattr(mod, f"has_{codec}")(), (
        f"{client} cannot use {codec} compression here: install {CODEC_PACKAGES[client][codec]} "
        f"(the test extras in pyproject.toml must pin it)")


def _headers(hs) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v) for k, v in (hs or ()))


class ConfluentDriver:
    name = "confluent-kafka"
    replication_factor = 1  # of the topics create_topics makes (tests/replication: 3)
    codecs = ALL_CODECS

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.errors: list[str] = []     # from error_cb, for failure messages only

    def _conf(self, **extra) -> dict:
        return {"bootstrap.servers": self.bootstrap, "broker.address.family": "v4",
                "error_cb": lambda e: self.errors.append(str(e)), **extra}

    def _consumer(self, **extra):
        from confluent_kafka import Consumer
        return Consumer(self._conf(**{
            "group.id": "chronik-trio-tests-never-joined",
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100, **extra}))

    def create_topics(self, topics: Sequence[str], partitions: int,
                      configs: Mapping[str, str] | None = None) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient(self._conf())
        futures = admin.create_topics(
            [NewTopic(t, num_partitions=partitions, replication_factor=self.replication_factor,
                      config=dict(configs or {})) for t in topics],
            operation_timeout=OP_TIMEOUT_S, request_timeout=OP_TIMEOUT_S)
        for t, f in futures.items():
            f.result(timeout=OP_TIMEOUT_S + 10)   # raises KafkaException on a topic error

    def partitions_for(self, topic: str) -> set[int]:
        c = self._consumer()
        try:
            md = c.list_topics(topic, timeout=OP_TIMEOUT_S)
            t = md.topics[topic]
            assert t.error is None, f"metadata for {topic}: {t.error}"
            return set(t.partitions)
        finally:
            c.close()

    def produce(self, topic: str, records: Sequence[Rec], *, codec: str = "none",
                acks: str = "all", flush_every: int = 0,
                idempotent: bool = False) -> list[tuple[int, int] | None]:
        """Produce `records` to their partitions; the (partition, offset) each was told.
        flush_every=N waits for delivery after every N records (N=1: one batch each)."""
        from confluent_kafka import Producer
        acks_conf = {"all": "all", "1": "1", "0": "0"}[acks]
        p = Producer(self._conf(**{
            "acks": acks_conf, "compression.type": codec, "linger.ms": 5,
            "enable.idempotence": idempotent, "message.timeout.ms": int(FLUSH_TIMEOUT_S * 1000),
            "queue.buffering.max.messages": 200_000}))
        told: list[tuple[int, int] | None] = [None] * len(records)
        failed: list[str] = []

        def report(i, err, msg):
            if err is not None:
                failed.append(f"record {i}: {err}")
            elif acks != "0":
                told[i] = (msg.partition(), msg.offset())

        for i, r in enumerate(records):
            p.produce(topic, value=r.value, key=r.key, partition=r.partition,
                      headers=list(r.headers) or None, timestamp=r.timestamp_ms,
                      on_delivery=functools.partial(report, i))
            if flush_every and (i + 1) % flush_every == 0:
                assert p.flush(OP_TIMEOUT_S) == 0, f"record {i} not delivered"
            elif i % 500 == 0:
                p.poll(0)
        left = p.flush(FLUSH_TIMEOUT_S)
        assert left == 0, f"{left} records not delivered after {FLUSH_TIMEOUT_S}s: {self.errors[-5:]}"
        assert not failed, f"{len(failed)} delivery errors, first: {failed[:3]}"
        if acks != "0":
            assert all(t is not None for t in told)
        return told

    def list_offsets(self, topic: str, partitions: Sequence[int]) -> tuple[dict, dict]:
        from confluent_kafka import TopicPartition
        c = self._consumer()
        try:
            begins, ends = {}, {}
            for p in partitions:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=OP_TIMEOUT_S,
                                                 cached=False)
                begins[p], ends[p] = lo, hi
            return begins, ends
        finally:
            c.close()

    def offsets_for_times(self, topic: str, query: Mapping[int, int]) -> dict[int, int | None]:
        from confluent_kafka import TopicPartition
        c = self._consumer()
        try:
            res = c.offsets_for_times([TopicPartition(topic, p, ts) for p, ts in query.items()],
                                      timeout=OP_TIMEOUT_S)
            out = {}
            for tp in res:
                assert tp.error is None, f"offsets_for_times {topic}/{tp.partition}: {tp.error}"
                out[tp.partition] = tp.offset if tp.offset >= 0 else None
            return out
        finally:
            c.close()

    def consume(self, topic: str, ends: Mapping[int, int], timeout_s: float, *,
                small_fetches: bool = False) -> dict[int, list[Got]]:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition
        # librdkafka wants fetch.max.bytes >= message.max.bytes (its own client-side limit).
        c = self._consumer(**({"max.partition.fetch.bytes": SMALL_PARTITION_FETCH_BYTES,
                                "fetch.max.bytes": SMALL_FETCH_BYTES,
                                "message.max.bytes": SMALL_FETCH_BYTES} if small_fetches else {}))
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])

        def poll():
            out = []
            for m in c.consume(num_messages=1000, timeout=0.5):
                if m.error() is not None:
                    raise AssertionError(f"consume {topic}: {m.error()}")
                ts_type, ts = m.timestamp()
                out.append(Got(m.partition(), m.offset(), m.key(), m.value(),
                               _headers(m.headers()), ts))
            return out

        try:
            return drain(poll, ends, timeout_s=timeout_s)
        finally:
            c.close()

    def read_from(self, topic: str, partition: int, offset: int, count: int,
                  timeout_s: float = OP_TIMEOUT_S) -> list[Got]:
        """Assign one partition at `offset` and return the first `count` records read."""
        from confluent_kafka import TopicPartition
        c = self._consumer()
        c.assign([TopicPartition(topic, partition, offset)])
        out: list[Got] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(out) < count and time.monotonic() < deadline:
                for m in c.consume(num_messages=count, timeout=0.5):
                    if m.error() is not None:
                        raise AssertionError(f"consume {topic}/{partition}: {m.error()}")
                    out.append(Got(m.partition(), m.offset(), m.key(), m.value(),
                                   _headers(m.headers()), m.timestamp()[1]))
            return out[:count]
        finally:
            c.close()


class KafkaPythonDriver:
    name = "kafka-python"
    replication_factor = 1  # of the topics create_topics makes (tests/replication: 3)
    codecs = ALL_CODECS

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def _consumer(self, **extra):
        from kafka import KafkaConsumer
        return KafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=100, request_timeout_ms=int(OP_TIMEOUT_S * 1000),
                             **extra)

    def create_topics(self, topics: Sequence[str], partitions: int,
                      configs: Mapping[str, str] | None = None) -> None:
        from kafka.admin import KafkaAdminClient
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                 request_timeout_ms=int(OP_TIMEOUT_S * 1000))
        try:
            admin.create_topics({t: {"num_partitions": partitions,
                                     "replication_factor": self.replication_factor,
                                     "configs": dict(configs or {})} for t in topics},
                                timeout_ms=int(OP_TIMEOUT_S * 1000), wait_for_metadata=True)
        finally:
            admin.close()

    def partitions_for(self, topic: str) -> set[int]:
        c = self._consumer()
        try:
            deadline = time.monotonic() + OP_TIMEOUT_S
            while True:
                ps = c.partitions_for_topic(topic)
                if ps or time.monotonic() > deadline:
                    return set(ps or ())
                time.sleep(0.2)
        finally:
            c.close()

    def produce(self, topic: str, records: Sequence[Rec], *, codec: str = "none",
                acks: str = "all", flush_every: int = 0,
                idempotent: bool = False) -> list[tuple[int, int] | None]:
        """Produce `records` to their partitions; the (partition, offset) each was told.
        flush_every=N waits for delivery after every N records (N=1: one batch each)."""
        from kafka import KafkaProducer
        require_codec(self.name, codec)
        kw = dict(bootstrap_servers=self.bootstrap,
                  compression_type=None if codec == "none" else codec, linger_ms=5,
                  request_timeout_ms=int(OP_TIMEOUT_S * 1000),
                  max_block_ms=int(OP_TIMEOUT_S * 1000))
        if acks == "all":
            kw["acks"] = "all"       # and idempotent, kafka-python's default: InitProducerId
            if idempotent:
                kw["enable_idempotence"] = True
        else:
            assert not idempotent, "idempotence needs acks=all"
            kw.update(acks=int(acks), enable_idempotence=False)
        p = KafkaProducer(**kw)
        try:
            futures = []
            for i, r in enumerate(records):
                futures.append(p.send(topic, value=r.value, key=r.key, headers=list(r.headers),
                                      partition=r.partition, timestamp_ms=r.timestamp_ms))
                if flush_every and (i + 1) % flush_every == 0:
                    p.flush(timeout=OP_TIMEOUT_S)
            p.flush(timeout=FLUSH_TIMEOUT_S)
            told: list[tuple[int, int] | None] = []
            for i, f in enumerate(futures):
                md = f.get(timeout=OP_TIMEOUT_S)    # raises on a delivery error
                told.append(None if acks == "0" else (md.partition, md.offset))
            return told
        finally:
            p.close(timeout=OP_TIMEOUT_S)

    def list_offsets(self, topic: str, partitions: Sequence[int]) -> tuple[dict, dict]:
        from kafka import TopicPartition
        c = self._consumer()
        try:
            tps = [TopicPartition(topic, p) for p in partitions]
            b = c.beginning_offsets(tps, timeout_ms=int(OP_TIMEOUT_S * 1000))
            e = c.end_offsets(tps, timeout_ms=int(OP_TIMEOUT_S * 1000))
            return {tp.partition: o for tp, o in b.items()}, {tp.partition: o for tp, o in e.items()}
        finally:
            c.close()

    def offsets_for_times(self, topic: str, query: Mapping[int, int]) -> dict[int, int | None]:
        from kafka import TopicPartition
        c = self._consumer()
        try:
            res = c.offsets_for_times({TopicPartition(topic, p): ts for p, ts in query.items()},
                                      timeout_ms=int(OP_TIMEOUT_S * 1000))
            return {tp.partition: (None if o is None else o.offset) for tp, o in res.items()}
        finally:
            c.close()

    def consume(self, topic: str, ends: Mapping[int, int], timeout_s: float, *,
                small_fetches: bool = False) -> dict[int, list[Got]]:
        from kafka import TopicPartition
        c = self._consumer(**({"max_partition_fetch_bytes": SMALL_PARTITION_FETCH_BYTES,
                               "fetch_max_bytes": SMALL_FETCH_BYTES} if small_fetches else {}))
        tps = [TopicPartition(topic, p) for p in ends]
        c.assign(tps)
        c.seek_to_beginning(*tps)

        def poll():
            out = []
            for tp, recs in c.poll(timeout_ms=500, max_records=2000).items():
                for m in recs:
                    out.append(Got(tp.partition, m.offset, m.key, m.value, _headers(m.headers),
                                   m.timestamp))
            return out

        try:
            return drain(poll, ends, timeout_s=timeout_s)
        finally:
            c.close()

    def read_from(self, topic: str, partition: int, offset: int, count: int,
                  timeout_s: float = OP_TIMEOUT_S) -> list[Got]:
        from kafka import TopicPartition
        c = self._consumer()
        tp = TopicPartition(topic, partition)
        c.assign([tp])
        c.seek(tp, offset)
        out: list[Got] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(out) < count and time.monotonic() < deadline:
                for m in c.poll(timeout_ms=500, max_records=count).get(tp, []):
                    out.append(Got(partition, m.offset, m.key, m.value, _headers(m.headers),
                                   m.timestamp))
            return out[:count]
        finally:
            c.close()


class AioKafkaDriver:
    """aiokafka is asyncio-only: each method runs its coroutine with asyncio.run (the tests
    are plain sync functions, so no trio loop is running in this thread)."""

    name = "aiokafka"
    replication_factor = 1  # of the topics create_topics makes (tests/replication: 3)
    codecs = ALL_CODECS

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def _consumer(self, **extra):
        from aiokafka import AIOKafkaConsumer
        return AIOKafkaConsumer(bootstrap_servers=self.bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=100,
                                request_timeout_ms=int(OP_TIMEOUT_S * 1000), **extra)

    def _run(self, coro, timeout_s: float = FLUSH_TIMEOUT_S + OP_TIMEOUT_S):
        async def bounded():
            return await asyncio.wait_for(coro, timeout_s)
        return asyncio.run(bounded())

    def create_topics(self, topics: Sequence[str], partitions: int,
                      configs: Mapping[str, str] | None = None) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        async def go():
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap,
                                        request_timeout_ms=int(OP_TIMEOUT_S * 1000))
            await admin.start()
            try:
                return await admin.create_topics(
                    [NewTopic(t, num_partitions=partitions, replication_factor=self.replication_factor,
                              topic_configs=dict(configs or {})) for t in topics],
                    timeout_ms=int(OP_TIMEOUT_S * 1000))
            finally:
                await admin.close()
        response = self._run(go())
        # aiokafka returns the CreateTopics response instead of raising on a topic error.
        errors = [t for t in response.topic_errors if t[1] != 0]
        assert not errors, f"aiokafka CreateTopics: {errors}"

    def partitions_for(self, topic: str) -> set[int]:
        from aiokafka import AIOKafkaProducer

        async def go():
            p = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                 request_timeout_ms=int(OP_TIMEOUT_S * 1000))
            await p.start()
            try:
                return set(await p.partitions_for(topic))
            finally:
                await p.stop()
        return self._run(go())

    def produce(self, topic: str, records: Sequence[Rec], *, codec: str = "none",
                acks: str = "all", flush_every: int = 0,
                idempotent: bool = False) -> list[tuple[int, int] | None]:
        """Produce `records` to their partitions; the (partition, offset) each was told.
        flush_every=N waits for delivery after every N records (N=1: one batch each)."""
        from aiokafka import AIOKafkaProducer
        require_codec(self.name, codec)

        async def go():
            p = AIOKafkaProducer(bootstrap_servers=self.bootstrap,
                                 acks={"all": "all", "1": 1, "0": 0}[acks],
                                 compression_type=None if codec == "none" else codec,
                                 linger_ms=5, enable_idempotence=idempotent,
                                 request_timeout_ms=int(OP_TIMEOUT_S * 1000))
            await p.start()
            try:
                futures = []
                for i, r in enumerate(records):
                    futures.append(await p.send(topic, value=r.value, key=r.key,
                                                partition=r.partition, headers=list(r.headers),
                                                timestamp_ms=r.timestamp_ms))
                    if flush_every and (i + 1) % flush_every == 0:
                        await p.flush()
                await p.flush()
                told: list[tuple[int, int] | None] = []
                for f in futures:
                    md = await f                      # raises on a delivery error
                    told.append(None if acks == "0" else (md.partition, md.offset))
                return told
            finally:
                await p.stop()
        return self._run(go())

    def list_offsets(self, topic: str, partitions: Sequence[int]) -> tuple[dict, dict]:
        from aiokafka import TopicPartition

        async def go():
            c = self._consumer()
            await c.start()
            try:
                tps = [TopicPartition(topic, p) for p in partitions]
                b = await c.beginning_offsets(tps)
                e = await c.end_offsets(tps)
                return ({tp.partition: o for tp, o in b.items()},
                        {tp.partition: o for tp, o in e.items()})
            finally:
                await c.stop()
        return self._run(go())

    def offsets_for_times(self, topic: str, query: Mapping[int, int]) -> dict[int, int | None]:
        from aiokafka import TopicPartition

        async def go():
            c = self._consumer()
            await c.start()
            try:
                res = await c.offsets_for_times(
                    {TopicPartition(topic, p): ts for p, ts in query.items()})
                return {tp.partition: (None if o is None else o.offset) for tp, o in res.items()}
            finally:
                await c.stop()
        return self._run(go())

    def consume(self, topic: str, ends: Mapping[int, int], timeout_s: float, *,
                small_fetches: bool = False) -> dict[int, list[Got]]:
        from aiokafka import TopicPartition

        async def go():
            c = self._consumer(**({"max_partition_fetch_bytes": SMALL_PARTITION_FETCH_BYTES,
                                   "fetch_max_bytes": SMALL_FETCH_BYTES} if small_fetches else {}))
            await c.start()
            try:
                tps = [TopicPartition(topic, p) for p in ends]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                # drain() is synchronous; collect here with the same bounds and checks.
                got: dict[int, list[Got]] = {p: [] for p in ends}
                deadline = time.monotonic() + timeout_s
                polls = 0

                def done():
                    return all(end == 0 or (got[p] and got[p][-1].offset + 1 >= end)
                               for p, end in ends.items())
                while not done():
                    if time.monotonic() > deadline or polls >= 100_000:
                        progress = {p: (got[p][-1].offset + 1 if got[p] else 0, ends[p])
                                    for p in ends}
                        raise AssertionError(
                            f"aiokafka did not reach the end offsets within {timeout_s}s; "
                            f"(next offset, end offset) per partition: {progress}")
                    polls += 1
                    batch = await c.getmany(*tps, timeout_ms=500, max_records=2000)
                    for tp, recs in batch.items():
                        for m in recs:
                            got.setdefault(tp.partition, []).append(
                                Got(tp.partition, m.offset, m.key, m.value, _headers(m.headers),
                                    m.timestamp))
                return got
            finally:
                await c.stop()
        return self._run(go(), timeout_s + OP_TIMEOUT_S)

    def read_from(self, topic: str, partition: int, offset: int, count: int,
                  timeout_s: float = OP_TIMEOUT_S) -> list[Got]:
        from aiokafka import TopicPartition

        async def go():
            c = self._consumer()
            await c.start()
            try:
                tp = TopicPartition(topic, partition)
                c.assign([tp])
                c.seek(tp, offset)
                out: list[Got] = []
                deadline = time.monotonic() + timeout_s
                while len(out) < count and time.monotonic() < deadline:
                    batch = await c.getmany(tp, timeout_ms=500, max_records=count)
                    for m in batch.get(tp, []):
                        out.append(Got(partition, m.offset, m.key, m.value, _headers(m.headers),
                                       m.timestamp))
                return out[:count]
            finally:
                await c.stop()
        return self._run(go())


PY_DRIVERS = {d.name: d for d in (ConfluentDriver, KafkaPythonDriver, AioKafkaDriver)}
