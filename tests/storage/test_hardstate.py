"""HardStateFile: atomic replacement and corruption detection."""

from __future__ import annotations

import errno

import pytest

from chronik_trio.storage import (
    CorruptHardStateError,
    Disk,
    DiskError,
    DiskFaults,
    FaultyDisk,
    HardState,
    HardStateFile,
)
from chronik_trio.storage.hardstate import HARD_STATE_BYTES


def test_missing_file_loads_zeros(tmp_path):
    assert HardStateFile(Disk(), tmp_path / "hs").load() == HardState(0, 0, 0)


def test_save_then_load_round_trips_and_replaces(tmp_path):
    hsf = HardStateFile(Disk(), tmp_path / "g" / "hs")
    hsf.save(HardState(3, 2, 10))
    hsf.save(HardState(4, 0, 12))
    assert HardStateFile(Disk(), tmp_path / "g" / "hs").load() == HardState(4, 0, 12)
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["hs"]


@pytest.mark.parametrize("offset", [0, 5, 12, HARD_STATE_BYTES - 1])
def test_flipped_byte_is_detected_naming_the_file(tmp_path, offset):
    path = tmp_path / "hs"
    HardStateFile(Disk(), path).save(HardState(7, 1, 99))
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptHardStateError) as info:
        HardStateFile(Disk(), path).load()
    assert info.value.path == path and str(path) in str(info.value)


@pytest.mark.parametrize("data", [b"", b"CTHS", b"x" * 100])
def test_wrong_size_is_detected(tmp_path, data):
    path = tmp_path / "hs"
    path.write_bytes(data)
    with pytest.raises(CorruptHardStateError, match="bytes"):
        HardStateFile(Disk(), path).load()


def test_power_loss_after_save_keeps_the_new_state(tmp_path):
    disk = FaultyDisk()
    hsf = HardStateFile(disk, tmp_path / "hs")
    hsf.save(HardState(1, 1, 1))
    hsf.save(HardState(2, 2, 2))
    disk.drop_unsynced()
    assert HardStateFile(Disk(), tmp_path / "hs").load() == HardState(2, 2, 2)


def test_failed_save_leaves_the_old_state(tmp_path):
    faults = DiskFaults()
    disk = FaultyDisk(faults)
    hsf = HardStateFile(disk, tmp_path / "hs")
    hsf.save(HardState(1, 1, 1))
    faults.fsync_errno = errno.EIO
    with pytest.raises(DiskError) as info:
        hsf.save(HardState(2, 2, 2))
    assert info.value.errno == errno.EIO
    disk.drop_unsynced()
    assert hsf.load() == HardState(1, 1, 1)
