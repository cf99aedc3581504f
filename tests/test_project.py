"""Project-level checks: CI runs what the README says, generated code is current."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _sh_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_ci_runs_exactly_the_readme_test_command():
    blocks = _sh_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 2, "README must open with the two set-up commands"
    test_command = blocks[1]
    ci_lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")
                and not ln.startswith(("set ", "cd "))]
    assert ci_lines == [test_command]


def test_readme_start_command_starts_a_node():
    start = _sh_blocks((ROOT / "README.md").read_text())[0]
    assert start.endswith("chronik-trio node")


def test_generated_protobuf_code_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_merge_conflict_markers_are_committed():
    """A conflict resolved in a hurry must not leave git's markers in a tracked file."""
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                           check=True, timeout=30).stdout.split()
    marked = []
    for name in files:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".proto", ".yaml", ".toml", ".go", ".java", ".js", ".xml"}:
            continue
        text = path.read_text(errors="replace")
        if re.search(r"^(<{7} |>{7} |={7}$)", text, re.M):
            marked.append(name)
    assert marked == []
