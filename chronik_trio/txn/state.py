"""The state machine of one transactional id, as Kafka's transaction coordinator runs it.

TxnMetadata is what `__transaction_state` keeps per transactional id (its latest record).
Every change goes through `_to()`, which checks the transition table VALID_PREVIOUS (Kafka's
TransactionState.validPreviousStates), so no decision below can make a transition the table
does not allow. The decisions are pure functions of the current metadata, the request and
the time; each answers a Decision: the error code for the client, the metadata to write
(None: nothing to write), the (producer id, epoch) to answer, and, for a prepared
transaction, the markers the coordinator must write before it completes it.

Epochs fence: a request whose producer epoch is not the current one is refused
(PRODUCER_FENCED); InitProducerId bumps the epoch (fencing the previous holder) and, for a
transaction still Ongoing, first aborts it with a bumped epoch (PrepareEpochFence ->
PrepareAbort), answering CONCURRENT_TRANSACTIONS until that abort is complete. Under
transaction version 2 (KIP-890 part 2) every EndTxn bumps the epoch too: its markers carry
the new epoch, so a late produce of the finished transaction (epoch e) is fenced.
"""

from __future__ import annotations

import enum

import attrs
from kio.schema.errors import ErrorCode

NO_PRODUCER_ID = -1
NO_PRODUCER_EPOCH = -1
EPOCH_MAX = 32767  # Short.MAX_VALUE: an epoch at the limit gets a new producer id instead


class TxnState(enum.Enum):
    EMPTY = "Empty"
    ONGOING = "Ongoing"
    PREPARE_COMMIT = "PrepareCommit"
    PREPARE_ABORT = "PrepareAbort"
    COMPLETE_COMMIT = "CompleteCommit"
    COMPLETE_ABORT = "CompleteAbort"
    DEAD = "Dead"
    PREPARE_EPOCH_FENCE = "PrepareEpochFence"


S = TxnState
# state -> the states it may be entered from (Kafka 4.0's table; PrepareAbort from Empty and
# the Complete states is transaction version 2's abort of an empty transaction).
VALID_PREVIOUS: dict[TxnState, frozenset[TxnState]] = {
    S.EMPTY: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.ONGOING: frozenset({S.ONGOING, S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.PREPARE_COMMIT: frozenset({S.ONGOING}),
    S.PREPARE_ABORT: frozenset({S.ONGOING, S.PREPARE_EPOCH_FENCE, S.EMPTY, S.COMPLETE_COMMIT,
                                S.COMPLETE_ABORT}),
    S.COMPLETE_COMMIT: frozenset({S.PREPARE_COMMIT}),
    S.COMPLETE_ABORT: frozenset({S.PREPARE_ABORT}),
    S.DEAD: frozenset({S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}),
    S.PREPARE_EPOCH_FENCE: frozenset({S.ONGOING}),
}
PREPARED = frozenset({S.PREPARE_COMMIT, S.PREPARE_ABORT})
COMPLETED = frozenset({S.COMPLETE_COMMIT, S.COMPLETE_ABORT})
IN_FLUX = PREPARED | {S.PREPARE_EPOCH_FENCE}  # a client must wait (CONCURRENT_TRANSACTIONS)


def is_valid_transition(old: TxnState, new: TxnState) -> bool:
    return old in VALID_PREVIOUS[new]


class IllegalTransition(AssertionError):
    """A decision tried a transition the table forbids: a bug, never a client's doing."""


@attrs.frozen(slots=True)
class TxnMetadata:
    transactional_id: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    state: TxnState
    partitions: frozenset[tuple[str, int]] = frozenset()
    start_ms: int = -1  # when the last transaction began (its timeout runs from here); -1: none since init
    update_ms: int = -1  # the last change (transactional.id.expiration.ms runs from here)
    # The (id, epoch) a successful InitProducerId or TV2 EndTxn replaced: a retry of that
    # call carries it and is answered with the current pair instead of being fenced.
    last_producer_id: int = NO_PRODUCER_ID
    last_producer_epoch: int = NO_PRODUCER_EPOCH
    tv2: bool = False  # this transaction follows transaction version 2 (EndTxn bumps the epoch)
    # TV2 epoch overflow: a prepared transaction whose EndTxn found the epoch exhausted ends
    # with epoch EPOCH_MAX on producer_id, then the id moves here with epoch 0 (KIP-890).
    next_producer_id: int = NO_PRODUCER_ID

    def to_json(self) -> dict:
        return {"pid": self.producer_id, "epoch": self.producer_epoch, "timeout_ms": self.timeout_ms,
                "state": self.state.value, "partitions": sorted([t, p] for t, p in self.partitions),
                "start_ms": self.start_ms, "update_ms": self.update_ms, "last_pid": self.last_producer_id,
                "last_epoch": self.last_producer_epoch, "tv2": self.tv2, "next_pid": self.next_producer_id}

    @classmethod
    def from_json(cls, transactional_id: str, d: dict) -> "TxnMetadata":
        return cls(transactional_id, int(d["pid"]), int(d["epoch"]), int(d["timeout_ms"]), TxnState(d["state"]),
                   frozenset((str(t), int(p)) for t, p in d.get("partitions", ())), int(d.get("start_ms", -1)),
                   int(d.get("update_ms", -1)), int(d.get("last_pid", NO_PRODUCER_ID)),
                   int(d.get("last_epoch", NO_PRODUCER_EPOCH)), bool(d.get("tv2", False)),
                   int(d.get("next_pid", NO_PRODUCER_ID)))


def _to(current: TxnMetadata, state: TxnState, now_ms: int, **changes) -> TxnMetadata:
    if not is_valid_transition(current.state, state):
        raise IllegalTransition(f"{current.transactional_id}: {current.state.value} -> {state.value}")
    return attrs.evolve(current, state=state, update_ms=now_ms, **changes)


@attrs.frozen(slots=True)
class Marker:
    """Markers to write: one control batch per partition, for (producer id, epoch)."""
    producer_id: int
    producer_epoch: int
    commit: bool
    partitions: frozenset[tuple[str, int]]


@attrs.frozen(slots=True)
class Decision:
    error: ErrorCode
    write: TxnMetadata | None = None  # the record to write (committed before anything follows)
    producer_id: int = NO_PRODUCER_ID  # the answer's (producer id, epoch)
    producer_epoch: int = NO_PRODUCER_EPOCH
    markers: Marker | None = None  # after `write`: write these, then write complete(write)


def refuse(error: ErrorCode) -> Decision:
    return Decision(error)


def _answer(meta: TxnMetadata, error: ErrorCode = ErrorCode.none, *, write: bool = True,
            markers: Marker | None = None) -> Decision:
    return Decision(error, meta if write else None, meta.producer_id, meta.producer_epoch, markers)


def needs_new_producer_id(current: TxnMetadata | None) -> bool:
    """Whether init_producer_id will need a fresh producer id (the caller allocates it)."""
    return current is None or current.state == S.DEAD or current.producer_epoch >= EPOCH_MAX - 1


def end_txn_needs_new_producer_id(current: TxnMetadata | None, tv2: bool) -> bool:
    """Whether end_txn may need a fresh producer id (TV2 with the epoch exhausted: the
    caller allocates one and passes it)."""
    return tv2 and current is not None and current.producer_epoch >= EPOCH_MAX - 1


def _rotating(current: TxnMetadata, producer_id: int, producer_epoch: int) -> bool:
    """A request of the producer id a TV2 EndTxn just handed out (epoch overflow) while that
    transaction's markers are still being written: it must wait, not be fenced."""
    return (current.state in IN_FLUX and current.next_producer_id != NO_PRODUCER_ID
            and (producer_id, producer_epoch) == (current.next_producer_id, 0))


def check_timeout(timeout_ms: int, max_timeout_ms: int) -> ErrorCode:
    return ErrorCode.none if 0 < timeout_ms <= max_timeout_ms else ErrorCode.invalid_transaction_timeout


def init_producer_id(current: TxnMetadata | None, transactional_id: str, timeout_ms: int, *,
                     expected_producer_id: int, expected_epoch: int, now_ms: int, new_producer_id: int,
                     max_timeout_ms: int) -> Decision:
    """InitProducerId with a transactional id. new_producer_id: a fresh id, used when
    needs_new_producer_id(current) (first use, or the epoch is exhausted)."""
    error = check_timeout(timeout_ms, max_timeout_ms)
    if error != ErrorCode.none:
        return refuse(error)
    if current is None or current.state == S.DEAD:
        assert new_producer_id >= 0, new_producer_id
        return _answer(TxnMetadata(transactional_id, new_producer_id, 0, timeout_ms, S.EMPTY, update_ms=now_ms))
    if current.state in IN_FLUX:
        return refuse(ErrorCode.concurrent_transactions)
    if expected_producer_id != NO_PRODUCER_ID:
        if (current.state == S.EMPTY and (expected_producer_id, expected_epoch)
                == (current.last_producer_id, current.last_producer_epoch)):
            return _answer(current, write=False)  # a retry of the InitProducerId that bumped it
        if (expected_producer_id, expected_epoch) != (current.producer_id, current.producer_epoch):
            return refuse(ErrorCode.producer_fenced)
    if current.state == S.ONGOING:
        # The previous holder's transaction is aborted (with an epoch that fences it); the
        # client retries until the abort is complete.
        fenced = fence_and_abort(current, now_ms)
        return attrs.evolve(fenced, error=ErrorCode.concurrent_transactions)
    last = ((current.producer_id, current.producer_epoch) if expected_producer_id != NO_PRODUCER_ID
            else (NO_PRODUCER_ID, NO_PRODUCER_EPOCH))
    if current.producer_epoch >= EPOCH_MAX - 1:
        assert new_producer_id >= 0, new_producer_id
        pid, epoch = new_producer_id, 0
    else:
        pid, epoch = current.producer_id, current.producer_epoch + 1
    return _answer(_to(current, S.EMPTY, now_ms, producer_id=pid, producer_epoch=epoch, timeout_ms=timeout_ms,
                       partitions=frozenset(), start_ms=-1, last_producer_id=last[0], last_producer_epoch=last[1],
                       tv2=False))


def _check_producer(current: TxnMetadata | None, producer_id: int, producer_epoch: int) -> ErrorCode:
    if current is None or current.state == S.DEAD or current.producer_id != producer_id:
        return ErrorCode.invalid_producer_id_mapping
    if current.producer_epoch != producer_epoch:
        return ErrorCode.producer_fenced
    return ErrorCode.none


def add_partitions(current: TxnMetadata | None, producer_id: int, producer_epoch: int,
                   partitions: frozenset[tuple[str, int]], now_ms: int, *, tv2: bool = False) -> Decision:
    """AddPartitionsToTxn / AddOffsetsToTxn (the group's offsets partition) / the implicit
    add of a TV2 produce."""
    if current is not None and _rotating(current, producer_id, producer_epoch):
        return refuse(ErrorCode.concurrent_transactions)
    error = _check_producer(current, producer_id, producer_epoch)
    if error != ErrorCode.none:
        return refuse(error)
    assert current is not None
    if current.state in IN_FLUX:
        return refuse(ErrorCode.concurrent_transactions)
    if current.state == S.ONGOING and partitions <= current.partitions:
        return _answer(current, write=False)
    start = current.start_ms if current.state == S.ONGOING else now_ms
    return _answer(_to(current, S.ONGOING, now_ms, partitions=current.partitions | partitions, start_ms=start,
                       tv2=current.tv2 if current.state == S.ONGOING else tv2))


def verify_partition(current: TxnMetadata | None, producer_id: int, producer_epoch: int,
                     partition: tuple[str, int]) -> ErrorCode:
    """KIP-890 part 1 (AddPartitionsToTxn v4+ verifyOnly): is the partition in the ongoing
    transaction of this producer?"""
    if current is not None and _rotating(current, producer_id, producer_epoch):
        return ErrorCode.concurrent_transactions
    error = _check_producer(current, producer_id, producer_epoch)
    if error != ErrorCode.none:
        return error
    assert current is not None
    if current.state != S.ONGOING or partition not in current.partitions:
        return ErrorCode.invalid_txn_state
    return ErrorCode.none


def fence_and_abort(current: TxnMetadata, now_ms: int) -> Decision:
    """Abort an Ongoing transaction with a bumped epoch (a timeout, or a new holder of the
    transactional id): Ongoing -> PrepareEpochFence -> PrepareAbort. The markers carry the
    bumped epoch, which fences the old producer on every partition of the transaction."""
    fencing = _to(current, S.PREPARE_EPOCH_FENCE, now_ms)
    epoch = min(current.producer_epoch + 1, EPOCH_MAX - 1) if current.producer_epoch < EPOCH_MAX - 1 \
        else current.producer_epoch
    prepared = _to(fencing, S.PREPARE_ABORT, now_ms, producer_epoch=epoch, last_producer_id=NO_PRODUCER_ID,
                   last_producer_epoch=NO_PRODUCER_EPOCH)
    return _answer(prepared, markers=Marker(prepared.producer_id, epoch, False, prepared.partitions))


def end_txn(current: TxnMetadata | None, producer_id: int, producer_epoch: int, commit: bool,
            now_ms: int, *, tv2: bool = False, new_producer_id: int = NO_PRODUCER_ID) -> Decision:
    """EndTxn. Under TV2 (tv2: the coordinator and the request are version 2) the epoch is
    bumped at prepare time and answered; a retry carries the epoch before the bump. At an
    exhausted epoch (EPOCH_MAX - 1) the markers carry EPOCH_MAX and the answer is
    new_producer_id with epoch 0 (end_txn_needs_new_producer_id says when to allocate it)."""
    if current is None or current.state == S.DEAD:
        return refuse(ErrorCode.invalid_producer_id_mapping)
    if _rotating(current, producer_id, producer_epoch):
        return refuse(ErrorCode.concurrent_transactions)
    retry = tv2 and (producer_id, producer_epoch) == (current.last_producer_id, current.last_producer_epoch) \
        and current.state in PREPARED | COMPLETED
    if not retry:
        error = _check_producer(current, producer_id, producer_epoch)
        if error != ErrorCode.none:
            return refuse(error)
    wanted = S.PREPARE_COMMIT if commit else S.PREPARE_ABORT
    done = S.COMPLETE_COMMIT if commit else S.COMPLETE_ABORT
    if current.state == S.ONGOING:
        return _prepare(current, wanted, now_ms, tv2=tv2, new_producer_id=new_producer_id)
    if current.state in PREPARED:
        # The markers of a decided transaction are being written (EndTxn is answered once the
        # prepare is durable): a retry of that EndTxn, or the next transaction's, waits.
        # Once complete, a request against the decided outcome is refused below.
        return refuse(ErrorCode.concurrent_transactions)
    if current.state == done and (retry or not tv2):
        return _answer(current, write=False)  # a retry of the EndTxn that completed it
    if tv2 and not commit and not retry and current.state in COMPLETED | {S.EMPTY}:
        # aborting an empty transaction
        return _prepare(current, S.PREPARE_ABORT, now_ms, tv2=True, new_producer_id=new_producer_id)
    return refuse(ErrorCode.invalid_txn_state)


def _prepare(current: TxnMetadata, state: TxnState, now_ms: int, *, tv2: bool,
             new_producer_id: int = NO_PRODUCER_ID) -> Decision:
    pid, epoch, last = current.producer_id, current.producer_epoch, (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
    next_pid = NO_PRODUCER_ID
    if tv2:
        if epoch >= EPOCH_MAX:
            return refuse(ErrorCode.producer_fenced)  # cannot be bumped: the client must InitProducerId again
        if epoch >= EPOCH_MAX - 1:
            if new_producer_id < 0:
                return refuse(ErrorCode.producer_fenced)
            next_pid = new_producer_id  # overflow: the markers carry EPOCH_MAX, the answer a new id
        last, epoch = (pid, epoch), epoch + 1
    prepared = _to(current, state, now_ms, producer_epoch=epoch, last_producer_id=last[0],
                   last_producer_epoch=last[1], tv2=tv2, next_producer_id=next_pid)
    markers = Marker(pid, epoch, state == S.PREPARE_COMMIT, prepared.partitions)
    if next_pid != NO_PRODUCER_ID:
        return Decision(ErrorCode.none, prepared, next_pid, 0, markers)
    return _answer(prepared, markers=markers)


def complete(current: TxnMetadata, now_ms: int) -> TxnMetadata:
    """After every marker of a prepared transaction is written."""
    state = S.COMPLETE_COMMIT if current.state == S.PREPARE_COMMIT else S.COMPLETE_ABORT
    if current.next_producer_id != NO_PRODUCER_ID:  # TV2 epoch overflow: the new id takes over
        return _to(current, state, now_ms, partitions=frozenset(), producer_id=current.next_producer_id,
                   producer_epoch=0, next_producer_id=NO_PRODUCER_ID)
    return _to(current, state, now_ms, partitions=frozenset())


def timed_out(meta: TxnMetadata, now_ms: int) -> bool:
    return meta.state == S.ONGOING and meta.start_ms >= 0 and now_ms >= meta.start_ms + meta.timeout_ms


def expired(meta: TxnMetadata, now_ms: int, expiration_ms: int) -> bool:
    """transactional.id.expiration.ms: an idle id (no transaction in flight) is forgotten."""
    return meta.state in COMPLETED | {S.EMPTY} and now_ms >= meta.update_ms + expiration_ms


def dead(current: TxnMetadata, now_ms: int) -> TxnMetadata:
    return _to(current, S.DEAD, now_ms)
