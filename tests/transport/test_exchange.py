"""Transports on 127.0.0.1 exchanging Raft messages: order, coalescing, size, peers."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from chronik_trio.transport import PeerState, Transport

from .helpers import HOST, Node, cluster, listen, message, wait_connected, wait_until

MESSAGES_PER_PAIR = 200


@pytest.mark.timeout(30)
async def test_three_transports_exchange_in_order_per_peer_both_ways():
    async with cluster(3) as nodes:
        await wait_connected(nodes)
        for index in range(MESSAGES_PER_PAIR):
            for sender in nodes:
                for peer in nodes:
                    if peer is not sender:
                        group = f"g{index % 3}"
                        assert sender.transport.send(
                            peer.node_id, group, message(sender.node_id, peer.node_id, index))
            if index % 50 == 0:
                await trio.sleep(0)  # let the senders run mid-way, so batches differ in size
        await wait_until(lambda: all(len(n.received()) == 2 * MESSAGES_PER_PAIR for n in nodes))
        for node in nodes:
            for peer in nodes:
                if peer is not node:
                    got = [(g, i) for f, g, i in node.received() if f == peer.node_id]
                    assert got == [(f"g{i % 3}", i) for i in range(MESSAGES_PER_PAIR)]
            assert all(b.to_node == node.node_id for b in node.batches)
            assert node.unreachable == []
            for peer in nodes:  # not one connection was lost on the way
                if peer is not node:
                    assert node.transport.registry.get_sample_value(
                        "chronik_transport_connect_failures_total",
                        {"peer": str(peer.node_id)}) == 0


@pytest.mark.timeout(30)
async def test_messages_queued_together_travel_in_one_batch():
    async with cluster(2) as (a, b):
        await wait_connected([a, b])
        for index in range(10):
            a.transport.send(2, "g", message(1, 2, index))
        await wait_until(lambda: len(b.received()) == 10)
        assert len(b.batches) == 1


@pytest.mark.timeout(30)
async def test_one_megabyte_entries_go_through_intact():
    entries = [bytes([i]) * 2**20 for i in range(8)]
    async with cluster(2) as (a, b):
        await wait_connected([a, b])
        for index, data in enumerate(entries):
            assert a.transport.send(2, "big", message(1, 2, index, data))
        await wait_until(lambda: len(b.received()) == len(entries), timeout_s=20)
        got = [gm.message.entries[0].data for batch in b.batches for gm in batch.messages]
        assert got == entries
        assert a.transport.registry.get_sample_value(
            "chronik_transport_connect_failures_total", {"peer": "2"}) == 0


@pytest.mark.timeout(30)
async def test_a_message_above_the_frame_limit_is_dropped_and_reported():
    async with cluster(2, frame_bytes_max=64 * 1024) as (a, b):
        await wait_connected([a, b])
        assert not a.transport.send(2, "big", message(1, 2, 0, bytes(64 * 1024)))
        assert a.unreachable == [(2, "big")]
        assert a.transport.send(2, "small", message(1, 2, 1, bytes(1000)))
        await wait_until(lambda: b.received() == [(1, "small", 1)])


@pytest.mark.timeout(30)
async def test_send_to_an_unknown_peer_reports_it_unreachable():
    async with cluster(1) as (a,):
        assert not a.transport.send(9, "g", message(1, 9, 0))
        assert a.unreachable == [(9, "g")]


@pytest.mark.timeout(30)
async def test_peers_added_and_removed_while_running():
    a, b = Node(1), Node(2)
    async with trio.open_nursery() as nursery:
        a.transport = Transport(1, (HOST, 0), {}, a.on_batch, a.report_unreachable)
        b.transport = Transport(2, await listen(), {}, b.on_batch, b.report_unreachable)
        await nursery.start(a.transport.run)
        b_address = await nursery.start(b.transport.run)
        a.transport.add_peer(2, b_address)
        with trio.fail_after(5):
            await a.transport.wait_peer_connected(2)
        assert a.transport.send(2, "g", message(1, 2, 0))
        await wait_until(lambda: b.received() == [(1, "g", 0)])
        a.transport.remove_peer(2)
        assert a.transport.peer_state(2) is None
        assert not a.transport.send(2, "g", message(1, 2, 1))
        a.transport.add_peer(2, b_address)
        assert a.transport.peer_state(2) is PeerState.CONNECTING
        with trio.fail_after(5):
            await a.transport.wait_peer_connected(2)
        assert a.transport.send(2, "g", message(1, 2, 2))
        await wait_until(lambda: b.received() == [(1, "g", 0), (1, "g", 2)])
        nursery.cancel_scope.cancel()


class _SenderSteps(trio.abc.Instrument):
    """Scheduler steps taken by the transports' sender tasks (one per peer)."""

    def __init__(self) -> None:
        self.steps = 0

    def before_task_step(self, task) -> None:
        if task.name.endswith("Transport._run_sender"):
            self.steps += 1


@pytest.mark.timeout(30)
async def test_a_lone_message_costs_its_sender_two_scheduler_steps():
    # One record at a time, every Raft message goes alone: the sender task wakes for it (1),
    # writes its batch and passes the send's checkpoint (1). Taking the free send lock with
    # `async with` was one more checkpoint, so one more step, per batch.
    async with cluster(2) as (a, b):
        await wait_connected([a, b])
        a.transport.send(2, "g", message(1, 2, 0))
        await wait_until(lambda: len(b.received()) == 1)
        counter = _SenderSteps()
        trio.lowlevel.add_instrument(counter)
        try:
            for index in range(1, 11):
                a.transport.send(2, "g", message(1, 2, index))
                await wait_until(lambda: len(b.received()) == index + 1)
                await trio.testing.wait_all_tasks_blocked()
        finally:
            trio.lowlevel.remove_instrument(counter)
        assert len(b.batches) == 11
        assert counter.steps == 2 * 10
