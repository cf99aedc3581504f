"""The scenarios shipped with the harness (package data in chaos/scenarios/), by name.

Stdlib only, so `python -m chaos list` works before the harness's extra dependencies are
installed.
"""

from __future__ import annotations

import importlib.resources
import pathlib

SUFFIX = ".yaml"


def _directory():
    return importlib.resources.files("chaos").joinpath("scenarios")


def shipped_names() -> list[str]:
    """Names of the shipped scenarios (file names without .yaml), sorted."""
    return sorted(entry.name[:-len(SUFFIX)] for entry in _directory().iterdir()
                  if entry.name.endswith(SUFFIX) and entry.is_file())


def resolve(argument: str | pathlib.Path) -> pathlib.Path | None:
    """The scenario file `argument` names: an existing file as given, else the shipped
    scenario of that name (`failover` or `failover.yaml`); None if neither exists."""
    path = pathlib.Path(argument)
    if path.is_file():
        return path
    name = path.name[:-len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name
    if path.parent != pathlib.Path(".") or name not in shipped_names():
        return None
    # A regular or editable install keeps package data as files on disk.
    return pathlib.Path(str(_directory().joinpath(name + SUFFIX)))
