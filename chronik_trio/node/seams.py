"""The node's randomness and thread hand-off, injected (design.md: seams).

Node takes an rng (random.Random) and a run_sync (trio.to_thread.run_sync's signature) and
passes them to everything it builds; nothing else in node/ calls os.urandom, the random
module's functions, uuid.uuid4 or trio.to_thread. The defaults below are the real path;
the simulator (chaos/sim) passes its seeded generator and an inline hand-off.
"""

from __future__ import annotations

import os
import random
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
