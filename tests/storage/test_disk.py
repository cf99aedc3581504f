"""The plain Disk seam: whole writes despite short pwritev calls and IOV_MAX."""

from __future__ import annotations

import os

import pytest

from chronik_trio.storage import Disk, DiskError
from chronik_trio.storage.disk import IOV_MAX


@pytest.mark.parametrize("count", [3, IOV_MAX + 5])
def test_pwritev_writes_everything_despite_short_writes(tmp_path, monkeypatch, count):
    real_pwritev = os.pwritev

    def short_pwritev(fd, buffers, offset):
        data = b"".join(bytes(b) for b in buffers)[:7]
        return real_pwritev(fd, [data], offset)

    monkeypatch.setattr(os, "pwritev", short_pwritev)
    disk = Disk()
    f = disk.open(tmp_path / "f")
    buffers = [bytes([k % 256]) * (k % 5) for k in range(count)]
    disk.pwritev(f, buffers, 3)
    disk.close(f)
    assert (tmp_path / "f").read_bytes() == bytes(3) + b"".join(buffers)


def test_errors_name_the_file(tmp_path):
    disk = Disk()
    f = disk.open(tmp_path / "f")
    disk.close(f)
    with pytest.raises(DiskError) as info:
        disk.pwritev(f, [b"x"], 0)  # closed descriptor: EBADF
    assert str(tmp_path / "f") in str(info.value)
    with pytest.raises(DiskError, match="unlink"):
        disk.unlink(tmp_path / "missing" / "f")
