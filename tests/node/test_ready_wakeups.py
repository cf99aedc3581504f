"""A group with work to do is handled at once, not at the next tick (issue 20).

Virtual time stands still in these tests (pytest-trio's `mock_clock`: a MockClock at rate 0,
no autojump), so no tick ever fires and no heartbeat is ever sent. `LocalCluster.settle`
waits until every runtime waits for a wake-up with no Ready pass running; whatever is not
done then could only have been done by a tick. Elections are started by hand (`campaign`).
Real files and real fsyncs (worker threads), as in test_raft_runtime.py.
"""

import threading

import pytest
import trio
import trio.testing

from chronik_trio.storage.disk import DiskFaults, FaultyDisk
from tests.node.cluster import LocalCluster

pytestmark = pytest.mark.timeout(60)


def _applied(cluster, node_id, group="g"):
    return [d for _, d in cluster.machines[(node_id, group)].applied]


async def _start(cluster, nursery):
    for n in cluster.node_ids:
        await cluster.start(nursery, n, bootstrap=True)
    await cluster.settle()


async def _campaign(cluster, node_id, group="g"):
    raft_group = cluster.runtimes[node_id].groups[group]
    async with raft_group.lock:
        raft_group.node.campaign()
    raft_group.wake_runtime()
    await cluster.settle()


def _propose_soon(nursery, raft_group, data, results):
    async def propose():
        results.append(await raft_group.propose(data))
    nursery.start_soon(propose)


async def test_a_sole_voter_elects_itself_and_applies_its_first_entry_without_a_tick(
        tmp_path, nursery, mock_clock):
    # The vote for itself counts once its new term is durable (in advance()), and the empty
    # entry of its term commits once that is durable: each is a new Ready made by advance().
    cluster = LocalCluster(tmp_path, node_ids=(1,))
    await _start(cluster, nursery)
    group = cluster.runtimes[1].groups["g"]
    await _campaign(cluster, 1)
    assert group.is_leader
    raft_log = group.node.raft.log
    assert raft_log.applied == raft_log.committed == raft_log.last_index() > 0
    assert trio.current_time() == 0  # no tick could have fired


async def test_a_sole_voter_commits_and_applies_a_proposal_in_the_pass_of_its_fsync(
        tmp_path, nursery, mock_clock):
    # The pass appends and fsyncs; advance() then counts the leader's own durable append,
    # which is a quorum: the commit is a new Ready, handled by the same pass's second round
    # under the lock it holds (no fsync needed, no second pass: it took two before).
    cluster = LocalCluster(tmp_path, node_ids=(1,))
    await _start(cluster, nursery)
    await _campaign(cluster, 1)
    runtime = cluster.runtimes[1]
    passes, rounds, results = runtime.passes, runtime.fsync_rounds, []
    _propose_soon(nursery, runtime.groups["g"], b"one", results)
    await cluster.settle()
    assert _applied(cluster, 1) == [b"one"]
    assert len(results) == 1
    assert (runtime.passes - passes, runtime.fsync_rounds - rounds) == (1, 1)
    assert trio.current_time() == 0


async def test_committed_entries_beyond_one_ready_s_budget_are_applied_in_the_next_passes(
        tmp_path, nursery, mock_clock):
    # A Ready hands out committed entries up to max_committed_size_per_ready_bytes (at least
    # one); the rest are a new Ready right after advance(). A pass does two rounds: pass 1
    # appends, fsyncs and applies a; pass 2 (woken by pass 1) applies b, then c.
    cluster = LocalCluster(tmp_path, node_ids=(1,), max_committed_size_per_ready_bytes=1)
    await _start(cluster, nursery)
    await _campaign(cluster, 1)
    runtime = cluster.runtimes[1]
    group = runtime.groups["g"]
    passes = runtime.passes
    async with group.lock:
        waiter = group.propose_locked_many([b"a", b"b", b"c"])
    group.wake_runtime()
    await cluster.settle()
    assert _applied(cluster, 1) == [b"a", b"b", b"c"]
    assert waiter.event.is_set() and waiter.error is None
    assert runtime.passes - passes == 2  # append + fsync + a, then b + c
    assert trio.current_time() == 0


async def test_three_voters_commit_and_apply_everywhere_without_a_tick(tmp_path, nursery, mock_clock):
    # The leader commits when it steps a follower's append response (in the pass that
    # response woke), then tells the followers in that pass's messages.
    cluster = LocalCluster(tmp_path)
    await _start(cluster, nursery)
    await _campaign(cluster, 1)
    assert cluster.leader() == 1
    results = []
    _propose_soon(nursery, cluster.runtimes[1].groups["g"], b"x", results)
    await cluster.settle()
    assert len(results) == 1
    for n in cluster.node_ids:
        assert _applied(cluster, n) == [b"x"], n
    assert trio.current_time() == 0


async def test_a_follower_told_of_a_commit_before_its_own_fsync_applies_after_it(
        tmp_path, nursery, mock_clock):
    # The network holds back what the leader sends to node 3 while the leader commits with
    # node 2, then hands it over at once: 3 steps the append and the leader's commit of that
    # entry in one pass. The entry is committed but not yet durable here, so that Ready does
    # not apply it; once the pass made it durable, advance() leaves a Ready that the same
    # pass's second round applies.
    cluster = LocalCluster(tmp_path)
    await _start(cluster, nursery)
    await _campaign(cluster, 1)
    runtime = cluster.runtimes[3]
    deliver, held = runtime.deliver, []
    runtime.deliver = lambda group_id, message: held.append((group_id, message)) or True
    results = []
    _propose_soon(nursery, cluster.runtimes[1].groups["g"], b"x", results)
    await cluster.settle()
    assert results and _applied(cluster, 1) == [b"x"]
    assert [(m.entries[-1].index if m.entries else None, m.commit) for _, m in held] == [(2, 1), (None, 2)]
    runtime.deliver = deliver
    passes = runtime.passes
    for group_id, message in held:
        deliver(group_id, message)
    await cluster.settle()
    assert _applied(cluster, 3) == [b"x"]
    assert runtime.passes - passes == 1  # append + fsync, then apply, in one pass
    assert trio.current_time() == 0


class _FsyncGate:
    """A FaultyDisk whose fsyncs, once armed, wait in their worker thread until opened."""

    WAIT_S_MAX = 30  # a bound on the worker thread's wait, should the test fail first

    def __init__(self) -> None:
        self.armed = False
        self.entered = threading.Event()  # an armed fsync is waiting
        self.opened = threading.Event()
        self.disk = FaultyDisk(DiskFaults(fsync_latency_s=1e-9), sleep=self._sleep)

    def _sleep(self, seconds: float) -> None:
        if self.armed:
            self.entered.set()
            self.opened.wait(self.WAIT_S_MAX)


async def test_a_proposal_made_during_a_pass_s_fsync_is_committed_by_the_passes_after_it(
        tmp_path, nursery, mock_clock):
    # The pass holds the group's lock through its fsync round; a proposal arriving then
    # waits for the lock, gets it as the pass lets go (after applying the first in its
    # second round), and wakes the runtime: pass 2 writes, fsyncs and applies it.
    gate = _FsyncGate()
    cluster = LocalCluster(tmp_path, node_ids=(1,), disk=gate.disk)
    await _start(cluster, nursery)
    await _campaign(cluster, 1)
    runtime = cluster.runtimes[1]
    group = runtime.groups["g"]
    passes, rounds, results = runtime.passes, runtime.fsync_rounds, []
    gate.armed = True
    _propose_soon(nursery, group, b"first", results)
    await trio.to_thread.run_sync(gate.entered.wait, gate.WAIT_S_MAX)
    assert cluster.in_pass[1] and group.lock.locked()
    gate.armed = False
    _propose_soon(nursery, group, b"second", results)
    await trio.testing.wait_all_tasks_blocked()
    assert group.lock.statistics().tasks_waiting == 1  # the second proposal
    gate.opened.set()
    await cluster.settle()
    assert _applied(cluster, 1) == [b"first", b"second"]
    assert len(results) == 2
    assert (runtime.passes - passes, runtime.fsync_rounds - rounds) == (2, 2)
    assert trio.current_time() == 0


class _StepCounter(trio.abc.Instrument):
    """Scheduler steps per task name (each is a trip through trio's run loop)."""

    def __init__(self) -> None:
        self.steps: dict[str, int] = {}

    def before_task_step(self, task) -> None:
        self.steps[task.name] = self.steps.get(task.name, 0) + 1


async def test_a_sole_voter_s_pass_takes_the_runtime_task_two_scheduler_steps(tmp_path, nursery, mock_clock):
    # A pass: the runtime's task wakes (1), takes the group's lock (free: no checkpoint) and
    # hands the fsync round to its thread; the round's end wakes it (1), and it applies and
    # goes back to waiting. Taking the free lock with trio.Lock's checkpoint was one more
    # step per pass and group.
    cluster = LocalCluster(tmp_path, node_ids=(1,))
    await _start(cluster, nursery)
    await _campaign(cluster, 1)
    runtime = cluster.runtimes[1]
    passes, results = runtime.passes, []
    counter = _StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        for i in range(5):
            _propose_soon(nursery, runtime.groups["g"], b"r%d" % i, results)
            await cluster.settle()
    finally:
        trio.lowlevel.remove_instrument(counter)
    assert len(results) == 5 and runtime.passes - passes == 5
    (runtime_steps,) = [n for name, n in counter.steps.items() if name.startswith("tests.node.cluster.")]
    assert runtime_steps == 2 * 5, counter.steps
