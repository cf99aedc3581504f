"""A durable log whose node is its only voter: what is durable is committed.

The base of the meta store and of partition replicas until Raft groups drive them. It owns
the SegmentLog and the hard-state file whose commit index recovery trusts: a bad frame at or
below it is corruption, above it a torn tail (storage.md).
"""

from __future__ import annotations

import pathlib

from chronik_trio.storage import HardState, HardStateFile, SegmentLog

SINGLE_VOTER_TERM = 1  # the only voter's term; = the Kafka leader epoch of its partitions
HARD_STATE_FILE = "hardstate"


class SingleVoterLog:
    def __init__(self, directory: pathlib.Path, disk, *, node_id: int, kafka: bool,
                 segment_bytes: int | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.node_id = node_id
        self.hard_state_file = HardStateFile(disk, directory / HARD_STATE_FILE)
        saved = self.hard_state_file.load()  # read first: it says what must be intact
        self.saved_commit = saved.commit
        sizes = {} if segment_bytes is None else {"segment_bytes_max": segment_bytes}
        self.log = SegmentLog.open(disk, directory, kafka=kafka, durable_index=saved.commit, **sizes)
        self.durable_index = self.log.last_index
        self.closed = False

    def checkpoint_due(self) -> HardState | None:
        """The hard state to save if the durable index moved since the last save."""
        if self.durable_index > self.saved_commit:
            return HardState(term=SINGLE_VOTER_TERM, vote=self.node_id, commit=self.durable_index)
        return None

    def checkpointed(self, hs: HardState) -> None:
        self.saved_commit = max(self.saved_commit, hs.commit)

    def close(self) -> None:
        self.closed = True
        self.log.close()
