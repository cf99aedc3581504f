"""The log cleaner (storage/cleaner.py) on real segment files: latest value per key,
offsets and Raft entries preserved, tombstones, the key-map bound, and crashes mid-clean."""

from __future__ import annotations

import gzip
import struct

import crc32c
import pytest

from chronik_trio.partition.producers import ProducerStateTable
from chronik_trio.partition.transactions import TransactionState, TxnMarker, control_batch, read_control
from chronik_trio.record_batch import HEADER_BYTES, read_header, with_offsets
from chronik_trio.storage import Disk, FaultyDisk, LogEntry
from chronik_trio.storage import disk as disk_module
from chronik_trio.storage.cleaner import (CLEANED_SUFFIX, CleanSettings, decode_records, plan_clean,
                                          rebuild_batch, run_clean)
from tests.kafka_wire import Record, build_batch, parse_batches

NOW_MS = 10_000_000
DAY_MS = 86_400_000


def keyed_entries(first_index: int, first_offset: int, items, *, per_batch: int = 2, ts: int = 1_000,
                  term: int = 1) -> list[LogEntry]:
    """Entries of batches of `per_batch` (key, value) records, offsets contiguous."""
    out, offset, index = [], first_offset, first_index
    for k in range(0, len(items), per_batch):
        chunk = items[k:k + per_batch]
        batch = build_batch([Record(key, value) for key, value in chunk], base_offset=offset,
                            base_timestamp_ms=ts)
        out.append(LogEntry(index, term, 0, batch))
        offset += len(chunk)
        index += 1
    return out


def gzip_batch(items, base_offset: int, ts: int = 1_000) -> bytes:
    plain = build_batch([Record(k, v) for k, v in items], base_offset=base_offset, base_timestamp_ms=ts)
    body = gzip.compress(plain[HEADER_BYTES:])
    out = bytearray(plain[:HEADER_BYTES] + body)
    struct.pack_into(">i", out, 8, len(out) - 12)
    struct.pack_into(">h", out, 21, 1)
    struct.pack_into(">I", out, 17, crc32c.crc32c(bytes(out[21:])))
    return bytes(out)


def settings(**kw) -> CleanSettings:
    base = dict(now_ms=NOW_MS, delete_retention_ms=DAY_MS, key_map_bytes=1 << 20,
                io_bytes_per_s=None, index_interval_bytes=4096)
    base.update(kw)
    return CleanSettings(**base)


def clean_once(log, disk, *, clean_offset: int = 0, **kw) -> int:
    """One whole pass as the node runs it; returns how many segments were replaced."""
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=clean_offset,
                      now_ms=NOW_MS, min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0)
    if plan is None:
        return 0
    log.pin()
    try:
        result = run_clean(disk, plan, settings(**kw))
        return sum(log.replace_segment(old, new) for old, new in result.replacements)
    finally:
        log.unpin()


def read_all(log) -> dict[int, tuple[bytes | None, bytes | None]]:
    """offset -> (key, value) of every record served."""
    out = {}
    for payload in log.read_batches(log.log_start_offset, max_bytes=1 << 30, end_offset=log.next_offset):
        (batch,) = parse_batches(bytes(payload))
        assert batch.crc_ok
        for r in batch.records:
            out[batch.base_offset + r.offset_delta] = (r.key, r.value)
    return out


def latest_by_key(items) -> dict[bytes, tuple[int, bytes | None]]:
    latest = {}
    for offset, (key, value) in enumerate(items):
        latest[key] = (offset, value)
    return latest


def workload(n: int, keys: int):
    return [(f"k{i % keys}".encode(), f"v{i}".encode()) for i in range(n)]


@pytest.fixture
def compacted(open_log):
    """A partition log of 60 records over 10 keys in several small segments."""
    def make(disk=None, items=None):
        items = items if items is not None else workload(60, 10)
        log = open_log("p", kafka=True, segment_bytes_max=600, disk=disk)
        log.append(keyed_entries(1, 0, items))
        log.sync()
        return log, items
    return make


def test_latest_value_per_key_offsets_and_entries_kept(compacted, open_log):
    log, items = compacted()
    before = [(e.index, e.term, e.type) for e in log.entries(1, log.last_index + 1)]
    next_offset, first_index, last_index = log.next_offset, log.first_index, log.last_index
    assert log.segment_count > 4
    replaced = clean_once(log, Disk())
    assert replaced >= 3
    got = read_all(log)
    active_first = log.segments[-1]
    latest = latest_by_key(items)
    # every key's latest record is there, at its own offset, and nothing older survives in
    # the cleaned segments
    for key, (offset, value) in latest.items():
        assert got[offset] == (key, value)
    # below the active segment (never cleaned), one record per key: the latest there
    cleaned_latest = latest_by_key(items[:active_first.offset_lo])
    for offset, (key, value) in got.items():
        if offset < active_first.offset_lo:
            assert cleaned_latest[key][0] == offset, (offset, key)
    assert [(e.index, e.term, e.type) for e in log.entries(1, log.last_index + 1)] == before
    assert (log.next_offset, log.first_index, log.last_index) == (next_offset, first_index, last_index)
    # batch offsets are preserved: lastOffsetDelta unchanged, records keep their deltas;
    # batches left empty stay in the log but are not served
    headers = [read_header(entry.payload) for entry in log.entries(1, log.last_index + 1)]
    assert all(h.last_offset_delta == 1 for h in headers)
    assert any(h.record_count == 0 for h in headers)
    served = log.read_batches(0, max_bytes=1 << 30, end_offset=log.next_offset)
    assert served and all(read_header(p).record_count > 0 for p in served)
    log.sync()
    log.close()
    again = open_log("p", kafka=True, segment_bytes_max=600)
    assert read_all(again) == got
    assert clean_once(again, Disk()) == 0  # already clean: nothing changes


def test_tombstones_kept_until_delete_retention_then_removed(compacted):
    items = workload(30, 5) + [(b"k1", None), (b"k2", None)] + workload(20, 1)
    log, _ = compacted(items=items)
    clean_once(log, Disk())
    got = read_all(log)
    values = {key: value for key, value in got.values()}
    assert values[b"k1"] is None and values[b"k2"] is None  # tombstones still served
    assert sum(1 for key, _ in got.values() if key == b"k1") == 1
    clean_once(log, Disk(), now_ms=NOW_MS + 2 * DAY_MS)
    got = read_all(log)
    keys = {key for key, _ in got.values()}
    assert b"k1" not in keys and b"k2" not in keys  # gone with every older value
    assert b"k3" in keys


def test_unreadable_batch_blocks_tombstone_removal(open_log):
    """A batch whose records cannot be read here (snappy, say) is kept whole; an old value of
    a key may hide in it, so no tombstone is removed while it is in the log."""
    hidden = bytearray(build_batch([Record(b"k1", b"old")], base_offset=0, base_timestamp_ms=1_000))
    struct.pack_into(">h", hidden, 21, 2)  # claims snappy: records unreadable here
    struct.pack_into(">I", hidden, 17, crc32c.crc32c(bytes(hidden[21:])))
    assert decode_records(bytes(hidden)) is None
    log = open_log("o", kafka=True, segment_bytes_max=300)
    log.append([LogEntry(1, 1, 0, bytes(hidden))] + keyed_entries(2, 1, [(b"k1", None)] + [(b"x%d" % (i % 3), b"v") for i in range(12)]))
    log.sync()
    clean_once(log, Disk(), now_ms=NOW_MS + 2 * DAY_MS)
    batches = [read_header(p) for p in log.read_batches(0, max_bytes=1 << 30, end_offset=log.next_offset)]
    assert batches[0].base_offset == 0 and batches[0].record_count == 1  # kept whole
    tombstones = [r for payload in log.read_batches(1, max_bytes=1 << 30, end_offset=log.next_offset)
                  for r in (decode_records(payload) or (None, []))[1] if r.key == b"k1"]
    assert [r.tombstone for r in tombstones] == [True]


def test_gzip_batches_are_cleaned_and_stay_gzip(open_log):
    log = open_log("g", kafka=True, segment_bytes_max=400)
    entries, offset = [], 0
    for k in range(12):
        entries.append(LogEntry(k + 1, 1, 0, gzip_batch([(b"a", b"%d" % k), (b"b%d" % k, b"x")], offset)))
        offset += 2
    log.append(entries)
    log.sync()
    assert clean_once(log, Disk()) >= 1
    got = read_all_gzip(log)
    active_lo = log.segments[-1].offset_lo
    assert sum(1 for o, (key, _) in got.items() if key == b"a" and o < active_lo) == 1
    assert max(o for o, (key, _) in got.items() if key == b"a") == 22  # the latest
    assert all(key.startswith(b"b") for key, _ in got.values() if key != b"a")


def read_all_gzip(log):
    out = {}
    for payload in log.read_batches(0, max_bytes=1 << 30, end_offset=log.next_offset):
        header, records = decode_records(bytes(payload))
        assert header.attributes & 7 == 1
        for r in records:
            raw = bytes(r.raw)
            out[header.base_offset + r.offset_delta] = (r.key, raw)
    return out


def test_rebuilt_empty_batch_keeps_offsets():
    batch = build_batch([Record(b"a", b"1"), Record(b"a", b"2"), Record(b"a", b"3")], base_offset=40)
    header, _ = decode_records(batch)
    empty = rebuild_batch(batch, header, [])
    h = read_header(empty)
    assert (h.base_offset, h.last_offset_delta, h.record_count, h.size_bytes) == (40, 2, 0, HEADER_BYTES)
    assert crc32c.crc32c(empty[21:]) == h.crc


def run_pass(log, **kw):
    """One pass (plan, run_clean, swaps); returns run_clean's result."""
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=0, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0)
    log.pin()
    try:
        result = run_clean(Disk(), plan, settings(**kw))
        for old, new in result.replacements:
            log.replace_segment(old, new)
    finally:
        log.unpin()
    return result


def test_batches_kept_whole_or_emptied_without_a_second_scan_keep_the_rules(compacted):
    """The second read decides most batches by counting the offsets kept in their range:
    keyless records stay in every case, a tombstone in a batch that keeps every record still
    counts for the next pass, and a log already clean is read only once."""
    items = [(None, b"a"), (None, b"b"), (b"k1", b"1"), (None, b"c"), (b"a2", b"1"), (b"a2", b"2"),
             (b"t", None), (b"a4", b"1")] + workload(40, 4) + [(b"k9", b"x"), (b"k9", b"y")]
    log, _ = compacted(items=items)
    result = run_pass(log)
    got = read_all(log)
    cleaned_to = log.segments[-1].offset_lo
    assert {0, 1, 3} <= set(got) and got[3] == (None, b"c")  # keyless: kept
    assert 6 in got and got[6] == (b"t", None)  # the tombstone, its key's latest
    assert result.oldest_tombstone_ms == 1_000
    latest = latest_by_key(items[:cleaned_to])
    assert {o for o, (k, _) in got.items() if k is not None and o < cleaned_to} == \
        {o for o, _ in latest.values() if items[o][0] is not None}
    with_tombstone = next(seg for seg in log.segments if seg.offset_lo <= 6 < seg.next_offset)
    again = run_pass(log)
    # one read, no copy: only the segment holding the tombstone is read twice
    assert again.replacements == [] and again.bytes_read == again.bytes_cleaned + with_tombstone.size_bytes
    assert again.oldest_tombstone_ms == 1_000
    run_pass(log, now_ms=NOW_MS + 2 * DAY_MS)
    assert 6 not in read_all(log)


def test_records_outside_their_batch_offsets_make_it_unreadable(open_log):
    """A batch whose records claim offsets beyond its lastOffsetDelta, or not increasing, is
    kept whole like an unreadable one (its keys' offsets would be another batch's)."""
    beyond = bytearray(build_batch([Record(b"k1", b"old")], base_offset=0, base_timestamp_ms=1_000))
    beyond[HEADER_BYTES + 3] = 2 * 3  # the record's offset delta: 3, in a batch of one offset
    struct.pack_into(">I", beyond, 17, crc32c.crc32c(bytes(beyond[21:])))
    assert decode_records(bytes(beyond))[1][0].offset_delta == 3
    twice = bytearray(build_batch([Record(b"k2", b"a"), Record(b"k2", b"b")], base_offset=1,
                                  base_timestamp_ms=1_000))
    twice[HEADER_BYTES + 1 + twice[HEADER_BYTES] // 2 + 3] = 0  # the second record's delta: 0 again
    struct.pack_into(">I", twice, 17, crc32c.crc32c(bytes(twice[21:])))
    assert decode_records(bytes(twice)) is None
    log = open_log("b", kafka=True, segment_bytes_max=300)
    log.append([LogEntry(1, 1, 0, bytes(beyond)), LogEntry(2, 1, 0, bytes(twice))] +
               keyed_entries(3, 3, [(b"k3", b"v"), (b"k1", None)] + [(b"x%d" % (i % 3), b"v") for i in range(12)]))
    log.sync()
    run_pass(log, now_ms=NOW_MS + 2 * DAY_MS)
    headers = [read_header(p) for p in log.read_batches(0, max_bytes=1 << 30, end_offset=log.next_offset)]
    assert [(h.base_offset, h.record_count) for h in headers[:3]] == [(0, 1), (1, 2), (3, 2)]


def test_key_map_bound_cleans_a_prefix_and_later_passes_continue(compacted):
    items = workload(30, 5) + [(b"u%d" % i, b"x") for i in range(90)]
    log, _ = compacted(items=items)
    # room for 12 keys: the map fills in the segment after the first 30 records
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=0, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0)
    log.pin()
    try:
        result = run_clean(Disk(), plan, settings(key_map_bytes=12 * 128))
        for old, new in result.replacements:
            log.replace_segment(old, new)
    finally:
        log.unpin()
    assert result.replacements and 0 < result.clean_offset <= 40
    got = read_all(log)
    latest = latest_by_key(items)
    for key, (offset, value) in latest.items():
        assert got[offset] == (key, value)


def test_plan_respects_upto_index_lag_and_ratio(compacted):
    log, _ = compacted()
    segs = log.segments
    assert plan_clean(segs, upto_index=segs[1].last_index, clean_offset=0, now_ms=NOW_MS, min_lag_ms=0,
                      max_lag_ms=2**63 - 1, min_dirty_ratio=0.0).segments == (segs[0],)
    assert plan_clean(segs, upto_index=log.last_index + 1, clean_offset=0, now_ms=NOW_MS,
                      min_lag_ms=NOW_MS, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0) is None
    clean_offset = segs[-2].next_offset
    assert plan_clean(segs, upto_index=log.last_index + 1, clean_offset=clean_offset, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0) is None
    some_dirty = segs[-3].next_offset
    assert plan_clean(segs, upto_index=log.last_index + 1, clean_offset=some_dirty, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.9) is None
    assert plan_clean(segs, upto_index=log.last_index + 1, clean_offset=some_dirty, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=1, min_dirty_ratio=0.9).reason == "max.compaction.lag.ms"


def test_crash_before_swap_leaves_old_segment(compacted, open_log):
    log, items = compacted()
    before = read_all(log)
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=0, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0)
    log.pin()
    result = run_clean(Disk(), plan, settings())
    directory = log.directory
    assert any(p.name.endswith(CLEANED_SUFFIX) for p in directory.iterdir())
    for _, new in result.replacements:  # the process dies: copies never swapped in
        Disk().close(new.file)
    log.unpin()
    log.close()
    again = open_log("p", kafka=True, segment_bytes_max=600)
    assert not any(p.name.endswith(CLEANED_SUFFIX) for p in directory.iterdir())
    assert read_all(again) == before


@pytest.mark.parametrize("swapped", [0, 1, 99])
def test_power_loss_mid_clean_leaves_whole_segments(compacted, open_log, swapped):
    """Power loss after `swapped` segments were renamed in, before any log sync: every
    segment is either the old or the new one, and the log reads the latest values."""
    disk = FaultyDisk()
    log, items = compacted(disk=disk)
    before = read_all(log)
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=0, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0)
    log.pin()
    result = run_clean(disk, plan, settings())
    for k, (old, new) in enumerate(result.replacements):
        if k < swapped:
            assert log.replace_segment(old, new)
        else:
            disk.close(new.file)
    log.unpin()
    last_index = log.last_index
    log.close()
    disk.drop_unsynced()
    again = open_log("p", kafka=True, segment_bytes_max=600, disk=disk, durable_index=last_index)
    got = read_all(again)
    latest = latest_by_key(items)
    for key, (offset, value) in latest.items():
        assert got[offset] == (key, value)
    assert set(got) <= set(before)
    assert all(before[o] == got[o] for o in got)


def test_swap_refused_when_segment_deleted_meanwhile(compacted):
    log, _ = compacted()
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=0, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0)
    log.pin()
    result = run_clean(Disk(), plan, settings())
    old, new = result.replacements[0]
    log.delete_before(log.segments[1].first_index)  # retention, while the cleaner ran
    assert not log.replace_segment(old, new)
    assert all(log.replace_segment(o, n) for o, n in result.replacements[1:])
    log.unpin()
    assert not old.path.exists()
    assert not any(p.name.endswith(CLEANED_SUFFIX) for p in log.directory.iterdir())


def test_segment_ms_rolls_the_active_segment(open_log):
    log = open_log("r", kafka=True)
    log.append(keyed_entries(1, 0, workload(4, 2), ts=1_000))
    assert not log.roll_if_older(1_500, 1_000)
    assert log.roll_if_older(2_000, 1_000)
    assert log.segment_count == 2 and log.segments[-1].entry_count == 0
    assert not log.roll_if_older(5_000, 1_000)  # an empty active segment stays


def test_the_last_segment_with_batches_is_not_cleaned(compacted):
    """After a segment.ms roll the active segment is empty: the segment before it holds the
    log's last batch and stays as written (Kafka never cleans its active segment)."""
    log, _ = compacted()
    assert log.roll_if_older(NOW_MS, 1)
    last = log.segments[-2]
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=0, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0)
    assert plan.segments and last not in plan.segments and plan.segments[-1] is log.segments[-3]


def test_transactional_batches_follow_the_rule_aborted_committed_open(open_log):
    """The caller's rule (CleanSettings.transactional) decides each transactional data batch:
    an aborted one loses every record and puts no key in the map (the older plain value of
    its key stays the latest), a committed one is cleaned by key, an open one is kept whole;
    a marker whose transaction has no record left gets its delete horizon (and stays)."""
    txn = 0x10
    plain = build_batch([Record(b"a", b"plain-a"), Record(b"b", b"plain-b")], base_offset=0, base_timestamp_ms=1_000)
    aborted = build_batch([Record(b"a", b"aborted-a"), Record(b"z", b"aborted-z")], base_offset=2,
                          base_timestamp_ms=1_000, producer_id=7, producer_epoch=0, attributes=txn)
    committed = build_batch([Record(b"b", b"committed-b")], base_offset=4, base_timestamp_ms=1_000,
                            producer_id=8, producer_epoch=0, attributes=txn)
    marker = build_batch([Record(b"\x00\x00\x00\x00", b"\x00\x00\x00\x00\x00\x00")], base_offset=5,
                         base_timestamp_ms=1_000, producer_id=7, producer_epoch=0, attributes=txn | 0x20)
    still_open = build_batch([Record(b"a", b"open-a")], base_offset=6, base_timestamp_ms=1_000,
                             producer_id=9, producer_epoch=0, attributes=txn)
    log = open_log("t", kafka=True, segment_bytes_max=200)
    log.append([LogEntry(k + 1, 1, 0, b) for k, b in enumerate([plain, aborted, committed, marker, still_open])]
               + keyed_entries(6, 7, [(b"x%d" % i, b"v") for i in range(4)]))
    log.sync()
    rules = {7: "aborted", 8: "clean", 9: "keep"}
    clean_once(log, Disk(), transactional=lambda h: rules[h.producer_id])
    got = read_all(log)
    assert got[0] == (b"a", b"plain-a")  # the aborted and the open value of a never superseded it
    assert 1 not in got  # plain-b: superseded by the committed transaction's b
    assert 2 not in got and 3 not in got  # the aborted transaction's records are gone
    assert got[4] == (b"b", b"committed-b") and got[6] == (b"a", b"open-a")
    headers = {read_header(p).base_offset: read_header(p) for p in
               log.read_batches(0, max_bytes=1 << 30, end_offset=log.next_offset)}
    assert headers[5].record_count == 1  # the marker, kept until its delete horizon
    assert headers[5].attributes & 0x40 and headers[5].base_timestamp_ms == NOW_MS + DAY_MS
    assert log.next_offset == 11


def marker_at(offset: int, producer_id: int, commit: bool, ts: int = 1_000, epoch: int = 0) -> bytes:
    batch = control_batch(TxnMarker(producer_id, epoch, commit, 3, ()), ts)
    return with_offsets(batch, read_header(batch), offset, 0)


def test_markers_go_once_their_transactions_records_are_gone_and_the_horizon_passed(open_log):
    """Kafka's rules for markers (KIP-98, KIP-534): an abort marker whose transaction's
    records all went, and a commit marker whose transaction's records were all superseded,
    get a delete horizon (attributes bit 6, baseTimestamp = now + delete.retention.ms, the
    record's timestamp unchanged) and are emptied by a pass past it; a commit marker whose
    transaction still has a record stays as it is. Replaying the cleaned log gives no open
    transaction, an empty aborted index and the producers' epochs (a replica restarting or a
    follower catching up from it)."""
    txn = 0x10
    batches = [
        build_batch([Record(b"a", b"aborted-a")], base_offset=0, base_timestamp_ms=1_000, producer_id=7,
                    producer_epoch=2, attributes=txn),
        marker_at(1, 7, commit=False, epoch=3),  # the coordinator bumped the epoch (a timeout)
        build_batch([Record(b"b", b"committed-b")], base_offset=2, base_timestamp_ms=1_000, producer_id=8,
                    producer_epoch=0, attributes=txn),
        marker_at(3, 8, commit=True),
        build_batch([Record(b"c", b"kept-c")], base_offset=4, base_timestamp_ms=1_000, producer_id=9,
                    producer_epoch=0, attributes=txn),
        marker_at(5, 9, commit=True),
        build_batch([Record(b"b", b"plain-b")], base_offset=6, base_timestamp_ms=1_000),
    ]
    log = open_log("m", kafka=True, segment_bytes_max=200)
    log.append([LogEntry(k + 1, 1, 0, b) for k, b in enumerate(batches)]
               + keyed_entries(len(batches) + 1, 7, [(b"x%d" % i, b"v") for i in range(4)]))
    log.sync()
    rules = {7: "aborted", 8: "clean", 9: "clean"}

    def headers():
        return {read_header(e.payload).base_offset: read_header(e.payload)
                for e in log.entries(log.first_index, log.last_index + 1)}

    def one_pass(now_ms):
        plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=0, now_ms=now_ms,
                          min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0, tombstones_due=True)
        log.pin()
        try:
            result = run_clean(Disk(), plan, settings(now_ms=now_ms, transactional=lambda h: rules[h.producer_id]))
            for old, new in result.replacements:
                log.replace_segment(old, new)
        finally:
            log.unpin()
        return result

    first = one_pass(NOW_MS)
    h = headers()
    assert first.markers_horizoned == 2 and first.markers_dropped == 0
    for offset in (1, 3):
        assert h[offset].record_count == 1 and h[offset].attributes & 0x40
        assert h[offset].base_timestamp_ms == NOW_MS + DAY_MS and h[offset].max_timestamp_ms == 1_000
        assert read_control(log.entries(offset + 1, offset + 2)[0].payload).commit == (offset == 3)
    assert h[5].record_count == 1 and not h[5].attributes & 0x40  # c is still there
    (marker,) = parse_batches(bytes(log.entries(2, 3)[0].payload))
    assert marker.crc_ok and marker.base_timestamp + marker.records[0].timestamp_delta == 1_000
    assert first.marker_horizon_ms == NOW_MS + DAY_MS  # the next pass due for them

    early = one_pass(NOW_MS + DAY_MS - 1)
    assert early.markers_dropped == 0 and early.marker_horizon_ms == NOW_MS + DAY_MS

    late = one_pass(NOW_MS + DAY_MS)
    h = headers()
    assert late.markers_dropped == 2
    assert [m for ms in late.aborts_removed.values() for m in ms] == [(7, 1)]  # (producer, offset)
    for offset in (1, 3):
        assert h[offset].record_count == 0 and h[offset].attributes & 0x30 == 0x30
        assert h[offset].producer_id in (7, 8)
    assert h[1].producer_epoch == 3 and h[5].record_count == 1
    assert read_all(log) == {4: (b"c", b"kept-c"), 5: (b"\x00\x00\x00\x01", b"\x00\x00\x00\x00\x00\x03"),
                             6: (b"b", b"plain-b"), **{7 + i: (b"x%d" % i, b"v") for i in range(4)}}
    assert log.next_offset == 11

    state, producers = TransactionState(), ProducerStateTable()
    for e in log.entries(log.first_index, log.last_index + 1):
        state.apply(memoryview(e.payload), e.index)
        producers.apply(memoryview(e.payload), e.index)
    assert state.open == {} and state.last_stable_offset(11) == 11
    assert state.aborted_between(0, 11) == []
    assert state.producers[7].epoch == 3 and producers.producers[7].epoch == 3


def test_a_copy_is_written_and_fsynced_in_bounded_pieces(open_log, monkeypatch):
    """Copies are made durable every WRITE_SYNC_BYTES or so (each piece's fsync put off to
    one syncfs per group: the produce path's fsyncs never queue behind a whole segment's
    copy) and read back whole."""
    from chronik_trio.storage import cleaner
    monkeypatch.setattr(cleaner, "WRITE_SYNC_BYTES", 2048)
    fsyncs, unsynced, most = [], [0], [0]  # copy bytes written and not yet durable

    class CountingDisk(Disk):
        def pwritev(self, f, buffers, offset):
            if f.path.name.endswith(CLEANED_SUFFIX):
                unsynced[0] += sum(len(b) for b in buffers)
                most[0] = max(most[0], unsynced[0])
            super().pwritev(f, buffers, offset)

        def fsync(self, f):
            fsyncs.append(f.path.name)
            if not disk_module._deferred():
                unsynced[0] = 0  # (one copy at a time outside a group)
            super().fsync(f)

        def sync_filesystem(self, root):
            unsynced[0] = 0
            super().sync_filesystem(root)

    items = [(b"k%d" % (i % 200), b"v" * 100) for i in range(1200)]
    log = open_log("w", kafka=True, segment_bytes_max=1 << 15)
    log.append(keyed_entries(1, 0, items, per_batch=4))
    log.sync()
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=0, now_ms=NOW_MS,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=0.0)
    log.pin()
    try:
        result = run_clean(CountingDisk(), plan, settings())
        for old, new in result.replacements:
            log.replace_segment(old, new)
    finally:
        log.unpin()
    copies = len(result.replacements)
    assert copies and result.bytes_written > copies * 4 * 2048
    assert sum(1 for name in fsyncs if name.endswith(CLEANED_SUFFIX)) >= result.bytes_written // 2048
    assert 0 < most[0] <= 2 * 2048 and unsynced[0] == 0
    got = read_all(log)
    for key, (offset, value) in latest_by_key(items[:log.segments[-1].offset_lo]).items():
        assert got[offset] == (key, value)
