"""raft/ is pure: it imports only the standard library and chronik_trio.pb, never a clock,
files, sockets or trio; and its functions stay short enough to read at once."""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

RAFT_DIR = pathlib.Path(__file__).resolve().parents[2] / "chronik_trio" / "raft"
FORBIDDEN = {"time", "trio", "socket", "os", "io", "pathlib", "asyncio", "threading",
             "datetime", "select", "selectors", "subprocess", "shutil", "tempfile"}
FUNCTION_LINES_MAX = 70
MODULES = sorted(RAFT_DIR.glob("*.py"))

pytestmark = pytest.mark.timeout(30)


def _imports(tree: ast.AST):
    """(module, enclosing function name or None) for every import."""
    def walk(node, func):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield from walk(child, child.name)
            elif isinstance(child, ast.Import):
                for a in child.names:
                    yield a.name, func
            elif isinstance(child, ast.ImportFrom):
                if child.level == 0:
                    yield child.module, func
            else:
                yield from walk(child, func)
    yield from walk(tree, None)


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_raft_imports_only_stdlib_and_generated_protobuf(path):
    for module, func in _imports(ast.parse(path.read_text())):
        top = module.split(".")[0]
        if path.name == "bench.py" and module == "time" and func == "main":
            continue  # the benchmark's command-line entry point reads the one clock
        assert top not in FORBIDDEN, (path.name, module)
        assert top in sys.stdlib_module_names or module.startswith("chronik_trio.pb"), \
            (path.name, module)


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_raft_functions_are_short(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = node.end_lineno - node.lineno + 1
            assert length <= FUNCTION_LINES_MAX, (path.name, node.name, length)
