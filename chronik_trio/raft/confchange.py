"""Membership changes: compute the next (config, progress map) from a ConfChangeV2.

Pure: takes the tracker's current config and progress, returns new ones (or raises
ConfChangeInvalid), so a refused change leaves the tracker untouched.
"""

from __future__ import annotations

from .errors import ConfChangeInvalid
from .quorum import JointConfig
from .tracker import Progress, ProgressTracker, TrackerConfig
from .types import ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState


class _Builder:
    """Mutable working copy of a config while changes are applied."""

    def __init__(self, trk: ProgressTracker, last_index: int) -> None:
        cfg = trk.config
        self.trk = trk
        self.incoming = set(cfg.voters.incoming)
        self.outgoing = set(cfg.voters.outgoing)
        self.learners = set(cfg.learners)
        self.learners_next = set(cfg.learners_next)
        self.auto_leave = cfg.auto_leave
        self.progress: dict[int, Progress] = dict(trk.progress)
        self.last_index = last_index

    def _ensure_progress(self, node_id: int, is_learner: bool) -> None:
        pr = self.progress.get(node_id)
        if pr is None:
            # Probe from the last index: a new member most likely lacks only the newest
            # entries (often just this conf change); a rejection backs off from there.
            pr = self.trk.new_progress(max(self.last_index, 1), is_learner)
            pr.recent_active = True  # give it an election timeout before check-quorum counts
            self.progress[node_id] = pr
        elif pr.is_learner != is_learner:
            # Copy on write: the tracker's own Progress must stay as it is until the new
            # config is installed (a refused or dry-run change leaves no trace).
            pr = pr.copy()
            pr.is_learner = is_learner
            self.progress[node_id] = pr

    def make_voter(self, node_id: int) -> None:
        self.incoming.add(node_id)
        self.learners.discard(node_id)
        self.learners_next.discard(node_id)
        self._ensure_progress(node_id, is_learner=False)

    def make_learner(self, node_id: int) -> None:
        if node_id in self.learners:
            return
        self.incoming.discard(node_id)
        if node_id in self.outgoing:
            # Still a voter of the outgoing config: it becomes a learner on leaving joint.
            self.learners_next.add(node_id)
            self._ensure_progress(node_id, is_learner=False)
        else:
            self.learners.add(node_id)
            self._ensure_progress(node_id, is_learner=True)

    def remove(self, node_id: int) -> None:
        self.incoming.discard(node_id)
        self.learners.discard(node_id)
        self.learners_next.discard(node_id)
        if node_id not in self.outgoing:
            self.progress.pop(node_id, None)

    def apply(self, changes: tuple[ConfChangeSingle, ...]) -> None:
        for cc in changes:
            if cc.node_id == 0:
                continue  # etcd's convention: a change for node 0 is a no-op
            if cc.type == ConfChangeType.ADD_NODE:
                self.make_voter(cc.node_id)
            elif cc.type == ConfChangeType.ADD_LEARNER_NODE:
                self.make_learner(cc.node_id)
            else:
                self.remove(cc.node_id)
        if not self.incoming:
            raise ConfChangeInvalid("removed all voters")

    def build(self) -> tuple[TrackerConfig, dict[int, Progress]]:
        cfg = TrackerConfig(JointConfig(frozenset(self.incoming), frozenset(self.outgoing)),
                            frozenset(self.learners), frozenset(self.learners_next),
                            self.auto_leave)
        _check_invariants(cfg, self.progress)
        return cfg, self.progress


def _check_invariants(cfg: TrackerConfig, progress: dict[int, Progress]) -> None:
    members = cfg.voters.ids() | cfg.learners | cfg.learners_next
    assert set(progress) == members, (sorted(progress), sorted(members))
    assert not (cfg.learners & cfg.voters.ids()), (cfg.learners, cfg.voters)
    assert cfg.learners_next <= cfg.voters.outgoing, (cfg.learners_next, cfg.voters)
    assert cfg.voters.is_joint() or not cfg.auto_leave, cfg


def enter_joint(trk: ProgressTracker, last_index: int,
                cc: ConfChangeV2) -> tuple[TrackerConfig, dict[int, Progress]]:
    if trk.config.voters.is_joint():
        raise ConfChangeInvalid("config is already joint")
    if not trk.config.voters.incoming:
        raise ConfChangeInvalid("can't make a zero-voter config joint")
    b = _Builder(trk, last_index)
    b.outgoing = set(b.incoming)
    b.apply(cc.changes)
    b.auto_leave = cc.auto_leave()
    return b.build()


def leave_joint(trk: ProgressTracker, last_index: int) -> tuple[TrackerConfig, dict[int, Progress]]:
    if not trk.config.voters.is_joint():
        raise ConfChangeInvalid("can't leave a non-joint config")
    b = _Builder(trk, last_index)
    for node_id in b.learners_next:
        b.learners.add(node_id)
        b._ensure_progress(node_id, is_learner=True)
    b.learners_next = set()
    for node_id in b.outgoing:
        if node_id not in b.incoming and node_id not in b.learners:
            b.progress.pop(node_id, None)
    b.outgoing = set()
    b.auto_leave = False
    return b.build()


def simple(trk: ProgressTracker, last_index: int,
           cc: ConfChangeV2) -> tuple[TrackerConfig, dict[int, Progress]]:
    """Apply at most one voter change directly (no joint config): any two majorities of the
    old and new config then overlap."""
    if trk.config.voters.is_joint():
        raise ConfChangeInvalid("can't apply a simple change in a joint config")
    b = _Builder(trk, last_index)
    b.apply(cc.changes)
    if len(b.incoming ^ trk.config.voters.incoming) > 1:
        raise ConfChangeInvalid("more than one voter changed without entering joint config")
    return b.build()


def apply_conf_change(trk: ProgressTracker, last_index: int,
                      cc: ConfChangeV2) -> tuple[TrackerConfig, dict[int, Progress]]:
    if cc.leaves_joint():
        return leave_joint(trk, last_index)
    if cc.enters_joint():
        return enter_joint(trk, last_index, cc)
    return simple(trk, last_index, cc)


def restore(trk: ProgressTracker, last_index: int,
            cs: ConfState) -> tuple[TrackerConfig, dict[int, Progress]]:
    """Build the config a ConfState describes, starting from an empty tracker: the outgoing
    config first, then enter joint towards the incoming one (as etcd's confchange.Restore)."""
    empty = ProgressTracker(trk.max_inflight_msgs, trk.max_inflight_bytes)
    b = _Builder(empty, last_index)
    for v in cs.voters_outgoing:
        b.make_voter(v)
    if cs.voters_outgoing:
        b.outgoing = set(b.incoming)
        b.incoming = set()
        for v in cs.voters:
            b.make_voter(v)
        for v in cs.learners:
            b.make_learner(v)
        for v in cs.learners_next:
            b.make_learner(v)
        b.auto_leave = cs.auto_leave
    else:
        for v in cs.voters:
            b.make_voter(v)
        for v in cs.learners:
            b.make_learner(v)
    return b.build()
