"""Fetch sessions (KIP-227): a consumer of many partitions sends only what changed.

A full fetch (session epoch 0) names every partition and opens a session; the answer
carries its id. Each later fetch of that session is incremental: it carries the id and
the next epoch (1, 2, ...), names only the partitions added or changed (a new fetch offset,
byte limit or leader epoch) and lists the ones to drop in forgotten_topics_data; the
broker fetches every partition of the session and answers only those with something to
say (records, a moved high watermark, last stable offset or log start offset, an error,
a preferred read replica). Epoch -1 (FINAL) closes the session named, if any, and is
answered as a fetch without a session.

Legal moves, as the Java broker's FetchManager.newContext:

    session_id  epoch   -> result
    0           -1         sessionless full fetch
    0           0          full fetch; a new session if the cache admits one (else id 0)
    N != 0      -1         close session N; sessionless full fetch
    N != 0      0          close session N; full fetch that opens a new one
    N != 0      E > 0      incremental: FETCH_SESSION_ID_NOT_FOUND if N is unknown (or
                           belongs to another principal), INVALID_FETCH_SESSION_EPOCH if E
                           is not N's next epoch, FETCH_SESSION_TOPIC_ID_ERROR if N was
                           opened by topic name and this request names topics by id (or
                           the other way round)
    any other pair (epoch < -1, or session 0 with E > 0) -> INVALID_FETCH_SESSION_EPOCH

The cache is bounded (Kafka's max.incremental.fetch.session.cache.slots, default 1000).
When it is full a new session evicts, as Kafka's FetchSessionCache.tryEvict: first the
session unused for longest if it has been idle over EVICTION_MS; else the smallest session
(fewest partitions, then lowest id) that is older than EVICTION_MS, provided the new
session has more partitions than it. Otherwise the full fetch is answered with session id 0
and the client keeps sending full fetches. Followers do not fetch here (Raft replicates),
so there are no privileged sessions.

Pure: no I/O, no clock (callers pass now_ms, a monotonic millisecond count), no trio.
May import: the standard library, attrs, kio's error codes.
"""

from __future__ import annotations

import random
import typing

import attrs
from kio.schema.errors import ErrorCode

FINAL_EPOCH = -1
INITIAL_EPOCH = 0
NO_SESSION = 0
CACHE_SLOTS_DEFAULT = 1000  # Kafka's max.incremental.fetch.session.cache.slots default
# Kafka's min.incremental.fetch.session.eviction.ms: a session younger than this is only
# evicted once it has been idle this long, so a consumer polling steadily keeps its session.
EVICTION_MS = 120_000
SESSION_ID_MAX = 2**31 - 1
EPOCH_MAX = 2**31 - 1

TopicKey = typing.Union[str, typing.Any]  # the topic name (v7-v12) or its uuid.UUID (v13+)
PartitionKey = tuple  # (TopicKey, partition index)


class FetchSessionError(Exception):
    """A fetch whose session cannot be used; answered with error_code at the top level."""

    def __init__(self, error_code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.error_code = error_code


@attrs.define(slots=True)
class CachedPartition:
    """One partition of a session: what the client last asked, and what it was last told."""

    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1
    # the client's view, from the last answer that included this partition (-2: never told)
    high_watermark: int = -2
    last_stable_offset: int = -2
    log_start_offset: int = -2

    def update_request(self, fetch_offset: int, partition_max_bytes: int, current_leader_epoch: int,
                       last_fetched_epoch: int) -> None:
        self.fetch_offset = fetch_offset
        self.partition_max_bytes = partition_max_bytes
        self.current_leader_epoch = current_leader_epoch
        self.last_fetched_epoch = last_fetched_epoch

    def must_respond(self, *, has_records: bool, error: bool, high_watermark: int, last_stable_offset: int,
                     log_start_offset: int, redirect: bool) -> bool:
        """Whether an incremental answer includes this partition; remembers what it tells."""
        changed = (high_watermark != self.high_watermark or last_stable_offset != self.last_stable_offset
                   or log_start_offset != self.log_start_offset)
        self.high_watermark, self.last_stable_offset, self.log_start_offset = (
            high_watermark, last_stable_offset, log_start_offset)
        return has_records or error or changed or redirect


@attrs.frozen(slots=True)
class PartitionRequest:
    """A partition as one Fetch request names it."""

    key: PartitionKey
    fetch_offset: int
    partition_max_bytes: int
    current_leader_epoch: int = -1
    last_fetched_epoch: int = -1

    def cached(self) -> CachedPartition:
        return CachedPartition(self.fetch_offset, self.partition_max_bytes, self.current_leader_epoch,
                               self.last_fetched_epoch)


@attrs.define(slots=True, eq=False)
class FetchSession:
    id: int
    epoch: int  # the epoch the next incremental fetch must carry
    uses_topic_ids: bool
    principal: str
    created_ms: int
    last_used_ms: int
    # insertion ordered: a partition that returned records moves to the end, so under a
    # response byte limit every partition gets its turn (Kafka does the same)
    partitions: dict[PartitionKey, CachedPartition] = attrs.Factory(dict)


@attrs.define(slots=True)
class FetchSessionStats:
    """Totals since start, for /metrics."""

    full: int = 0  # fetches that named every partition (with or without a session)
    incremental: int = 0  # fetches served from a session
    created: int = 0
    closed: int = 0  # by the client (epoch -1 or 0 on an existing session)
    evicted: int = 0
    not_created: int = 0  # full fetches that asked for a session the full cache refused
    errors: int = 0  # FetchSessionErrors answered
    partitions_left_out: int = 0  # partitions an incremental answer did not repeat
    # (kept here beside the other Fetch totals; counted by the Fetch handler)
    parked: int = 0  # fetches that found less than min_bytes and waited for the high watermark
    record_bytes: int = 0  # bytes of record batches answered, over every fetch


@attrs.define(slots=True)
class FetchContext:
    """What one Fetch request reads, and how its answer is trimmed.

    partitions: (key, cached partition) in the order to read them. respond() is called once
    per partition read, with what the answer would say; it returns whether to include it."""

    session: FetchSession | None
    incremental: bool
    partitions: list[tuple[PartitionKey, CachedPartition]]
    stats: FetchSessionStats
    _with_records: list[PartitionKey] = attrs.Factory(list)

    @property
    def session_id(self) -> int:
        return self.session.id if self.session is not None else NO_SESSION

    def respond(self, key: PartitionKey, cached: CachedPartition, *, has_records: bool, error: bool,
                high_watermark: int, last_stable_offset: int, log_start_offset: int, redirect: bool) -> bool:
        must = cached.must_respond(has_records=has_records, error=error, high_watermark=high_watermark,
                                   last_stable_offset=last_stable_offset, log_start_offset=log_start_offset,
                                   redirect=redirect)
        if has_records:
            self._with_records.append(key)
        if not self.incremental:
            return True
        if not must:
            self.stats.partitions_left_out += 1
        return must

    def finish(self) -> None:
        """After the answer is built: partitions that returned records go to the back."""
        if self.session is None:
            return
        parts = self.session.partitions
        for key in self._with_records:
            cached = parts.pop(key, None)
            if cached is not None:
                parts[key] = cached
        self._with_records.clear()


def next_epoch(epoch: int) -> int:
    return 1 if epoch >= EPOCH_MAX else epoch + 1


class FetchSessionCache:
    """Every fetch session of one broker, bounded; see the module docstring for the rules."""

    def __init__(self, rng: random.Random, slots: int = CACHE_SLOTS_DEFAULT,
                 eviction_ms: int = EVICTION_MS) -> None:
        assert slots >= 0, slots
        self.slots = slots
        self.eviction_ms = eviction_ms
        self.rng = rng
        self.sessions: dict[int, FetchSession] = {}
        self.stats = FetchSessionStats()

    def __len__(self) -> int:
        return len(self.sessions)

    @property
    def partition_count(self) -> int:
        return sum(len(s.partitions) for s in self.sessions.values())

    def new_context(self, session_id: int, epoch: int, requested: typing.Sequence[PartitionRequest],
                    forgotten: typing.Iterable[PartitionKey], *, uses_topic_ids: bool, principal: str,
                    now_ms: int) -> FetchContext:
        """The context one Fetch request is served in; raises FetchSessionError."""
        try:
            if epoch in (FINAL_EPOCH, INITIAL_EPOCH):
                return self._full(session_id, epoch, requested, uses_topic_ids, principal, now_ms)
            return self._incremental(session_id, epoch, requested, forgotten, uses_topic_ids, principal, now_ms)
        except FetchSessionError:
            self.stats.errors += 1
            raise

    def _full(self, session_id, epoch, requested, uses_topic_ids, principal, now_ms) -> FetchContext:
        if session_id != NO_SESSION:
            session = self.sessions.get(session_id)
            if session is not None and session.principal == principal:
                del self.sessions[session_id]
                self.stats.closed += 1
        self.stats.full += 1
        partitions = {r.key: r.cached() for r in requested}  # a repeated partition: the last one counts
        session = None
        if epoch == INITIAL_EPOCH:
            session = self._create(partitions, uses_topic_ids, principal, now_ms)
        return FetchContext(session, False, list(partitions.items()), self.stats)

    def _incremental(self, session_id, epoch, requested, forgotten, uses_topic_ids, principal,
                     now_ms) -> FetchContext:
        if epoch < FINAL_EPOCH or session_id == NO_SESSION:
            raise FetchSessionError(ErrorCode.invalid_fetch_session_epoch,
                                    f"epoch {epoch} with session id {session_id}")
        session = self.sessions.get(session_id)
        if session is None or session.principal != principal:
            raise FetchSessionError(ErrorCode.fetch_session_id_not_found, f"no fetch session {session_id}")
        if epoch != session.epoch:
            raise FetchSessionError(ErrorCode.invalid_fetch_session_epoch,
                                    f"session {session_id} expects epoch {session.epoch}, got {epoch}")
        if uses_topic_ids != session.uses_topic_ids:
            raise FetchSessionError(ErrorCode.fetch_session_topic_id_error,
                                    f"session {session_id} was opened "
                                    f"{'with' if session.uses_topic_ids else 'without'} topic ids")
        parts = session.partitions
        for r in requested:
            cached = parts.get(r.key)
            if cached is None:
                parts[r.key] = r.cached()
            else:
                cached.update_request(r.fetch_offset, r.partition_max_bytes, r.current_leader_epoch,
                                      r.last_fetched_epoch)
        for key in forgotten:
            parts.pop(key, None)
        session.epoch = next_epoch(session.epoch)
        session.last_used_ms = now_ms
        self.stats.incremental += 1
        return FetchContext(session, True, list(parts.items()), self.stats)

    def _create(self, partitions: dict, uses_topic_ids: bool, principal: str, now_ms: int) -> FetchSession | None:
        if len(self.sessions) >= self.slots and not self._evict_for(len(partitions), now_ms):
            self.stats.not_created += 1
            return None
        session_id = self.rng.randint(1, SESSION_ID_MAX)
        while session_id in self.sessions:
            session_id = self.rng.randint(1, SESSION_ID_MAX)
        session = FetchSession(session_id, next_epoch(INITIAL_EPOCH), uses_topic_ids, principal, now_ms, now_ms,
                               partitions)
        self.sessions[session_id] = session
        self.stats.created += 1
        return session

    def _evict_for(self, size: int, now_ms: int) -> bool:
        """Make room for a session of size partitions; False when none may go."""
        if not self.sessions:
            return False
        stalest = min(self.sessions.values(), key=lambda s: (s.last_used_ms, s.id))
        if now_ms - stalest.last_used_ms > self.eviction_ms:
            return self._evict(stalest)
        old = [s for s in self.sessions.values() if now_ms - s.created_ms > self.eviction_ms]
        if not old:
            return False
        smallest = min(old, key=lambda s: (len(s.partitions), s.id))
        if size <= len(smallest.partitions):
            return False
        return self._evict(smallest)

    def _evict(self, session: FetchSession) -> bool:
        del self.sessions[session.id]
        self.stats.evicted += 1
        return True
