"""The node's randomness and thread hand-off, injected (design.md: seams).

Node takes an rng (random.Random) and a run_sync (trio.to_thread.run_sync's signature) and
passes them to everything it builds; nothing else in node/ calls os.urandom, the random
module's functions, uuid.uuid4 or trio.to_thread, or starts a thread. With the default
run_sync the Ready pass's fsync rounds go to a `DedicatedThread` instead (one thread that
lives across rounds; raft_runtime.py). The defaults below are the real path;
the simulator (chaos/sim) passes its seeded generator and an inline hand-off.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import typing
import uuid

import trio

# await run_sync(fn, *args) -> fn(*args), run somewhere that may block (a worker thread).
RunSync = typing.Callable[..., typing.Awaitable[typing.Any]]

thread_run_sync: RunSync = trio.to_thread.run_sync


def system_rng() -> random.Random:
    """A generator seeded once from the operating system's randomness."""
    return random.Random(int.from_bytes(os.urandom(16), "big"))


def secret_bytes(count: int) -> bytes:
    """Unpredictable bytes for secrets (SCRAM's server nonce): always the operating system's,
    never a seeded generator, whose output an observer of enough of it could predict. The
    simulation runs no SASL, so this does not reach its replay."""
    return os.urandom(count)


def uuid4(rng: random.Random) -> uuid.UUID:
    """A version-4 UUID from rng (uuid.uuid4 draws from os.urandom)."""
    return uuid.UUID(bytes=rng.randbytes(16), version=4)


class DedicatedThread:
    """A run_sync backed by one long-lived worker thread fed by a queue, for a hand-off made
    many times a second: the Ready pass's fsync rounds (raft_runtime.py). The result comes
    back through the trio token (one `run_sync_soon`), as with trio.to_thread, but without
    what to_thread does on every call besides: a capacity limiter, a thread-cache lookup,
    and setting and resetting the worker's OS thread name (two prctl calls per round).

    Calls are run one at a time, in order; the caller waits, uncancellable (a blocking
    call cannot be interrupted; callers shield it anyway). The thread ends after
    IDLE_TIMEOUT_S without work and is started again by the next call, so an idle or
    discarded owner leaves no thread behind. `threads_started` counts the threads made
    (tests check that many calls share one)."""

    IDLE_TIMEOUT_S = 10.0

    def __init__(self, name: str) -> None:
        self.name = name
        self.threads_started = 0
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _running against the thread's idle exit
        self._running = False

    async def run_sync(self, fn: typing.Callable[..., typing.Any], *args: typing.Any) -> typing.Any:
        job = _Job(fn, args, trio.lowlevel.current_trio_token())
        with self._lock:
            self._jobs.put(job)
            if not self._running:
                self._running = True
                self.threads_started += 1
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
        with trio.CancelScope(shield=True):
            await job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self.IDLE_TIMEOUT_S)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():  # nothing was put since the timeout: stop
                        self._running = False
                        return
                continue
            try:
                job.result = job.fn(*job.args)
            except BaseException as exc:  # handed to the caller, raised there
                job.error = exc
            job.fn = job.args = None
            try:
                job.token.run_sync_soon(job.done.set)
            except trio.RunFinishedError:  # the caller's trio run is gone: nobody to tell
                pass


class _Job:
    __slots__ = ("fn", "args", "token", "done", "result", "error")

    def __init__(self, fn, args, token) -> None:
        self.fn, self.args, self.token = fn, args, token
        self.done = trio.Event()
        self.result: typing.Any = None
        self.error: BaseException | None = None
