"""Garbage sent to the Raft port never stops the server, and valid traffic still flows.

Hypothesis draws a list of attacks per example: raw bytes (with or without the HTTP/2
preface), HTTP/2 requests to the Raft routes with garbage bodies, truncated or oversized
frames, unknown frame kinds, streams abandoned mid-frame, and well-formed batches with wrong
node ids. Whatever reaches on_batch must satisfy the transport's promises. Then HTTP/2
misuse of the server, and a peer that answers the sender with garbage.
"""

from __future__ import annotations

import functools

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hyperframe.frame
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chronik_trio.pb import raft_pb2, transport_pb2
from chronik_trio.transport import (BATCH_PATH, FRAME_KIND_RAFT_BATCH,
                                    FRAME_KIND_SNAPSHOT_CHUNK, FROM_NODE_HEADER, STREAM_PATH,
                                    PeerState, Transport, encode_frame, encode_group_message,
                                    encode_raft_batch)

from .helpers import H2Client, Node, cluster, message, wait_connected, wait_until

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_BYTES_MAX = 64 * 1024
ATTACK_TIMEOUT_S = 2.0

node_ids = st.integers(min_value=0, max_value=2**64 - 1) | st.sampled_from([1, 2, 3])
garbage = st.binary(max_size=600)
frames = st.one_of(
    garbage,
    st.builds(lambda kind, payload: encode_frame(kind, payload), st.integers(0, 255), garbage),
    st.builds(lambda f, t, idx, mf, mt: encode_frame(FRAME_KIND_RAFT_BATCH, encode_raft_batch(
        f, t, [encode_group_message("g", message(mf, mt, i)) for i in idx])),
        node_ids, node_ids, st.lists(st.integers(0, 2**32), max_size=3), node_ids, node_ids),
    st.builds(lambda f: f[:len(f) // 2], garbage.map(
        lambda p: encode_frame(FRAME_KIND_RAFT_BATCH, p))),
    st.just(b"\x01" + (FRAME_BYTES_MAX + 1).to_bytes(4, "big")),
    st.builds(lambda f, t, mt, total, offset, data, last: encode_frame(
        FRAME_KIND_SNAPSHOT_CHUNK, transport_pb2.SnapshotChunk(
            from_node=f, to_node=t, group="s", total_bytes=total, offset=offset, data=data,
            last=last, message=raft_pb2.Message(
                type=mt, to=t, snapshot=raft_pb2.Snapshot(), **{"from": f})
        ).SerializeToString()),
        node_ids, node_ids, st.sampled_from([raft_pb2.MSG_SNAPSHOT, raft_pb2.MSG_APPEND]),
        st.integers(0, 2**40), st.integers(0, 2**40), st.binary(max_size=50), st.booleans()),
)
header_values = st.one_of(st.sampled_from([b"1", b"2", b"3", b"-1", b"0", b"x", b""]),
                          st.binary(max_size=12).filter(lambda v: b"\n" not in v
                                                        and b"\r" not in v and b"\0" not in v))
raw_attack = st.tuples(st.just("raw"), st.booleans(), garbage)
request_attack = st.tuples(st.just("request"), st.sampled_from([STREAM_PATH, BATCH_PATH]),
                           header_values, st.lists(frames, max_size=4).map(b"".join))
abandon_attack = st.tuples(st.just("abandon"), st.sampled_from([STREAM_PATH, BATCH_PATH]),
                           header_values, st.lists(frames, max_size=4).map(b"".join))
after_answer_attack = st.tuples(
    st.just("after_answer"), st.sampled_from([STREAM_PATH, BATCH_PATH, "/health", "/nowhere"]),
    header_values, frames, st.lists(frames, max_size=3), st.booleans())
attacks = st.lists(st.one_of(raw_attack, request_attack, abandon_attack, after_answer_attack),
                   min_size=1, max_size=6)


async def run_attack(address: tuple[str, int], attack: tuple) -> None:
    kind = attack[0]
    with trio.move_on_after(ATTACK_TIMEOUT_S):
        try:
            if kind == "raw":
                _, with_preface, data = attack
                stream = await trio.open_tcp_stream(*address)
                async with stream:
                    await stream.send_all((PREFACE if with_preface else b"") + data)
                    with trio.move_on_after(0.05):
                        await stream.receive_some(65536)
                return
            if kind == "after_answer":
                _, path, from_header, first, rest, end = attack
                async with H2Client.open(address) as client:
                    await client.send_after_answer(path, [(FROM_NODE_HEADER, from_header)],
                                                   first, rest, end)
                return
            _, path, from_header, body = attack
            async with H2Client.open(address) as client:
                headers = [(FROM_NODE_HEADER, from_header)]
                if kind == "request":
                    await client.request("POST", path, headers, body)
                    assert (await client.request("GET", "/health")).status == 200
                else:  # headers and some body, then the connection is dropped
                    sid = client.conn.get_next_available_stream_id()
                    client.conn.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                                   (b":authority", b"t"),
                                                   (b":path", path.encode()), *headers])
                    if body:
                        client.conn.send_data(sid, body[:16384])
                    await client.stream.send_all(client.conn.data_to_send())
        except (OSError, trio.BrokenResourceError, ConnectionError):
            pass  # the server may close a connection that sent garbage


def check_delivered(node: Node) -> None:
    """What reached on_batch is addressed to us and consistent with its sender's claim."""
    for batch in node.batches:
        assert isinstance(batch, transport_pb2.RaftBatch)
        assert batch.to_node == node.node_id and batch.messages
        for gm in batch.messages:
            assert gm.message.to == node.node_id
            assert getattr(gm.message, "from") == batch.from_node


@pytest.mark.timeout(60)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attacks=attacks)
async def test_garbage_never_stops_the_server_and_valid_traffic_still_flows(attacks):
    async with cluster(2, frame_bytes_max=FRAME_BYTES_MAX) as (a, b):
        await wait_connected([a, b])
        for attack in attacks:
            await run_attack(b.address, attack)
        check_delivered(b)
        garbage_batches = len(b.batches)
        for index in range(3):
            assert a.transport.send(2, "valid", message(1, 2, index))
            assert b.transport.send(1, "valid", message(2, 1, index))
        await wait_until(lambda: [m for m in b.received() if m[1] == "valid"]
                         == [(1, "valid", i) for i in range(3)])
        await wait_until(lambda: a.received() == [(2, "valid", i) for i in range(3)])
        assert len(b.batches) > garbage_batches
        async with H2Client.open(b.address) as client:
            assert (await client.request("GET", "/health")).status == 200


@pytest.mark.timeout(30)
@pytest.mark.parametrize("path,headers,first", [
    ("/nowhere", [], b"body"),
    ("/health", [], b"a GET with a body"),
    (STREAM_PATH, [], b"no chronik-from-node"),
    (STREAM_PATH, [(FROM_NODE_HEADER, b"2")], b"\x01\x7f\xff\xff\xff"),  # oversized frame
    (BATCH_PATH, [(FROM_NODE_HEADER, b"2")], bytes(FRAME_BYTES_MAX + 10)),
])
@pytest.mark.parametrize("end", [True, False])
async def test_data_after_an_early_answer_does_not_stop_the_server(path, headers, first, end):
    """hypercorn 0.18 ends the server if DATA comes for a stream whose response ended."""
    async with cluster(1, frame_bytes_max=FRAME_BYTES_MAX) as (a,):
        async with H2Client.open(a.address) as client:
            await client.send_after_answer(path, headers, first, [b"more", b"and more"], end)
        async with H2Client.open(a.address) as client:
            assert (await client.request("GET", "/health")).status == 200


@pytest.mark.timeout(30)
async def test_batches_claiming_another_node_are_dropped_with_their_reason():
    async with cluster(2) as (a, b):
        body = b"".join([
            encode_frame(FRAME_KIND_RAFT_BATCH, encode_raft_batch(  # header says 1
                3, 2, [encode_group_message("g", message(3, 2, 0))])),
            encode_frame(FRAME_KIND_RAFT_BATCH, encode_raft_batch(  # for node 9
                1, 9, [encode_group_message("g", message(1, 9, 1))])),
            encode_frame(FRAME_KIND_RAFT_BATCH, encode_raft_batch(1, 2, [  # one bad message
                encode_group_message("g", message(3, 2, 2)),
                encode_group_message("g", message(1, 2, 3))])),
            encode_frame(7, b"future frame kind"),
            encode_frame(FRAME_KIND_RAFT_BATCH, b"\xff\xff\xff"),
        ])
        async with H2Client.open(b.address) as client:
            response = await client.request("POST", STREAM_PATH, [(FROM_NODE_HEADER, b"1")],
                                            body)
        assert response.status == 200
        assert b.received() == [(1, "g", 3)]
        registry = b.transport.registry
        for reason, count in [("wrong_from_node", 2), ("wrong_to_node", 1),
                              ("unknown_kind", 1), ("malformed", 1)]:
            assert registry.get_sample_value("chronik_transport_dropped_total",
                                             {"reason": reason}) == count, reason


# HTTP/2-level misuse: streams opened, reset, re-prioritized, windows and settings changed,
# and raw frames for streams that never existed, in any order.
h2_paths = st.sampled_from([STREAM_PATH, BATCH_PATH, "/health", "/metrics", "/nowhere"])
h2_ops = st.one_of(
    st.tuples(st.just("open"), h2_paths, st.sampled_from(["GET", "POST"]), st.booleans(),
              st.sampled_from([b"1", b"2", b"x"])),
    st.tuples(st.just("data"), st.integers(0, 5), frames, st.booleans()),
    st.tuples(st.just("reset"), st.integers(0, 5)),
    st.tuples(st.just("priority"), st.integers(0, 5), st.integers(0, 11), st.integers(1, 256)),
    st.tuples(st.just("window"), st.integers(0, 5), st.integers(1, 2**20)),
    st.tuples(st.just("ping")),
    st.tuples(st.just("settings"), st.integers(0, 2**31 - 1)),
    st.tuples(st.just("raw"), st.sampled_from(["data", "rst", "priority", "window", "headers"]),
              st.integers(0, 15), st.binary(max_size=30)),
    st.tuples(st.just("read")),
)


def _raw_frame(kind: str, stream_id: int, payload: bytes) -> bytes:
    frame = {"data": lambda: hyperframe.frame.DataFrame(stream_id, data=payload),
             "rst": lambda: hyperframe.frame.RstStreamFrame(stream_id),
             "priority": lambda: hyperframe.frame.PriorityFrame(stream_id, depends_on=1),
             "window": lambda: hyperframe.frame.WindowUpdateFrame(stream_id,
                                                                  window_increment=1000),
             "headers": lambda: hyperframe.frame.HeadersFrame(stream_id, data=payload,
                                                              flags=["END_HEADERS"]),
             }[kind]()
    return frame.serialize()


def _apply_h2_op(client: H2Client, sids: list[int], op: tuple) -> bytes:
    """Applies one op to the client's h2 state; returns raw bytes to send after its output."""
    conn, kind = client.conn, op[0]
    if kind == "open":
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(b":method", op[2].encode()), (b":scheme", b"http"),
                                (b":authority", b"t"), (b":path", op[1].encode()),
                                (FROM_NODE_HEADER, op[4])], end_stream=op[3])
        sids.append(sid)
    elif kind == "data" and sids:
        conn.send_data(sids[op[1] % len(sids)], op[2] or b"\x01", end_stream=op[3])
    elif kind == "reset" and sids:
        conn.reset_stream(sids[op[1] % len(sids)])
    elif kind == "priority" and sids:
        conn.prioritize(sids[op[1] % len(sids)], weight=op[3],
                        depends_on=op[2] * 2 + 1 if op[2] else 0)
    elif kind == "window":
        conn.increment_flow_control_window(
            op[2], stream_id=sids[op[1] % len(sids)] if sids and op[1] else None)
    elif kind == "ping":
        conn.ping(b"chronikt")
    elif kind == "settings":
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: op[1]})
    elif kind == "raw":
        return _raw_frame(op[1], op[2] * 2 + 1, op[3])
    return b""


async def run_h2_ops(address: tuple[str, int], ops: list[tuple]) -> None:
    async with H2Client.open(address) as client:
        sids: list[int] = []
        for op in ops:
            raw = b""
            try:
                if op[0] == "read":
                    with trio.move_on_after(0.02):
                        data = await client.stream.receive_some(65536)
                        if not data:
                            return
                        client.conn.receive_data(data)
                else:
                    raw = _apply_h2_op(client, sids, op)
            except (h2.exceptions.ProtocolError, ValueError, KeyError):
                pass  # our own h2 refuses the move (KeyError: a stream it forgot): skip it
            await client.stream.send_all(client.conn.data_to_send() + raw)


@pytest.mark.timeout(60)
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sessions=st.lists(st.lists(h2_ops, max_size=12), min_size=1, max_size=3))
# Found by this test: hypercorn wrote from two tasks at once (BusyResourceError) ...
@example(sessions=[[("open", STREAM_PATH, "GET", False, b"1"),
                    ("open", STREAM_PATH, "GET", False, b"1"),
                    ("data", 0, b"\x01\x00\x00\x00\x04\x08\x00\x10\x00", True),
                    ("ping",), ("reset", 1), ("settings", 6132),
                    ("data", 4, b"\x01\x00\x01\x00\x01", False), ("reset", 1),
                    ("data", 1, b"]\x95\x08", False), ("reset", 4), ("read",), ("ping",)]])
# ... and raised KeyError for DATA on a stream it had forgotten.
@example(sessions=[[("open", STREAM_PATH, "GET", False, b"1"),
                    ("open", STREAM_PATH, "GET", False, b"1"),
                    ("data", 0, encode_frame(0, b""), False),
                    ("open", STREAM_PATH, "GET", False, b"1")],
                   [("data", 3, encode_frame(235, b"\xd5"), False),
                    ("open", "/health", "POST", True, b"1"), ("settings", 263697),
                    ("data", 0, b"\x01\x00\x00\x00\x04\x08\x01\x10\x03", True),
                    ("window", 0, 329965), ("open", BATCH_PATH, "POST", True, b"1"),
                    ("open", STREAM_PATH, "GET", False, b"1"), ("read",), ("reset", 2),
                    ("data", 2, b"\x02\x00\x00\x00\x1f", False), ("reset", 1),
                    ("window", 3, 981)]])
async def test_http2_misuse_never_stops_the_server(sessions):
    async with cluster(1, frame_bytes_max=FRAME_BYTES_MAX) as (a,):
        for ops in sessions:
            with trio.move_on_after(ATTACK_TIMEOUT_S):
                try:
                    await run_h2_ops(a.address, ops)
                except (OSError, trio.BrokenResourceError):
                    pass  # the server closed a connection that broke the protocol
        check_delivered(a)
        async with H2Client.open(a.address) as client:
            assert (await client.request("GET", "/health")).status == 200


# A peer that answers the sender with garbage: raw bytes, odd statuses, a body, an early end,
# a reset, GOAWAY, a server push, settings that shrink our frames.
peer_answers = st.lists(st.one_of(
    st.binary(max_size=200),
    st.sampled_from([("status", b"200"), ("status", b"500"), ("status", b"x"),
                     ("data", b"oops"), ("end",), ("reset",), ("goaway",), ("push",),
                     ("window",), ("settings",)]),
), max_size=6)


def _answer(conn: h2.connection.H2Connection, sid: int, step) -> bytes:
    if isinstance(step, bytes):
        return conn.data_to_send() + step
    kind = step[0]
    if kind == "status":
        conn.send_headers(sid, [(b":status", step[1])])
    elif kind == "data":
        conn.send_data(sid, step[1])
    elif kind == "end":
        conn.end_stream(sid)
    elif kind == "reset":
        conn.reset_stream(sid)
    elif kind == "goaway":
        conn.close_connection()
    elif kind == "push":
        conn.push_stream(sid, 2, [(b":method", b"GET"), (b":path", b"/"),
                                  (b":scheme", b"http"), (b":authority", b"x")])
    elif kind == "window":
        conn.increment_flow_control_window(1000)
    elif kind == "settings":
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    return conn.data_to_send()


def _garbage_peer(script: list):
    async def handler(stream: trio.SocketStream) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        conn.initiate_connection()
        await stream.send_all(conn.data_to_send())
        sid = None
        with trio.move_on_after(ATTACK_TIMEOUT_S):
            while sid is None:
                data = await stream.receive_some(65536)
                if not data:
                    return
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        sid = event.stream_id
        if sid is None:
            return
        for step in script:
            try:
                out = _answer(conn, sid, step)
            except h2.exceptions.ProtocolError:
                out = b""  # h2 will not make that move in this state
            try:
                await stream.send_all(out)
            except trio.BrokenResourceError:
                return
    return handler


@pytest.mark.timeout(60)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(script=peer_answers)
async def test_a_peer_answering_garbage_never_stops_the_sender(script):
    a = Node(1)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(
            trio.serve_tcp, _garbage_peer(script), 0, host="127.0.0.1"))
        a.transport = Transport(1, ("127.0.0.1", 0), {2: listeners[0].socket.getsockname()[:2]},
                                a.on_batch, a.report_unreachable)
        await nursery.start(a.transport.run)
        with trio.move_on_after(0.3):
            while True:  # send() never raises nor blocks, whatever the peer does
                a.transport.send(2, "g", message(1, 2, 0, b"x" * 100))
                await trio.sleep(0.01)
        assert a.transport.peer_state(2) in set(PeerState)
        nursery.cancel_scope.cancel()
