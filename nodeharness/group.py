"""A set of node processes (a cluster, or single nodes of one test) torn down together."""

from __future__ import annotations

import signal
import subprocess
import time

import trio

from .health import HEALTH_TIMEOUT_S
from .process import READY_TIMEOUT_S, STOP_TIMEOUT_S, NodeProcess, UnexpectedExit


class NodeGroup:
    """Nodes by id. close() stops every one by PID and fails on any exit nobody caused."""

    def __init__(self) -> None:
        self.nodes: dict[int, NodeProcess] = {}

    def add(self, node: NodeProcess) -> NodeProcess:
        assert node.node_id not in self.nodes, f"node {node.node_id} is already in the group"
        self.nodes[node.node_id] = node
        return node

    def __getitem__(self, node_id: int) -> NodeProcess:
        return self.nodes[node_id]

    @property
    def ids(self) -> list[int]:
        return sorted(self.nodes)

    def running(self) -> list[int]:
        """Ids of nodes whose process runs and is not paused."""
        return [n for n in self.ids if self.nodes[n].running and not self.nodes[n].paused]

    # --- start and readiness -------------------------------------------------------------------

    def start_all(self, timeout_s: float | None = READY_TIMEOUT_S) -> None:
        """Start every node at once (none serves before __meta has a quorum), then wait
        until each is ready (timeout_s None: do not wait)."""
        for node in self.nodes.values():
            node.start()
        if timeout_s is not None:
            self.wait_all_ready(timeout_s)

    def wait_all_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until every node is ready, with one deadline for all (NodeExited, NotReady)."""
        deadline = time.monotonic() + timeout_s
        for node in self.nodes.values():
            node.wait_ready(max(deadline - time.monotonic(), 0.1))

    async def wait_all_ready_async(self, timeout_s: float = READY_TIMEOUT_S) -> list[int]:
        """Until every node is ready; the ids of those that were not (exited or too slow)."""
        ready: set[int] = set()

        async def wait(node: NodeProcess) -> None:
            if await node.wait_ready_async(timeout_s):
                ready.add(node.node_id)
        async with trio.open_nursery() as nursery:
            for node in self.nodes.values():
                nursery.start_soon(wait, node)
        return [n for n in self.ids if n not in ready]

    # --- what /health says ---------------------------------------------------------------------

    def leaders(self, timeout_s: float = HEALTH_TIMEOUT_S) -> dict[str, tuple[int, int]]:
        """group id -> (leader, term): for each Raft group, the running node that says in
        /health that it leads it at the highest term (a paused or cut-off old leader may
        still believe it leads, at a lower term). Groups no answering node leads are absent."""
        found: dict[str, tuple[int, int]] = {}
        for n in self.running():
            answer = self.nodes[n].health(timeout_s) or {}
            for group, term in (answer.get("leading_groups") or {}).items():
                if group not in found or term > found[group][1]:
                    found[group] = (n, int(term))
        return found

    def meta_leaders(self, nodes: list[int] | None = None) -> dict[int, int | None]:
        """node -> the __meta leader it names in /health (-1: none known; None: no answer)."""
        answers = {n: self.nodes[n].health() for n in (nodes or self.running())}
        return {n: (int(a["meta_leader"]) if a and "meta_leader" in a else None) for n, a in answers.items()}

    # --- stop and teardown ---------------------------------------------------------------------

    def stop_all(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every running node at once (a paused one is continued first), wait with
        one deadline, SIGKILL stragglers (each a problem)."""
        live = [node for node in self.nodes.values() if node.running]
        for node in live:
            node.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for node in live:
            try:
                node.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                node._kill_straggler(timeout_s)
        for node in self.nodes.values():
            node.examine_exit()

    async def stop_all_async(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        async with trio.open_nursery() as nursery:
            for node in self.nodes.values():
                if node.running:
                    nursery.start_soon(node.stop_async, timeout_s)
        for node in self.nodes.values():
            node.examine_exit()

    def kill_all(self) -> None:
        """SIGKILL every running node by PID and reap it (a last resort on errors)."""
        for node in self.nodes.values():
            if node.running:
                node.kill()

    def problems(self) -> list[str]:
        """Every exit nobody caused and every unclean stop so far, over all restarts."""
        for node in self.nodes.values():
            node.examine_exit()
        return [p for n in self.ids for p in self.nodes[n].problems]

    def close(self) -> None:
        """stop_all(), then raise UnexpectedExit if any node exited without the harness
        causing it, or did not stop cleanly."""
        self.stop_all()
        problems = self.problems()
        if problems:
            raise UnexpectedExit(f"{len(problems)} node exit(s) nobody caused:\n" + "\n\n".join(problems))
