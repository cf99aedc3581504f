"""The __meta Raft group on this node: MetaMachine applies commands, MetaService proposes.

Every node applies the same committed commands to its own cluster.MetaState, which the
Kafka handlers read. Any node may propose: a follower's proposal is forwarded to the leader
by Raft, and the proposer waits until the command's request id is applied locally.
Request ids make retries safe: a command that was already applied is not applied again.
"""

from __future__ import annotations

import logging
import random
import typing

import trio

from chronik_trio.cluster.meta import Applied, MetaState
from chronik_trio.errors import MetaUnavailable, ProposalFailed
from chronik_trio.pb import meta_pb2
from chronik_trio.raft.types import ConfState, Snapshot, StateRole

from .raft_group import RaftGroup

log = logging.getLogger(__name__)

META_GROUP_ID = "__meta"
META_PROPOSE_TIMEOUT_S = 15.0  # a metadata command gives up after this (no quorum)
META_RETRY_S = 1.0  # resend the same command if not applied within this (leader change)
META_NO_LEADER_BACKOFF_S = 0.05


class MetaMachine:
    def __init__(self) -> None:
        self.state = MetaState()
        self._waiters: dict[bytes, list] = {}
        self.changed = trio.Event()  # set and replaced after every applied change
        self.leader_id = 0
        self.listeners: list[typing.Callable[[], None]] = []  # called after changes
        # called with each applied command that is a request to act (not a state change)
        self.command_listeners: list[typing.Callable[[meta_pb2.MetaCommand], None]] = []
        # __meta's own membership as applied here (node/membership.py watches it)
        self.conf_state = ConfState()

    def expect(self, request_id: bytes) -> trio.Event:
        event = trio.Event()
        self._waiters[request_id] = [event, None]
        return event

    def result(self, request_id: bytes) -> Applied | None:
        waiter = self._waiters.pop(request_id, None)
        return waiter[1] if waiter else None

    def forget(self, request_id: bytes) -> None:
        self._waiters.pop(request_id, None)

    def apply(self, entries) -> list:
        results, version = [], self.state.version
        for entry in entries:
            if not entry.data:
                results.append(None)
                continue
            command = meta_pb2.MetaCommand.FromString(entry.data)
            applied = self.state.apply(command)
            results.append(applied)
            if applied.ok and command.HasField("preferred_leader_requested"):
                for listener in self.command_listeners:
                    listener(command)
            waiter = self._waiters.get(command.request_id)
            if waiter is not None:
                waiter[1] = applied
                waiter[0].set()
        if self.state.version != version:
            self._changed()
        return results

    def _changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()
        for listener in self.listeners:
            listener()

    def on_soft_state(self, leader_id: int, role: StateRole, term: int) -> None:
        self.leader_id = leader_id

    def on_conf_state(self, index, conf_state) -> None:
        log.info("__meta membership at index %d: voters %s, learners %s%s", index, conf_state.voters,
                 conf_state.learners, f", leaving {conf_state.voters_outgoing}" if conf_state.voters_outgoing else "")
        self.conf_state = conf_state
        self._changed()

    def restore(self, snapshot: Snapshot) -> None:
        self.state.restore(snapshot.data)
        self.conf_state = snapshot.metadata.conf_state
        self._changed()


class MetaService:
    """Proposes commands through the __meta group, which the node opens at start (open())."""

    def __init__(self, node_id: int, machine: MetaMachine, rng: random.Random) -> None:
        self.node_id = node_id
        self._rng = rng  # request ids
        self.machine = machine
        self._group: RaftGroup | None = None

    def open(self, group: RaftGroup) -> None:
        assert self._group is None, "__meta is opened once"
        self._group = group

    @property
    def group(self) -> RaftGroup:
        assert self._group is not None, "__meta is not open yet"
        return self._group

    @property
    def state(self) -> MetaState:
        return self.machine.state

    async def propose(self, command: meta_pb2.MetaCommand) -> Applied:
        """Commit command through __meta and return its result as applied here.
        Raises MetaUnavailable after META_PROPOSE_TIMEOUT_S without a commit."""
        command.request_id = self.node_id.to_bytes(4, "big") + self._rng.randbytes(12)
        data = command.SerializeToString()
        applied = self.machine.expect(command.request_id)
        try:
            with trio.move_on_after(META_PROPOSE_TIMEOUT_S):
                while True:
                    leader_known = self.group.leader_known
                    try:
                        await self.group.propose_anywhere(data)
                    except ProposalFailed:
                        # No leader known (or leadership moving): try again once one is
                        # learnt, or after a short pause if leadership stays where it is.
                        with trio.move_on_after(META_NO_LEADER_BACKOFF_S):
                            await leader_known.wait()
                        continue
                    # Wait for the commit; resend at once if a new leader appears (a follower
                    # may have forwarded the command to the old one), else after a while.
                    new_leader = self.group.leader_known
                    with trio.move_on_after(META_RETRY_S):
                        async with trio.open_nursery() as race:
                            async def applied_or_new_leader(event):
                                await event.wait()
                                race.cancel_scope.cancel()
                            race.start_soon(applied_or_new_leader, applied)
                            race.start_soon(applied_or_new_leader, new_leader)
                    if applied.is_set():
                        return self.machine.result(command.request_id)
        finally:
            self.machine.forget(command.request_id)
        kind = command.WhichOneof("command")
        raise MetaUnavailable(f"__meta did not commit {kind} within {META_PROPOSE_TIMEOUT_S:.0f} s")
