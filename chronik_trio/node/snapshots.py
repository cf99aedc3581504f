"""__meta snapshots: every snapshot_entries applied entries, __meta's state is saved as a
snapshot and the log before it dropped; a member further behind is sent the snapshot.
(Partition snapshots are taken at retention boundaries: retention.py.)"""

from __future__ import annotations

import logging

import trio

from .meta_group import MetaService
from .seams import RunSync

log = logging.getLogger(__name__)

META_SNAPSHOT_CHECK_S = 1.0


async def meta_snapshot_loop(meta_service: MetaService, snapshot_entries: int, run_sync: RunSync) -> None:
    """Under the group's lock, so the state is exactly that of the applied index."""
    group = meta_service.group
    while True:
        await trio.sleep(META_SNAPSHOT_CHECK_S)
        async with group.lock:
            applied = group.node.applied_index
            if applied - group.storage.snapshot_index < snapshot_entries:
                continue
            data = meta_service.state.snapshot()
            conf_state = group.node.status().conf_state
            await run_sync(group.storage.create_snapshot, applied, conf_state, data)
            group.storage.compact(applied + 1)
        log.info("__meta snapshot at index %d (%d bytes); older log segments dropped", applied, len(data))
