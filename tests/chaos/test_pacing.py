"""The harness's producer loops cannot stall on one slow partition (issue 14, "Also").

The "client stalls" of docs/chaos.md (both producer loops silent for 4-7 s while a leader
was paused or slow) were the loop's own doing: confluent-kafka's `poll(timeout)` returns as
soon as it has served one delivery callback, so a producer whose acknowledgements came
faster than its interval ran seconds ahead of its schedule, and its next `poll(lead)` then
waited for the acknowledgement of the one slow send, issuing nothing else. Here a real node
is paused while a producer that has been acknowledged fast for a few seconds keeps writing:
the loop must go on issuing sends at its rate through the pause, and never run ahead of it.
"""

from __future__ import annotations

import json
import signal
import threading
import time

import pytest

from chaos.history import History
from chaos.scenario import WorkloadSpec
from chaos.workload import CLIENT_STALL_S, client_logger, run_producer
from tests.brokers import BrokerProcess
from tests.kafka.live import wait_for

RATE_PER_S = 50.0
PAUSE_S = 2.0  # the fault's length (a duration, not a wait for a condition)
ACKED_BEFORE_PAUSE = 150  # 3 s of fast acknowledgements: the old loop was then ~2 s ahead


@pytest.mark.timeout(90)
def test_a_paused_leader_does_not_stop_the_producer_loop(tmp_path):
    from confluent_kafka.admin import AdminClient, NewTopic

    broker = BrokerProcess(tmp_path / "node" / "data").start()
    stop = threading.Event()
    thread = None
    try:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        admin.create_topics([NewTopic("pace", 2, 1)])["pace"].result(20)
        del admin
        history = History(tmp_path / "history.jsonl")
        spec = WorkloadSpec(rate_per_s=RATE_PER_S, request_timeout_s=20.0, delivery_timeout_s=30.0)
        thread = threading.Thread(target=run_producer, args=(
            "p0", broker.bootstrap, spec, [("pace", 2)], history, stop,
            client_logger(tmp_path / "clients.log")), daemon=True)
        thread.start()
        wait_for(lambda: history.acked >= ACKED_BEFORE_PAUSE, what="the first acknowledgements", timeout_s=30)
        paused_at = history.now()
        broker.signal(signal.SIGSTOP)
        try:
            time.sleep(PAUSE_S)
        finally:
            broker.signal(signal.SIGCONT)
        resumed_at = history.now()
        acked = history.acked
        wait_for(lambda: history.acked >= acked + 2 * ACKED_BEFORE_PAUSE, what="acknowledged after the pause",
                 timeout_s=40)
    finally:
        stop.set()
        if thread is not None:
            thread.join(40)
        broker.stop()
    assert thread is not None and not thread.is_alive()
    history.close()
    events = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    sends = sorted((e for e in events if e["type"] == "send"), key=lambda e: e["seq"])
    assert [e["outcome"] for e in sends] == ["ok"] * len(sends)
    starts = [e["t_start"] for e in sends]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    during = [t for t in starts if paused_at <= t <= resumed_at]
    # At 50/s the loop issues about 100 sends in the 2 s pause; the old loop issued none
    # (it waited in one poll for the paused node's answer).
    assert len(during) >= PAUSE_S * RATE_PER_S / 2, (len(during), max(gaps))
    assert max(gaps) < CLIENT_STALL_S / 2, max(gaps)
    assert not [e for e in events if e["type"] == "client-stall"]
    # Never ahead of the schedule: by each send, at most rate x elapsed (+1) were issued.
    for i, t in enumerate(starts):
        assert i <= (t - starts[0]) * RATE_PER_S + 1, (i, t - starts[0])


