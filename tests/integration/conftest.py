from __future__ import annotations

import pytest

from tests.brokers import BrokerProcess


@pytest.fixture
def broker_factory(tmp_path):
    """Makes BrokerProcess objects; every process started is stopped (by PID) at teardown."""
    started: list[BrokerProcess] = []

    def make(name: str = "node", **kwargs) -> BrokerProcess:
        b = BrokerProcess(tmp_path / name / "data", **kwargs)
        started.append(b)
        return b

    yield make
    for b in started:
        try:
            b.stop()
        except Exception:
            b.kill()


@pytest.fixture
def broker(broker_factory) -> BrokerProcess:
    """One running single-node broker with default options."""
    return broker_factory().start()
