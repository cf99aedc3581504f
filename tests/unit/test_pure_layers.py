"""design.md's layering: the pure layers (partition/, cluster/, group/ and the Kafka framing
and codec in kafka/, not its handlers) do no I/O and import no trio, no clock, no files and
no node-side package; the chaos harness talks to nodes as an outsider and imports nothing of
chronik_trio. (raft/ has its own, stricter test: tests/raft/test_layering.py.)"""

from __future__ import annotations

import ast
import pathlib

import pytest

from tests.raft.test_layering import _imports

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "chronik_trio"
PURE = sorted([*(PACKAGE / "partition").glob("*.py"), *(PACKAGE / "cluster").glob("*.py"),
               *(PACKAGE / "group").glob("*.py"), *(PACKAGE / "kafka").glob("*.py")])
FORBIDDEN = {"trio", "time", "socket", "os", "io", "pathlib", "asyncio", "threading", "select",
             "selectors", "subprocess", "shutil", "tempfile", "hypercorn", "h2"}
NODE_SIDE = ("chronik_trio.node", "chronik_trio.storage", "chronik_trio.transport")
CHAOS = sorted((ROOT / "chaos").glob("*.py"))

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("path", PURE, ids=[str(p.relative_to(PACKAGE)) for p in PURE])
def test_pure_layers_import_no_io(path):
    for module, _ in _imports(ast.parse(path.read_text())):
        assert module.split(".")[0] not in FORBIDDEN, (str(path.relative_to(PACKAGE)), module)
        assert not module.startswith(NODE_SIDE), (str(path.relative_to(PACKAGE)), module)


@pytest.mark.parametrize("path", CHAOS, ids=[p.name for p in CHAOS])
def test_the_chaos_harness_imports_nothing_of_the_broker(path):
    for module, _ in _imports(ast.parse(path.read_text())):
        assert not module.startswith("chronik_trio"), (path.name, module)
