"""A disk that fails under a request still stops the node (fail-stop), even though request
handlers' own failures are now contained: the produce awaiting the failed group's proposal
is not answered as written, and the contained-errors path does not swallow the failure."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.brokers import free_port
from tests.kafka_wire import ConnectionClosed, KafkaWire, Record, build_batch

pytestmark = pytest.mark.timeout(90)

EXIT_WAIT_S = 30


def test_an_fsync_error_under_an_acks_all_produce_stops_the_node(broker_factory):
    admin_port = free_port()
    broker = broker_factory(extra_args=["--fault-injection", "--admin-listen", f"127.0.0.1:{admin_port}"])
    while admin_port == broker.port:
        broker.port = free_port()
    broker.start()
    with KafkaWire.connect(broker.port) as conn:
        assert conn.create_topics(["doomed"]) == {"doomed": 0}
        assert conn.produce("doomed", 0, build_batch([Record(b"k", b"before")])).error_code == 0
        request = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/faults", method="POST",
            data=json.dumps({"error": "EIO", "error_on": "fsync", "path": "partitions"}).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        try:
            answer = conn.produce("doomed", 0, build_batch([Record(b"k", b"after")]))
        except (ConnectionClosed, OSError):
            answer = None
        assert answer is None or answer.error_code != 0, answer  # never answered as written
    code = broker.proc.wait(timeout=EXIT_WAIT_S)
    log = broker.log_text()
    assert code != 0, log[-3000:]
    assert "stopped on an error: DiskError" in log, log[-3000:]
    assert "contained (answered" not in log
