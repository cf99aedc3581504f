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
    while True:
        await trio.sleep(META_SNAPSHOT_CHECK_S)
        await take_meta_snapshot(meta_service, run_sync, min_entries=snapshot_entries)


async def take_meta_snapshot(meta_service: MetaService, run_sync: RunSync, *, min_entries: int = 1) -> bool:
    """Snapshot __meta at its applied index if that is at least min_entries past the last
    snapshot, and drop the log before it; returns whether it did. Under the group's lock, so
    the state is exactly that of the applied index. Also called before a node joins
    (node/membership.py): a joining member must start from a snapshot, not from index 1."""
    group = meta_service.group
    async with group.lock:
        applied = group.node.applied_index
        if applied - group.storage.snapshot_index < min_entries:
            return False
        data = meta_service.state.snapshot()
        conf_state = group.node.status().conf_state
        await run_sync(group.storage.create_snapshot, applied, conf_state, data)
        group.storage.compact(applied + 1)
    log.info("__meta snapshot at index %d (%d bytes); older log segments dropped", applied, len(data))
    return True
