"""The whole-cluster deterministic simulation (`python -m chaos sim`, docs/simulation.md).

Every node's real code runs in one `trio.run` under `trio.testing.MockClock`, over an
in-memory network (net.py) and a simulated disk (disk.py), driven by in-process Kafka
clients (client.py) and the same nemesis and checker as `chaos run`; one seed decides
everything (world.py, driver.py).
"""
