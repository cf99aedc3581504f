"""node/disk_health.py: slow fsync rounds make the disk degraded only after several checks in
a row, a loaded machine's usual rounds do not, and it is healthy again only after RECOVER_S
without a sign (trio's MockClock: no real time passes)."""

import trio
import trio.testing

from chronik_trio.node import disk_health
from chronik_trio.node.disk_health import DiskHealth


class _Runtime:
    fsync_started = None


def _run(rounds_per_check):
    """[degraded after each check] for rounds_per_check: a list of lists of round seconds."""
    async def main():
        health = DiskHealth(1, 0.2, _Runtime(), None, None)
        out = []
        for rounds in rounds_per_check:
            for seconds in rounds:
                health.observe(seconds)
            await trio.sleep(disk_health.CHECK_S)
            out.append(health.evaluate(trio.current_time()))
        return out
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_slow_rounds_degrade_only_after_several_checks_and_recover_after_a_quiet_while():
    healthy, slow = [[0.005] * 20] * 10, [[0.5] * 5] * 8
    seen = _run(healthy + slow + [[0.005] * 20] * 30)
    # Degraded after DEGRADE_AFTER_CHECKS signs in a row (the window's percentile needs a few
    # slow checks first), and through the slow period.
    first = seen.index(True)
    assert 10 + disk_health.DEGRADE_AFTER_CHECKS - 1 <= first < 18 and all(seen[first:18])
    # Healthy again only after RECOVER_S of clean checks after the slow period.
    assert seen.index(False, 18) - 17 >= disk_health.RECOVER_S


def test_a_load_that_grows_slowly_is_not_a_degraded_disk():
    # Rounds from 5 ms to 400 ms over 80 s: each step is within BASELINE_FACTOR of the usual.
    seen = _run([[0.005 * 1.057 ** i] * 10 for i in range(80)])
    assert not any(seen), seen


def test_one_burst_of_slow_rounds_is_not_a_degraded_disk():
    seen = _run([[0.005] * 20] * 10 + [[0.5] * 5] + [[0.005] * 200] * 10)
    assert not any(seen)
