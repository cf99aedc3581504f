"""kafkajs (Node.js) for the tests that drive it: tests/js, installed from the committed
package-lock.json with `npm ci` the first time a test of this process needs it."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

JS_DIR = pathlib.Path(__file__).resolve().parent / "js"
NPM_CI_TIMEOUT_S = 240
_installed = False


def kafkajs_dir() -> pathlib.Path:
    """tests/js with kafkajs and kafkajs-snappy installed. Skips the calling test (with the
    reason) where Node.js or npm is missing; fails it if the install fails."""
    global _installed
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip(f"kafkajs needs Node.js and npm on PATH; found node={node}, npm={npm}")
    if not _installed:
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                              cwd=JS_DIR, capture_output=True, text=True, timeout=NPM_CI_TIMEOUT_S)
        if proc.returncode != 0:
            pytest.fail(f"npm ci in {JS_DIR} failed ({proc.returncode}):\n"
                        f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
        _installed = True
    return JS_DIR
