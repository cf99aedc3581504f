"""The chaos checker on hand-made histories: a clean one passes every check, and for each
check a history with exactly its anomaly fails it (and only it, where that can hold)."""

from __future__ import annotations

import pytest

from chaos.checker import CheckOptions, check_history, unavailability_windows, verdict, _History

pytestmark = pytest.mark.timeout(30)

T = "t"


def send(process: str, seq: int, offset: int | None, *, t: float, partition: int = 0,
         outcome: str = "ok") -> dict:
    e = {"type": "send", "process": process, "seq": seq, "topic": T, "partition": partition,
         "key": f"k{seq}", "value": f"{process}-{seq}", "t_start": t - 0.01, "t_end": t,
         "outcome": outcome}
    if outcome == "ok":
        e["offset"] = offset
    return e


def poll(process: str, records: list, *, t: float, partition: int = 0) -> dict:
    return {"type": "poll", "process": process, "topic": T, "partition": partition, "t": t,
            "records": [list(r) for r in records]}


def final(records: list, partition: int = 0) -> dict:
    return {"type": "final-read", "topic": T, "partition": partition,
            "high_watermark": len(records), "records": [list(r) for r in records]}


def replica(node: int, records: list, partition: int = 0) -> dict:
    return {"type": "replica-log", "node": node, "topic": T, "partition": partition,
            "records": [list(r) for r in records]}


def clean_history() -> list[dict]:
    """Producer p0 writes p0-0..p0-4 at offsets 0..4, twice a second; c0 polls them all."""
    records = [(i, f"p0-{i}") for i in range(5)]
    return [
        {"type": "workload-start", "t": 0.0},
        *[send("p0", i, i, t=0.1 + 0.4 * i) for i in range(5)],
        {"type": "seek", "process": "c0", "topic": T, "partition": 0, "offset": 0, "t": 0.0},
        poll("c0", records[:2], t=1.0),
        poll("c0", records[2:], t=2.0),
        {"type": "workload-end", "t": 2.0},
        final(records),
        *[replica(n, records) for n in (1, 2, 3)],
    ]


def failed(events: list[dict], opts: CheckOptions = CheckOptions()) -> set[str]:
    return {r.name for r in check_history(events, opts) if not r.passed}


def replace(events: list[dict], index: int, event: dict) -> list[dict]:
    return events[:index] + [event] + events[index + 1:]


def test_a_clean_history_passes_every_check():
    results = check_history(clean_history(), CheckOptions(unavailability_max_s=1.0))
    assert [r.name for r in results if not r.passed] == []
    assert verdict(results)


def test_an_acknowledged_write_missing_from_the_final_read_is_lost():
    events = clean_history()
    records = [(i, f"p0-{i}") for i in range(5) if i != 3]
    events = [e for e in events if e["type"] not in ("final-read", "replica-log")]
    events += [final(records), *[replica(n, records) for n in (1, 2, 3)]]
    results = {r.name: r for r in check_history(events)}
    assert not results["lost_writes"].passed
    assert "p0-3" in results["lost_writes"].examples[0]
    assert not verdict(list(results.values()))


def test_a_partition_without_a_final_read_counts_its_writes_as_lost():
    events = [e for e in clean_history() if e["type"] != "final-read"]
    events.append({"type": "final-read-failed", "topic": T, "partition": 0, "error": "timeout"})
    assert "lost_writes" in failed(events)


def test_a_value_at_two_offsets_is_a_duplicate_report_only_without_idempotence():
    records = [(i, f"p0-{i}") for i in range(5)] + [(5, "p0-4")]
    events = [e for e in clean_history() if e["type"] not in ("final-read", "replica-log")]
    events += [final(records), *[replica(n, records) for n in (1, 2, 3)],
               poll("c0", records[5:], t=2.5)]
    results = {r.name: r for r in check_history(events)}
    assert not results["duplicates"].passed and results["duplicates"].report_only
    assert verdict(list(results.values()))  # report-only does not fail the run
    idempotent = {r.name: r for r in check_history(events, CheckOptions(idempotence=True))}
    assert not idempotent["duplicates"].passed and not idempotent["duplicates"].report_only
    assert not verdict(list(idempotent.values()))


def test_one_offset_with_two_values_is_inconsistent():
    events = clean_history() + [poll("c1", [(2, "p9-9")], t=1.5)]
    assert "inconsistent_offsets" in failed(events)


def test_replicas_disagreeing_below_the_high_watermark_is_divergence():
    records = [(i, f"p0-{i}") for i in range(5)]
    other = records[:4] + [(4, "p7-7")]
    events = [e for e in clean_history() if e["type"] != "replica-log"]
    events += [replica(1, records), replica(2, records), replica(3, other)]
    bad = failed(events)
    assert "divergence" in bad and "inconsistent_offsets" in bad


def test_a_record_held_by_a_minority_of_replicas_is_divergence():
    records = [(i, f"p0-{i}") for i in range(5)]
    events = [e for e in clean_history() if e["type"] != "replica-log"]
    events += [replica(1, records), replica(2, records[:3]), replica(3, records[:3])]
    assert failed(events) == {"divergence"}


def test_offsets_against_send_order_are_nonmonotonic_sends_failing_with_idempotence():
    events = clean_history()
    events = replace(events, 3, send("p0", 2, 3, t=0.9))
    events = replace(events, 4, send("p0", 3, 2, t=1.3))
    results = {r.name: r for r in check_history(events)}
    assert not results["nonmonotonic_sends"].passed and results["nonmonotonic_sends"].report_only
    idempotent = {r.name: r for r in check_history(events, CheckOptions(idempotence=True))}
    assert not idempotent["nonmonotonic_sends"].passed
    assert not idempotent["nonmonotonic_sends"].report_only
    assert not verdict(list(idempotent.values()))


def test_a_poll_going_backwards_is_nonmonotonic():
    events = clean_history() + [poll("c0", [(1, "p0-1")], t=3.0)]
    assert failed(events) == {"nonmonotonic_polls"}


def test_a_poll_after_a_seek_may_go_back():
    events = clean_history() + [
        {"type": "seek", "process": "c0", "topic": T, "partition": 0, "offset": 1, "t": 2.5},
        poll("c0", [(1, "p0-1")], t=3.0)]
    assert failed(events) == set()


def test_jumping_over_a_stored_record_is_a_poll_skip():
    records = [(i, f"p0-{i}") for i in range(5)]
    events = [e for e in clean_history() if e["type"] != "poll"]
    events += [poll("c0", records[:2], t=1.0), poll("c0", records[3:], t=2.0),
               poll("c1", records, t=2.0)]
    assert failed(events) == {"poll_skips"}


def test_an_acknowledged_write_no_consumer_got_is_unseen():
    records = [(i, f"p0-{i}") for i in range(5)]
    events = [e for e in clean_history() if e["type"] != "poll"] + [poll("c0", records[:4], t=1.0)]
    assert failed(events) == {"unseen"}


def test_a_long_gap_between_successful_writes_fails_unavailability():
    events = clean_history()
    events = replace(events, 5, send("p0", 4, 4, t=9.0))
    events = [e if e["type"] != "workload-end" else {"type": "workload-end", "t": 9.0} for e in events]
    events.append({"type": "fault-start", "id": 1, "kind": "kill", "desc": "SIGKILL leader", "t": 2.0})
    events.append({"type": "fault-end", "id": 1, "t": 4.0})
    results = {r.name: r for r in check_history(events, CheckOptions(unavailability_max_s=5.0))}
    assert not results["unavailability"].passed
    assert list(results["unavailability"].details.values()) == [pytest.approx(9.0 - 1.3)]
    assert "longest window without a successful write: 7.70 s" in results["unavailability"].summary


def test_unavailability_is_per_partition():
    # Partition 1 takes writes throughout; partition 0 none between t=1 and t=8.
    events = [{"type": "workload-start", "t": 0.0}, {"type": "workload-end", "t": 8.0},
              send("p0", 0, 0, t=1.0, partition=0), send("p0", 1, 0, t=8.0, partition=0)]
    events += [send("p1", i, i, t=0.5 * i, partition=1) for i in range(17)]
    windows = unavailability_windows(_History(events))
    assert windows[0] == (1.0, 8.0, (T, 0))


def test_failed_and_indeterminate_sends_are_not_required():
    events = clean_history() + [send("p0", 9, None, t=1.0, outcome="info"),
                                send("p0", 10, None, t=1.0, outcome="fail")]
    assert failed(events) == set()


def test_a_node_exiting_on_its_own_is_a_crash_but_not_during_a_disk_fault_on_it():
    crash = {"type": "node", "node": 2, "what": "exited", "detail": "code 1", "t": 1.5}
    assert failed(clean_history() + [crash]) == {"node_crashes"}
    disk = [{"type": "fault-start", "id": 1, "kind": "disk", "desc": "EIO", "nodes": [2], "t": 1.0},
            {"type": "fault-end", "id": 1, "t": 3.0}]
    assert failed(clean_history() + disk + [crash]) == set()
    killed = {"type": "node", "node": 2, "what": "exited", "detail": "code -9", "t": 1.5}
    assert failed(clean_history() + [killed]) == set()


def test_a_partition_never_written_is_unavailable_for_the_whole_run():
    events = [{"type": "workload-start", "t": 0.0}, {"type": "workload-end", "t": 8.0},
              send("p0", 0, None, t=7.0, partition=0, outcome="info"),
              *[send("p1", i, i, t=0.5 * i, partition=1) for i in range(17)]]
    assert unavailability_windows(_History(events))[0] == (0.0, 8.0, (T, 0))


def test_gaps_below_the_floor_are_reported_as_under_it_not_as_zero():
    from chaos.checker import UNAVAILABILITY_FLOOR_S, CheckOptions, check_unavailability
    from chaos.checker import _History as History

    events = [{"type": "run", "t": 0.0}]
    events += [{"type": "send", "process": "p", "seq": i, "topic": "t", "partition": 0, "key": "k",
                "value": f"v{i}", "t_start": i * 0.1, "t_end": i * 0.1 + 0.01, "outcome": "ok", "offset": i}
               for i in range(20)]
    result = check_unavailability(History(events), CheckOptions())
    assert result.passed and f"under {UNAVAILABILITY_FLOOR_S:.2f} s" in result.summary


def compacted_history(final_records: list, *, tombstone_last: bool = False) -> list[dict]:
    """p0 writes key k0 at offsets 0, 2, 4 and key k1 at 1, 3 (the last of k0 a tombstone if
    asked); the final read is final_records; replicas hold what the final read holds."""
    sends = []
    for i in range(5):
        e = send("p0", i, i, t=0.1 + 0.1 * i)
        e["key"] = f"k{i % 2}"
        if tombstone_last and i == 4:
            e.update(value="p0-4:tombstone", tombstone=True)
        sends.append(e)
    return [{"type": "workload-start", "t": 0.0}, *sends, {"type": "workload-end", "t": 1.0},
            final(final_records), *[replica(n, final_records) for n in (1, 2, 3)]]


COMPACTED = CheckOptions(compacted=frozenset({T}))


def test_a_compacted_topic_passes_with_only_the_latest_value_per_key():
    events = compacted_history([(3, "p0-3"), (4, "p0-4")])
    assert failed(events, COMPACTED) == set()
    # without the compacted option, the records the cleaner removed count as lost
    assert "lost_writes" in failed(events)


def test_compaction_fails_when_an_older_value_is_the_last_of_its_key():
    assert failed(compacted_history([(2, "p0-2"), (3, "p0-3")]), COMPACTED) == {"compaction"}
    assert failed(compacted_history([(3, "p0-3")]), COMPACTED) == {"compaction"}  # k0 gone


def test_a_tombstoned_key_may_vanish_but_not_come_back_older():
    assert failed(compacted_history([(3, "p0-3")], tombstone_last=True), COMPACTED) == set()
    assert failed(compacted_history([(3, "p0-3"), (4, "p0-4:tombstone")], tombstone_last=True),
                  COMPACTED) == set()
    assert failed(compacted_history([(2, "p0-2"), (3, "p0-3")], tombstone_last=True),
                  COMPACTED) == {"compaction"}


def txn_history(*, aborted_polled: bool = False, torn: bool = False, early: bool = False) -> list[dict]:
    """p0's transaction 1 (p0-0, p0-1 at offsets 0, 1) commits at t=0.5; transaction 2
    (p0-2, p0-3 at offsets 3, 4, after the commit marker at 2) is aborted; c0 polls the
    committed records (read_committed)."""
    committed = [(0, "p0-0"), (1, "p0-1")]
    txn = lambda n, outcome, values: {  # noqa: E731
        "type": "txn", "process": "p0", "txn": n, "outcome": outcome, "t_start": 0.0, "t_commit": 0.5 * n,
        "t_end": 0.5 * n + 0.1, "values": [[T, 0, v] for v in values]}
    polled = committed + ([(3, "p0-2")] if aborted_polled else [])
    return [
        {"type": "workload-start", "t": 0.0},
        send("p0", 0, 0, t=0.6), send("p0", 1, 1, t=0.6),
        send("p0", 2, None, t=1.1, outcome="fail"), send("p0", 3, None, t=1.1, outcome="fail"),
        txn(1, "commit", ["p0-0", "p0-1"]), txn(2, "abort", ["p0-2", "p0-3"]),
        {"type": "seek", "process": "c0", "topic": T, "partition": 0, "offset": 0, "t": 0.0},
        poll("c0", polled, t=0.4 if early else 1.5),
        {"type": "workload-end", "t": 2.0},
        final(committed[:1] if torn else committed),
    ]


def test_transaction_checks():
    assert not failed(txn_history()) - {"unavailability"}
    assert failed(txn_history(aborted_polled=True)) >= {"aborted_reads"}
    assert "torn_transactions" in failed(txn_history(torn=True))
    assert "precommitted_reads" in failed(txn_history(early=True))


def test_exactly_once_output():
    """A copier's output (copy:<value>): each committed input once, no aborted one."""
    base = txn_history()

    def with_copies(*values: str) -> list[dict]:
        return base + [{"type": "final-read", "topic": "out", "partition": 0, "high_watermark": len(values),
                        "records": [[i, f"copy:{v}"] for i, v in enumerate(values)]}]

    assert "exactly_once_output" not in failed(with_copies("p0-0", "p0-1"))
    assert "exactly_once_output" in failed(with_copies("p0-0"))  # one committed record not copied
    assert "exactly_once_output" in failed(with_copies("p0-0", "p0-1", "p0-1"))  # copied twice
    assert "exactly_once_output" in failed(with_copies("p0-0", "p0-1", "p0-2"))  # an aborted one copied


def test_exactly_once_output_counts_only_the_copied_topics():
    """A write to a topic the copier does not read (the simulator's liveness write to every
    partition, the output topic's included) is no input: it needs no copy."""
    liveness = {"type": "send", "process": "liveness", "seq": 0, "topic": "out", "partition": 0, "key": "live",
                "value": "liveness-out-0", "t_start": 1.9, "t_end": 2.0, "outcome": "ok", "offset": 2}
    copies = [[0, "copy:p0-0"], [1, "copy:p0-1"], [2, "liveness-out-0"]]
    history = txn_history() + [liveness, {"type": "final-read", "topic": "out", "partition": 0,
                                          "high_watermark": 3, "records": copies}]
    results = {r.name: r for r in check_history(history, CheckOptions())}
    assert results["exactly_once_output"].passed, results["exactly_once_output"]
    assert results["exactly_once_output"].summary == "2 committed records copied exactly once"


def _lso(node: int, pid: int, lso: int, hw: int, t: float) -> dict:
    return {"type": "lso", "t": t, "node": node, "pid": pid, "topic": T, "partition": 0, "lso": lso, "hw": hw}


def test_lso_monotonic():
    """A replica's LSO never goes back nor above its high watermark within one process; a
    restarted node (a new pid) starts a new series."""
    base = txn_history()
    rising = [_lso(1, 100, 0, 2, 0.1), _lso(1, 100, 2, 5, 0.6), _lso(2, 200, 1, 5, 0.6), _lso(2, 200, 5, 5, 1.1)]
    assert "lso_monotonic" not in failed(base + rising)
    assert "lso_monotonic" in failed(base + rising + [_lso(1, 100, 1, 5, 1.2)])  # backwards
    assert "lso_monotonic" in failed(base + rising + [_lso(2, 200, 6, 5, 1.2)])  # above the high watermark
    assert "lso_monotonic" not in failed(base + rising + [_lso(1, 101, 0, 0, 1.5)])  # restarted: replays


def _commit(process: str, offset: int, *, t_end: float, partition: int = 0) -> dict:
    return {"type": "commit", "process": process, "group": "g", "topic": T, "partition": partition,
            "offset": offset, "t_start": t_end - 0.01, "t_end": t_end}


def _fetched(process: str, offset: int, *, t_start: float, partition: int = 0) -> dict:
    return {"type": "offsets-fetched", "process": process, "group": "g", "generation": 2,
            "t_start": t_start, "offsets": [[T, partition, offset]], "t": t_start + 0.01}


def test_a_committed_offset_fetched_lower_after_its_commit_was_acknowledged_is_lost():
    events = clean_history() + [_commit("g0", 5, t_end=2.0), _fetched("g1", 3, t_start=2.5)]
    bad = {r.name: r for r in check_history(events)}["lost_commits"]
    assert not bad.passed and "commit of 5" in bad.examples[0], bad
    # Fetched at or above it, or fetched before the commit was acknowledged: not lost.
    for later in (_fetched("g1", 5, t_start=2.5), _fetched("g1", 3, t_start=1.995)):
        ok = {r.name: r for r in check_history(clean_history() + [_commit("g0", 5, t_end=2.0), later])}
        assert ok["lost_commits"].passed, ok["lost_commits"]


def test_committed_transactions_on_a_compacted_topic_are_judged_by_key():
    """A committed transaction whose record a later committed one superseded is not torn on
    a compacted topic (the cleaner removed that record); the compaction check judges it, by
    committed values only (an aborted send never owes a value)."""
    txn = lambda n, values: {  # noqa: E731
        "type": "txn", "process": "p0", "txn": n, "outcome": "commit", "t_start": 0.0, "t_commit": 0.5 * n,
        "t_end": 0.5 * n + 0.1, "values": [[T, 0, v] for v in values]}
    sends = [send("p0", 0, 0, t=0.6), send("p0", 1, 1, t=0.6), send("p0", 2, 3, t=1.1)]
    sends[2]["key"] = "k0"  # p0-2 supersedes p0-0
    events = [{"type": "workload-start", "t": 0.0}, *sends, txn(1, ["p0-0", "p0-1"]), txn(2, ["p0-2"]),
              {"type": "workload-end", "t": 2.0}, final([(1, "p0-1"), (3, "p0-2")])]
    assert not failed(events, COMPACTED) - {"unavailability"}
    assert "torn_transactions" in failed(events)  # not compacted: p0-0 missing tears transaction 1
    older = replace(events, len(events) - 1, final([(0, "p0-0"), (1, "p0-1")]))
    assert "compaction" in failed(older, COMPACTED)
