"""This node's disk health, for leader balancing (preferred_leaders.py).

Every fsync round of the Ready pass (raft_runtime.py) is observed. A sign of a slow disk:
the slower rounds of the last WINDOW_S (their PERCENTILE-th percentile) take longer than
both the threshold (`disk_degraded_fsync_ms`) and BASELINE_FACTOR times this node's own
usual round (a slow average, not updated while slow), or one round has been in flight for
STUCK_S (a disk that does not answer). The disk is degraded after DEGRADE_AFTER_CHECKS
signs in a row (a burst of fsyncs, a loaded machine's pause, is not one), and healthy
again only after RECOVER_S without a sign (hysteresis: no flipping back and forth). A change
is reported to __meta (NodeHealthReported), so every leader knows not to hand this node
leadership; the node itself hands off what it leads while degraded.
"""

from __future__ import annotations

import collections
import logging

import trio

from chronik_trio.errors import MetaUnavailable
from chronik_trio.pb import meta_pb2

from .meta_group import MetaMachine, MetaService
from .raft_runtime import RaftRuntime

log = logging.getLogger(__name__)

WINDOW_S = 5.0
RECOVER_S = 10.0
DEGRADE_AFTER_CHECKS = 3
BASELINE_FACTOR = 4.0
BASELINE_WEIGHT = 0.05  # per check: the usual round follows the median over ~20 s
# One round in flight this long is a stuck disk. Single rounds of 100+ ms happen on a loaded
# machine with a healthy disk, so a single slow round alone is not a sign (the median is).
STUCK_S = 2.0
# Not the median: a round that appends nothing (a commit index, a hard state) may skip the
# slow fsync, and such rounds can outnumber the slow ones on a follower.
PERCENTILE = 80
CHECK_S = 1.0
ROUNDS_MAX = 4096  # fsync rounds remembered (a busy node makes hundreds a second)


class DiskHealth:
    def __init__(self, node_id: int, threshold_s: float, runtime: RaftRuntime, machine: MetaMachine,
                 meta_service: MetaService) -> None:
        self.node_id = node_id
        self.threshold_s = threshold_s
        self._runtime = runtime
        self._machine = machine
        self._meta_service = meta_service
        self._rounds: collections.deque[tuple[float, float]] = collections.deque(maxlen=ROUNDS_MAX)
        self.degraded = False
        self._last_slow = float("-inf")
        self.slow_s = 0.0
        self.baseline_s = 0.0  # this node's usual fsync round (0: none seen yet)
        self._signs = 0

    def observe(self, seconds: float) -> None:
        """One fsync round took this long (called by the runtime after each)."""
        self._rounds.append((trio.current_time(), seconds))

    def evaluate(self, now: float) -> bool:
        """Update and return `degraded` (called every CHECK_S)."""
        while self._rounds and self._rounds[0][0] < now - WINDOW_S:
            self._rounds.popleft()
        rounds = sorted(s for _, s in self._rounds)
        self.slow_s = rounds[len(rounds) * PERCENTILE // 100] if rounds else 0.0
        started = self._runtime.fsync_started
        stuck = started is not None and now - started > STUCK_S
        sign = stuck or self.slow_s > max(self.threshold_s, BASELINE_FACTOR * self.baseline_s)
        if sign:
            self._signs += 1
            self._last_slow = now
        else:
            self._signs = 0
            if rounds and not self.degraded:
                median = rounds[len(rounds) // 2]
                self.baseline_s += BASELINE_WEIGHT * (median - self.baseline_s) if self.baseline_s else median
        if not self.degraded and self._signs >= DEGRADE_AFTER_CHECKS:
            log.warning("node %d: disk degraded (%s; fsync p%d %.0f ms over %.0f s, usual %.0f ms, threshold "
                        "%.0f ms): handing off partition leadership", self.node_id,
                        "an fsync round stuck" if stuck else "slow fsyncs", PERCENTILE, self.slow_s * 1000,
                        WINDOW_S, self.baseline_s * 1000, self.threshold_s * 1000)
            self.degraded = True
        elif self.degraded and now - self._last_slow >= RECOVER_S:
            log.info("node %d: disk healthy again (no slow fsync for %.0f s)", self.node_id, RECOVER_S)
            self.degraded = False
        return self.degraded

    async def run(self) -> None:
        """Evaluate every CHECK_S; report a change to __meta (retried until it commits)."""
        while True:
            await trio.sleep(CHECK_S)
            degraded = self.evaluate(trio.current_time())
            if degraded == (self.node_id in self._machine.state.disk_degraded):
                continue
            try:
                await self._meta_service.propose(meta_pb2.MetaCommand(node_health_reported=meta_pb2.NodeHealthReported(
                    node_id=self.node_id, disk_degraded=degraded, fsync_p80_us=int(self.slow_s * 1e6))))
            except MetaUnavailable as exc:
                log.warning("node %d: disk health not reported yet (%s)", self.node_id, exc)
