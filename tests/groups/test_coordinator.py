"""The node-side coordinator (node/group_coordinator.py) under trio's MockClock, with a fake
offsets partition whose produce() applies each batch to the GroupStore at once: loading,
writes through the partition, session expiry, offset expiry, losing leadership."""

from __future__ import annotations

import types
import uuid

import pytest
import trio
import trio.testing
from kio.schema.errors import ErrorCode

from chronik_trio.cluster.meta import Topic
from chronik_trio.group import OFFSETS_TOPIC, GroupState, GroupStore, JoinRequest
from chronik_trio.node.group_coordinator import GroupCoordinator
from chronik_trio.raft.types import StateRole

pytestmark = pytest.mark.timeout(30)

SESSION_MS = 6000
RETENTION_MINUTES = 1
WALL_START_MS = 1_700_000_000_000


class FakeReplica:
    """One offsets partition led here: produce() commits at once."""

    def __init__(self) -> None:
        self.topic_name, self.partition = OFFSETS_TOPIC, 0
        self.closed, self.is_leader, self.leader_epoch = False, True, 1
        self.machine = types.SimpleNamespace(states={GroupStore.name: GroupStore()}, applied_index=0,
                                             role_listeners=[])
        self.group = types.SimpleNamespace(node=types.SimpleNamespace(last_index=lambda: 0))
        self.writes = 0

    async def produce(self, batch, headers, acks, verify=None, *, coordinator=False):
        assert acks == -1
        await trio.sleep(0.001)  # a commit round
        self.writes += 1
        self.machine.applied_index += 1
        self.machine.states[GroupStore.name].apply(memoryview(batch), self.machine.applied_index)


def _node():
    topic = lambda name: Topic(name, uuid.uuid4(), ((1,),), {})  # noqa: E731
    return types.SimpleNamespace(
        config=types.SimpleNamespace(offsets_retention_minutes=RETENTION_MINUTES,
                                     offsets_retention_check_interval_ms=1000,
                                     group_initial_rebalance_delay_ms=0),
        wall_clock_ms=lambda: WALL_START_MS + int(trio.current_time() * 1000),
        meta=types.SimpleNamespace(topics={OFFSETS_TOPIC: topic(OFFSETS_TOPIC), "t": topic("t")}))


def _join(member_id=""):
    return JoinRequest(member_id, None, "client", "/127.0.0.1", "consumer", (("range", b"sub"),), SESSION_MS,
                       10_000, False)


def test_writes_go_through_the_partition_sessions_and_offsets_expire_and_leadership_loss_unloads():
    async def main():
        coordinator = GroupCoordinator(_node())
        replica = FakeReplica()
        store = replica.machine.states[GroupStore.name]
        async with trio.open_nursery() as nursery:
            await nursery.start(coordinator.run)
            coordinator.attach(replica)
            assert await coordinator.commit("simple", "", -1, None, [("t", 0, 5, -1, "md")]) == [ErrorCode.none]
            assert store.committed("simple")[("t", 0)].metadata == "md"
            joined = await coordinator.join("g", _join())
            assert (joined.error, joined.generation_id) == (ErrorCode.none, 1)
            synced = await coordinator.sync("g", joined.member_id, 1, None, None, None, [(joined.member_id, b"A")])
            assert (synced.error, synced.assignment) == (ErrorCode.none, b"A")
            assert store.groups["g"].members[0].assignment == b"A"  # written before answered
            assert await coordinator.commit("g", joined.member_id, 1, None, [("t", 0, 7, -1, None)]) == [ErrorCode.none]
            await trio.sleep(SESSION_MS / 1000 + 0.2)  # no heartbeats: the member expires
            assert (await coordinator.describe("g")).state == GroupState.EMPTY
            assert store.groups["g"].members == ()  # the Empty group was written
            await trio.sleep(RETENTION_MINUTES * 60 + 2)  # past retention and a check
            assert store.group_ids() == set()
            assert await coordinator.fetch("simple", [("t", 0)]) == {("t", 0): None}
            replica.is_leader = False
            await trio.sleep(0.1)
            assert await coordinator.heartbeat("g", joined.member_id, 1, None) == ErrorCode.not_coordinator
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_join_waiting_when_leadership_moves_is_told_not_coordinator():
    async def main():
        coordinator = GroupCoordinator(_node())
        replica = FakeReplica()
        async with trio.open_nursery() as nursery:
            await nursery.start(coordinator.run)
            coordinator.attach(replica)
            first = await coordinator.join("g", _join())
            await coordinator.sync("g", first.member_id, 1, None, None, None, [])
            results = []

            async def second():
                results.append(await coordinator.join("g", _join()))
            nursery.start_soon(second)  # waits: the first member must rejoin
            await trio.sleep(0.5)
            replica.is_leader = False
            for listener in replica.machine.role_listeners:  # what the Raft group reports
                listener(2, StateRole.FOLLOWER, 2)
            with trio.fail_after(1):  # the waiting join is woken (trio picks the task order)
                while not results:
                    await trio.sleep(0.01)
            assert [r.error for r in results] == [ErrorCode.not_coordinator]
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
