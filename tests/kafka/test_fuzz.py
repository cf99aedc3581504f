"""The Kafka-wire fuzzer (fuzz.py), bounded: mutated requests of every advertised API and
version against a live node, which answers or closes each connection and never exits.
`python -m tests.kafka.fuzz --frames 1000000` is the long run."""

from __future__ import annotations

import random

import pytest

from tests.kafka import fuzz, live

pytestmark = pytest.mark.timeout(180)

FRAMES = 8_000
SECONDS = 45.0


def test_mutated_requests_of_every_api_and_version_never_stop_the_node(tmp_path):
    seed = random.randrange(2**31)
    broker, admin_port = live.start_node(tmp_path)
    try:
        report = fuzz.run(broker.port, admin_port, lambda: broker.proc.poll() is None,
                          frames=FRAMES, seconds=SECONDS, seed=seed)
        about = f"seed {seed}: {report.line()}\n{report.failures}"
        assert not report.failures and report.node_exits == 0, about
        assert report.frames == FRAMES or report.seconds >= SECONDS, about
        assert report.health_checks >= 2, about
        # Both outcomes happen: refused frames close their connection, the others are served.
        assert report.probes_answered > 0 and report.closed_by_node > 0, about
        assert set(report.mutations) == set(fuzz.MUTATIONS), about
        # A handler that failed is contained, but it is still a bug: none may have.
        errors = live.metric(admin_port, live.REQUEST_ERRORS_METRIC)
        assert errors == 0, f"{about}\n" + "\n".join(
            line for line in broker.log_text().splitlines() if " ERROR " in line)
    finally:
        assert broker.stop() == 0
