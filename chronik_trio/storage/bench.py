"""Storage micro-benchmark: `python -m chronik_trio.storage.bench [--dir D] [--mb N]`.

Measures, on real files with real fsync:
  - appends of 1 KB and 100 KB entries (one entry per append() call, and 1 KB entries
    64 per call), a sync() per 1 MB written (what a busy partition leader does between
    Ready batches);
  - the same appends without any sync (the CPU cost of append itself);
  - read_batches over a partition log of 1 KB batches, 1 MiB per call, sequentially;
  - the log cleaner (`--clean`, or `--only-clean`): one pass over a partition log of
    --mb of keyed records of --value-bytes (default 100; 1 and 100 per batch, 10,000 keys,
    1 MiB segments):
    MB of log cleaned per second, reading the log twice (key map, copies) and writing
    the copies, fsynced.
Each figure is the median of --runs runs. Keep --mb small on a shared machine.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import tempfile
import time

from chronik_trio.record_batch import HEADER_BYTES, batch_base_offset, encode_batch
from chronik_trio.storage.cleaner import CleanSettings, plan_clean, run_clean
from chronik_trio.storage.disk import Disk
from chronik_trio.storage.frame import LogEntry
from chronik_trio.storage.log import SegmentLog
from chronik_trio.varint import write_uvarint

SYNC_EVERY_BYTES = 1 << 20
READ_MAX_BYTES = 1 << 20


def make_batch(base_offset: int, size: int) -> bytes:
    return encode_batch(bytes(size - HEADER_BYTES), record_count=1, base_timestamp_ms=0,
                        max_timestamp_ms=0, base_offset=base_offset, leader_epoch=1)


def bench_append(root: pathlib.Path, entry_bytes: int, total_bytes: int, sync: bool,
                 per_call: int) -> dict:
    log = SegmentLog.open(Disk(), root / f"append-{entry_bytes}-{sync}-{per_call}", kafka=False)
    payload = bytes(entry_bytes)
    count = total_bytes // entry_bytes // per_call * per_call
    unsynced = 0
    syncs = 0
    started = time.perf_counter()
    for first in range(1, count + 1, per_call):
        log.append([LogEntry(first + k, 1, 0, payload) for k in range(per_call)])
        unsynced += entry_bytes * per_call
        if sync and unsynced >= SYNC_EVERY_BYTES:
            log.sync()
            syncs += 1
            unsynced = 0
    if sync:
        log.sync()
    elapsed_s = time.perf_counter() - started
    log.close()
    return {"entries": count, "syncs": syncs, "elapsed_s": elapsed_s,
            "entries_per_s": count / elapsed_s,
            "mb_per_s": count * entry_bytes / elapsed_s / 1e6}


def bench_read(root: pathlib.Path, batch_bytes: int, total_bytes: int) -> dict:
    log = SegmentLog.open(Disk(), root / "read", kafka=True)
    count = total_bytes // batch_bytes
    chunk = 256
    for first in range(0, count, chunk):
        n = min(chunk, count - first)
        log.append([LogEntry(first + k + 1, 1, 0, make_batch(first + k, batch_bytes))
                    for k in range(n)])
    log.sync()
    started = time.perf_counter()
    offset, calls, read_bytes = 0, 0, 0
    while offset < log.next_offset:
        batches = log.read_batches(offset, max_bytes=READ_MAX_BYTES, end_offset=log.next_offset)
        calls += 1
        read_bytes += sum(len(b) for b in batches)
        offset = batch_base_offset(batches[-1]) + 1
    elapsed_s = time.perf_counter() - started
    log.close()
    return {"batches": count, "calls": calls, "elapsed_s": elapsed_s,
            "batches_per_s": count / elapsed_s, "mb_per_s": read_bytes / elapsed_s / 1e6}


def _keyed_batch(base_offset: int, records: int, keys: int, value_bytes: int = 100) -> bytes:
    body = bytearray()
    for k in range(records):
        key = b"key-%06d" % ((base_offset + k) % keys)
        value = bytes(value_bytes)
        rec = (b"\x00" + _zigzag(0) + _zigzag(k) + _zigzag(len(key)) + key + _zigzag(len(value))
               + value + _zigzag(0))
        body += _zigzag(len(rec)) + rec
    return encode_batch(bytes(body), record_count=records, base_timestamp_ms=0, max_timestamp_ms=0,
                        base_offset=base_offset, leader_epoch=1)


def _zigzag(n: int) -> bytes:
    return write_uvarint((n << 1) ^ (n >> 63))


def bench_clean(root: pathlib.Path, records_per_batch: int, total_bytes: int, value_bytes: int = 100,
                keys: int = 10_000) -> dict:
    log = SegmentLog.open(Disk(), root / "clean", kafka=True, segment_bytes_max=1 << 20)
    index, offset, size = 1, 0, 0
    while size < total_bytes:
        batch = _keyed_batch(offset, records_per_batch, keys, value_bytes)
        log.append([LogEntry(index, 1, 0, batch)])
        index, offset, size = index + 1, offset + records_per_batch, size + len(batch)
    log.sync()
    log_bytes = log.size_bytes
    started = time.perf_counter()
    result = _clean_pass(log, 0, delete_retention_ms=0, min_dirty_ratio=0.0)
    assert result is not None
    log.sync()
    elapsed_s = time.perf_counter() - started
    log.close()
    return {"elapsed_s": elapsed_s, "log_mb": log_bytes / 1e6, "records": offset,
            "removed": result.records_dropped, "mb_per_s": log_bytes / elapsed_s / 1e6,
            "records_per_s": offset / elapsed_s}


def _clean_pass(log: SegmentLog, clean_offset: int, *, delete_retention_ms: int, min_dirty_ratio: float):
    """One cleaning pass as the node runs it (plan, run, swaps); None if nothing was due."""
    plan = plan_clean(log.segments, upto_index=log.last_index + 1, clean_offset=clean_offset, now_ms=1,
                      min_lag_ms=0, max_lag_ms=2**63 - 1, min_dirty_ratio=min_dirty_ratio)
    if plan is None:
        return None
    result = run_clean(Disk(), plan, CleanSettings(now_ms=1, delete_retention_ms=delete_retention_ms,
                                                   key_map_bytes=1 << 30, io_bytes_per_s=None,
                                                   index_interval_bytes=4096))
    for old, new in result.replacements:
        log.replace_segment(old, new)
    return result


def bench_clean_steady(root: pathlib.Path, segment_bytes: int, value_bytes: int = 1000, keys: int = 500,
                       passes: int = 40, between_bytes: int = 250_000) -> dict:
    """The steady state of a compacted topic, as the node's `chronik-trio bench` command of
    docs/bench.md drives it (500 records/s of 1 KB over 500 keys, a pass every 500 ms):
    `between_bytes` of 1-record batches appended and synced before each of `passes` passes.
    The rate is MB cleaned (the size of the segments the passes went over) / time inside
    passes, fsyncs included."""
    log = SegmentLog.open(Disk(), root / "steady", kafka=True, segment_bytes_max=segment_bytes)
    index = offset = clean_offset = 0
    busy = cleaned = 0.0
    for _ in range(passes):
        entries, size = [], 0
        while size < between_bytes:
            batch = _keyed_batch(offset, 1, keys, value_bytes)
            index, offset, size = index + 1, offset + 1, size + len(batch)
            entries.append(LogEntry(index, 1, 0, batch))
        log.append(entries)
        log.sync()
        result = _clean_pass(log, clean_offset, delete_retention_ms=86_400_000, min_dirty_ratio=0.01)
        if result is not None:
            busy += result.seconds
            cleaned += result.bytes_cleaned
            clean_offset = max(clean_offset, result.clean_offset)
    log.close()
    return {"elapsed_s": busy, "cleaned_mb": cleaned / 1e6, "mb_per_s": cleaned / 1e6 / busy if busy else 0.0}


def median_run(runs: int, fn, *args) -> dict:
    """The run with the median elapsed time of `runs` runs."""
    results = sorted((fn(*args) for _ in range(runs)), key=lambda r: r["elapsed_s"])
    return results[len(results) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=pathlib.Path, default=None,
                        help="where to write (default: a temporary directory)")
    parser.add_argument("--mb", type=int, default=64, help="megabytes per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median)")
    parser.add_argument("--clean", action="store_true", help="also measure the log cleaner")
    parser.add_argument("--only-clean", action="store_true", help="measure only the log cleaner")
    parser.add_argument("--value-bytes", type=int, default=100, help="the cleaner's records' value size")
    parser.add_argument("--clean-steady", type=int, default=0, metavar="SEGMENT_BYTES",
                        help="measure only the cleaner's steady state at this segment size (1 KB records "
                             "over 500 keys, a pass after every 250 KB)")
    args = parser.parse_args()
    total_bytes = args.mb << 20
    if args.clean_steady:
        r = median_run(args.runs, _in_tmp, args.dir, bench_clean_steady, args.clean_steady)
        print(f"clean steady state, {args.clean_steady} B segments: {r['mb_per_s']:.1f} MB/s "
              f"({r['cleaned_mb']:.1f} MB cleaned in {r['elapsed_s']:.2f} s inside 40 passes)")
        return
    if args.clean or args.only_clean:
        for per_batch in (1, 100):
            r = median_run(args.runs, _in_tmp, args.dir, bench_clean, per_batch, total_bytes, args.value_bytes)
            print(f"clean {r['log_mb']:.1f} MB, {args.value_bytes} B values, {per_batch:>3} record(s) per batch: {r['mb_per_s']:>6.1f} MB/s "
                  f"of log, {r['records_per_s']:>9,.0f} records/s ({r['removed']} of {r['records']} "
                  f"removed, {r['elapsed_s']:.2f} s)")
        if args.only_clean:
            return
    for entry_bytes, per_call in ((1024, 1), (1024, 64), (100 * 1024, 1)):
        for sync in (True, False):
            r = median_run(args.runs, _in_tmp, args.dir, bench_append, entry_bytes,
                           total_bytes, sync, per_call)
            label = "sync per 1 MB" if sync else "no sync"
            print(f"append {entry_bytes // 1024:>3} KB entries, {per_call:>2} per call, "
                  f"{label:>13}: {r['entries_per_s']:>9,.0f} entries/s "
                  f"{r['mb_per_s']:>7.1f} MB/s ({r['entries']} entries, {r['syncs']} syncs, "
                  f"{r['elapsed_s']:.2f} s)")
    r = median_run(args.runs, _in_tmp, args.dir, bench_read, 1024, total_bytes)
    print(f"read_batches 1 KB batches, 1 MiB per call: {r['batches_per_s']:>9,.0f} "
          f"batches/s {r['mb_per_s']:>7.1f} MB/s ({r['calls']} calls, {r['elapsed_s']:.2f} s)")


def _in_tmp(parent: pathlib.Path | None, fn, *args) -> dict:
    root = pathlib.Path(tempfile.mkdtemp(prefix="chronik-storage-bench-", dir=parent))
    try:
        return fn(root, *args)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
