"""franz-go for the tests: tests/go's program, built once per test run with `go build`.

The modules pinned in tests/go/go.mod (and go.sum) are fetched by the go command itself into
its ordinary module cache the first time; the binary goes to tests/go/bin and is rebuilt only
when a source is newer than it.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

GO_DIR = pathlib.Path(__file__).resolve().parents[1] / "go"
BINARY = GO_DIR / "bin" / "franz"
BUILD_TIMEOUT_S = 600  # a cold module fetch and first compile of franz-go take about a minute


def _stale() -> bool:
    if not BINARY.exists():
        return True
    built = BINARY.stat().st_mtime
    return any(p.stat().st_mtime > built for p in GO_DIR.iterdir() if p.is_file())


def build() -> str:
    """The path of tests/go's binary. Skips the calling test (with the reason) where go is
    missing; fails it if the build fails."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("the franz-go tests need go on PATH")
    if _stale():
        env = {**os.environ, "GOFLAGS": "-mod=mod"}
        proc = subprocess.run([go, "build", "-o", str(BINARY), "."], cwd=GO_DIR, env=env,
                              capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            pytest.fail(f"go build in {GO_DIR} failed ({proc.returncode}):\n"
                        f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}", pytrace=False)
    return str(BINARY)
