"""Fetch sessions (KIP-227), the pure rules of kafka/fetch_sessions.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kio.schema.errors import ErrorCode

from chronik_trio.kafka.fetch_sessions import (EPOCH_MAX, EVICTION_MS, FetchSessionCache, FetchSessionError,
                                               PartitionRequest, next_epoch)

ME = "User:ANONYMOUS"


def req(topic: str, index: int, offset: int = 0, max_bytes: int = 1 << 20) -> PartitionRequest:
    return PartitionRequest((topic, index), offset, max_bytes)


def cache(slots: int = 10) -> FetchSessionCache:
    return FetchSessionCache(random.Random(7), slots)


def ctx(c, session_id, epoch, requested=(), forgotten=(), *, now_ms=0, by_id=False, principal=ME):
    return c.new_context(session_id, epoch, list(requested), list(forgotten), uses_topic_ids=by_id,
                         principal=principal, now_ms=now_ms)


def answer(context, news: dict | None = None) -> list:
    """Answer every partition read: hw 10 unless news says otherwise; news[key] = (records?, hw)."""
    news = news or {}
    kept = []
    for key, cached in context.partitions:
        has_records, hw = news.get(key, (False, 10))
        if context.respond(key, cached, has_records=has_records, error=False, high_watermark=hw,
                           last_stable_offset=hw, log_start_offset=0, redirect=False):
            kept.append(key)
    context.finish()
    return kept


def test_a_full_fetch_at_epoch_0_opens_a_session_and_one_at_epoch_minus_1_does_not():
    c = cache()
    opened = ctx(c, 0, 0, [req("t", 0), req("t", 1)])
    assert opened.session_id != 0 and not opened.incremental
    assert answer(opened) == [("t", 0), ("t", 1)]
    sessionless = ctx(c, 0, -1, [req("t", 0)])
    assert sessionless.session_id == 0 and len(c) == 1


def test_an_incremental_fetch_reads_the_session_and_answers_only_what_changed():
    c = cache()
    sid = ctx(c, 0, 0, [req("t", 0), req("t", 1), req("t", 2)]).session_id
    answer(ctx(c, sid, 1))  # the first answer tells every partition's hw
    third = ctx(c, sid, 2, [req("t", 1, offset=5)])
    assert third.incremental and [k for k, _ in third.partitions] == [("t", 0), ("t", 1), ("t", 2)]
    assert c.sessions[sid].partitions[("t", 1)].fetch_offset == 5
    assert answer(third, {("t", 2): (True, 10), ("t", 0): (False, 11)}) == [("t", 0), ("t", 2)]
    assert c.stats.partitions_left_out >= 1


def test_a_partition_that_returned_records_is_read_last_next_time():
    c = cache()
    sid = ctx(c, 0, 0, [req("t", 0), req("t", 1), req("t", 2)]).session_id
    answer(ctx(c, sid, 1), {("t", 0): (True, 10)})
    assert [k for k, _ in ctx(c, sid, 2).partitions] == [("t", 1), ("t", 2), ("t", 0)]


def test_forgotten_partitions_leave_the_session_and_new_ones_join_it():
    c = cache()
    sid = ctx(c, 0, 0, [req("t", 0), req("t", 1)]).session_id
    second = ctx(c, sid, 1, [req("u", 0)], [("t", 0), ("nope", 9)])
    assert [k for k, _ in second.partitions] == [("t", 1), ("u", 0)]


@pytest.mark.parametrize("session_id, epoch, code", [
    (12345, 1, ErrorCode.fetch_session_id_not_found),  # unknown id
    ("sid", 2, ErrorCode.invalid_fetch_session_epoch),  # skipped an epoch
    ("sid", 7, ErrorCode.invalid_fetch_session_epoch),
    (0, 3, ErrorCode.invalid_fetch_session_epoch),  # an epoch without a session
    ("sid", -2, ErrorCode.invalid_fetch_session_epoch),
])
def test_bad_session_requests_get_kafkas_codes(session_id, epoch, code):
    c = cache()
    sid = ctx(c, 0, 0, [req("t", 0)]).session_id
    with pytest.raises(FetchSessionError) as raised:
        ctx(c, sid if session_id == "sid" else session_id, epoch)
    assert raised.value.error_code == code
    assert c.stats.errors == 1
    assert ctx(c, sid, 1).incremental  # the session survives a bad request


def test_a_repeated_epoch_is_refused_so_two_fetches_cannot_share_one():
    c = cache()
    sid = ctx(c, 0, 0, [req("t", 0)]).session_id
    ctx(c, sid, 1)
    with pytest.raises(FetchSessionError) as raised:
        ctx(c, sid, 1)
    assert raised.value.error_code == ErrorCode.invalid_fetch_session_epoch


def test_switching_between_topic_names_and_ids_is_a_topic_id_error():
    c = cache()
    sid = ctx(c, 0, 0, [req("t", 0)]).session_id
    with pytest.raises(FetchSessionError) as raised:
        ctx(c, sid, 1, by_id=True)
    assert raised.value.error_code == ErrorCode.fetch_session_topic_id_error


def test_another_principal_cannot_use_or_close_a_session():
    c = cache()
    sid = ctx(c, 0, 0, [req("t", 0)]).session_id
    with pytest.raises(FetchSessionError) as raised:
        ctx(c, sid, 1, principal="User:mallory")
    assert raised.value.error_code == ErrorCode.fetch_session_id_not_found
    ctx(c, sid, -1, principal="User:mallory")
    assert sid in c.sessions


def test_epoch_minus_1_closes_the_session_and_0_replaces_it():
    c = cache()
    sid = ctx(c, 0, 0, [req("t", 0)]).session_id
    assert ctx(c, sid, -1, [req("t", 0)]).session_id == 0 and len(c) == 0
    sid = ctx(c, 0, 0, [req("t", 0)]).session_id
    new = ctx(c, sid, 0, [req("t", 0)]).session_id
    assert new not in (0, sid) and list(c.sessions) == [new] and c.stats.closed == 2


def test_the_epoch_wraps_to_1():
    assert next_epoch(EPOCH_MAX) == 1 and next_epoch(0) == 1


def test_a_full_cache_evicts_a_stale_session_first():
    c = cache(slots=2)
    a = ctx(c, 0, 0, [req("t", 0)] * 1, now_ms=0).session_id
    b = ctx(c, 0, 0, [req("t", i) for i in range(5)], now_ms=0).session_id
    ctx(c, b, 1, now_ms=EVICTION_MS)  # b used, a idle
    new = ctx(c, 0, 0, [req("u", 0)], now_ms=EVICTION_MS + 1).session_id
    assert new and a not in c.sessions and b in c.sessions and c.stats.evicted == 1


def test_a_full_cache_evicts_a_smaller_old_session_only_for_a_bigger_one():
    c = cache(slots=2)
    small = ctx(c, 0, 0, [req("t", i) for i in range(2)], now_ms=0).session_id
    big = ctx(c, 0, 0, [req("t", i) for i in range(4)], now_ms=0).session_id
    now = EVICTION_MS + 10
    for sid in (small, big):  # neither is stale: both were used just now
        ctx(c, sid, 1, now_ms=now)
    assert ctx(c, 0, 0, [req("u", i) for i in range(2)], now_ms=now).session_id == 0  # not bigger
    assert c.stats.not_created == 1
    third = ctx(c, 0, 0, [req("u", i) for i in range(3)], now_ms=now).session_id
    assert third and small not in c.sessions and big in c.sessions


def test_young_sessions_are_never_evicted():
    c = cache(slots=1)
    sid = ctx(c, 0, 0, [req("t", 0)], now_ms=0).session_id
    assert ctx(c, 0, 0, [req("t", i) for i in range(100)], now_ms=EVICTION_MS - 1).session_id == 0
    assert list(c.sessions) == [sid]


def test_zero_slots_means_no_sessions():
    c = cache(slots=0)
    assert ctx(c, 0, 0, [req("t", 0)]).session_id == 0 and len(c) == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(-2, 4), st.lists(st.integers(0, 5), max_size=4),
                          st.lists(st.integers(0, 5), max_size=3), st.integers(0, 50_000)), max_size=40))
def test_any_sequence_keeps_the_bound_and_the_session_contents_model(ops):
    """Whatever the requests, the cache stays within its slots, a refused request changes no
    session, and a session holds exactly the partitions added and not forgotten since it opened."""
    c = cache(slots=2)
    model: dict[int, set] = {}  # session id -> partitions
    ids: list[int] = [0]
    now = 0
    for pick, epoch, added, forgotten, step in ops:
        now += step
        sid = ids[pick % len(ids)]
        expected_epoch = c.sessions[sid].epoch if sid in c.sessions else None
        before = {k: set(v.partitions) for k, v in c.sessions.items()}
        try:
            context = ctx(c, sid, epoch, [req("t", i) for i in added], [("t", i) for i in forgotten], now_ms=now)
        except FetchSessionError:
            assert {k: set(v.partitions) for k, v in c.sessions.items()} == before
            assert epoch not in (-1, 0)
            continue
        assert epoch in (-1, 0) or epoch == expected_epoch
        if epoch in (-1, 0):
            model.pop(sid, None)
            if context.session_id:
                model[context.session_id] = set(("t", i) for i in added)
                ids.append(context.session_id)
        else:
            model[sid] = (model[sid] | {("t", i) for i in added}) - {("t", i) for i in forgotten}
            assert {k for k, _ in context.partitions} == model[sid]
        answer(context)
        for gone in set(model) - set(c.sessions):
            del model[gone]  # evicted
        assert len(c) <= 2
        assert {k: set(v.partitions) for k, v in c.sessions.items()} == model
