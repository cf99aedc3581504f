"""Model-based test: random appends, truncations, syncs, compactions, reopens, torn tails
and power loss against an in-memory list of entries."""

from __future__ import annotations

import os
import pathlib
import shutil
import struct
import tempfile

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from chronik_trio.storage import FaultyDisk, LogEntry, SegmentLog
from chronik_trio.storage.frame import FRAME_HEADER_BYTES
from tests.storage.helpers import make_batch

SEGMENT_BYTES_MAX = 600
INDEX_INTERVAL_BYTES = 150


class SegmentLogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="segment-log-model-"))
        self.disk = FaultyDisk()
        self.entries: list[LogEntry] = []  # the model: entries first_index..last
        # Every (term, payload) ever appended at each index: what a power loss may bring back.
        self.history: dict[int, set[tuple[int, bytes]]] = {}
        self.first_index = 1
        self.term = 1
        self.durable = 0
        self.offset_floor = 0
        self.log = self._open()

    def _open(self) -> SegmentLog:
        return SegmentLog.open(self.disk, self.tmp / "log", kafka=True,
                               durable_index=self.durable,
                               segment_bytes_max=SEGMENT_BYTES_MAX,
                               index_interval_bytes=INDEX_INTERVAL_BYTES)

    def teardown(self) -> None:
        self.log.close()
        shutil.rmtree(self.tmp)

    # --------------------------------------------------------------- model helpers

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.entries) - 1

    def _batches(self) -> list[tuple[int, int]]:
        out = []
        for e in self.entries:
            if e.payload:
                base, delta = struct.unpack_from(">q15xi", e.payload)
                out.append((base, base + delta))
        return out

    def _next_offset(self) -> int:
        batches = self._batches()
        return batches[-1][1] + 1 if batches else self.offset_floor

    def _reopen(self) -> None:
        self.log = self._open()
        self._reopen_model()

    def _reopen_model(self) -> None:
        self.durable = self.last_index
        batches = self._batches()
        self.offset_floor = batches[0][0] if batches else 0

    # --------------------------------------------------------------- rules

    @rule(sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
          new_term=st.booleans(), records=st.integers(1, 4))
    def append(self, sizes, new_term, records):
        self.term += new_term
        offset = self._next_offset()
        batch = []
        for k, size in enumerate(sizes):
            index = self.last_index + 1 + k
            if size == 0:
                batch.append(LogEntry(index, self.term, 0, b""))
                continue
            payload = make_batch(offset, records, size=size, max_timestamp_ms=index)
            offset += records
            batch.append(LogEntry(index, self.term, 0, payload))
        self.log.append(batch)
        self.entries.extend(batch)
        for e in batch:
            self.history.setdefault(e.index, set()).add((e.term, bytes(e.payload)))

    @rule(data=st.data())
    def truncate_suffix(self, data):
        index = data.draw(st.integers(self.first_index, self.last_index + 1))
        self.log.truncate_suffix(index)
        del self.entries[index - self.first_index:]
        self.durable = min(self.durable, index - 1)

    @rule()
    def sync(self):
        assert self.log.sync() == self.last_index
        self.durable = self.last_index

    @rule(data=st.data())
    def compact_prefix(self, data):
        # Raft compacts only what is committed, hence durable.
        index = data.draw(st.integers(self.first_index, max(self.first_index, self.durable + 1)))
        new_first = self.log.compact_prefix(index)
        assert self.first_index <= new_first <= max(index, self.first_index)
        self._drop_prefix(new_first)

    def _drop_prefix(self, new_first: int) -> None:
        removed = self.entries[:new_first - self.first_index]
        for e in removed:
            if e.payload:
                base, delta = struct.unpack_from(">q15xi", e.payload)
                self.offset_floor = max(self.offset_floor, base + delta + 1)
        del self.entries[:new_first - self.first_index]
        self.first_index = new_first

    @rule(data=st.data())
    def retention(self, data):
        retention_bytes = data.draw(st.integers(0, self.log.size_bytes))
        deleted = self.log.apply_retention(now_ms=0, retention_bytes=retention_bytes,
                                           retention_ms=None, keep_from_index=self.durable + 1)
        assert deleted >= 0
        self._drop_prefix(self.log.first_index)
        firsts = sorted(int(p.name[:20]) for p in (self.tmp / "log").glob("*.seg"))
        # Over the bound only if the oldest segment is the active one or still needed.
        assert self.log.size_bytes <= retention_bytes or len(firsts) == 1 or \
            firsts[1] - 1 >= self.durable + 1

    @rule()
    def reopen(self):
        self.log.sync()
        self.log.close()
        self._reopen()

    @rule()
    def power_loss(self):
        """What was synced survives exactly. Directory changes since the last sync are
        undone, so deleted segments may come back: before first_index (compaction,
        retention) or after the durable index (truncate_suffix). Those must hold entries
        once appended; the model adopts them."""
        self.log.close()
        self.disk.drop_unsynced()
        durable = [e for e in self.entries if e.index <= self.durable]
        self.log = self._open()
        log = self.log
        assert log.first_index <= self.first_index and log.last_index >= self.durable
        got = log.entries(log.first_index, log.last_index + 1)
        for e in got:
            if self.first_index <= e.index <= self.durable:
                expected = durable[e.index - self.first_index]
                assert (e.term, bytes(e.payload)) == (expected.term, bytes(expected.payload))
            else:
                assert (e.term, bytes(e.payload)) in self.history[e.index]
        self.entries = [LogEntry(e.index, e.term, e.type, bytes(e.payload)) for e in got]
        self.first_index = log.first_index
        self.term = max(self.term, log.last_term)
        self._reopen_model()

    @rule(garbage=st.binary(min_size=1, max_size=64))
    def torn_garbage_tail(self, garbage):
        self.log.close()
        with self._last_segment().open("ab") as f:
            f.write(garbage)
        self._reopen()

    @precondition(lambda self: self.last_index > self.durable)
    @rule(data=st.data())
    def torn_cut_tail(self, data):
        self.log.close()
        path = self._last_segment()
        seg_first = int(path.name[:20])
        ends, pos = [], 0
        for e in self.entries[seg_first - self.first_index:]:
            pos += FRAME_HEADER_BYTES + len(e.payload)
            ends.append((e.index, pos))
        durable_end = max([end for index, end in ends if index <= self.durable], default=0)
        cut = data.draw(st.integers(durable_end, path.stat().st_size))
        os.truncate(path, cut)
        survivors = [index for index, end in ends if end <= cut]
        last = survivors[-1] if survivors else seg_first - 1
        del self.entries[last + 1 - self.first_index:]
        self._reopen()

    def _last_segment(self) -> pathlib.Path:
        return sorted((self.tmp / "log").glob("*.seg"))[-1]

    # --------------------------------------------------------------- invariants

    @invariant()
    def raft_view_matches(self):
        log = self.log
        assert (log.first_index, log.last_index) == (self.first_index, self.last_index)
        if self.entries:
            assert log.last_term == self.entries[-1].term
            got = log.entries(self.first_index, self.last_index + 1)
            assert [(e.index, e.term, bytes(e.payload)) for e in got] == \
                [(e.index, e.term, bytes(e.payload)) for e in self.entries]
            assert [log.term(e.index) for e in self.entries] == [e.term for e in self.entries]

    @invariant()
    def kafka_view_matches(self):
        log = self.log
        batches = self._batches()
        assert log.next_offset == self._next_offset()
        assert log.log_start_offset == (batches[0][0] if batches else log.next_offset)
        got = log.read_batches(log.log_start_offset, max_bytes=1 << 20,
                               end_offset=log.next_offset)
        assert [bytes(b) for b in got] == [bytes(e.payload) for e in self.entries if e.payload]
        if batches:
            middle = batches[len(batches) // 2]
            got = log.read_batches(middle[1], max_bytes=1, end_offset=log.next_offset)
            assert struct.unpack_from(">q", got[0])[0] == middle[0]
            index = log.entry_index_for_offset(middle[1])
            assert struct.unpack_from(">q", self.entries[index - self.first_index].payload)[0] \
                == middle[0]


SegmentLogMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestSegmentLogModel = SegmentLogMachine.TestCase
