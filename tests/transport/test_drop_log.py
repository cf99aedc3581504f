"""The rate limit of the drop log lines (pure, with an injected clock)."""

from __future__ import annotations

import pytest

from chronik_trio.transport.metrics import DropReason
from chronik_trio.transport.server import DropLog

pytestmark = pytest.mark.timeout(30)


def test_drop_log_keeps_to_its_lines_per_interval_and_counts_the_rest():
    now = [0.0]
    drop_log = DropLog(lambda: now[0], lines_max=2, interval_s=10.0)
    malformed, oversized = DropReason.MALFORMED, DropReason.OVERSIZED
    assert [drop_log.admit(malformed) for _ in range(5)] == [0, 0, None, None, None]
    assert drop_log.admit(oversized) == 0  # each reason has its own budget
    now[0] = 9.9
    assert drop_log.admit(malformed) is None
    now[0] = 10.0
    assert drop_log.admit(malformed) == 4  # the first line of the next interval says so
    assert drop_log.admit(malformed) == 0
    assert drop_log.admit(malformed) is None
