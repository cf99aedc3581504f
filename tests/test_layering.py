"""The layer order of docs/architecture.md, checked on every module of chronik_trio/.

Every import of a chronik_trio module (absolute or relative, resolved) must point to the
importer's own package or to a package of a strictly lower layer; siblings on one layer do
not import each other. No chronik_trio import sits inside a function (the way to dodge an
import cycle, which the order forbids). Nothing outside raft/ reaches into a RawNode's Raft
internals (`.raft`, and so its log and progress tracker): RawNode exposes what callers need.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "chronik_trio"

# Lowest first. A unit is a subpackage of chronik_trio, or a top-level module of it.
LAYERS: tuple[tuple[str, ...], ...] = (
    # leaves: the error family, varints, generated code
    ("__init__", "errors", "varint", "pb"),
    ("record_batch",),  # the RecordBatch header and record scanner; reads varints
    ("raft",),  # sans-I/O Raft; stdlib and pb only (tests/raft/test_layering.py)
    ("storage", "partition", "cluster"),  # durable logs; pure partition and __meta machines
    ("group",),  # pure consumer groups; builds on partition's BatchState
    ("txn",),  # pure transaction coordinator state; builds on group's record batches
    ("kafka",),  # wire protocol and handlers, against typed interfaces (handlers/context.py)
    ("transport",),  # HTTP/2 between nodes
    ("node",),  # the trio runtime: wires everything below
    ("tools",),  # admin, dev-cluster, bench: clients of the broker
    ("cli",),  # the `chronik-trio` command
)
LAYER_OF = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# The entry point sits on top and nothing imports it, so its imports inside main() dodge no
# cycle: they only keep `import chronik_trio.cli` cheap.
FUNCTION_IMPORTS_ALLOWED = {"chronik_trio/cli.py"}

MODULES = sorted(PACKAGE.rglob("*.py"))
IDS = [str(p.relative_to(ROOT)) for p in MODULES]

pytestmark = pytest.mark.timeout(60)


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    parts = module.split(".")
    unit = parts[1] if len(parts) > 1 else "__init__"
    return unit


def _exists(module: str) -> bool:
    path = ROOT.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def chronik_imports(path: pathlib.Path):
    """(imported chronik_trio module, line, inside a function) for every import in path,
    relative ones resolved; `from package import submodule` names the submodule."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def targets(node):
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if node.level:
            base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        return [f"{module}.{a.name}" if _exists(f"{module}.{a.name}") else module for a in node.names]

    def walk(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in targets(child):
                    if target == "chronik_trio" or target.startswith("chronik_trio."):
                        yield target, child.lineno, in_function
            else:
                yield from walk(child, in_function or isinstance(
                    child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    yield from walk(ast.parse(path.read_text()), False)


@pytest.mark.parametrize("path", MODULES, ids=IDS)
def test_imports_point_down_the_layers(path):
    here = _unit(_module_name(path))
    assert here in LAYER_OF, f"{path.relative_to(ROOT)}: give {here!r} a layer in LAYERS (and docs/architecture.md)"
    for target, line, _ in chronik_imports(path):
        there = _unit(target)
        assert there in LAYER_OF, f"{path.relative_to(ROOT)}:{line}: {target} is in no layer"
        assert there == here or LAYER_OF[there] < LAYER_OF[here], (
            f"{path.relative_to(ROOT)}:{line} imports {target}: {here} (layer {LAYER_OF[here]}) "
            f"may import only lower layers, {there} is layer {LAYER_OF[there]}")


CHECKED_FOR_FUNCTION_IMPORTS = [p for p in MODULES
                                if str(p.relative_to(ROOT)) not in FUNCTION_IMPORTS_ALLOWED]


@pytest.mark.parametrize("path", CHECKED_FOR_FUNCTION_IMPORTS,
                         ids=[str(p.relative_to(ROOT)) for p in CHECKED_FOR_FUNCTION_IMPORTS])
def test_no_chronik_import_inside_a_function(path):
    inside = [(target, line) for target, line, in_function in chronik_imports(path) if in_function]
    assert not inside, f"{path.relative_to(ROOT)}: imports inside functions {inside}"


@pytest.mark.parametrize("path", [p for p in MODULES if p.parent.name != "raft"],
                         ids=[i for p, i in zip(MODULES, IDS) if p.parent.name != "raft"])
def test_nothing_outside_raft_reaches_into_raft_internals(path):
    """RawNode.raft is the Raft state machine itself (its log, its progress tracker, its
    timers); outside raft/ only RawNode's own methods and properties are used."""
    hits = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and node.attr in ("raft", "trk")]
    assert not hits, f"{path.relative_to(ROOT)}: .raft / .trk at lines {hits}"


def test_the_layering_rule_catches_upward_and_hidden_imports(tmp_path, monkeypatch):
    """The checker itself: a relative upward import and an import inside a function are seen."""
    package = tmp_path / "chronik_trio" / "kafka"
    package.mkdir(parents=True)
    for init in (tmp_path / "chronik_trio" / "__init__.py", package / "__init__.py"):
        init.write_text("")
    (tmp_path / "chronik_trio" / "node").mkdir()
    (tmp_path / "chronik_trio" / "node" / "__init__.py").write_text("")
    (tmp_path / "chronik_trio" / "node" / "node.py").write_text("")
    module = package / "handler.py"
    module.write_text("from ..node import node\n\ndef f():\n    from chronik_trio.node import node\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = list(chronik_imports(module))
    assert found == [("chronik_trio.node.node", 1, False), ("chronik_trio.node.node", 4, True)]
    assert LAYER_OF[_unit(found[0][0])] > LAYER_OF[_unit("chronik_trio.kafka.handler")]
