"""The error family (chronik_trio/errors.py): every failure the broker answers a client with
is a BrokerError carrying a Kafka error code, and no error class lies unused."""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest
from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "chronik_trio"
# The broker: everything a node process runs (the tools are clients of it).
BROKER_MODULES = ["chronik_trio.node.main", "chronik_trio.kafka.handlers.registry",
                  "chronik_trio.transport", "chronik_trio.storage", "chronik_trio.raft"]

pytestmark = pytest.mark.timeout(30)


def _exception_classes() -> list[type]:
    for name in BROKER_MODULES:
        importlib.import_module(name)
    seen, todo = [], [Exception]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in seen:
                seen.append(sub)
                todo.append(sub)
    return [c for c in seen if c.__module__.startswith("chronik_trio.")]


def _constructed_names() -> set[str]:
    """Every name called (X(...)) or raised bare (raise X) anywhere in chronik_trio/."""
    names = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            target = node.func if isinstance(node, ast.Call) else node.exc if isinstance(node, ast.Raise) else None
            if isinstance(target, ast.Name):
                names.add(target.id)
            elif isinstance(target, ast.Attribute):
                names.add(target.attr)
    return names


def test_every_error_with_a_kafka_code_is_a_broker_error():
    for cls in _exception_classes():
        if hasattr(cls, "error_code"):
            assert issubclass(cls, BrokerError), cls
    for cls in [BrokerError, *BrokerError.__subclasses__()]:
        assert isinstance(cls.error_code, ErrorCode), cls


def test_every_error_class_is_raised_somewhere_or_is_a_base():
    constructed = _constructed_names()
    unused = [f"{c.__module__}.{c.__qualname__}" for c in _exception_classes()
              if c.__name__ not in constructed and not c.__subclasses__()]
    assert not unused, f"error classes raised nowhere: {unused}"
