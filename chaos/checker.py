"""The checker: a recorded history in, one CheckResult per check out. Pure: no I/O.

The history is the list of events of history.jsonl (history.py names their fields):

  send          one produce and its outcome: ok (with partition and offset), fail (the
                broker refused it: not written), info (unknown: timed out, connection lost)
  poll          records one consumer got from one partition, in order
  seek          a consumer moved its position on purpose (so a jump is not a skip)
  fault-start / fault-end   a nemesis fault and when it healed
  final-read    every record of a partition below its high watermark, read at the end
                through the partition's leader after every fault healed
  replica-log   every record below the high watermark in one replica's log files
  final-read-failed   the final read of a partition could not complete

The checks are the anomalies of Jepsen's Kafka workload: lost writes, duplicates,
inconsistent offsets, nonmonotonic sends and polls, poll skips, unseen records, replica
divergence, and unavailability windows. A check marked report-only counts and shows its
anomalies but does not fail the run; duplicates and nonmonotonic sends are report-only
unless the workload was idempotent (a non-idempotent client's retry after a lost answer
writes the record again, after records sent later: seen in pause.yaml, docs/chaos.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import attrs

EXAMPLES_MAX = 10  # anomalies shown per check in report.md; the count covers all of them
# Gaps between successful writes shorter than this are ordinary pacing, not unavailability.
UNAVAILABILITY_FLOOR_S = 0.5

Part = tuple[str, int]


@attrs.frozen
class CheckResult:
    name: str
    passed: bool
    report_only: bool
    count: int
    summary: str
    examples: tuple[str, ...] = ()
    # unavailability: fault description -> longest window (s) overlapping it
    details: Mapping[str, float] = attrs.field(factory=dict)

    @property
    def verdict(self) -> str:
        if self.passed:
            return "pass"
        return "report-only" if self.report_only else "FAIL"


@attrs.frozen
class CheckOptions:
    idempotence: bool = False
    # Without idempotence a client's retry can write a record twice or after a later one:
    # these two are report-only then, and failing checks when the workload is idempotent.
    report_only: frozenset[str] = frozenset({"duplicates", "nonmonotonic_sends"})
    disabled: frozenset[str] = frozenset()
    unavailability_max_s: float | None = None
    # Topics with cleanup.policy compact: the cleaner removes superseded records, so
    # lost_writes, unseen and poll_skips leave them to the compaction check, and divergence
    # does not ask a majority of replicas to hold each offset (each replica cleans its own).
    compacted: frozenset[str] = frozenset()


def _part(e: dict) -> Part:
    return (e["topic"], int(e["partition"]))


class _History:
    """The history's events grouped the way the checks read them."""

    def __init__(self, events: Iterable[dict]) -> None:
        self.sends: list[dict] = []
        self.polls: list[dict] = []
        self.seeks: list[dict] = []
        self.faults: dict[int, dict] = {}
        self.final: dict[Part, dict[int, str]] = {}
        self.final_failed: dict[Part, str] = {}
        self.replicas: dict[Part, dict[int, dict[int, str]]] = defaultdict(dict)
        self.start_s = 0.0
        self.end_s = 0.0
        self.workload_end_s: float | None = None
        self.exits: list[dict] = []
        self.sends_and_txns: list[dict] = []
        self.commits: list[dict] = []  # acknowledged OffsetCommits of group consumers
        self.offset_fetches: list[dict] = []
        # (node, pid, partition) -> [(t, last stable offset, high watermark)] in sampling order
        self.stable_offsets: dict[tuple[int, int, Part], list[tuple[float, int, int]]] = defaultdict(list)
        for e in events:
            kind = e["type"]
            if kind == "txn":
                self.sends_and_txns.append(e)
            if kind == "send":
                self.sends.append(e)
            elif kind == "commit":
                self.commits.append(e)
            elif kind == "offsets-fetched":
                self.offset_fetches.append(e)
            elif kind == "poll":
                self.polls.append(e)
            elif kind == "seek":
                self.seeks.append(e)
            elif kind == "fault-start":
                self.faults[e["id"]] = {"start": e["t"], "end": None, "desc": e["desc"], "kind": e["kind"],
                                        "nodes": e.get("nodes", [])}
            elif kind == "fault-end":
                if e["id"] in self.faults:
                    self.faults[e["id"]]["end"] = e["t"]
            elif kind == "final-read":
                self.final[_part(e)] = {int(o): v for o, v in e["records"]}
            elif kind == "final-read-failed":
                self.final_failed[_part(e)] = e.get("error", "")
            elif kind == "replica-log":
                self.replicas[_part(e)][int(e["node"])] = {int(o): v for o, v in e["records"]}
            elif kind == "lso":
                self.stable_offsets[(int(e["node"]), int(e.get("pid") or 0), _part(e))].append(
                    (e["t"], int(e["lso"]), int(e["hw"])))
            elif kind == "node" and e.get("what") == "exited":
                self.exits.append(e)
            elif kind == "workload-start":
                self.start_s = e["t"]
            elif kind == "workload-end":
                self.workload_end_s = e["t"]
            if "t" in e:
                self.end_s = max(self.end_s, e["t"])
        self.acked = [s for s in self.sends if s["outcome"] == "ok"]
        self.txns = [e for e in self.sends_and_txns if e["type"] == "txn"]


def _result(name: str, anomalies: list[str], opts: CheckOptions, summary_ok: str,
            summary_bad: str, **kw) -> CheckResult:
    report_only = name in opts.report_only
    return CheckResult(name=name, passed=not anomalies, report_only=report_only,
                       count=len(anomalies), summary=summary_ok if not anomalies else summary_bad,
                       examples=tuple(anomalies[:EXAMPLES_MAX]), **kw)


def check_lost_writes(h: _History, opts: CheckOptions) -> CheckResult:
    """Every acknowledged write is in the final read of its partition."""
    where: dict[Part, dict[str, list[int]]] = {}
    for part, records in h.final.items():
        index: dict[str, list[int]] = defaultdict(list)
        for offset, value in records.items():
            index[value].append(offset)
        where[part] = index
    lost = []
    for s in h.acked:
        part = _part(s)
        if part[0] in opts.compacted:
            continue
        if part in h.final_failed or part not in h.final:
            lost.append(f"{s['value']} acked at {part[0]}-{part[1]}@{s['offset']}: partition "
                        f"not read at the end ({h.final_failed.get(part, 'no final read')})")
        elif s["value"] not in where[part]:
            found = h.final[part].get(s["offset"])
            lost.append(f"{s['value']} acked at {part[0]}-{part[1]}@{s['offset']} "
                        f"(t={s['t_end']:.3f}) is missing from the final read; offset "
                        f"{s['offset']} holds {found!r}")
    return _result("lost_writes", lost, opts, f"all {len(h.acked)} acknowledged writes read back",
                   f"{len(lost)} of {len(h.acked)} acknowledged writes lost")


def check_duplicates(h: _History, opts: CheckOptions) -> CheckResult:
    """No value is stored at two offsets (a retried send written twice)."""
    dups = []
    for part, records in sorted(h.final.items()):
        seen: dict[str, int] = {}
        for offset in sorted(records):
            value = records[offset]
            if value in seen:
                dups.append(f"{value} at {part[0]}-{part[1]} offsets {seen[value]} and {offset}")
            else:
                seen[value] = offset
    report_only = "duplicates" in opts.report_only and not opts.idempotence
    why = "" if not report_only else " (expected without idempotence: report only)"
    return CheckResult(name="duplicates", passed=not dups, report_only=report_only, count=len(dups),
                       summary="no duplicates" if not dups else f"{len(dups)} duplicate record(s){why}",
                       examples=tuple(dups[:EXAMPLES_MAX]))


def check_inconsistent_offsets(h: _History, opts: CheckOptions) -> CheckResult:
    """One offset, one value: across acks, polls, the final read and every replica's log."""
    seen: dict[tuple[Part, int], dict[str, str]] = defaultdict(dict)

    def note(part: Part, offset: int, value: str, source: str) -> None:
        seen[(part, offset)].setdefault(value, source)

    for s in h.acked:
        note(_part(s), int(s["offset"]), s["value"], f"ack to {s['process']}")
    for p in h.polls:
        for offset, value in p["records"]:
            note(_part(p), int(offset), value, f"poll by {p['process']} t={p['t']:.3f}")
    for part, records in h.final.items():
        for offset, value in records.items():
            note(part, offset, value, "final read")
    for part, nodes in h.replicas.items():
        for node, records in nodes.items():
            for offset, value in records.items():
                note(part, offset, value, f"node {node}'s log")
    bad = [f"{part[0]}-{part[1]}@{offset}: " + "; ".join(f"{v!r} ({src})" for v, src in values.items())
           for (part, offset), values in sorted(seen.items()) if len(values) > 1]
    return _result("inconsistent_offsets", bad, opts, f"{len(seen)} offsets, each with one value",
                   f"{len(bad)} offset(s) seen with more than one value")


def check_nonmonotonic_sends(h: _History, opts: CheckOptions) -> CheckResult:
    """A producer's acknowledged writes to one partition get offsets in the order it sent them."""
    bad = []
    last: dict[tuple[str, Part], dict] = {}
    for s in sorted(h.acked, key=lambda s: (s["process"], s["seq"])):
        key = (s["process"], _part(s))
        prev = last.get(key)
        if prev is not None and int(s["offset"]) <= int(prev["offset"]):
            bad.append(f"{s['process']} sent {prev['value']} before {s['value']} but they got "
                       f"offsets {prev['offset']} and {s['offset']} in {key[1][0]}-{key[1][1]}")
        last[key] = s
    report_only = "nonmonotonic_sends" in opts.report_only and not opts.idempotence
    why = "" if not report_only else " (a retry after a lost answer, without idempotence: report only)"
    return CheckResult(name="nonmonotonic_sends", passed=not bad, report_only=report_only, count=len(bad),
                       summary="acknowledged offsets follow send order" if not bad
                       else f"{len(bad)} send(s) acknowledged out of order{why}",
                       examples=tuple(bad[:EXAMPLES_MAX]))


def check_nonmonotonic_polls(h: _History, opts: CheckOptions) -> CheckResult:
    """A consumer's polls of a partition return increasing offsets (unless it seeked)."""
    bad = [f"{process} polled {part[0]}-{part[1]}@{prev[1]} (t={prev[0]:.3f}) then @{offset} (t={t:.3f})"
           for process, part, prev, t, offset in _successive_polls(h) if offset <= prev[1]]
    return _result("nonmonotonic_polls", bad, opts, "polled offsets increase",
                   f"{len(bad)} poll(s) went backwards")


def check_poll_skips(h: _History, opts: CheckOptions) -> CheckResult:
    """Between two successive polled offsets, no record of the final read was passed over."""
    bad = []
    for process, part, (_, prev), t, offset in _successive_polls(h):
        if offset > prev + 1 and part[0] not in opts.compacted:
            skipped = [o for o in sorted(h.final.get(part, {})) if prev < o < offset]
            if skipped:
                bad.append(f"{process} jumped from {part[0]}-{part[1]}@{prev} to @{offset} "
                           f"(t={t:.3f}), skipping {len(skipped)} record(s) from "
                           f"@{skipped[0]}")
    return _result("poll_skips", bad, opts, "no consumer skipped a record",
                   f"{len(bad)} skip(s)")


def _successive_polls(h: _History):
    """(process, partition, (t, offset) of the previous poll, t, offset) for every polled
    record that follows another of the same consumer and partition with no seek between."""
    for process, part, stream in _poll_streams(h):
        prev = None
        for kind, t, offset in stream:
            if kind == "seek":
                prev = None
                continue
            if prev is not None:
                yield process, part, prev, t, offset
            prev = (t, offset)


def _poll_streams(h: _History):
    """(process, partition, [("poll", t, offset) | ("seek", t, offset)]) in time order."""
    streams: dict[tuple[str, Part], list] = defaultdict(list)
    for e in sorted(h.polls + h.seeks, key=lambda e: (e["t"], e["type"] != "seek")):
        key = (e["process"], _part(e))
        if e["type"] == "seek":
            streams[key].append(("seek", e["t"], e.get("offset")))
        else:
            for offset, _ in e["records"]:
                streams[key].append(("poll", e["t"], int(offset)))
    for (process, part), stream in sorted(streams.items()):
        yield process, part, stream


def check_unseen(h: _History, opts: CheckOptions) -> CheckResult:
    """Every acknowledged write was delivered to some consumer by the end of the run."""
    if not h.polls and not h.seeks:
        return CheckResult(name="unseen", passed=True, report_only="unseen" in opts.report_only,
                           count=0, summary="no consumers in this workload")
    polled = {(_part(p), v) for p in h.polls for _, v in p["records"]}
    unseen = [f"{s['value']} acked at {s['topic']}-{s['partition']}@{s['offset']} never polled"
              for s in h.acked if (_part(s), s["value"]) not in polled and s["topic"] not in opts.compacted]
    return _result("unseen", unseen, opts, "every acknowledged write was polled",
                   f"{len(unseen)} acknowledged write(s) never polled")


def check_divergence(h: _History, opts: CheckOptions) -> CheckResult:
    """Replicas' logs agree below the high watermark, and a majority of them hold each record."""
    bad = []
    for part in sorted(h.replicas):
        nodes = h.replicas[part]
        final = h.final.get(part)
        if final is None:
            continue
        majority = len(nodes) // 2 + 1
        for offset in sorted(final):
            holders = {n: records[offset] for n, records in nodes.items() if offset in records}
            values = set(holders.values())
            if len(values) > 1:
                bad.append(f"{part[0]}-{part[1]}@{offset}: replicas disagree: {holders}")
            elif len(holders) < majority and part[0] not in opts.compacted:
                bad.append(f"{part[0]}-{part[1]}@{offset} (below the high watermark) is in only "
                           f"{sorted(holders)} of the replicas {sorted(nodes)}")
    summary = (f"replicas agree below the high watermark ({len(h.replicas)} partition(s))"
               if h.replicas else "no replica logs were read")
    return _result("divergence", bad, opts, summary, f"{len(bad)} divergent offset(s)")


def _txn_values(h: _History) -> dict[tuple[Part, str], dict]:
    """(partition, value) -> the transaction (`txn` event) that wrote it."""
    return {((t, int(p)), v): txn for txn in h.txns for t, p, v in txn["values"]}


def check_aborted_reads(h: _History, opts: CheckOptions) -> CheckResult:
    """No record of an aborted transaction reaches a read_committed reader (polls or the
    final read)."""
    owner = _txn_values(h)
    bad = []
    for p in h.polls:
        for offset, value in p["records"]:
            txn = owner.get((_part(p), value))
            if txn is not None and txn["outcome"] == "abort":
                bad.append(f"{p['process']} polled {value} ({p['topic']}-{p['partition']}@{offset}, t={p['t']:.3f}) "
                           f"of {txn['process']}'s aborted transaction {txn['txn']}")
    for part, records in h.final.items():
        for offset, value in records.items():
            txn = owner.get((part, value))
            if txn is not None and txn["outcome"] == "abort":
                bad.append(f"the final read holds {value} ({part[0]}-{part[1]}@{offset}) of an aborted transaction")
    aborted = sum(1 for t in h.txns if t["outcome"] == "abort")
    return _result("aborted_reads", bad, opts, f"no record of {aborted} aborted transaction(s) was read",
                   f"{len(bad)} read(s) of aborted records")


def check_torn_transactions(h: _History, opts: CheckOptions) -> CheckResult:
    """Once everything is stable (the final read, after every fault healed), a transaction
    is there whole or not at all: committed ones whole; those of unknown outcome whole or
    absent."""
    present = {(part, value) for part, records in h.final.items() for value in records.values()}
    bad = []
    for txn in h.txns:
        if txn["outcome"] not in ("commit", "info"):
            continue
        # On a compacted topic the cleaner removes a committed record once a later one of
        # its key is there: the compaction check judges those.
        values = [((t, int(p)), v) for t, p, v in txn["values"] if t not in opts.compacted]
        found = [v for v in values if v in present]
        if found and len(found) < len(values) or (txn["outcome"] == "commit" and len(found) < len(values)):
            bad.append(f"{txn['process']}'s transaction {txn['txn']} ({txn['outcome']}): {len(found)} of "
                       f"{len(values)} records in the final read")
    return _result("torn_transactions", bad, opts, f"{len(h.txns)} transaction(s), none torn",
                   f"{len(bad)} torn transaction(s)")


def check_precommitted_reads(h: _History, opts: CheckOptions) -> CheckResult:
    """No read_committed consumer sees a record before its producer asked to commit it
    (so before the commit marker can have been written)."""
    owner = _txn_values(h)
    bad = []
    for p in h.polls:
        for offset, value in p["records"]:
            txn = owner.get((_part(p), value))
            if txn is not None and (txn["t_commit"] is None or p["t"] < txn["t_commit"]):
                bad.append(f"{p['process']} polled {value} at t={p['t']:.3f}, before its transaction "
                           f"{txn['process']}/{txn['txn']} asked to commit (t={txn['t_commit']})")
    return _result("precommitted_reads", bad, opts, "nothing was read before its transaction's commit",
                   f"{len(bad)} read(s) before the commit")


def check_lso_monotonic(h: _History, opts: CheckOptions) -> CheckResult:
    """A replica's last stable offset never moves backwards, nor above its high watermark,
    within one process of a node (a restarted node replays its log from the start, so its
    samples begin a new series)."""
    bad = []
    for (node, pid, part), samples in sorted(h.stable_offsets.items()):
        last = None
        for t, lso, hw in samples:
            if lso > hw:
                bad.append(f"node {node} (pid {pid}) {part[0]}-{part[1]}: LSO {lso} above the high watermark {hw} "
                           f"at t={t:.3f}")
            if last is not None and lso < last[1]:
                bad.append(f"node {node} (pid {pid}) {part[0]}-{part[1]}: LSO moved back from {last[1]} "
                           f"(t={last[0]:.3f}) to {lso} (t={t:.3f})")
            last = (t, lso)
    samples = sum(len(s) for s in h.stable_offsets.values())
    summary = (f"{samples} LSO sample(s) of {len(h.stable_offsets)} replica series, never backwards"
               if samples else "no LSO was sampled")
    return _result("lso_monotonic", bad, opts, summary, f"{len(bad)} LSO regression(s)")


COPY_PREFIX = "copy:"  # chaos/workload.py's copier


def check_exactly_once_output(h: _History, opts: CheckOptions) -> CheckResult:
    """With a copier (consume-transform-produce): in the final read, every committed input
    record is copied exactly once, nothing else is (no copy of an aborted record), and a
    record of unknown outcome at most once. Inputs are the records of the topics the copier
    reads, i.e. those with copies: a write to another topic (the simulator's liveness write
    to the output topic itself) is no input."""
    copies: dict[str, int] = defaultdict(int)
    for records in h.final.values():
        for value in records.values():
            if value.startswith(COPY_PREFIX):
                copies[value[len(COPY_PREFIX):]] += 1
    if not copies:
        return CheckResult(name="exactly_once_output", passed=True, report_only=False, count=0,
                           summary="no copier in this workload")
    outcome = {s["value"]: s["outcome"] for s in h.sends}
    sources = {s["topic"] for s in h.sends if s["value"] in copies}
    inputs = [s for s in h.acked if s["topic"] in sources]
    bad = []
    for s in inputs:
        if copies.get(s["value"], 0) != 1:
            bad.append(f"{s['value']} (committed) copied {copies.get(s['value'], 0)} time(s)")
    for value, count in sorted(copies.items()):
        kind = outcome.get(value)
        if kind in ("fail", None) or (kind == "info" and count > 1):
            bad.append(f"{value} ({kind or 'never sent'}) copied {count} time(s)")
    return _result("exactly_once_output", bad, opts, f"{len(inputs)} committed records copied exactly once",
                   f"{len(bad)} record(s) not copied exactly once")


def unavailability_windows(h: _History) -> list[tuple[float, float, Part]]:
    """Windows (start, end, partition) without a successful write to that partition, longest
    first, from its first successful write to the workload's end (the last recorded time when
    it did not say).
    Per partition: a leader's failure stops writes to its partitions only."""
    end = h.workload_end_s if h.workload_end_s is not None else h.end_s
    by_part: dict[Part, list[float]] = defaultdict(list)
    for s in h.acked:
        by_part[_part(s)].append(s["t_end"])
    for s in h.sends:  # a partition never written to successfully is unavailable throughout
        by_part.setdefault(_part(s), [])
    windows = []
    for part, times in by_part.items():
        times.sort()
        # From the partition's first successful write: the first write's latency (clients
        # connecting, learning leaders) is not a fault's doing. No write at all: the whole run.
        edges = [*times, max(end, times[-1])] if times else [h.start_s, end]
        windows += [(a, b, part) for a, b in zip(edges, edges[1:]) if b - a >= UNAVAILABILITY_FLOOR_S]
    return sorted(windows, key=lambda w: w[0] - w[1])


def check_unavailability(h: _History, opts: CheckOptions) -> CheckResult:
    """The longest time a partition took no successful write, overall and per fault; fails
    above max_s."""
    windows = unavailability_windows(h)
    longest = windows[0][1] - windows[0][0] if windows else 0.0
    per_fault: dict[str, float] = {}
    for fid, f in sorted(h.faults.items()):
        end = f["end"] if f["end"] is not None else h.end_s
        overlapping = [b - a for a, b, _ in windows if a <= end and b >= f["start"]]
        per_fault[f"#{fid} {f['desc']} (t={f['start']:.1f}-{end:.1f})"] = max(overlapping, default=0.0)
    examples = [f"{b - a:.2f} s without a successful write to {p[0]}-{p[1]}, t={a:.2f}-{b:.2f}"
                for a, b, p in windows]
    limit = opts.unavailability_max_s
    too_long = limit is not None and longest > limit
    # Gaps shorter than the floor are not windows: say so rather than print 0.00 s.
    shown = f"{longest:.2f} s" if windows else f"under {UNAVAILABILITY_FLOOR_S:.2f} s"
    summary = f"longest window without a successful write: {shown}"
    if limit is not None:
        summary += f" (limit {limit:.1f} s)"
    return CheckResult(name="unavailability", passed=not too_long,
                       report_only="unavailability" in opts.report_only,
                       count=len([w for w in windows if limit is not None and w[1] - w[0] > limit]),
                       summary=summary, examples=tuple(examples[:EXAMPLES_MAX]), details=per_fault)


def check_lost_commits(h: _History, opts: CheckOptions) -> CheckResult:
    """A group's committed offsets survive: an OffsetFetch returns, for each partition, at
    least the highest offset whose commit was acknowledged before the fetch was sent (a
    member commits only its own increasing positions, and a commit of an ended generation
    is refused, so no later commit may lower it)."""
    if not h.offset_fetches:
        return CheckResult(name="lost_commits", passed=True, report_only="lost_commits" in opts.report_only,
                           count=0, summary="no consumer groups in this workload")
    commits: dict[tuple[str, str, int], list[tuple[float, int, str]]] = defaultdict(list)
    for c in h.commits:
        commits[(c["group"], c["topic"], int(c["partition"]))].append((c["t_end"], int(c["offset"]), c["process"]))
    bad = []
    for f in h.offset_fetches:
        for topic, partition, offset in f["offsets"]:
            before = [c for c in commits.get((f["group"], topic, int(partition)), ()) if c[0] < f["t_start"]]
            if before:
                t_end, highest, by = max(before, key=lambda c: c[1])
                if offset < highest:
                    bad.append(f"{f['process']} fetched {topic}-{partition}@{offset} for {f['group']} at "
                               f"t={f['t_start']:.3f}, after {by}'s commit of {highest} was acknowledged "
                               f"at t={t_end:.3f}")
    return _result("lost_commits", bad, opts, f"{len(h.commits)} acknowledged commit(s), none lost",
                   f"{len(bad)} committed offset(s) lost")


# Exit details of a node that was killed (SIGKILL), stopped cleanly (SIGTERM) or lost power;
# 143 is a JVM's exit after its shutdown hooks ran on SIGTERM (Apache Kafka as the broker).
EXPECTED_EXITS = frozenset({"code -9", "code 0", "code 137", "code 143"})


def check_node_crashes(h: _History, opts: CheckOptions) -> CheckResult:
    """No node process stopped on its own: every exit is a kill, a clean stop, a power loss,
    or a stop on a disk error injected into that node."""
    disk = [(f["start"], f["end"] if f["end"] is not None else h.end_s, set(f["nodes"]))
            for f in h.faults.values() if f["kind"] == "disk"]
    bad = [f"node {e['node']} exited ({e['detail']}) at t={e['t']:.2f}: see nodes/node{e['node']}.log"
           for e in h.exits if e["detail"] not in EXPECTED_EXITS
           and not any(a <= e["t"] <= b + 1.0 and e["node"] in nodes for a, b, nodes in disk)]
    return _result("node_crashes", bad, opts, f"{len(h.exits)} node exit(s), all caused by the nemesis "
                   "or the harness", f"{len(bad)} node exit(s) nobody caused")


def check_compaction(h: _History, opts: CheckOptions) -> CheckResult:
    """On compacted topics, per key: the final read's last record of the key is its latest
    acknowledged value or a later send (never an older value: a newer one was not lost, and
    no older one came back above it); a key whose latest acknowledged send was a tombstone
    may also be absent (the tombstone removed with every older value). Every record read
    is a value that was sent (inconsistent_offsets checks it is at the offset acked)."""
    parts = sorted(p for p in set(h.final) | set(h.final_failed) if p[0] in opts.compacted)
    if not parts:
        return CheckResult(name="compaction", passed=True, report_only="compaction" in opts.report_only,
                           count=0, summary="no compacted topic")
    sends = {s["value"]: s for s in h.sends}
    # A transactional send counts as written only once its transaction committed: an
    # aborted one's records go (and are never read committed), one of unknown outcome may
    # be read (any value sent may) but is not owed.
    owner = _txn_values(h)
    bad: list[str] = []
    keys = removed = 0
    for part in parts:
        if part in h.final_failed or part not in h.final:
            bad.append(f"{part[0]}-{part[1]}: not read at the end ({h.final_failed.get(part, 'no final read')})")
            continue
        final = h.final[part]
        last_read: dict[str, tuple[int, str]] = {}
        for offset in sorted(final):
            send = sends.get(final[offset])
            if send is None:
                bad.append(f"{part[0]}-{part[1]}@{offset} holds {final[offset]!r}, which nobody sent")
                continue
            last_read[send["key"]] = (offset, final[offset])
        latest: dict[str, dict] = {}
        for s in h.acked:
            txn = owner.get((part, s["value"]))
            if _part(s) == part and (txn is None or txn["outcome"] == "commit"):
                if int(s["offset"]) not in final:
                    removed += 1
                if s["key"] not in latest or int(s["offset"]) > int(latest[s["key"]]["offset"]):
                    latest[s["key"]] = s
        for key, s in sorted(latest.items()):
            keys += 1
            read = last_read.get(key)
            acked_at = int(s["offset"])
            if read is None:
                if not s.get("tombstone"):
                    bad.append(f"{part[0]}-{part[1]} key {key}: its latest acknowledged value "
                               f"{s['value']} (@{acked_at}) is gone and the key is absent")
            elif read[0] < acked_at:
                what = "tombstoned key shows an older value" if s.get("tombstone") else "older value"
                bad.append(f"{part[0]}-{part[1]} key {key}: {what}: the final read ends with "
                           f"{read[1]} @{read[0]}, but {s['value']} was acknowledged @{acked_at}")
    return _result("compaction", bad, opts,
                   f"{keys} key(s): each reads as its latest acknowledged value or later "
                   f"({removed} acknowledged record(s) removed by the cleaner)",
                   f"{len(bad)} key(s) read wrong after compaction")


CHECK_FUNCTIONS = {
    "lost_writes": check_lost_writes,
    "duplicates": check_duplicates,
    "inconsistent_offsets": check_inconsistent_offsets,
    "nonmonotonic_sends": check_nonmonotonic_sends,
    "nonmonotonic_polls": check_nonmonotonic_polls,
    "poll_skips": check_poll_skips,
    "unseen": check_unseen,
    "divergence": check_divergence,
    "unavailability": check_unavailability,
    "node_crashes": check_node_crashes,
    "compaction": check_compaction,
    "aborted_reads": check_aborted_reads,
    "torn_transactions": check_torn_transactions,
    "precommitted_reads": check_precommitted_reads,
    "exactly_once_output": check_exactly_once_output,
    "lso_monotonic": check_lso_monotonic,
    "lost_commits": check_lost_commits,
}


def check_history(events: Iterable[dict], opts: CheckOptions = CheckOptions()) -> list[CheckResult]:
    """Every enabled check over one history, in CHECK_FUNCTIONS order."""
    h = _History(events)
    return [fn(h, opts) for name, fn in CHECK_FUNCTIONS.items() if name not in opts.disabled]


def verdict(results: list[CheckResult]) -> bool:
    """True when every check passed or is report-only."""
    return all(r.passed or r.report_only for r in results)


def options_for(scenario) -> CheckOptions:
    """CheckOptions from a Scenario's checks and workload."""
    return CheckOptions(
        idempotence=scenario.workload.idempotence,
        report_only=frozenset(c.name for c in scenario.checks if c.report_only),
        disabled=frozenset(c.name for c in scenario.checks if not c.enabled),
        unavailability_max_s=scenario.check("unavailability").max_s,
        compacted=frozenset(t.name for t in scenario.topics if t.compacted))
