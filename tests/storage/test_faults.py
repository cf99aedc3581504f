"""FaultyDisk: injected EIO/ENOSPC, latency, and power loss (drop_unsynced)."""

from __future__ import annotations

import errno
import time

import pytest

from chronik_trio.storage import DiskError, DiskFaults, FaultyDisk
from tests.storage.helpers import payload_for, raw_entries


def test_default_faulty_disk_changes_nothing(open_log):
    disk = FaultyDisk()
    log = open_log(disk=disk)
    log.append(raw_entries(1, 5))
    assert log.sync() == 5
    assert disk.unsynced_bytes(next(log.directory.glob("*.seg"))) == 0


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_failed_write_leaves_the_log_unchanged_and_usable(open_log, code):
    faults = DiskFaults()
    log = open_log(disk=FaultyDisk(faults))
    log.append(raw_entries(1, 3))
    faults.write_errno = code
    with pytest.raises(DiskError) as info:
        log.append(raw_entries(4, 2))
    assert info.value.errno == code and str(log.directory) in str(info.value)
    assert log.last_index == 3
    faults.write_errno = None
    log.append(raw_entries(4, 2))
    log.sync()
    log.close()
    log = open_log(durable_index=5)
    assert [bytes(e.payload) for e in log.entries(1, 6)] == [payload_for(i) for i in range(1, 6)]


def test_faults_apply_only_under_the_path_prefix(open_log, tmp_path):
    faults = DiskFaults(write_errno=errno.ENOSPC, fsync_errno=errno.EIO,
                        path_prefix=tmp_path / "sick")
    disk = FaultyDisk(faults)
    healthy = open_log("healthy", disk=disk)
    healthy.append(raw_entries(1, 2))
    assert healthy.sync() == 2
    with pytest.raises(DiskError):
        open_log("sick", disk=disk)  # open fsyncs the new directory and segment


def test_failed_fsync_raises_and_is_reported_once_per_sync(open_log):
    faults = DiskFaults()
    log = open_log(disk=FaultyDisk(faults))
    log.append(raw_entries(1, 2))
    faults.fsync_errno = errno.EIO
    with pytest.raises(DiskError) as info:
        log.sync()
    assert info.value.errno == errno.EIO and info.value.operation.startswith("fsync")
    assert log.durable_index == 0


def test_latency_is_added_to_writes_and_fsyncs(open_log):
    slept: list[float] = []
    disk = FaultyDisk(DiskFaults(write_latency_s=0.25, fsync_latency_s=0.5), sleep=slept.append)
    log = open_log(disk=disk)
    slept.clear()
    log.append(raw_entries(1, 2))
    assert slept == [0.25]
    log.sync()
    assert slept[1:] and set(slept[1:]) == {0.5}


def test_real_latency_delays_the_caller(open_log):
    log = open_log(disk=FaultyDisk(DiskFaults(fsync_latency_s=0.02)))
    log.append(raw_entries(1, 1))
    started = time.monotonic()
    log.sync()
    assert time.monotonic() - started >= 0.02


def test_drop_unsynced_loses_exactly_the_unsynced_suffix(open_log):
    disk = FaultyDisk()
    log = open_log(disk=disk, segment_bytes_max=600)
    log.append(raw_entries(1, 20))
    assert log.sync() == 20
    log.append(raw_entries(21, 20, term=2))  # rolls into new, never-synced segments
    log.close()
    disk.drop_unsynced()
    log = open_log(disk=disk, segment_bytes_max=600, durable_index=20)
    assert (log.last_index, log.last_term) == (20, 1)
    log.append(raw_entries(21, 1, term=3))
    assert log.sync() == 21


def test_synced_rolled_segments_survive_power_loss(open_log):
    disk = FaultyDisk()
    log = open_log(disk=disk, segment_bytes_max=600)
    log.append(raw_entries(1, 40))
    assert log.sync() == 40
    log.close()
    disk.drop_unsynced()
    log = open_log(disk=disk, segment_bytes_max=600, durable_index=40)
    assert log.last_index == 40 and log.segment_count > 3


def test_truncation_then_power_loss_never_resurrects_replaced_entries(open_log):
    disk = FaultyDisk()
    log = open_log(disk=disk, segment_bytes_max=600)
    log.append(raw_entries(1, 30))
    log.sync()
    log.truncate_suffix(5)
    log.append(raw_entries(5, 3, term=2))
    assert log.sync() == 7
    log.close()
    disk.drop_unsynced()
    log = open_log(disk=disk, segment_bytes_max=600, durable_index=7)
    assert (log.last_index, [log.term(i) for i in range(4, 8)]) == (7, [1, 2, 2, 2])


def test_unsynced_compaction_is_undone_by_power_loss(open_log):
    disk = FaultyDisk()
    log = open_log(disk=disk, segment_bytes_max=600)
    log.append(raw_entries(1, 30))
    log.sync()
    first = log.compact_prefix(20)
    assert first > 1
    log.close()
    disk.drop_unsynced()
    log = open_log(disk=disk, segment_bytes_max=600, durable_index=30)
    assert (log.first_index, log.last_index) == (1, 30)


def test_synced_compaction_survives_power_loss(open_log):
    disk = FaultyDisk()
    log = open_log(disk=disk, segment_bytes_max=600)
    log.append(raw_entries(1, 30))
    first = log.compact_prefix(20)
    log.sync()
    log.close()
    disk.drop_unsynced()
    log = open_log(disk=disk, segment_bytes_max=600, durable_index=30)
    assert (log.first_index, log.last_index) == (first, 30)


def test_truncation_to_empty_then_power_loss_is_not_a_later_start(open_log):
    disk = FaultyDisk()
    log = open_log(disk=disk, segment_bytes_max=600)
    log.append(raw_entries(1, 30))
    log.sync()
    log.truncate_suffix(1)  # empties the first segment, unlinks the rest (not yet durable)
    log.close()
    disk.drop_unsynced()
    log = open_log(disk=disk, segment_bytes_max=600)
    # The first segment's truncation lasted but the later segments came back: a gap, so
    # they are a torn tail rather than a log that starts at their first index.
    assert (log.first_index, log.last_index) == (1, 0)
