"""The workload: producers and consumers on real Kafka clients, each recording to the history.

confluent-kafka and kafka-python are blocking: each producer and consumer runs in its own
worker thread (trio.to_thread) and stops when its `threading.Event` is set. aiokafka
runs inside the trio harness through trio-asyncio.

Producers send unique values `<process>-<seq>` with key `k<seq mod keys>` to partition
`key mod partitions` of topic `seq mod topics`, paced at `rate_per_s`. Without idempotence a
producer keeps one request in flight, so its acknowledged offsets must follow its send
order (nonmonotonic_sends); with idempotence the client keeps order itself.

Consumers use assign() from the beginning of every partition with manual positions (no
group coordination) and record every record they get.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import attrs

from .history import History

log = logging.getLogger(__name__)

CONSUME_BATCH_MAX = 500
FINAL_IDLE_S = 5.0  # a read_committed final read ends after this long without a new record
POLL_TIMEOUT_S = 0.2
FLUSH_TIMEOUT_S_MAX = 60.0
# A producer loop iteration later than this after the previous one is recorded: a stall of
# the harness's own thread (not the broker) would otherwise look like unavailability.
CLIENT_STALL_S = 1.0
# The longest single poll() of a paced confluent-kafka loop: poll(timeout) returns as soon as
# it has served one callback, so one call is not a wait (see Pacer).
POLL_SLICE_S = 0.05
# librdkafka errors after which a write may or may not have happened (outcome "info").
INDETERMINATE = {"_MSG_TIMED_OUT", "_TIMED_OUT", "REQUEST_TIMED_OUT", "_TRANSPORT",
                 "NOT_ENOUGH_REPLICAS_AFTER_APPEND", "_TIMED_OUT_QUEUE", "NETWORK_EXCEPTION",
                 "_PURGE_INFLIGHT", "_ALL_BROKERS_DOWN"}


@attrs.define
class Target:
    """What the drain waits for: each partition's high watermark at the end."""

    high_watermarks: dict[tuple[str, int], int] = attrs.field(factory=dict)
    deadline: float = 0.0  # time.monotonic()
    set: threading.Event = attrs.field(factory=threading.Event)

    def reached(self, positions: dict[tuple[str, int], int]) -> bool:
        """Whether a consumer at `positions` is done draining (once the target is set)."""
        return self.set.is_set() and (time.monotonic() > self.deadline or all(
            positions.get(tp, 0) >= hw for tp, hw in self.high_watermarks.items()))


class Pacer:
    """The schedule of a paced loop: `rate_per_s` sends a second from its start.

    A loop more than a second behind (a stalled client) starts again from now rather than
    bursting to catch up. A loop never runs ahead: `wait` returns no earlier than the next
    slot. (It once did: confluent-kafka's `poll(timeout)` returns as soon as it has served one
    delivery callback, so a producer whose acknowledgements came faster than its interval got
    seconds ahead of its schedule, and the next `poll(lead)` then waited on the acknowledgement
    of one slow partition, issuing nothing to the others: the "client stalls" of
    docs/chaos.md.)"""

    def __init__(self, rate_per_s: float) -> None:
        self.interval_s = 1.0 / rate_per_s
        self.next_at = time.monotonic()

    def advance(self, sends: int = 1) -> None:
        """`sends` were issued: the next slot is that many intervals later."""
        self.next_at += sends * self.interval_s
        if self.next_at - time.monotonic() < -1.0:
            self.next_at = time.monotonic()

    def wait(self, stop: threading.Event, poll: Callable[[float], object] | None = None) -> None:
        """Until the next slot or `stop`; `poll(timeout)` (a confluent-kafka producer's,
        serving its callbacks) is called meanwhile, at least once, in slices of at most
        POLL_SLICE_S."""
        if poll is not None:
            poll(0)
        while not stop.is_set():
            left = self.next_at - time.monotonic()
            if left <= 0:
                return
            if poll is None:
                stop.wait(left)
            else:
                poll(min(left, POLL_SLICE_S))


def record_seeks(history, name: str, parts) -> None:
    """Every consumer starts each partition at offset 0: the history says so."""
    for tp in parts:
        history.record({"type": "seek", "process": name, "topic": tp.topic, "partition": tp.partition,
                        "offset": 0})


def planned_send(name: str, seq: int, topics: list[tuple[str, int]], keys: int,
                 tombstone_every: int = 0) -> dict:
    """Send number `seq` of producer `name`, as the history records it: topics in turn, key
    seq % keys, the key's partition, and a value unique in the run. With tombstone_every=N,
    every Nth send is a tombstone (a null value) of its key: its history value is
    `<name>-<seq>:tombstone`, carried in the record's TOMBSTONE_HEADER (see read_value)."""
    topic, partitions = topics[seq % len(topics)]
    key_index = seq % keys
    send = {"type": "send", "process": name, "seq": seq, "topic": topic, "partition": key_index % partitions,
            "key": f"k{key_index}", "value": f"{name}-{seq}"}
    if tombstone_every and seq % tombstone_every == tombstone_every - 1:
        send.update(value=f"{name}-{seq}{TOMBSTONE_SUFFIX}", tombstone=True)
    return send


def planned_txn(name: str, seq: int, n: int, topics: list[tuple[str, int]], spec) -> tuple[list[dict], bool]:
    """Transaction number n of producer `name`, its sends starting at `seq`: spec.txn_records
    planned sends (so across partitions and topics), and whether it is aborted on purpose
    (every spec.abort_every-th)."""
    sends = [planned_send(name, seq + j, topics, spec.keys) for j in range(spec.txn_records)]
    return sends, spec.abort_every > 0 and n % spec.abort_every == 0


TOMBSTONE_HEADER = "chaos-id"
TOMBSTONE_SUFFIX = ":tombstone"


def record_payload(send: dict) -> tuple[bytes | None, list[tuple[str, bytes]] | None]:
    """(value, headers) a producer sends for a planned send: a tombstone's value is null and
    its history value rides in a header, so reads can still tell which send it was."""
    if send.get("tombstone"):
        return None, [(TOMBSTONE_HEADER, send["value"].encode())]
    return send["value"].encode(), None


def read_value(value: bytes | None, headers) -> str:
    """A record's history value: its value, or for a tombstone its TOMBSTONE_HEADER ("" if
    it has none)."""
    if value is not None:
        return value.decode()
    for k, v in headers or ():
        if k == TOMBSTONE_HEADER and v is not None:
            return bytes(v).decode()
    return ""


def record_answer(history, event: dict, *, offset: int | None = None,
                  exc: BaseException | None = None) -> None:
    """kafka-python's and aiokafka's answer to a send: ok with its offset, or the exception
    (indeterminate when the write may still have happened)."""
    if exc is None:
        history.record({**event, "t_end": round(history.now(), 6), "outcome": "ok", "offset": offset})
    else:
        history.record({**event, "t_end": round(history.now(), 6),
                        "outcome": "info" if type(exc).__name__ in INDETERMINATE_PY else "fail",
                        "error": f"{type(exc).__name__}: {exc}"})


def client_logger(path) -> logging.Logger:
    """A logger writing the clients' own log lines to `path` (not the terminal)."""
    logger = logging.getLogger(f"chaos.clients.{path}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logger.addHandler(handler)
    for library in ("aiokafka", "kafka"):  # kafka-python and aiokafka log through logging
        library_logger = logging.getLogger(library)
        library_logger.propagate = False
        library_logger.setLevel(logging.INFO)
        library_logger.handlers[:] = [handler]
    return logger


def producer_config(bootstrap: str, spec, logger: logging.Logger) -> dict:
    config = {
        "bootstrap.servers": bootstrap,
        "acks": spec.acks if spec.acks != "all" else "all",
        "enable.idempotence": spec.idempotence,
        "message.timeout.ms": int(spec.delivery_timeout_s * 1000),
        "request.timeout.ms": int(spec.request_timeout_s * 1000),
        "linger.ms": 5,
        "compression.type": "none",
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500,
        "retry.backoff.ms": 100,
        "topic.metadata.refresh.interval.ms": 2000,
        "logger": logger,
    }
    if not spec.idempotence:
        config["max.in.flight.requests.per.connection"] = 1
    return config


def run_producer(name: str, bootstrap: str, spec, topics: list[tuple[str, int]],
                 history: History, stop: threading.Event, logger: logging.Logger,
                 seq_start: int = 0) -> None:
    """A paced producer until `stop`; then it waits for its outstanding sends (bounded)."""
    from confluent_kafka import KafkaError, Producer

    producer = Producer(producer_config(bootstrap, spec, logger))
    pacer = Pacer(spec.rate_per_s)
    seq = seq_start

    def on_delivery(send: dict, t_start: float):
        def callback(err, msg) -> None:
            event = {**send, "t_start": round(t_start, 6), "t_end": round(history.now(), 6)}
            if err is None:
                event.update(outcome="ok", offset=msg.offset())
            else:
                code = KafkaError(err.code()).name() if hasattr(err, "code") else str(err)
                event.update(outcome="info" if code in INDETERMINATE else "fail",
                             error=f"{code}: {err.str()}")
            history.record(event)
        return callback

    last_s = history.now()
    spent = {"produce_s": 0.0, "poll_s": 0.0}  # of the last iteration, for a client-stall event
    while not stop.is_set():
        send = planned_send(name, seq, topics, spec.keys, spec.tombstone_every)
        value, headers = record_payload(send)
        t_start = history.now()
        if t_start - last_s > CLIENT_STALL_S:  # the loop itself did not run: not the broker's doing
            history.record({"type": "client-stall", "process": name, "t": round(t_start, 6),
                            "since": round(last_s, 6), **{k: round(v, 3) for k, v in spent.items()}})
        last_s = t_start
        try:
            producer.produce(send["topic"], value=value, key=send["key"].encode(), headers=headers,
                             partition=send["partition"], on_delivery=on_delivery(send, t_start))
        except BufferError:
            producer.poll(0.1)
            continue
        t_produced = history.now()
        seq += 1
        pacer.advance()
        pacer.wait(stop, producer.poll)
        spent = {"produce_s": t_produced - t_start, "poll_s": history.now() - t_produced}
    remaining = producer.flush(min(FLUSH_TIMEOUT_S_MAX, spec.delivery_timeout_s + 5))
    if remaining:
        log.warning("%s: %d send(s) still unanswered at the end (recorded as nothing)", name, remaining)


def txn_timeout_s(spec) -> float:
    """A transactional producer's transaction timeout: 4 delivery timeouts, at least 10 s."""
    return max(10.0, 4 * spec.delivery_timeout_s)


def txn_producer_config(bootstrap: str, spec, logger: logging.Logger, transactional_id: str) -> dict:
    """A transactional confluent-kafka producer: idempotent, transaction timeout
    txn_timeout_s."""
    config = {k: v for k, v in producer_config(bootstrap, spec, logger).items()
              if k != "max.in.flight.requests.per.connection"}
    config.update({"transactional.id": transactional_id, "enable.idempotence": True,
                   "transaction.timeout.ms": int(txn_timeout_s(spec) * 1000)})
    return config


def new_txn_producer(config: dict, timeout_s: float, history: History, failure: dict):
    """A transactional producer with its transactions initialized (fencing any earlier
    instance of its id), or None with `failure` recorded."""
    from confluent_kafka import KafkaException, Producer

    producer = Producer(config)
    try:
        producer.init_transactions(timeout_s)
    except KafkaException as exc:
        history.record({**failure, "t": round(history.now(), 6), "error": str(exc.args[0])})
        return None
    return producer


def record_txn(history, name: str, n: int, sends: list[dict], outcome: str, offsets: dict[int, int],
               t_start: float, t_commit: float | None) -> None:
    """One transaction in the history: each send with the transaction's outcome (commit: ok
    with its offset; abort: fail, never to be read; info: unknown) and the `txn` event (its
    values, outcome, and t_commit, when the producer asked to end it)."""
    t_end = round(history.now(), 6)
    for send in sends:
        event = {**send, "t_start": round(t_start, 6), "t_end": t_end, "txn": n}
        if outcome == "commit":
            event.update(outcome="ok", offset=offsets[send["seq"]])
        else:
            event.update(outcome="fail" if outcome == "abort" else "info", error=f"transaction {outcome}")
        history.record(event)
    history.record({"type": "txn", "process": name, "txn": n, "outcome": outcome, "t_start": round(t_start, 6),
                    "t_commit": round(t_commit, 6) if t_commit is not None else None, "t_end": t_end,
                    "values": [[s["topic"], s["partition"], s["value"]] for s in sends]})


def run_producer_txn(name: str, bootstrap: str, spec, topics: list[tuple[str, int]],
                     history: History, stop: threading.Event, logger: logging.Logger,
                     seq_start: int = 0) -> None:
    """Transactions until `stop`: each of spec.txn_records planned sends (so across
    partitions and topics), committed, or aborted on purpose every spec.abort_every-th.

    The history gets each send with the transaction's outcome (ok with its offset when the
    commit succeeded; fail when it was aborted, so never to be read; info when the commit's
    outcome is unknown) and one `txn` event: its values, outcome, and t_commit, the time
    just before commit_transaction was called (nothing of it may be read before that)."""
    from confluent_kafka import KafkaException

    config = txn_producer_config(bootstrap, spec, logger, f"chaos-{name}")
    timeout_s = spec.delivery_timeout_s * 2
    producer = None
    seq, n = seq_start, 0
    pacer = Pacer(spec.rate_per_s)
    while not stop.is_set():
        if producer is None:
            producer = new_txn_producer(config, timeout_s, history, {"type": "txn-init-failed", "process": name})
            if producer is None:
                stop.wait(0.5)
                continue
        sends, abort = planned_txn(name, seq, n + 1, topics, spec)
        seq += len(sends)
        n += 1
        offsets: dict[int, int] = {}

        def delivered(send_seq: int):
            def callback(err, msg) -> None:
                if err is None:
                    offsets[send_seq] = msg.offset()
            return callback

        t_start, t_commit = history.now(), None
        try:
            producer.begin_transaction()
            for send in sends:
                producer.produce(send["topic"], value=send["value"].encode(), key=send["key"].encode(),
                                 partition=send["partition"], on_delivery=delivered(send["seq"]))
            producer.flush(timeout_s)  # every record written (and its offset known) before the end
            t_commit = history.now()
            if abort:
                producer.abort_transaction(timeout_s)
                outcome = "abort"
            else:
                producer.commit_transaction(timeout_s)
                outcome = "commit"
        except KafkaException as exc:
            error = exc.args[0]
            outcome = "info"
            if t_commit is None and error.txn_requires_abort():
                try:
                    producer.abort_transaction(timeout_s)
                    outcome = "abort"
                except KafkaException:
                    pass
            if outcome == "info":
                producer = None  # a new instance: its InitProducerId fences and ends this one
            history.record({"type": "txn-error", "process": name, "txn": n, "t": round(history.now(), 6),
                            "error": str(error)})
        record_txn(history, name, n, sends, outcome, offsets, t_start, t_commit)
        pacer.advance(len(sends))
        pacer.wait(stop)
    if producer is None and n:
        end_abandoned_txn(config, timeout_s, history, name)


def end_abandoned_txn(config: dict, timeout_s: float, history: History, name: str) -> bool:
    """The workload stopped right after a transaction of unknown outcome, before a new
    instance of the producer fenced it: one more instance does (its InitProducerId ends the
    open transaction, committing it if its commit was decided, else aborting it), as an
    application shutting down would. Without this the transaction stays open until the
    coordinator's timeout aborts it (txn_timeout_s, a minute), holding every read_committed
    reader of its partitions behind it, past the final read. Records a `txn-fence` event;
    False if the new instance could not initialise within timeout_s."""
    t = history.now()
    producer = new_txn_producer(config, timeout_s, history, {"type": "txn-fence-failed", "process": name})
    if producer is None:
        return False
    history.record({"type": "txn-fence", "process": name, "t_start": round(t, 6), "t_end": round(history.now(), 6)})
    producer.flush(0)
    return True


COPY_PREFIX = "copy:"
COPIER_IDLE_S = 5.0  # after the producers stopped, the copier ends once idle this long


def run_copier(bootstrap: str, spec, sources: list[tuple[str, int]], out: tuple[str, int], history: History,
               producers_stopped: threading.Event, stop: threading.Event, done: threading.Event,
               logger: logging.Logger) -> None:
    """The consume-transform-produce stage: reads `sources` in a consumer group
    (read_committed) and writes COPY_PREFIX + value to the same partition number (mod the
    output's partitions) of `out`, each batch one transaction with its input offsets
    (send_offsets_to_transaction). A failed transaction is aborted and the consumer
    rewound to the group's committed offsets, as an exactly-once application does. Ends
    (setting `done`) once the producers stopped and nothing new came for COPIER_IDLE_S."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException

    timeout_s = spec.delivery_timeout_s * 2
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "chaos-copier", "isolation.level": "read_committed",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
                         "topic.metadata.refresh.interval.ms": 2000, "reconnect.backoff.ms": 50,
                         "reconnect.backoff.max.ms": 500, "logger": logger})
    consumer.subscribe([t for t, _ in sources])
    config = txn_producer_config(bootstrap, spec, logger, "chaos-copier")
    producer = None
    idle_since = None

    def rewind() -> None:
        try:
            for tp in consumer.committed(consumer.assignment(), timeout_s):
                tp.offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
                consumer.seek(tp)
        except KafkaException as exc:
            history.record({"type": "copier-error", "t": round(history.now(), 6), "error": f"rewind: {exc}"})

    try:
        while not stop.is_set():
            if producer is None:
                producer = new_txn_producer(config, timeout_s, history, {"type": "copier-error"})
                if producer is None:
                    stop.wait(0.5)
                    continue
                rewind()
            msgs = [m for m in consumer.consume(100, POLL_TIMEOUT_S * 2) if m.error() is None]
            if not msgs:
                if producers_stopped.is_set():
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > COPIER_IDLE_S:
                        break
                continue
            idle_since = None
            try:
                producer.begin_transaction()
                for m in msgs:
                    producer.produce(out[0], value=(COPY_PREFIX + m.value().decode()).encode(),
                                     partition=m.partition() % out[1])
                producer.send_offsets_to_transaction(consumer.position(consumer.assignment()),
                                                     consumer.consumer_group_metadata(), timeout_s)
                producer.commit_transaction(timeout_s)
                history.record({"type": "copy", "t": round(history.now(), 6), "records": len(msgs)})
            except KafkaException as exc:
                history.record({"type": "copier-error", "t": round(history.now(), 6), "error": str(exc.args[0])})
                try:
                    producer.abort_transaction(timeout_s)
                except KafkaException:
                    producer = None  # a new instance fences this one and ends its transaction
                rewind()
    finally:
        done.set()
        consumer.close()


def run_consumer(name: str, bootstrap: str, topics: list[tuple[str, int]], history: History,
                 stop: threading.Event, target: Target, logger: logging.Logger,
                 isolation: str = "read_uncommitted") -> None:
    """Read every partition from its beginning until `stop`, or once `target` is set, until
    every partition's position reaches its high watermark (or the target's deadline)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"chaos-{name}",
        "enable.auto.commit": False, "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100,
        "topic.metadata.refresh.interval.ms": 2000, "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 500, "logger": logger, "isolation.level": isolation,
    })
    parts = [TopicPartition(t, p, OFFSET_BEGINNING) for t, n in topics for p in range(n)]
    consumer.assign(parts)
    record_seeks(history, name, parts)
    positions: dict[tuple[str, int], int] = {}
    try:
        while not stop.is_set():
            if target.reached(positions):
                break
            messages = consumer.consume(CONSUME_BATCH_MAX, POLL_TIMEOUT_S)
            t = round(history.now(), 6)
            batches: dict[tuple[str, int], list] = {}
            for msg in messages:
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        history.record({"type": "consumer-error", "process": name, "t": t,
                                        "error": f"{err.name()}: {err.str()}"})
                    continue
                tp = (msg.topic(), msg.partition())
                batches.setdefault(tp, []).append([msg.offset(), read_value(msg.value(), msg.headers())])
                positions[tp] = msg.offset() + 1
            for (topic, partition), records in batches.items():
                history.record({"type": "poll", "process": name, "topic": topic,
                                "partition": partition, "t": t, "records": records})
    finally:
        consumer.close()


def final_read(bootstrap: str, topic: str, partition: int, timeout_s: float,
               logger: logging.Logger, now: Callable[[], float],
               isolation: str = "read_uncommitted") -> tuple[int, list]:
    """(high watermark, [[offset, value], ...] below it) read through the partition's leader.
    read_committed: aborted records and markers are never delivered, so the read also ends
    once nothing new arrived for FINAL_IDLE_S (everything is stable after the heal). Its
    target is still the high watermark, not the read_committed end (the last stable
    offset): a transaction whose commit was answered may have its markers still on their
    way (EndTxn is answered once the commit is decided, as with Kafka), and the read waits
    for them instead of stopping before its records.

    Raises:
        TimeoutError: the partition could not be read to its high watermark in time.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    deadline = time.monotonic() + timeout_s
    settings = {"bootstrap.servers": bootstrap, "group.id": "chaos-final-read", "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100, "logger": logger}
    consumer = Consumer({**settings, "isolation.level": isolation})
    watermarks = Consumer({**settings, "isolation.level": "read_uncommitted"})  # the high watermark
    try:
        high = None
        last_error = None
        while high is None and time.monotonic() < deadline:
            try:
                _, high = watermarks.get_watermark_offsets(TopicPartition(topic, partition),
                                                           timeout=min(5.0, timeout_s))
            except KafkaException as exc:
                last_error = exc
                time.sleep(0.2)
        if high is None:
            raise TimeoutError(f"no high watermark for {topic}-{partition}: {last_error}")
        records: dict[int, str] = {}
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        position = 0
        last_new = time.monotonic()
        while position < high:
            if isolation == "read_committed" and time.monotonic() - last_new > FINAL_IDLE_S:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}-{partition}: read to {position} of {high} in {timeout_s} s")
            for msg in consumer.consume(CONSUME_BATCH_MAX, POLL_TIMEOUT_S):
                if msg.error() is not None:
                    continue
                last_new = time.monotonic()
                if msg.offset() < high:
                    records[msg.offset()] = read_value(msg.value(), msg.headers())
                position = max(position, msg.offset() + 1)
        return high, sorted(records.items())
    finally:
        watermarks.close()
        consumer.close()


# --- kafka-python (blocking: worker threads, like confluent-kafka) ----------------------------

# kafka-python errors after which a write may or may not have happened.
INDETERMINATE_PY = {"KafkaTimeoutError", "RequestTimedOutError", "NotEnoughReplicasAfterAppendError",
                    "KafkaConnectionError", "NodeNotReadyError", "CancelledError"}


def _acks(spec):
    return {"all": "all", "1": 1, "0": 0}[spec.acks]


def run_producer_kafka_python(name: str, bootstrap: str, spec, topics: list[tuple[str, int]],
                              history: History, stop: threading.Event, logger: logging.Logger,
                              seq_start: int = 0) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=bootstrap.split(","), acks=_acks(spec), enable_idempotence=spec.idempotence,
        delivery_timeout_ms=int(spec.delivery_timeout_s * 1000),
        request_timeout_ms=int(spec.request_timeout_s * 1000), linger_ms=5, retry_backoff_ms=100,
        reconnect_backoff_ms=50, reconnect_backoff_max_ms=500, metadata_max_age_ms=2000,
        max_in_flight_requests_per_connection=5 if spec.idempotence else 1)
    pacer = Pacer(spec.rate_per_s)
    seq = seq_start
    while not stop.is_set():
        event = {**planned_send(name, seq, topics, spec.keys, spec.tombstone_every),
                 "t_start": round(history.now(), 6)}
        value, headers = record_payload(event)
        try:
            future = producer.send(event["topic"], value=value, key=event["key"].encode(),
                                   headers=headers, partition=event["partition"])
        except Exception as exc:  # refused before it was queued: nothing was sent
            history.record({**event, "t_end": round(history.now(), 6), "outcome": "fail",
                            "error": f"{type(exc).__name__}: {exc}"})
        else:
            future.add_callback(lambda md, e=event: record_answer(history, e, offset=md.offset))
            future.add_errback(lambda exc, e=event: record_answer(history, e, exc=exc))
        seq += 1
        pacer.advance()
        pacer.wait(stop)
    try:
        producer.flush(timeout=min(FLUSH_TIMEOUT_S_MAX, spec.delivery_timeout_s + 5))
    except Exception as exc:  # a flush timeout leaves the rest unanswered (not recorded)
        log.warning("%s: flush: %r", name, exc)
    producer.close(timeout=5)


def run_consumer_kafka_python(name: str, bootstrap: str, topics: list[tuple[str, int]],
                              history: History, stop: threading.Event, target: Target,
                              logger: logging.Logger) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             fetch_max_wait_ms=100, metadata_max_age_ms=2000,
                             reconnect_backoff_ms=50, reconnect_backoff_max_ms=500)
    parts = [TopicPartition(t, p) for t, n in topics for p in range(n)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    record_seeks(history, name, parts)
    positions: dict[tuple[str, int], int] = {}
    try:
        while not stop.is_set():
            if target.reached(positions):
                break
            try:
                batches = consumer.poll(timeout_ms=int(POLL_TIMEOUT_S * 1000), max_records=CONSUME_BATCH_MAX)
            except Exception as exc:  # recorded; the consumer goes on polling
                history.record({"type": "consumer-error", "process": name, "error": repr(exc)})
                time.sleep(POLL_TIMEOUT_S)
                continue
            t = round(history.now(), 6)
            for tp, records in batches.items():
                history.record({"type": "poll", "process": name, "topic": tp.topic, "partition": tp.partition,
                                "t": t, "records": [[r.offset, read_value(r.value, r.headers)] for r in records]})
                positions[(tp.topic, tp.partition)] = records[-1].offset + 1
    finally:
        consumer.close()


# --- aiokafka (asyncio inside the trio harness, through trio-asyncio) ---------------------------

async def run_producer_aiokafka(name: str, bootstrap: str, spec, topics: list[tuple[str, int]],
                                history: History, stop: threading.Event, logger: logging.Logger) -> None:
    import trio_asyncio

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(_aio_producer)(name, bootstrap, spec, topics, history, stop)


async def _aio_producer(name, bootstrap, spec, topics, history, stop) -> None:
    import asyncio

    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=_acks(spec),
                                enable_idempotence=spec.idempotence,
                                request_timeout_ms=int(spec.delivery_timeout_s * 1000),
                                linger_ms=5, retry_backoff_ms=100, metadata_max_age_ms=2000)
    await producer.start()
    interval_s = 1.0 / spec.rate_per_s
    pending: set = set()
    seq = 0
    try:
        while not stop.is_set():
            event = {**planned_send(name, seq, topics, spec.keys, spec.tombstone_every),
                     "t_start": round(history.now(), 6)}
            seq += 1
            value, headers = record_payload(event)
            try:
                future = await producer.send(event["topic"], value=value, headers=headers,
                                             key=event["key"].encode(), partition=event["partition"])
            except Exception as exc:  # refused before it was queued
                history.record({**event, "t_end": round(history.now(), 6), "outcome": "fail",
                                "error": f"{type(exc).__name__}: {exc}"})
                continue

            def done(f, e=event):
                pending.discard(f)
                if f.cancelled() or f.exception() is not None:
                    record_answer(history, e, exc=f.exception() if not f.cancelled() else asyncio.CancelledError())
                else:
                    record_answer(history, e, offset=f.result().offset)
            pending.add(future)
            future.add_done_callback(done)
            await asyncio.sleep(interval_s)
        if pending:
            await asyncio.wait(pending, timeout=min(FLUSH_TIMEOUT_S_MAX, spec.delivery_timeout_s + 5))
    finally:
        await producer.stop()


async def run_consumer_aiokafka(name: str, bootstrap: str, topics: list[tuple[str, int]],
                                history: History, stop: threading.Event, target: Target,
                                logger: logging.Logger) -> None:
    import trio_asyncio

    async with trio_asyncio.open_loop():
        await trio_asyncio.aio_as_trio(_aio_consumer)(name, bootstrap, topics, history, stop, target)


async def _aio_consumer(name, bootstrap, topics, history, stop, target) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100,
                                metadata_max_age_ms=2000)
    await consumer.start()
    parts = [TopicPartition(t, p) for t, n in topics for p in range(n)]
    consumer.assign(parts)
    await consumer.seek_to_beginning(*parts)
    record_seeks(history, name, parts)
    positions: dict[tuple[str, int], int] = {}
    try:
        while not stop.is_set():
            if target.reached(positions):
                break
            batches = await consumer.getmany(timeout_ms=int(POLL_TIMEOUT_S * 1000), max_records=CONSUME_BATCH_MAX)
            t = round(history.now(), 6)
            for tp, records in batches.items():
                history.record({"type": "poll", "process": name, "topic": tp.topic, "partition": tp.partition,
                                "t": t, "records": [[r.offset, read_value(r.value, r.headers)] for r in records]})
                positions[(tp.topic, tp.partition)] = records[-1].offset + 1
    finally:
        await consumer.stop()
