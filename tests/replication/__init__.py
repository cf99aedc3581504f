"""Replicated partitions through real processes and real clients (issue 5): a 3-node
`chronik-trio node` cluster on 127.0.0.1 (conftest.py, one per package run).

`cluster.py` starts, kills and restarts nodes by PID and reads every replica's log with
Fetch v12 sent to that broker; `clients.py` reuses the single-node client drivers with
replication factor 3 and runs kafkajs (`tests/js/kafkajs_client.js`); `failover.py` is the leader-kill
stream shared by the tests and `measure.py` (`python -m tests.replication.measure`), which
produces docs/replication-measurements.md. The tests: every client's records identical on
every replica and through every broker (test_clients_rf3.py), leader and follower SIGKILL,
ISR shrink and regrowth, preferred leaders returning (test_failover.py),
min.insync.replicas and a lost majority (test_min_insync.py). Imports: tests.brokers,
tests.kafka_wire, tests.integration's client drivers, the clients, the stdlib.
"""
