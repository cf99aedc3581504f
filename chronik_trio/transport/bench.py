"""Transport micro-benchmark: `python -m chronik_trio.transport.bench [--seconds S]`.

Everything runs in one process on 127.0.0.1 (both ends share one core, so the figures are
what one node pays for both its sending and its receiving side):

  throughput  node 1 sends pre-encoded Raft messages of 100 B and 64 KiB to node 2 through
              two Transports, keeping the peer queue topped up; messages/s and MB/s as
              delivered to on_batch.
  ping-pong   one 100-byte message node 1 -> node 2 -> node 1, one at a time: round trips/s
              over the long-lived stream (Transport) and over one POST per batch
              (BATCH_PATH, a minimal h2 client, one request in flight to keep the order).
  request     the per-request route at full speed: 64 KiB-message batches, one POST at a
              time.

CPU figures are process CPU (both ends) divided by the count. `--hypercorn-windows` leaves
hypercorn's connections at the protocol's default windows and frame size (serving.py explains
why we enlarge them), for comparison. Keep --seconds small on a shared machine.
"""

from __future__ import annotations

import argparse
import datetime
import time

import h2.config
import h2.connection
import h2.events
import trio

from ..pb import raft_pb2
from .framing import FRAME_KIND_RAFT_BATCH, encode_frame, encode_group_message, encode_raft_batch
from . import serving
from .server import BATCH_PATH, FROM_NODE_HEADER
from .transport import Transport

GROUP = "bench-0"
REFILL_MESSAGES = 256  # queued per refill; well under the per-peer queue bound


def make_message(payload_bytes: int, to: int = 2, from_: int = 1) -> bytes:
    m = raft_pb2.Message(type=raft_pb2.MSG_APPEND, to=to, term=1, index=1, commit=1,
                         entries=[raft_pb2.Entry(term=1, index=1, data=bytes(payload_bytes))])
    setattr(m, "from", from_)
    return m.SerializeToString()


class _Counter:
    def __init__(self) -> None:
        self.messages = 0
        self.bytes = 0
        self.arrived = trio.Event()

    def on_batch(self, batch) -> None:
        self.messages += len(batch.messages)
        self.arrived.set()


def _ignore(peer_id: int, group: str) -> None:
    pass


async def bench_throughput(payload_bytes: int, seconds: float) -> dict:
    counter = _Counter()
    a = Transport(1, ("127.0.0.1", 0), {}, lambda b: None, _ignore)
    b = Transport(2, ("127.0.0.1", 0), {}, counter.on_batch, _ignore)
    message = make_message(payload_bytes)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        b_address = await nursery.start(b.run)
        a.add_peer(2, b_address)
        await a.wait_peer_connected(2)
        sent = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            while sent - counter.messages < REFILL_MESSAGES:
                if not a.send(2, GROUP, message):
                    break
                sent += 1
            counter.arrived = trio.Event()
            await counter.arrived.wait()
        while counter.messages < sent:
            counter.arrived = trio.Event()
            await counter.arrived.wait()
        elapsed_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        nursery.cancel_scope.cancel()
    return {"payload_bytes": payload_bytes, "messages": sent,
            "messages_per_s": sent / elapsed_s,
            "mb_per_s": sent * len(message) / elapsed_s / 1e6,
            "cpu_us_per_message": cpu_s / sent * 1e6}


async def bench_ping_pong_stream(seconds: float) -> dict:
    done = trio.Event()
    state = {"trips": 0}
    to_1, to_2 = make_message(100, to=1, from_=2), make_message(100, to=2, from_=1)
    a: Transport
    b: Transport

    def on_a(batch) -> None:
        state["trips"] += 1
        if time.perf_counter() - t0 < seconds:
            a.send(2, GROUP, to_2)
        else:
            done.set()

    a = Transport(1, ("127.0.0.1", 0), {}, on_a, _ignore)
    b = Transport(2, ("127.0.0.1", 0), {}, lambda batch: b.send(1, GROUP, to_1), _ignore)
    async with trio.open_nursery() as nursery:
        a_address = await nursery.start(a.run)
        b_address = await nursery.start(b.run)
        a.add_peer(2, b_address)
        b.add_peer(1, a_address)
        await a.wait_peer_connected(2)
        await b.wait_peer_connected(1)
        cpu0, t0 = time.process_time(), time.perf_counter()
        a.send(2, GROUP, to_2)
        await done.wait()
        elapsed_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        nursery.cancel_scope.cancel()
    trips = state["trips"]
    return {"mode": "stream", "round_trips": trips, "round_trips_per_s": trips / elapsed_s,
            "cpu_us_per_round_trip": cpu_s / trips * 1e6}


class _RequestClient:
    """A minimal h2 client: one POST to BATCH_PATH at a time (to keep per-peer order)."""

    def __init__(self, stream: trio.SocketStream, node_id: int, address: tuple[str, int]) -> None:
        self.stream = stream
        self.node_id = node_id
        self.authority = f"{address[0]}:{address[1]}".encode()
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.h2.initiate_connection()

    async def post(self, body: bytes) -> None:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(b":method", b"POST"), (b":scheme", b"http"),
                                   (b":authority", self.authority),
                                   (b":path", BATCH_PATH.encode()),
                                   (b"content-length", str(len(body)).encode()),
                                   (FROM_NODE_HEADER, str(self.node_id).encode())])
        view = memoryview(body)
        ended = False
        while True:
            while view:
                window = min(self.h2.local_flow_control_window(sid),
                             self.h2.max_outbound_frame_size)
                if window <= 0:
                    break
                self.h2.send_data(sid, bytes(view[:window]))
                view = view[window:]
            if not view and not ended:
                self.h2.end_stream(sid)
                ended = True
            await self.stream.send_all(self.h2.data_to_send())
            for event in self.h2.receive_data(await self.stream.receive_some(65536)):
                if isinstance(event, h2.events.ResponseReceived):
                    assert dict(event.headers)[b":status"] == b"204", event
                if isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                    await self.stream.send_all(self.h2.data_to_send())
                    return
                if isinstance(event, h2.events.DataReceived):
                    self.h2.acknowledge_received_data(event.flow_controlled_length,
                                                      event.stream_id)


async def bench_requests(payload_bytes: int, seconds: float, *, ping_pong: bool) -> dict:
    """One POST per batch; with ping_pong, each waits until the peer's answer arrives."""
    counter = _Counter()
    b = Transport(2, ("127.0.0.1", 0), {}, counter.on_batch, _ignore)
    message = encode_group_message(GROUP, make_message(payload_bytes))
    body = encode_frame(FRAME_KIND_RAFT_BATCH, encode_raft_batch(1, 2, [message]))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(b.run)
        # The answer of a ping-pong goes back over a second connection, as a peer's would.
        to_b = _RequestClient(await trio.open_tcp_stream(*address), 1, address)
        back = _RequestClient(await trio.open_tcp_stream(*address), 1, address)
        count = 0
        cpu0, t0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            await to_b.post(body)
            if ping_pong:
                await back.post(body)
            count += 1
        elapsed_s, cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        nursery.cancel_scope.cancel()
    per = "round_trip" if ping_pong else "request"
    result = {"mode": "request", "payload_bytes": payload_bytes, f"{per}s": count,
              f"{per}s_per_s": count / elapsed_s, f"cpu_us_per_{per}": cpu_s / count * 1e6}
    if not ping_pong:
        result["mb_per_s"] = count * len(body) / elapsed_s / 1e6
    return result


async def main_async(seconds: float, hypercorn_windows: bool) -> None:
    if hypercorn_windows:
        serving._RaftTCPServer._windows_sent = True  # as if done: the defaults stay
    print(f"# chronik-trio transport bench, {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} "
          f"UTC, {seconds} s per figure, both ends in one process"
          + (", hypercorn's default windows" if hypercorn_windows else ""))
    # A figure that takes far longer than asked lost messages on the way: fail loudly.
    with trio.fail_after(6 * (seconds + 5)):
        for payload_bytes in (100, 65536):
            print("throughput ", _fmt(await bench_throughput(payload_bytes, seconds)))
        print("ping-pong  ", _fmt(await bench_ping_pong_stream(seconds)))
        print("ping-pong  ", _fmt(await bench_requests(100, seconds, ping_pong=True)))
        print("requests   ", _fmt(await bench_requests(100, seconds, ping_pong=False)))
        print("requests   ", _fmt(await bench_requests(65536, seconds, ping_pong=False)))


def _fmt(result: dict) -> str:
    return "  ".join(f"{k}={v:,.1f}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in result.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="duration of each figure")
    parser.add_argument("--hypercorn-windows", action="store_true",
                        help="keep hypercorn's default HTTP/2 windows and frame size")
    args = parser.parse_args()
    trio.run(main_async, args.seconds, args.hypercorn_windows)


if __name__ == "__main__":
    main()
