"""100 metadata commands issued across a SIGKILL of the __meta leader are each applied
exactly once, in the same order, on every node (issue 4).

Clients send CreateTopics of 100 topics through the surviving nodes, with retries, while
the leader is killed; the proposals it held are retried by their nodes under their request
ids (deduplicated by __meta) and by the clients as new requests (refused as existing).
Afterwards every node, the restarted one included, lists exactly those 100 topics once each
with the same topic ids (one TopicCreated applied per topic, the same one everywhere) and
in the same order (Metadata lists topics in __meta's apply order).
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.cluster.cluster import (CONNECTION_ERRORS, NONE, RETRIABLE, TOPIC_ALREADY_EXISTS,
                                   create_topics)
from tests.cluster.test_election import assert_one_leader_per_term

TOPICS = 100
CLIENTS = 4
KILL_AFTER = 15  # topics created before the leader is killed: commands are in flight then
CLIENT_DEADLINE_S = 120.0
CATCH_UP_S = 30.0


def _client(cluster, via: list[int], names: list[str], answers: dict, errors: list,
            deadline: float) -> None:
    """Creates each name (RF 3, one partition) through `via` in turn, retrying until done."""
    attempt = 0
    for name in names:
        while True:
            if time.monotonic() > deadline:
                errors.append(f"{name}: not created before the deadline")
                return
            n = via[attempt % len(via)]
            attempt += 1
            try:
                with cluster.connect(n, timeout_s=30) as conn:
                    code, message = create_topics(conn, [name], timeout_ms=5000)[name]
            except CONNECTION_ERRORS:  # the request may have gone through: counts as an attempt
                answers.setdefault(name, []).append(-1)
                time.sleep(0.05)
                continue
            answers.setdefault(name, []).append(code)
            if code == NONE or (code == TOPIC_ALREADY_EXISTS and len(answers[name]) > 1):
                break
            if code not in RETRIABLE:
                errors.append(f"{name}: error {code} {message} (answers {answers[name]})")
                return
            time.sleep(0.05)


@pytest.mark.timeout(240)
def test_metadata_commands_during_failover_apply_exactly_once_everywhere(cluster_factory):
    cluster = cluster_factory(3).start()
    old = cluster.wait_meta_leader()
    survivors = [n for n in cluster.ids if n != old]
    names = [f"failover-{i:03d}" for i in range(TOPICS)]
    answers: dict[str, list[int]] = {}
    errors: list[str] = []
    deadline = time.monotonic() + CLIENT_DEADLINE_S
    clients = [threading.Thread(target=_client, daemon=True,
                                args=(cluster, survivors[i % 2:] + survivors[:i % 2],
                                      names[i::CLIENTS], answers, errors, deadline))
               for i in range(CLIENTS)]
    for c in clients:
        c.start()
    while len(answers) < KILL_AFTER and time.monotonic() < deadline and not errors:
        time.sleep(0.01)
    cluster.kill(old)
    for c in clients:
        c.join(max(deadline - time.monotonic(), 0.1) + 5)
    assert not any(c.is_alive() for c in clients), "a client thread did not finish"
    assert not errors, errors
    retried = {n: a for n, a in answers.items() if len(a) > 1}
    print(f"node {old} killed after {KILL_AFTER} answers; {len(retried)} topic(s) needed a client "
          f"retry: {dict(list(retried.items())[:5])}")

    cluster.restart(old)
    deadline = time.monotonic() + CATCH_UP_S
    listed: dict[int, list] = {}
    while time.monotonic() < deadline:
        listed = {n: [(t.name, t.topic_id) for t in cluster.metadata(n).topics] for n in cluster.ids}
        if all(len(v) >= TOPICS for v in listed.values()):
            break
        time.sleep(0.2)
    for n, topics in listed.items():
        topic_names = [name for name, _ in topics]
        assert sorted(topic_names) == names, (
            f"node {n} lists {len(topic_names)} topics, {len(set(topic_names))} distinct; "
            f"missing {sorted(set(names) - set(topic_names))[:5]}, extra {sorted(set(topic_names) - set(names))[:5]}")
    first = listed[cluster.ids[0]]
    for n, topics in listed.items():
        assert topics == first, f"node {n} differs from node {cluster.ids[0]} in topic ids or order"
    assert_one_leader_per_term(cluster)
