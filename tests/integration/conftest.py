from __future__ import annotations

import pytest

from nodeharness import NodeGroup
from tests.brokers import BrokerProcess


@pytest.fixture
def broker_factory(tmp_path):
    """Makes BrokerProcess objects; every process started is stopped (by PID) at teardown,
    and the test fails if any exited without the test causing it (UnexpectedExit)."""
    group = NodeGroup()

    def make(name: str = "node", **kwargs) -> BrokerProcess:
        b = BrokerProcess(tmp_path / name / "data", **kwargs)
        group.nodes[len(group.nodes)] = b.process  # keyed by creation order: ids may repeat
        return b

    yield make
    group.close()


@pytest.fixture
def broker(broker_factory) -> BrokerProcess:
    """One running single-node broker with default options."""
    return broker_factory().start()
