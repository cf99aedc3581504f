from __future__ import annotations

from tests.cluster.conftest import cluster_factory  # noqa: F401  (the fixture, by PID)
from tests.integration.conftest import broker_factory  # noqa: F401  (the fixture, by PID)
