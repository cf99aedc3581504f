"""Client-independent parts of the real-client compatibility tests (test_clients.py).

The records a test produces are generated here, deterministically, with every shape a
Kafka record can have that matters on the wire: keys and null keys, values, empty values
and null values (tombstones), no headers, several headers, repeated header keys, empty and
binary header values, and explicit create timestamps. The checks compare what the
producer was told (partition and offset per record) with what a consumer read back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

Header = tuple[str, bytes]

PARTITIONS = 3


@dataclasses.dataclass(frozen=True)
class Rec:
    """One record as produced: the partition it was sent to and its contents."""

    partition: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp_ms: int


@dataclasses.dataclass(frozen=True)
class Got:
    """One record as a consumer read it back."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[Header, ...]
    timestamp_ms: int


def make_records(tag: str, n: int, *, partitions: int = PARTITIONS,
                 base_ts_ms: int | None = None) -> list[Rec]:
    """`n` records spread round-robin over `partitions`, every 10th a tombstone.

    Header keys that repeat are adjacent (kafkajs can only express a repeated key as an
    array under one object key) and no header key looks like an integer (JavaScript
    objects order those first).
    """
    if base_ts_ms is None:
        base_ts_ms = int(time.time() * 1000) - 60_000
    recs = []
    for i in range(n):
        # A null key only with a non-null value: kafka-python and aiokafka refuse both null.
        key = None if i % 17 == 5 and i % 10 != 7 else f"{tag}-key-{i:05d}".encode()
        if i % 10 == 7:
            value = None                      # tombstone
        elif i % 10 == 3:
            value = b""                       # empty, which is not null
        else:
            value = f"{tag}|{i:05d}|".encode() + b"abcdefgh" * (i % 40) + bytes([i % 256, 0])
        shape = i % 5
        if shape == 0:
            headers: tuple[Header, ...] = ()
        elif shape == 1:
            headers = (("h", b"1"),)
        elif shape == 2:
            headers = (("trace", str(i).encode()), ("trace", b""))
        elif shape == 3:
            headers = (("bin", bytes([0, 255, i % 256])), ("utf8", "ü€-x".encode()))
        else:
            headers = (("empty", b""),)
        recs.append(Rec(i % partitions, key, value, headers, base_ts_ms + i))
    return recs


def split_evenly(total: int, parts: int) -> list[int]:
    q, r = divmod(total, parts)
    return [q + (1 if i < r else 0) for i in range(parts)]


def describe(r: Rec | Got) -> str:
    v = r.value if r.value is None or len(r.value) < 40 else r.value[:40] + b"..."
    return f"p{r.partition} key={r.key!r} value={v!r} headers={r.headers!r} ts={r.timestamp_ms}"


def drain(poll: Callable[[], Iterable[Got]], ends: Mapping[int, int], *,
          timeout_s: float, max_polls: int = 100_000) -> dict[int, list[Got]]:
    """Poll until every partition has been read up to its end offset (from ListOffsets).

    Bounded by both `timeout_s` and `max_polls`; on either limit the test fails with how far
    each partition got. Records past an end offset or in unknown partitions are kept, so
    the caller's checks report them.
    """
    got: dict[int, list[Got]] = {p: [] for p in ends}
    deadline = time.monotonic() + timeout_s

    def done() -> bool:
        return all(end == 0 or (got[p] and got[p][-1].offset + 1 >= end)
                   for p, end in ends.items())

    polls = 0
    while not done():
        if time.monotonic() > deadline or polls >= max_polls:
            progress = {p: (got[p][-1].offset + 1 if got[p] else 0, ends[p]) for p in ends}
            raise AssertionError(
                f"consumer did not reach the end offsets within {timeout_s}s / {polls} polls; "
                f"(next offset, end offset) per partition: {progress}")
        polls += 1
        for g in poll():
            got.setdefault(g.partition, []).append(g)
    return got


def check_roundtrip(topic: str, records: Sequence[Rec], told: Sequence[tuple[int, int] | None],
                    begins: Mapping[int, int], ends: Mapping[int, int],
                    got: Mapping[int, Sequence[Got]], *,
                    check_timestamps: bool = True) -> None:
    """Every record produced to a fresh topic came back exactly once, in order per partition,
    at the offset the producer was told, with identical key, value (incl. None), headers.

    `told[i]` is the (partition, offset) the producer was told for `records[i]`; None for
    acks=0, where nothing is told and offsets are checked against production order instead.
    """
    assert len(told) == len(records), (topic, len(told), len(records))
    partitions = sorted({r.partition for r in records} | set(ends))
    assert set(begins) == set(ends) == set(partitions), (topic, begins, ends, partitions)
    for p in partitions:
        produced = [(i, r) for i, r in enumerate(records) if r.partition == p]
        n = len(produced)
        assert begins[p] == 0, f"{topic}/{p}: earliest offset {begins[p]}, expected 0"
        assert ends[p] == n, f"{topic}/{p}: latest offset {ends[p]}, expected {n} records"
        # What the producer was told: the partition it asked for, offsets 0..n-1 in the
        # order it produced them (a fresh topic, one producer, no transactions).
        offsets = []
        for i, r in produced:
            t = told[i]
            if t is None:
                offsets.append(None)
                continue
            tp, to = t
            assert tp == p, f"{topic}: record {i} sent to partition {p}, told {tp}"
            offsets.append(to)
        if any(o is None for o in offsets):
            assert all(o is None for o in offsets), f"{topic}/{p}: some offsets missing"
            offsets = list(range(n))   # acks=0: production order is the offset order
        assert offsets == list(range(n)), (
            f"{topic}/{p}: offsets told are not 0..{n - 1} in production order; first bad: "
            + next((f"#{k}: {o}" for k, o in enumerate(offsets) if o != k), "?"))
        # What the consumer read: exactly those offsets, once each, in order.
        read = list(got.get(p, ()))
        read_offsets = [g.offset for g in read]
        if read_offsets != offsets:
            dups = len(read_offsets) - len(set(read_offsets))
            first = next((k for k, (a, b) in enumerate(zip(read_offsets, offsets)) if a != b),
                         min(len(read_offsets), len(offsets)))
            raise AssertionError(
                f"{topic}/{p}: read {len(read_offsets)} records ({dups} duplicates), expected "
                f"{n}; first difference at position {first}: read "
                f"{read_offsets[first:first + 3]} expected {offsets[first:first + 3]}")
        for (i, r), g in zip(produced, read):
            same = (g.key, g.value, g.headers) == (r.key, r.value, r.headers)
            if check_timestamps:
                same = same and g.timestamp_ms == r.timestamp_ms
            assert same, (f"{topic}/{p} offset {g.offset}: produced {describe(r)}; "
                          f"read {describe(g)}")
    extra = set(got) - set(partitions)
    assert not any(got[p] for p in extra), f"{topic}: records read from unknown partitions {extra}"
