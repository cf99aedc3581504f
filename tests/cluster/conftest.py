from __future__ import annotations

import pytest

from tests.cluster.cluster import ClusterProcesses


@pytest.fixture
def cluster_factory(tmp_path):
    """Makes ClusterProcesses (not started); every process is stopped by PID at teardown."""
    made: list[ClusterProcesses] = []

    def make(size: int = 3, **kwargs) -> ClusterProcesses:
        cluster = ClusterProcesses(tmp_path / f"cluster{len(made)}", size, **kwargs)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()
