"""netns mode: nodes in their own network namespaces, links cut with routes in the kernel.
Skipped (with the reason) where namespaces cannot be made: not root, no `ip netns`."""

from __future__ import annotations

import subprocess

import pytest
import trio

from chaos.cluster import Cluster
from chaos.network import netns_unavailable_reason
from chaos.proxy import LinkState

pytestmark = pytest.mark.timeout(120)


async def test_a_netns_cluster_starts_and_a_cut_link_is_a_kernel_route(tmp_path):
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    cluster = Cluster(tmp_path, 3, network="netns")
    try:
        async with trio.open_nursery() as nursery:
            await cluster.start(nursery)
            net = cluster.network
            status, health = await cluster.http(1, "GET", "/health")
            assert status == 200 and health["node_id"] == 1
            cluster.set_link(1, 2, LinkState.CUT)
            routes = subprocess.run(["ip", "-n", net.namespaces[1], "route"], capture_output=True,
                                    text=True).stdout
            assert f"prohibit {net.ip_of(2)}" in routes
            cluster.heal_network()
            routes = subprocess.run(["ip", "-n", net.namespaces[1], "route"], capture_output=True,
                                    text=True).stdout
            assert net.ip_of(2) not in routes
            await cluster.stop()
            nursery.cancel_scope.cancel()
    finally:
        cluster.kill_all_now()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"chaos{cluster.network.tag}" not in left
