"""Durability and recovery of a real `chronik-trio node`: SIGKILL, SIGTERM, torn tails
and corruption on disk.

The invariant checked everywhere: every produce the broker acknowledged (acks=all) is
there after a restart, at the offset the producer was told, with the bytes it sent;
offsets are contiguous from 0; anything else present is a batch a producer actually
sent (an in-flight request may or may not have been written when the node died).
"""

from __future__ import annotations

import pathlib
import random
import re
import signal
import struct
import threading
import time
import zlib
from dataclasses import dataclass, field

import crc32c
import pytest

from tests.kafka_wire import (
    NONE,
    ConnectionClosed,
    KafkaWire,
    Record,
    build_batch,
    parse_batches,
    random_topic,
)

PARTITIONS = 3
FRAME_HEADER = struct.Struct(">IIQQB")  # length, crc32c, index, term, type


# --------------------------------------------------------------------------- producer


@dataclass
class Ledger:
    """What producers sent and what the broker acknowledged, per partition."""
    acked: dict[int, dict[int, bytes]] = field(default_factory=dict)   # p -> base -> content
    sent: dict[int, set[bytes]] = field(default_factory=dict)          # p -> contents
    lock: threading.Lock = field(default_factory=threading.Lock)

    def n_acked(self) -> int:
        with self.lock:
            return sum(len(v) for v in self.acked.values())


def make_batch(round_no: int, partition: int, rng: random.Random, tag: str) -> bytes:
    n = rng.randint(1, 6)
    return build_batch([
        Record(f"{tag}-{round_no}-{partition}-{i}".encode(),
               None if i == 3 else rng.randbytes(rng.randint(0, 300)),
               (("round", str(round_no).encode()), ("i", str(i).encode())))
        for i in range(n)])


class Producer(threading.Thread):
    """Background producer: one acks=all request per round, one batch per partition.

    Stops when asked, after `max_rounds`, after `max_seconds`, or when the connection
    fails (the node was killed) -- never loops unboundedly.
    """

    def __init__(self, port: int, topic: str, ledger: Ledger, *, tag: str,
                 max_rounds: int = 100000, max_seconds: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.topic = topic
        self.ledger = ledger
        self.tag = tag
        self.max_rounds = max_rounds
        self.max_seconds = max_seconds
        self.stop_event = threading.Event()
        self.rounds_acked = 0
        self.error: BaseException | None = None
        self.failures: list[str] = []  # acknowledged with an error code: a test failure

    def run(self) -> None:
        rng = random.Random(zlib.crc32(self.tag.encode()))
        deadline = time.monotonic() + self.max_seconds
        try:
            conn = KafkaWire.connect(self.port, timeout=10.0)
        except BaseException as e:
            self.error = e
            return
        try:
            for round_no in range(self.max_rounds):
                if self.stop_event.is_set() or time.monotonic() > deadline:
                    return
                batches = {p: make_batch(round_no, p, rng, self.tag) for p in range(PARTITIONS)}
                with self.ledger.lock:
                    for p, b in batches.items():
                        self.ledger.sent.setdefault(p, set()).add(b[16:])
                try:
                    resp = conn.produce_many(self.topic, batches, acks=-1)
                except (ConnectionClosed, OSError) as e:
                    self.error = e
                    return
                with self.ledger.lock:
                    for p, r in resp.items():
                        if r.error_code != NONE:
                            self.failures.append(f"p{p} round {round_no}: {r.error_code}")
                            continue
                        acked = self.ledger.acked.setdefault(p, {})
                        assert int(r.base_offset) not in acked, "offset handed out twice"
                        acked[int(r.base_offset)] = batches[p][16:]
                self.rounds_acked += 1
        except BaseException as e:
            self.error = e
        finally:
            conn.close()


def wait_until(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


# --------------------------------------------------------------------------- checks


def verify(port: int, topic: str, ledger: Ledger, *, exact: bool = False) -> dict[int, int]:
    """Everything acknowledged is there, at its offset, byte for byte; offsets are
    contiguous from 0; every batch present was sent by a producer. Returns the log end
    offset of each partition. With `exact`, nothing unacknowledged may be present."""
    ends = {}
    with KafkaWire.connect(port) as conn:
        for p in range(PARTITIONS):
            batches = conn.fetch_all(topic, p)
            expect_next = 0
            for b in batches:
                assert b.base_offset == expect_next, (
                    f"{topic}-{p}: batch at {b.base_offset}, expected {expect_next} (hole?)")
                assert b.crc_ok, f"{topic}-{p}@{b.base_offset}: CRC mismatch in fetched batch"
                expect_next = b.last_offset + 1
            present = {b.base_offset: b.content for b in batches}
            with ledger.lock:
                acked = dict(ledger.acked.get(p, {}))
                sent = set(ledger.sent.get(p, set()))
            for base, content in sorted(acked.items()):
                assert base in present, f"{topic}-{p}: acknowledged batch at {base} lost"
                assert present[base] == content, f"{topic}-{p}@{base}: bytes differ"
            for base, content in present.items():
                assert content in sent, f"{topic}-{p}@{base}: a batch nobody sent"
            if exact:
                assert set(present) == set(acked), (
                    f"{topic}-{p}: unacknowledged batches present: "
                    f"{sorted(set(present) - set(acked))}")
            err, end = conn.list_offset(topic, p)
            assert err == NONE and end == expect_next, (p, err, end, expect_next)
            ends[p] = end
    return ends


def produce_more(port: int, topic: str, ledger: Ledger, ends: dict[int, int], tag: str) -> None:
    """New produces after a recovery work and continue the offsets."""
    rng = random.Random(7)
    with KafkaWire.connect(port) as conn:
        for p in range(PARTITIONS):
            b = make_batch(0, p, rng, tag)
            with ledger.lock:
                ledger.sent.setdefault(p, set()).add(b[16:])
            r = conn.produce(topic, p, b, acks=-1)
            assert r.error_code == NONE, r
            assert r.base_offset == ends[p], f"p{p}: new batch at {r.base_offset}, log end was {ends[p]}"
            with ledger.lock:
                ledger.acked.setdefault(p, {})[int(r.base_offset)] = b[16:]


def new_topic(broker) -> str:
    topic = random_topic("dur")
    with KafkaWire.connect(broker.port) as conn:
        assert conn.create_topics([topic], partitions=PARTITIONS) == {topic: NONE}
    return topic


def log_since(broker, mark: int) -> str:
    return broker.log_text()[mark:]


# --------------------------------------------------------------------------- segment files


def partition_dir(broker, topic: str, partition: int) -> pathlib.Path:
    d = broker.data_dir / "partitions" / f"{topic}-{partition}"
    assert d.is_dir(), f"no partition directory {d}; data dir has " \
        f"{sorted(str(x.relative_to(broker.data_dir)) for x in broker.data_dir.rglob('*'))[:50]}"
    return d


def segments(broker, topic: str, partition: int) -> list[pathlib.Path]:
    segs = sorted(partition_dir(broker, topic, partition).glob("*.seg"))
    assert segs, f"no segment files for {topic}-{partition}"
    for s in segs:
        assert re.fullmatch(r"\d{20}\.seg", s.name), s.name
    return segs


@dataclass
class Frame:
    offset: int       # byte offset of the frame in its segment file
    length: int
    crc: int
    index: int
    term: int
    type: int
    payload: bytes

    @property
    def end(self) -> int:
        return self.offset + 4 + self.length


def read_frames(path: pathlib.Path) -> list[Frame]:
    """Parse a segment file per the storage format; every frame must be valid."""
    data = path.read_bytes()
    frames = []
    pos = 0
    while pos < len(data):
        assert pos + FRAME_HEADER.size <= len(data), f"{path.name}: short header at {pos}"
        length, crc, index, term, typ = FRAME_HEADER.unpack_from(data, pos)
        assert length >= FRAME_HEADER.size - 4, f"{path.name}: bad length {length} at {pos}"
        body = data[pos + 8:pos + 4 + length]
        assert len(body) == length - 4, f"{path.name}: short frame at {pos}"
        assert crc32c.crc32c(body) == crc, f"{path.name}: bad CRC at {pos}"
        frames.append(Frame(pos, length, crc, index, term, typ, data[pos + 25:pos + 4 + length]))
        pos += 4 + length
    return frames


def encode_frame(index: int, term: int, typ: int, payload: bytes) -> bytes:
    body = struct.pack(">QQB", index, term, typ) + payload
    return struct.pack(">II", len(body) + 4, crc32c.crc32c(body)) + body


def data_frames(frames: list[Frame]) -> list[Frame]:
    """Frames whose payload is a record batch."""
    out = []
    for f in frames:
        bs = parse_batches(f.payload, parse_records=False)
        if len(bs) == 1 and len(bs[0].raw) == len(f.payload):
            out.append(f)
    return out


# --------------------------------------------------------------------------- tests


@pytest.mark.timeout(120)
def test_acknowledged_produces_survive_sigkill(broker_factory):
    # Everything acknowledged was fsynced first; recovery must keep all of it.
    broker = broker_factory().start()
    topic = new_topic(broker)
    ledger = Ledger()
    producers = [Producer(broker.port, topic, ledger, tag=f"w{i}", max_rounds=40) for i in range(2)]
    for pr in producers:
        pr.start()
    for pr in producers:
        pr.join(timeout=90)
        assert not pr.is_alive(), "producer did not finish"
        assert pr.error is None, repr(pr.error)
        assert pr.failures == []
    assert ledger.n_acked() == 2 * 40 * PARTITIONS

    assert broker.kill() == -signal.SIGKILL
    broker.start()
    ends = verify(broker.port, topic, ledger, exact=True)
    produce_more(broker.port, topic, ledger, ends, "after")
    verify(broker.port, topic, ledger, exact=True)


@pytest.mark.timeout(180)
def test_sigkill_mid_stream_three_times(broker):
    topic = new_topic(broker)
    ledger = Ledger()
    for attempt in range(3):
        before = ledger.n_acked()
        pr = Producer(broker.port, topic, ledger, tag=f"k{attempt}", max_seconds=60)
        pr.start()
        # Kill once the stream is flowing: a few more rounds acknowledged, more in flight.
        wait_until(lambda: ledger.n_acked() >= before + 10 * PARTITIONS, 45,
                   f"acks in attempt {attempt}")
        time.sleep(random.Random(attempt).uniform(0, 0.05))
        assert broker.kill() == -signal.SIGKILL
        pr.join(timeout=20)
        assert not pr.is_alive(), "producer still running after the node died"
        assert pr.error is not None, "producer finished without noticing the kill"
        assert pr.failures == []

        broker.start()
        verify(broker.port, topic, ledger)
    assert ledger.n_acked() >= 30 * PARTITIONS


@pytest.mark.timeout(90)
def test_sigterm_while_producing_is_clean(broker):
    topic = new_topic(broker)
    ledger = Ledger()
    pr = Producer(broker.port, topic, ledger, tag="term", max_seconds=60)
    pr.start()
    wait_until(lambda: ledger.n_acked() >= 15 * PARTITIONS, 45, "acks before SIGTERM")
    broker.signal(signal.SIGTERM)
    assert broker.proc.wait(timeout=20) == 0, broker.log_text()[-3000:]
    pr.join(timeout=20)
    assert not pr.is_alive()
    assert pr.failures == []

    broker.start()
    ends = verify(broker.port, topic, ledger)
    produce_more(broker.port, topic, ledger, ends, "after-term")
    verify(broker.port, topic, ledger)


def _fill(broker, topic: str, rounds: int) -> Ledger:
    ledger = Ledger()
    pr = Producer(broker.port, topic, ledger, tag="fill", max_rounds=rounds)
    pr.start()
    pr.join(timeout=60)
    assert not pr.is_alive() and pr.error is None and pr.failures == [], (pr.error, pr.failures)
    assert ledger.n_acked() == rounds * PARTITIONS
    return ledger


TORN_TAILS = ["garbage", "half_frame", "zeros", "bad_crc_frame"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("tail", TORN_TAILS)
def test_torn_tail_is_truncated(broker, tail):
    topic = new_topic(broker)
    ledger = _fill(broker, topic, rounds=8)
    assert broker.kill() == -signal.SIGKILL

    seg = segments(broker, topic, 0)[-1]
    frames = read_frames(seg)
    assert len(data_frames(frames)) >= 1
    last = frames[-1]
    size_before = seg.stat().st_size
    next_frame = encode_frame(last.index + 1, last.term, last.type,
                              build_batch([Record(b"torn", b"x" * 200)]))
    junk = {
        "garbage": random.Random(1).randbytes(37),
        "half_frame": next_frame[:len(next_frame) // 2],
        "zeros": b"\x00" * 4096,
        "bad_crc_frame": next_frame[:5] + bytes([next_frame[5] ^ 0xFF]) + next_frame[6:],
    }[tail]
    with open(seg, "ab") as f:
        f.write(junk)

    mark = len(broker.log_text())
    broker.start()
    new_log = log_since(broker, mark)
    warn = [ln for ln in new_log.splitlines() if seg.name in ln]
    assert warn, f"no log line names {seg.name}:\n{new_log[-3000:]}"
    assert any(re.search(r"warn|trunc|torn", ln, re.I) for ln in warn), warn

    ends = verify(broker.port, topic, ledger, exact=True)
    produce_more(broker.port, topic, ledger, ends, "after-torn")
    verify(broker.port, topic, ledger, exact=True)
    # The junk is gone from the file: it holds only whole, valid frames again, the old
    # ones unchanged.
    frames_after = read_frames(seg)
    assert frames_after[:len(frames)] == frames
    assert seg.stat().st_size >= size_before


@pytest.mark.timeout(90)
def test_corruption_before_tail_stops_the_node(broker):
    topic = new_topic(broker)
    ledger = _fill(broker, topic, rounds=12)
    assert broker.stop() == 0, "SIGTERM did not shut the node down cleanly"

    seg = segments(broker, topic, 0)[0]
    frames = read_frames(seg)
    dframes = data_frames(frames)
    assert len(dframes) >= 12, f"{len(dframes)} data frames in {seg.name}"
    # The frames hold the record batches, as acknowledged, in order.
    contents = [parse_batches(f.payload, parse_records=False)[0] for f in dframes]
    assert [(b.base_offset, b.content) for b in contents] == sorted(ledger.acked[0].items())
    assert sorted(f.index for f in frames) == [f.index for f in frames]

    victim = dframes[2]
    flip_at = victim.offset + 25 + len(victim.payload) // 2  # inside the record batch
    data = bytearray(seg.read_bytes())
    data[flip_at] ^= 0x5A
    seg.write_bytes(bytes(data))

    mark = len(broker.log_text())
    broker.start(wait=False)
    broker.expect_exit()  # it must refuse the corrupt segment
    try:
        code = broker.proc.wait(timeout=30)
    except Exception:
        broker.kill()
        raise AssertionError(f"node kept running on a corrupt segment:\n"
                             f"{log_since(broker, mark)[-3000:]}")
    new_log = log_since(broker, mark)
    assert code != 0, f"node exited 0 on a corrupt segment:\n{new_log[-3000:]}"
    offsets = {str(victim.offset), str(flip_at)}
    lines = [ln for ln in new_log.splitlines() if seg.name in ln]
    assert any(any(re.search(rf"(?<!\d){o}(?!\d)", ln) for o in offsets) for ln in lines), (
        f"no line names {seg.name} and byte offset {victim.offset} (frame) or {flip_at} "
        f"(byte):\n{new_log[-3000:]}")

    # Nothing was "repaired" behind our back: the corrupt file is still as we left it.
    assert seg.read_bytes() == bytes(data)
