"""begin_sync / run in a worker thread / end_sync while the caller keeps appending."""

from __future__ import annotations

import threading

from chronik_trio.storage import DiskFaults, FaultyDisk
from tests.storage.helpers import payload_for, raw_entries


class run_in_thread:
    """Runs ticket.run() in a thread; join() re-raises what it raised."""

    def __init__(self, ticket) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(ticket,))
        self._thread.start()

    def _run(self, ticket) -> None:
        try:
            ticket.run()
        except BaseException as e:  # handed to the test thread by join()
            self._error = e

    def join(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def test_nothing_to_sync_gives_no_ticket(open_log):
    log = open_log()
    assert log.begin_sync() is None
    log.append(raw_entries(1, 1))
    ticket = log.begin_sync()
    ticket.run()
    assert log.end_sync(ticket) == 1
    assert log.begin_sync() is None and log.sync() == 1


def test_appends_during_a_sync_become_durable_at_the_next_one(open_log):
    disk = FaultyDisk()
    log = open_log(disk=disk, segment_bytes_max=4000)
    index = 1
    for _ in range(30):
        log.append(raw_entries(index, 5))
        index += 5
        ticket = log.begin_sync()
        worker = run_in_thread(ticket)
        log.append(raw_entries(index, 7))  # on this thread while the fsync runs
        index += 7
        worker.join()
        assert log.end_sync(ticket) == index - 8
    assert log.sync() == index - 1
    log.close()
    disk.drop_unsynced()
    log = open_log(disk=disk, durable_index=index - 1, segment_bytes_max=4000)
    got = log.entries(1, index)
    assert [bytes(e.payload) for e in got] == [payload_for(i) for i in range(1, index)]


def test_slow_fsync_overlaps_appends_and_segment_rolls(open_log):
    disk = FaultyDisk(DiskFaults(fsync_latency_s=0.05))
    log = open_log(disk=disk, segment_bytes_max=500)
    log.append(raw_entries(1, 10))
    ticket = log.begin_sync()
    worker = run_in_thread(ticket)
    log.append(raw_entries(11, 40))  # rolls several segments meanwhile
    worker.join()
    assert log.end_sync(ticket) == 10
    assert log.sync() == 50


def test_truncation_during_a_sync_caps_the_durable_index(open_log):
    log = open_log(disk=FaultyDisk(DiskFaults(fsync_latency_s=0.02)))
    log.append(raw_entries(1, 10))
    ticket = log.begin_sync()
    worker = run_in_thread(ticket)
    log.truncate_suffix(6)
    log.append(raw_entries(6, 2, term=2))
    worker.join()
    assert log.end_sync(ticket) == 5
    assert log.sync() == 7


def test_segments_deleted_during_a_sync_stay_open_until_end_sync(open_log):
    disk = FaultyDisk(DiskFaults(fsync_latency_s=0.02))
    log = open_log(disk=disk, segment_bytes_max=400)
    log.append(raw_entries(1, 30))
    ticket = log.begin_sync()
    assert len(ticket.files) > 3
    log.compact_prefix(25)
    log.truncate_suffix(28)
    worker = run_in_thread(ticket)  # fsyncs files already unlinked: must not hit EBADF
    worker.join()
    assert log.end_sync(ticket) == 27
