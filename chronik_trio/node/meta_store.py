"""The node's copy of __meta: a durable log of MetaCommands applied to cluster.MetaState.

A single node is the only voter: a proposal is appended, made durable by the group
committer, then applied in log order. With the node runtime issue this log becomes the
__meta Raft group's log; the commands and the state machine stay the same.
"""

from __future__ import annotations

import collections
import logging
import pathlib

import trio

from chronik_trio.cluster.meta import Applied, MetaState
from chronik_trio.pb import meta_pb2
from chronik_trio.storage import LogEntry

from .single_voter import SINGLE_VOTER_TERM, SingleVoterLog

log = logging.getLogger(__name__)

ENTRY_NORMAL = 0


class MetaStore(SingleVoterLog):
    def __init__(self, directory: pathlib.Path, disk, committer, *, node_id: int) -> None:
        super().__init__(directory, disk, node_id=node_id, kafka=False)
        self.committer = committer
        self.state = MetaState()
        for entry in self.log.entries(self.log.first_index, self.log.last_index + 1):
            self.state.apply(self._decode(entry))
        self.applied_index = self.log.last_index
        self._pending: collections.OrderedDict[int, tuple[meta_pb2.MetaCommand, trio.Event, list]] = (
            collections.OrderedDict())
        self.changed = trio.Event()  # replaced after every applied change

    @staticmethod
    def _decode(entry: LogEntry) -> meta_pb2.MetaCommand:
        command = meta_pb2.MetaCommand()
        command.ParseFromString(bytes(entry.payload))
        return command

    async def propose(self, command: meta_pb2.MetaCommand) -> Applied:
        """Append, wait until durable, apply; return what applying produced."""
        index = self.log.last_index + 1
        self.log.append([LogEntry(index, SINGLE_VOTER_TERM, ENTRY_NORMAL, command.SerializeToString())])
        event, result = trio.Event(), []
        self._pending[index] = (command, event, result)
        self.committer.mark_dirty(self)
        await event.wait()
        return result[0]

    def on_durable(self, index: int) -> None:
        self.durable_index = max(self.durable_index, index)
        applied_any = False
        while self._pending and next(iter(self._pending)) <= index:
            entry_index, (command, event, result) = self._pending.popitem(last=False)
            assert entry_index == self.applied_index + 1, (entry_index, self.applied_index)
            result.append(self.state.apply(command))
            self.applied_index = entry_index
            applied_any = True
            event.set()
        if applied_any:
            self.changed.set()
            self.changed = trio.Event()
