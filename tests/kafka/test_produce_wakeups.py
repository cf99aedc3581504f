"""What one produce request costs the connection loop in trio tasks and task steps.

The connection loop (node/kafka_server.py) and the Produce handler are driven over a socket
pair (a real socket's sends and receives, as a client connection has) with a replica whose produce waits until the test says the records are
committed (as the Ready pass would). A trio instrument counts, from the request's bytes
arriving to its answer leaving, the tasks spawned and the steps taken by the node's own
tasks (every step is a trip through trio's scheduler). One record at a time is the case
that counts: each step is paid per record.
"""

from __future__ import annotations

import collections
import types

import trio
import trio.testing

from chronik_trio.node.kafka_server import RequestErrors, serve_connection
from tests.kafka.test_containment import _answer, _receive_frame
from tests.kafka_wire import PRODUCE, Record, build_batch, encode_request, frame

PRODUCE_VERSION = 9


class _Counter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.spawned: collections.Counter[str] = collections.Counter()
        self.steps: collections.Counter[str] = collections.Counter()

    def task_spawned(self, task) -> None:
        self.spawned[task.name] += 1

    def before_task_step(self, task) -> None:
        if task.name.startswith("chronik_trio."):
            self.steps[task.name] += 1


class _Replica:
    """A leader's replica: produce() waits for the test's commit, then answers."""

    log_start_offset = 0

    def __init__(self) -> None:
        self.proposed = trio.Event()
        self.committed = trio.Event()
        self.next_offset = 0

    async def produce(self, records, headers, acks, verify) -> int:
        self.proposed.set()
        await self.committed.wait()
        self.proposed, self.committed = trio.Event(), trio.Event()
        offset, self.next_offset = self.next_offset, self.next_offset + len(headers)
        return offset


class _Ctx:
    def __init__(self, partitions: int) -> None:
        self.config = types.SimpleNamespace(request_max_bytes=1 << 20, authorizer_enabled=False,
                                            auto_create_topics=False)
        self.requests_inflight = 0
        self.request_errors = RequestErrors()
        topic = types.SimpleNamespace(name="t", partition_count=partitions)
        self.meta = types.SimpleNamespace(topics={"t": topic}, topics_by_id={}, brokers={})
        self.replicas = [_Replica() for _ in range(partitions)]

    def replica(self, topic: str, partition: int):
        return self.replicas[partition]

    def topic_config(self, topic, key: str) -> str:
        return {"max.message.bytes": "1048588", "cleanup.policy": "delete"}[key]


def _socket_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = trio.socket.socketpair()
    return trio.SocketStream(a), trio.SocketStream(b)


def _produce(correlation_id: int, partitions: int) -> bytes:
    batch = build_batch([Record(None, b"v" * 1000)])
    return frame(encode_request(PRODUCE, PRODUCE_VERSION, correlation_id, {
        "acks": -1, "timeout": 30_000, "topic_data": [{"name": "t", "partition_data": [
            {"index": p, "records": batch} for p in range(partitions)]}]}))


async def _one_request(ctx: _Ctx, client, correlation_id: int, counter: _Counter | None):
    """Sends one produce, commits it once every replica has proposed, returns its answer;
    counts with `counter` from the send to the answer."""
    if counter is not None:
        trio.lowlevel.add_instrument(counter)
    try:
        await client.send_all(_produce(correlation_id, len(ctx.replicas)))
        for replica in ctx.replicas:
            await replica.proposed.wait()
        for replica in ctx.replicas:
            replica.committed.set()
        answer = await _receive_frame(client)
        await trio.testing.wait_all_tasks_blocked()  # the request's last steps, after its send
    finally:
        if counter is not None:
            trio.lowlevel.remove_instrument(counter)
    return _answer(PRODUCE, PRODUCE_VERSION, answer)


async def _counted(partitions: int, records: int = 5) -> tuple[float, float, list]:
    ctx = _Ctx(partitions)
    client, server = _socket_stream_pair()
    counter = _Counter()
    bodies = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, ctx, "127.0.0.1:5555")
        await _one_request(ctx, client, 1, None)  # warm-up
        for i in range(records):
            bodies.append(await _one_request(ctx, client, 10 + i, counter))
        await client.aclose()
    return (sum(counter.spawned.values()) / records, sum(counter.steps.values()) / records, bodies)


async def test_a_one_partition_produce_spawns_one_task_and_takes_few_steps():
    spawned, steps, bodies = await _counted(partitions=1)
    for i, (correlation_id, body) in enumerate(bodies):
        assert correlation_id == 10 + i
        ((partition,),) = [t.partition_responses for t in body.responses]
        assert (partition.index, partition.error_code, partition.base_offset) == (0, 0, i + 1)
    # The request's own task; its one partition is produced in it (no nursery, no child).
    assert spawned == 1
    # The reader wakes on the bytes (1) and again once the request's task has run its first
    # step (1: it starts each task with nursery.start, so pipelined produces propose in
    # order); the request's task runs to the proposal (1), wakes on the commit and sends its
    # answer (1), and ends after the send's checkpoint (1). Was 9: a writer task woken for
    # each request and again for its answer, a nursery and a child task for the one
    # partition, a checkpoint of the reader's hand-off to the writer.
    assert steps == 5, steps


async def test_a_produce_to_several_partitions_answers_every_one():
    spawned, _, bodies = await _counted(partitions=3, records=2)
    for correlation_id, body in bodies:
        ((p0, p1, p2),) = [t.partition_responses for t in body.responses]
        assert [(p.index, p.error_code) for p in (p0, p1, p2)] == [(0, 0), (1, 0), (2, 0)]
    assert spawned == 4  # the request's task and one per partition: one commit round for all


class _RecordingReplica:
    """Answers at once, noting the order in which requests proposed."""

    log_start_offset = 0

    def __init__(self) -> None:
        self.proposed: list[bytes] = []

    async def produce(self, records, headers, acks, verify) -> int:
        self.proposed.append(bytes(records))  # what a leader appends, in this order
        offset = len(self.proposed) - 1
        await trio.lowlevel.checkpoint()  # as the wait for the commit does
        return offset


async def test_pipelined_produces_to_one_partition_are_proposed_in_request_order():
    # Twenty requests in one read: tasks spawned together run in any order (trio shuffles
    # each batch), so the reader lets each request's task take its first step, where an
    # uncontended produce proposes, before it starts the next one.
    ctx = _Ctx(1)
    replica = ctx.replicas[0] = _RecordingReplica()
    batches = [build_batch([Record(None, b"record %d" % i)]) for i in range(20)]
    requests = b"".join(frame(encode_request(PRODUCE, PRODUCE_VERSION, i, {
        "acks": 1, "timeout": 30_000, "topic_data": [{"name": "t", "partition_data": [
            {"index": 0, "records": batch}]}]})) for i, batch in enumerate(batches))
    client, server = _socket_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_connection, server, ctx, "127.0.0.1:5555")
        await client.send_all(requests)
        answers = [_answer(PRODUCE, PRODUCE_VERSION, await _receive_frame(client)) for _ in batches]
        await client.aclose()
    assert replica.proposed == batches
    assert [correlation_id for correlation_id, _ in answers] == list(range(20))
    assert [body.responses[0].partition_responses[0].base_offset for _, body in answers] == list(range(20))
