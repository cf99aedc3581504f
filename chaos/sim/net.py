"""The simulated network: in-memory streams between endpoints, with per-chunk latency,
resets, cuts, black holes and pauses, all decided by the simulation's seeded generator.

Endpoints are ints: 0 is the clients, N > 0 is node N. Each stream direction is a FIFO of
chunks, each with the virtual time it is delivered at (send time + a latency drawn from
the seed, never before the chunk before it). A link (src -> dst) is OK, CUT (existing
connections are reset, new ones refused: what the chaos proxy does), BLACKHOLE (bytes
vanish, connects hang) or delayed. A paused endpoint's traffic is held until it resumes;
a crashed endpoint's connections are reset (its kernel closes them), a powered-off one's
go silent (nobody is left to close them).
"""

from __future__ import annotations

import collections
import contextvars
import enum
import errno
import math
import random

import trio

CLIENTS = 0
# The endpoint the running task belongs to: a node's task tree runs with its id set, so
# connect() and the listeners know who is calling (tasks inherit it when spawned).
ENDPOINT: contextvars.ContextVar[int] = contextvars.ContextVar("sim_endpoint", default=CLIENTS)

LATENCY_MIN_S = 0.0002
LATENCY_MAX_S = 0.002
ACCEPT_QUEUE_MAX = 64
# Every delivery and fsync completes on a grid of virtual time: what falls due in one grid
# step is handled in one scheduler pass (and one Ready pass per node) instead of one each,
# which is most of the simulation's speed (docs/simulation.md, "Measured"). The order of
# what falls due together is still the seed's (trio's seeded shuffle).
QUANTUM_S = 0.001


def on_grid(t: float) -> float:
    """The first grid point at or after virtual time t."""
    return math.ceil(t / QUANTUM_S - 1e-9) * QUANTUM_S


class Link(enum.Enum):
    OK = "ok"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class _Pipe:
    """One direction of a connection."""

    def __init__(self, net: "SimNetwork", src: int, dst: int) -> None:
        self.net = net
        self.src, self.dst = src, dst
        self.chunks: collections.deque[list] = collections.deque()  # [deliver_at, bytes]
        self.last_at = 0.0
        self.eof = False  # the sender closed: the reader gets b"" after the chunks
        self.broken = False  # reset: both ends fail
        self.lot = trio.lowlevel.ParkingLot()

    def put(self, data: bytes) -> None:
        net = self.net
        link, delay_s = net.link(self.src, self.dst)
        if link is Link.BLACKHOLE or net.powered_off(self.dst) or net.powered_off(self.src):
            return
        now = trio.current_time()
        at = max(on_grid(now + net.latency() + delay_s), self.last_at)
        held = max(net.paused_until(self.src), net.paused_until(self.dst))
        at = max(at, held)
        self.last_at = at
        self.chunks.append([at, data])
        if net.trace is not None:
            net.trace.write('{"t":%.6f,"type":"bytes","from":%d,"to":%d,"n":%d,"deliver_at":%.6f}\n'
                            % (now, self.src, self.dst, len(data), at))
        self.lot.unpark_all()

    def wake(self) -> None:
        self.lot.unpark_all()


class SimStream(trio.abc.Stream):
    def __init__(self, send: _Pipe, receive: _Pipe) -> None:
        self._send = send
        self._receive = receive
        self._closed = False

    async def send_all(self, data) -> None:
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError
        if self._send.broken or self._receive.eof and self._receive.broken:
            raise trio.BrokenResourceError("connection reset (simulated)")
        if self._send.net.link(self._send.src, self._send.dst)[0] is Link.CUT:
            self._send.net.reset(self._send, self._receive)
            raise trio.BrokenResourceError("connection reset (simulated cut)")
        if data:
            self._send.put(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes=None) -> bytes:
        pipe = self._receive
        while True:
            if self._closed:
                raise trio.ClosedResourceError
            if pipe.broken:
                await trio.lowlevel.checkpoint()
                raise trio.BrokenResourceError("connection reset (simulated)")
            if pipe.chunks:
                at, data = pipe.chunks[0]
                if at <= trio.current_time():
                    if max_bytes is not None and len(data) > max_bytes:
                        pipe.chunks[0][1] = data[max_bytes:]
                        data = data[:max_bytes]
                    else:
                        pipe.chunks.popleft()
                    await trio.lowlevel.checkpoint()
                    return data
                with trio.move_on_at(at):
                    await pipe.lot.park()
                continue
            if pipe.eof:
                await trio.lowlevel.checkpoint()
                return b""
            await pipe.lot.park()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._send.eof = True
            self._send.wake()
            # Reading side gone: the peer's further sends fail (as after a RST).
            self._receive.broken = True
            self._receive.wake()
            self._send.net.forget(self)
        await trio.lowlevel.checkpoint()


class SimListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, net: "SimNetwork", owner: int, address: tuple[str, int]) -> None:
        self.net = net
        self.owner = owner
        self.address = address
        self.send_channel, self._receive = trio.open_memory_channel[trio.abc.Stream](ACCEPT_QUEUE_MAX)

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        if self.net.listeners.get(self.address) is self:
            del self.net.listeners[self.address]
        self.send_channel.close()
        await self._receive.aclose()
        await trio.lowlevel.checkpoint()

    def __repr__(self) -> str:
        return "SimListener(%s:%d)" % self.address


class SimNetwork:
    def __init__(self, rng: random.Random, trace=None) -> None:
        self.rng = rng
        self.trace = trace
        self.listeners: dict[tuple[str, int], SimListener] = {}
        self._links: dict[tuple[int, int], tuple[Link, float]] = {}
        self._paused: dict[int, float] = {}  # endpoint -> held until (inf while paused)
        self._off: set[int] = set()
        self._streams: list[SimStream] = []

    # --- state -----------------------------------------------------------------------------

    def latency(self) -> float:
        return self.rng.uniform(LATENCY_MIN_S, LATENCY_MAX_S)

    def link(self, src: int, dst: int) -> tuple[Link, float]:
        return self._links.get((src, dst), (Link.OK, 0.0))

    def set_link(self, src: int, dst: int, state: Link, delay_s: float = 0.0) -> None:
        self._links[(src, dst)] = (state, delay_s)
        if state is Link.CUT:
            for s in list(self._streams):
                if (s._send.src, s._send.dst) in ((src, dst), (dst, src)):
                    self.reset(s._send, s._receive)

    def heal(self) -> None:
        self._links.clear()

    def paused_until(self, endpoint: int) -> float:
        return self._paused.get(endpoint, 0.0)

    def pause(self, endpoint: int) -> None:
        self._paused[endpoint] = float("inf")
        for s in self._streams:
            for pipe in (s._send, s._receive):
                if endpoint in (pipe.src, pipe.dst):
                    for chunk in pipe.chunks:
                        chunk[0] = float("inf")

    def resume(self, endpoint: int) -> None:
        now = trio.current_time()
        self._paused.pop(endpoint, None)
        for s in self._streams:
            for pipe in (s._send, s._receive):
                if endpoint in (pipe.src, pipe.dst) and pipe.chunks:
                    t = now
                    for chunk in pipe.chunks:
                        if chunk[0] == float("inf"):
                            t = on_grid(t + self.latency())
                            chunk[0] = t
                    pipe.last_at = max(pipe.last_at if pipe.last_at != float("inf") else 0.0, t)
                    pipe.wake()

    def powered_off(self, endpoint: int) -> bool:
        return endpoint in self._off

    def reset(self, a: _Pipe, b: _Pipe) -> None:
        for pipe in (a, b):
            pipe.broken = True
            pipe.chunks.clear()
            pipe.wake()

    def forget(self, stream: SimStream) -> None:
        try:
            self._streams.remove(stream)
        except ValueError:
            pass

    def crash(self, endpoint: int, *, power_off: bool = False) -> None:
        """The endpoint's process is gone: its listeners close; its connections are reset
        (crash) or go silent (power off) until it is started again."""
        for address, listener in list(self.listeners.items()):
            if listener.owner == endpoint:
                del self.listeners[address]
                listener.send_channel.close()
        if power_off:
            self._off.add(endpoint)
        for s in list(self._streams):
            if endpoint in (s._send.src, s._send.dst):
                if power_off:
                    # Peers' bytes vanish and they hear nothing: a timeout must notice.
                    for pipe in (s._send, s._receive):
                        pipe.chunks.clear()
                        pipe.eof = False
                    if s._send.src == endpoint:
                        s._closed = True  # the dead side's own end is unusable
                        s._send.wake()
                        s._receive.wake()
                else:
                    self.reset(s._send, s._receive)

    def power_on(self, endpoint: int) -> None:
        self._off.discard(endpoint)

    # --- what the node and the clients call ------------------------------------------------

    def listen(self, owner: int, address: tuple[str, int]) -> SimListener:
        listener = SimListener(self, owner, address)
        self.listeners[address] = listener
        return listener

    async def open_tcp_listeners(self, port: int, *, host=None, backlog=None) -> list[SimListener]:
        await trio.lowlevel.checkpoint()
        return [self.listen(ENDPOINT.get(), (host, port))]

    async def connect(self, host: str, port: int, **_ignored) -> trio.abc.Stream:
        src = ENDPOINT.get()
        await trio.sleep_until(on_grid(trio.current_time() + self.latency()))
        listener = self.listeners.get((host, port))
        dst = listener.owner if listener is not None else _owner_of(host)
        there, back = self.link(src, dst)[0], self.link(dst, src)[0]
        if Link.BLACKHOLE in (there, back) or self.powered_off(dst) or \
                self.paused_until(dst) == float("inf"):
            await trio.sleep_forever()  # a SYN into the void: the caller's timeout ends it
        if listener is None or Link.CUT in (there, back):
            raise OSError(errno.ECONNREFUSED, f"connection to {host}:{port} refused (simulated)")
        out, back_pipe = _Pipe(self, src, dst), _Pipe(self, dst, src)
        client = SimStream(out, back_pipe)
        server = SimStream(back_pipe, out)
        try:
            listener.send_channel.send_nowait(server)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            raise OSError(errno.ECONNREFUSED, f"connection to {host}:{port} refused (simulated)") from None
        self._streams += [client, server]
        return client


def _owner_of(host: str) -> int:
    """Node N's hosts are named `nN` (see world.py)."""
    return int(host[1:]) if host[:1] == "n" and host[1:].isdigit() else -1
