from __future__ import annotations

import pytest

from nodeharness import UnexpectedExit
from tests.cluster.cluster import ClusterProcesses


@pytest.fixture
def cluster_factory(tmp_path):
    """Makes ClusterProcesses (not started); every process is stopped by PID at teardown,
    and the test fails if any node exited without the test causing it."""
    made: list[ClusterProcesses] = []

    def make(size: int = 3, **kwargs) -> ClusterProcesses:
        cluster = ClusterProcesses(tmp_path / f"cluster{len(made)}", size, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    failures = []
    for cluster in made:  # every cluster is stopped before any failure is raised
        try:
            cluster.close()
        except UnexpectedExit as exc:
            failures.append(str(exc))
    if failures:
        raise UnexpectedExit("\n\n".join(failures))
