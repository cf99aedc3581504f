from __future__ import annotations

import pytest

from chronik_trio.storage import Disk, SegmentLog


@pytest.fixture
def open_log(tmp_path):
    """Opens SegmentLogs in tmp_path/<name>; every log opened is closed at teardown."""
    opened: list[SegmentLog] = []

    def open_(name: str = "group", *, kafka: bool = False, disk: Disk | None = None,
              **kwargs) -> SegmentLog:
        log = SegmentLog.open(disk or Disk(), tmp_path / name, kafka=kafka, **kwargs)
        opened.append(log)
        return log

    yield open_
    for log in opened:
        log.close()
