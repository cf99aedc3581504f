"""Runs every transcript in tests/raft/transcripts/ (see tests/raft/transcript.py; regenerate
with `python -m tests.raft.transcript --rewrite`)."""

from __future__ import annotations

import pytest

from .transcript import TRANSCRIPTS_DIR, run_file

FILES = sorted(TRANSCRIPTS_DIR.glob("*.txt"))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_transcript_matches(path):
    failures = run_file(path, rewrite=False)
    assert not failures, "\n\n".join(failures)


def test_there_are_transcripts():
    assert len(FILES) >= 5
