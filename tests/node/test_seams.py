"""The node's randomness and thread hand-off come only through its seams (design.md):
nothing in chronik_trio/node but seams.py (the defaults) calls os.urandom, the random
module's functions, uuid.uuid4 / uuid1, secrets or trio.to_thread, or starts a
threading.Thread, so a caller that passes
Node an rng and a run_sync (the simulator, chaos/sim) controls all of them. An AST check of
the source, so a new direct call fails here, not as a lost replay in the simulator."""

from __future__ import annotations

import ast
import pathlib
import threading

import pytest
import trio

import chronik_trio.node
from chronik_trio.node.seams import DedicatedThread

NODE_DIR = pathlib.Path(chronik_trio.node.__file__).parent
DEFAULTS = NODE_DIR / "seams.py"

pytestmark = pytest.mark.timeout(30)


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _forbidden(name: str) -> bool:
    """A dotted name that reaches a process-wide source of randomness or a thread."""
    if name in ("os.urandom", "os.getrandom", "uuid.uuid1", "uuid.uuid4") or name.startswith("secrets"):
        return True
    if name.startswith("trio.to_thread") or name == "threading.Thread":
        return True
    # random.Random(seed) is a generator of the caller's own; the module's functions and
    # SystemRandom share process-wide state or the operating system's randomness.
    return name.startswith("random.") and name != "random.Random"


def _annotate_parents(tree: ast.AST) -> None:
    for parent in ast.walk(tree):
        for child in ast.iter_child_nodes(parent):
            child.parent = parent


def check(source: str, filename: str = "<test>") -> list[str]:
    tree = ast.parse(source, filename)
    _annotate_parents(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (_forbidden(f"{node.module}.{alias.name}") or alias.name == "to_thread"
                        or node.module in ("secrets", "trio.to_thread")):
                    found.append(f"{where}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "secrets" or alias.name.startswith("trio.to_thread"):
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and not isinstance(node.parent, ast.Attribute):
            name = _dotted(node)  # the whole dotted name, once (not each of its prefixes)
            if name is not None and _forbidden(name):
                found.append(f"{where}: {name}")
        if isinstance(node, ast.Call) and _dotted(node.func) == "random.Random" and not node.args:
            found.append(f"{where}: random.Random() seeds itself from the operating system")
    return found


def test_node_draws_randomness_and_threads_only_through_its_seams():
    files = sorted(NODE_DIR.rglob("*.py"))
    assert DEFAULTS in files and len(files) > 10
    found = [v for path in files if path != DEFAULTS
             for v in check(path.read_text(), str(path.relative_to(NODE_DIR)))]
    assert found == []


def test_the_defaults_are_the_real_sources():
    """seams.py is where they live (so the exemption above covers exactly them)."""
    found = check(DEFAULTS.read_text(), "seams.py")
    assert any("os.urandom" in v for v in found) and any("trio.to_thread" in v for v in found), found


def test_the_check_sees_each_kind_of_direct_call():
    source = """
import os, random, uuid, trio, secrets, threading
from random import getrandbits
from trio import to_thread
a = os.urandom(4)
b = random.getrandbits(8)
c = uuid.uuid4()
d = trio.to_thread.run_sync
g = threading.Thread(target=print)
e = random.Random()
f = random.Random(7)  # allowed: seeded by the caller
"""
    found = check(source)
    for what in ("import secrets", "import getrandbits", "import to_thread", "os.urandom",
                 "random.getrandbits", "uuid.uuid4", "trio.to_thread.run_sync", "random.Random()",
                 "threading.Thread"):
        assert any(what in v for v in found), (what, found)
    assert not any(":12:" in v for v in found), found


# --- DedicatedThread: the fsync rounds' hand-off --------------------------------------------

async def test_a_dedicated_thread_runs_every_call_on_one_thread_and_hands_back_errors():
    worker = DedicatedThread("test-worker")
    idents = [await worker.run_sync(threading.get_ident) for _ in range(50)]
    assert len(set(idents)) == 1 and idents[0] != threading.get_ident()
    assert worker.threads_started == 1
    with pytest.raises(ZeroDivisionError):
        await worker.run_sync(lambda: 1 / 0)
    assert await worker.run_sync(sum, [1, 2, 3]) == 6


async def test_a_dedicated_thread_ends_when_idle_and_starts_again_on_the_next_call():
    worker = DedicatedThread("test-worker")
    worker.IDLE_TIMEOUT_S = 0.01
    first = await worker.run_sync(threading.current_thread)
    with trio.fail_after(10):
        while first.is_alive():  # the thread's own idle timeout, real time
            await trio.sleep(0.01)
    assert await worker.run_sync(lambda: 7) == 7
    assert worker.threads_started == 2


async def test_a_call_on_a_dedicated_thread_is_not_cut_short_by_a_cancel():
    worker = DedicatedThread("test-worker")
    release, done = threading.Event(), []

    def blocking():
        release.wait(10)
        done.append(True)
        return "finished"

    with trio.CancelScope() as scope:
        scope.cancel()
        trio.lowlevel.current_trio_token().run_sync_soon(release.set)
        assert await worker.run_sync(blocking) == "finished"
    assert done == [True]
