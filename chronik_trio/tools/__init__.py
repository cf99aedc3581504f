"""Tools that are clients of the broker, not part of it: `chronik-trio admin` (admin.py),
`dev-cluster` (dev_cluster.py) and `bench` (bench.py with bench_kafka, bench_local,
bench_failover).

They speak to nodes only as any client does: the Kafka protocol (admin through kio over a
plain socket, bench through librdkafka), HTTP to /health and /metrics, and processes
started through the `nodeharness` package. They may import the pure codec helpers of
`chronik_trio` but nothing of the node runtime, and nothing in `chronik_trio` imports them
except cli.py.
"""
