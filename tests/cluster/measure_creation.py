"""CreateTopics of many partitions, measured without the machine's load in the figure.

    python -m tests.cluster.measure_creation 1000 2000 4000 [--profile FILE]

Three real nodes (chaos/sim's SimCluster: the node code, its runtime, storage, HTTP/2
transport and Kafka handlers) in one `trio.run` under virtual time, so a wait (a timer, a
backoff, an fsync's simulated latency) shows as virtual seconds and the work as the CPU
seconds of this one process, the three nodes together; neither depends on what else the
machine runs, unlike the wall time of `chronik-trio bench --modes partitions`. Per count: the
virtual and CPU seconds from sending CreateTopics (RF 3) to its answer, and the __meta
entries appended meanwhile; then the CPU of the
next 30 virtual seconds (settling: leader reports, quiescing); the Ready passes, fsync
rounds and leader changes per node. The simulator's own election-safety scan (a pass over
every group at every leader change) is left out: it is the harness's cost, not the node's.
Nothing here asserts a number (design.md: performance is measured, not asserted).
"""

from __future__ import annotations

import argparse
import cProfile
import pathlib
import random
import shutil
import tempfile
import time

import trio
from trio._core import _run as trio_run

from chaos.sim import client as sim_client
from chaos.sim import driver, world
from chaos.sim import net as sim_net

CREATE_TOPICS = 19
SETTLE_S = 30.0


async def _create(partitions: int, out: dict, profile: cProfile.Profile | None) -> None:
    driver._poll_only_when_woken()
    rng = random.Random(1)
    sub = {k: random.Random(rng.getrandbits(64)) for k in ("net", "disk", "node", "clients")}
    net = sim_net.SimNetwork(sub["net"])
    root = pathlib.Path(tempfile.mkdtemp(prefix="measure-creation-", dir=driver._scratch()))
    try:
        async with trio.open_nursery() as nursery:
            cluster = world.SimCluster(root, 3, sub["disk"], net, lambda event: None, nursery,
                                       node_rng=sub["node"])
            await cluster.start_all()
            client = sim_client.Client(net, cluster.bootstrap, sub["clients"], 3600.0)
            meta0 = _meta_index(cluster)
            t0, cpu0 = trio.current_time(), time.process_time()
            if profile is not None:
                profile.enable()
            answer = await client.call(cluster.bootstrap[0], CREATE_TOPICS, {"timeout": 3_600_000, "topics": [
                {"name": "many", "num_partitions": partitions, "replication_factor": 3, "configs": []}]})
            if profile is not None:
                profile.disable()
            out["create_virtual_s"] = trio.current_time() - t0
            out["create_cpu_s"] = time.process_time() - cpu0
            out["error_code"] = int(answer.topics[0].error_code)
            out["meta_entries"] = _meta_index(cluster) - meta0
            cpu1 = time.process_time()
            await trio.sleep(SETTLE_S)
            out["settle_cpu_s"] = time.process_time() - cpu1
            nodes = [cluster.nodes[n].node for n in cluster.ids]
            out["passes"] = [node.runtime.passes for node in nodes]
            out["fsync_rounds"] = [node.runtime.fsync_rounds for node in nodes]
            out["leader_changes"] = [sum(g.leader_changes for g in node.runtime.groups.values()) for node in nodes]
            out["quiesced"] = [node.runtime.quiesced_count for node in nodes]
            nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _meta_index(cluster) -> int:
    """The __meta log's last index on the first node (entries appended there so far)."""
    return cluster.nodes[cluster.ids[0]].node.runtime.groups["__meta"].node.last_index()


def measure(partitions: int, profile: cProfile.Profile | None = None) -> dict:
    out: dict = {"partitions": partitions}
    saved_flag, saved_r = trio_run._ALLOW_DETERMINISTIC_SCHEDULING, trio_run._r.getstate()
    saved_check = world.SimCluster._check_election_safety
    trio_run._ALLOW_DETERMINISTIC_SCHEDULING = True
    trio_run._r.seed(1)
    world.SimCluster._check_election_safety = lambda self, sim: None
    try:
        with driver._collector_tuned():
            trio.run(_create, partitions, out, profile, clock=driver.sim_clock())
    finally:
        world.SimCluster._check_election_safety = saved_check
        trio_run._ALLOW_DETERMINISTIC_SCHEDULING = saved_flag
        trio_run._r.setstate(saved_r)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("partitions", type=int, nargs="+")
    p.add_argument("--profile", help="write a cProfile of the last count's creation to this file")
    args = p.parse_args()
    for i, n in enumerate(args.partitions):
        profile = cProfile.Profile() if args.profile and i == len(args.partitions) - 1 else None
        r = measure(n, profile)
        print(f"{n} partitions: CreateTopics answered (error {r['error_code']}) after {r['create_virtual_s']:.2f} "
              f"virtual s, {r['create_cpu_s']:.2f} CPU s (3 nodes), {r['meta_entries']} __meta entries; "
              f"next {SETTLE_S:.0f} virtual s "
              f"{r['settle_cpu_s']:.2f} CPU s; Ready passes {r['passes']}, fsync rounds {r['fsync_rounds']}, "
              f"leader changes {r['leader_changes']}, quiesced {r['quiesced']}; load {_load()}", flush=True)
        if profile is not None:
            profile.dump_stats(args.profile)


def _load() -> str:
    return pathlib.Path("/proc/loadavg").read_text().split()[0]


if __name__ == "__main__":
    main()
