"""This node's disk health, for leader balancing (preferred_leaders.py).

Every fsync round of the Ready pass (raft_runtime.py) is observed. The disk is degraded when
the median round of the last WINDOW_S, or a round in flight, takes longer than the
threshold (`disk_degraded_fsync_ms`); it is healthy again only after RECOVER_S without
such a sign (hysteresis: a disk that is slow now and then does not flip back and forth).
A change is reported to __meta (NodeHealthReported), so every leader knows not to hand
this node leadership; the node itself hands off what it leads while degraded.
"""

from __future__ import annotations

import collections
import logging
import statistics

import trio

from chronik_trio.errors import MetaUnavailable
from chronik_trio.pb import meta_pb2

from .meta_group import MetaMachine, MetaService
from .raft_runtime import RaftRuntime

log = logging.getLogger(__name__)

WINDOW_S = 5.0
RECOVER_S = 10.0
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
        self.median_s = 0.0

    def observe(self, seconds: float) -> None:
        """One fsync round took this long (called by the runtime after each)."""
        self._rounds.append((trio.current_time(), seconds))

    def evaluate(self, now: float) -> bool:
        """Update and return `degraded`."""
        while self._rounds and self._rounds[0][0] < now - WINDOW_S:
            self._rounds.popleft()
        self.median_s = statistics.median(s for _, s in self._rounds) if self._rounds else 0.0
        started = self._runtime.fsync_started
        slow = self.median_s > self.threshold_s or (started is not None and now - started > self.threshold_s)
        if slow:
            self._last_slow = now
            if not self.degraded:
                log.warning("node %d: disk degraded (fsync median %.0f ms over %.0f s, threshold %.0f ms): "
                            "handing off partition leadership", self.node_id, self.median_s * 1000, WINDOW_S,
                            self.threshold_s * 1000)
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
                    node_id=self.node_id, disk_degraded=degraded, fsync_p50_us=int(self.median_s * 1e6))))
            except MetaUnavailable as exc:
                log.warning("node %d: disk health not reported yet (%s)", self.node_id, exc)
