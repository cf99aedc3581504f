"""Short, deterministic text for entries, messages and Readies (logs, transcript tests)."""

from __future__ import annotations

from .convert import decode_conf_change
from .types import (ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, Entry,
                    EntryType, HardState, Message, Snapshot, SoftState)

DATA_SHOWN_BYTES_MAX = 32
"""Entry payload bytes shown before eliding: enough for test payloads, short in logs."""

_CC_PREFIX = {ConfChangeType.ADD_NODE: "v", ConfChangeType.REMOVE_NODE: "r",
              ConfChangeType.ADD_LEARNER_NODE: "l"}


def describe_conf_change(cc: ConfChangeV2) -> str:
    """etcd's compact form: "v2 l3 r4" (voter, learner, remove), "" to leave joint."""
    s = " ".join(f"{_CC_PREFIX[c.type]}{c.node_id}" for c in cc.changes)
    if cc.transition != ConfChangeTransition.AUTO:
        s += f" ({cc.transition.name.lower()})"
    return s


def _data(data: bytes) -> str:
    shown = data[:DATA_SHOWN_BYTES_MAX].decode("utf-8", "backslashreplace")
    if len(data) > DATA_SHOWN_BYTES_MAX:
        shown += f"...({len(data)} B)"
    return '"' + shown + '"'


def describe_entry(e: Entry) -> str:
    if e.type == EntryType.CONF_CHANGE_V2:
        cc = describe_conf_change(decode_conf_change(e.data))
        return f"{e.term}/{e.index} EntryConfChangeV2 {cc}"
    return f"{e.term}/{e.index} EntryNormal {_data(e.data)}"


def describe_entries(ents) -> str:
    return "\n".join(describe_entry(e) for e in ents)


def describe_conf_state(cs: ConfState) -> str:
    def ids(xs) -> str:
        return "[" + " ".join(map(str, xs)) + "]"
    s = f"Voters:{ids(cs.voters)} VotersOutgoing:{ids(cs.voters_outgoing)} " \
        f"Learners:{ids(cs.learners)} LearnersNext:{ids(cs.learners_next)}"
    return s + f" AutoLeave:{str(cs.auto_leave).lower()}"


def describe_snapshot(s: Snapshot) -> str:
    return f"Index:{s.index} Term:{s.term} ConfState:{describe_conf_state(s.metadata.conf_state)}"


def describe_hard_state(hs: HardState) -> str:
    return f"Term:{hs.term} Vote:{hs.vote} Commit:{hs.commit}"


def describe_soft_state(ss: SoftState) -> str:
    return f"Lead:{ss.leader_id} State:{ss.role.name}"


def describe_message(m: Message) -> str:
    s = f"{m.from_}->{m.to} {m.type.name} Term:{m.term} Log:{m.log_term}/{m.index}"
    if m.reject:
        s += f" Rejected (Hint: {m.reject_hint})"
    if m.commit:
        s += f" Commit:{m.commit}"
    if m.context:
        s += f" Context:{_data(m.context)}"
    if m.request_snapshot:
        s += f" RequestSnapshot:{m.request_snapshot}"
    if m.entries:
        s += " Entries:[" + ", ".join(describe_entry(e) for e in m.entries) + "]"
    if m.snapshot is not None:
        s += f" Snapshot: {describe_snapshot(m.snapshot)}"
    return s


def describe_ready(rd) -> str:
    """Multi-line description of a Ready (empty sections omitted)."""
    lines: list[str] = []
    if rd.soft_state is not None:
        lines.append(describe_soft_state(rd.soft_state))
    if rd.hard_state is not None:
        lines.append("HardState " + describe_hard_state(rd.hard_state))
    for title, ents in (("Entries", rd.entries), ("CommittedEntries", rd.committed_entries)):
        if ents:
            lines.append(f"{title}:")
            lines.extend("  " + describe_entry(e) for e in ents)
    if rd.snapshot is not None:
        lines.append("Snapshot " + describe_snapshot(rd.snapshot))
    for title, msgs in (("Messages", rd.messages), ("PersistedMessages", rd.persisted_messages)):
        if msgs:
            lines.append(f"{title}:")
            lines.extend("  " + describe_message(m) for m in msgs)
    for rs in rd.read_states:
        lines.append(f"ReadState Index:{rs.index} Context:{_data(rs.request_ctx)}")
    if rd.must_sync:
        lines.append("MustSync")
    return "\n".join(lines)
