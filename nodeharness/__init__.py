"""One harness for `chronik-trio node` processes: tests, the chaos harness, `dev-cluster`
and `bench` start, stop, kill, pause and resume nodes only through it.

It treats a node as an outsider does and imports nothing of `chronik_trio` (so the chaos
harness keeps its outsider's view): a node is a command line run as a child process, its
output appended to a log file, and its `/health` endpoint (HTTP on the node's Raft address,
or on `--admin-listen` for a node without peers). Readiness (`serving_kafka`) and who leads
(`meta_leader`, `leading_groups`) come from `/health` only, never from log lines.

Every process is signalled and reaped by its PID. An exit that nobody caused (the process
ended without the harness stopping or killing it, or a stop that did not end with exit code
0) is remembered across restarts, and `NodeGroup.close()` raises `UnexpectedExit` naming
it, so a node that crashed mid-test fails that test.

May import: the standard library, attrs and trio. Nothing else.
"""

from .group import NodeGroup
from .health import HEALTH_TIMEOUT_S, fetch_health
from .ports import free_port, free_ports
from .process import (NodeExited, NodeProcess, NotReady, UnexpectedExit, chronik_trio_command,
                      describe_exit, node_args)

__all__ = ["HEALTH_TIMEOUT_S", "NodeExited", "NodeGroup", "NodeProcess", "NotReady",
           "UnexpectedExit", "chronik_trio_command", "describe_exit", "fetch_health", "free_port",
           "free_ports", "node_args"]
