"""ClusterProcesses: N `chronik-trio node` processes forming one cluster on 127.0.0.1.

Built on the node-process harness (`nodeharness`) through tests.brokers.BrokerProcess:
every process is started, signalled and reaped by PID; a node is ready when its /health
says so; close() stops them all (a paused one is resumed first so it can hear SIGTERM) and
raises nodeharness.UnexpectedExit if any node exited without the test causing it. Logs are
appended across restarts, so each node remembers where its current process's log starts.

The log lines read here are the node's contract with operators (node.py, raft_group.py),
for tests that look at the history of leadership (who led when), which /health cannot tell:
  group G: leader is node L at term T (seen by node N)
  __meta snapshot at index I (...)
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import time
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any

from nodeharness import NodeGroup, free_ports
from nodeharness.process import READY_TIMEOUT_S as NODE_READY_TIMEOUT_S
from tests.brokers import BrokerProcess
from tests.kafka_wire import CREATE_TOPICS, DELETE_TOPICS, ConnectionClosed, KafkaWire

META_GROUP = "__meta"
READY_TIMEOUT_S = NODE_READY_TIMEOUT_S  # a loaded 2-core machine; ready once __meta has a quorum
POLL_S = 0.05
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")

LEADER_LINE = re.compile(r"group (\S+): leader is node (\d+) at term (\d+) \(seen by node (\d+)\)")
SNAPSHOT_LINE = re.compile(r"__meta snapshot at index (\d+)")

# Kafka error codes the cluster tests look at.
NONE = 0
LEADER_NOT_AVAILABLE = 5
REQUEST_TIMED_OUT = 7
NOT_CONTROLLER = 41
TOPIC_ALREADY_EXISTS = 36
# Answers a client retries: no __meta quorum yet, or a leader still being elected.
RETRIABLE = {LEADER_NOT_AVAILABLE, REQUEST_TIMED_OUT, NOT_CONTROLLER}
# A client can lose its connection to a killed node, or find it not listening.
CONNECTION_ERRORS = (OSError, ConnectionClosed, socket.timeout)


@dataclass(frozen=True, slots=True)
class LeaderSeen:
    """One `leader is node L at term T` line: node `seen_by` learnt group's leader."""
    group: str
    leader: int
    term: int
    seen_by: int


def parse_leader_lines(text: str) -> list[LeaderSeen]:
    return [LeaderSeen(m[1], int(m[2]), int(m[3]), int(m[4])) for m in LEADER_LINE.finditer(text)]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


class ClusterProcesses:
    """`size` nodes (ids 1..size) with free Kafka and Raft ports and the same --peers."""

    def __init__(self, root: pathlib.Path, size: int, *, config_text: str | None = None,
                 extra_args: list[str] | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * size)
        self.ids = list(range(1, size + 1))
        self.raft_ports = {n: ports[size + n - 1] for n in self.ids}
        self.peers = ",".join(f"{n}@127.0.0.1:{self.raft_ports[n]}" for n in self.ids)
        self._shared_args = list(extra_args or [])  # every node's, a joining one's too
        if config_text is not None:
            config = root / "node.toml"
            config.write_text(config_text)
            self._shared_args += ["--config", str(config)]
        args = ["--peers", self.peers, *self._shared_args]
        self.nodes = {n: BrokerProcess(root / f"node{n}" / "data", node_id=n, port=ports[n - 1],
                                       extra_args=args) for n in self.ids}
        self.group = NodeGroup()
        for n in self.ids:
            self.group.add(self.nodes[n].process)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "ClusterProcesses":
        """Start every node, then wait until each says in /health that it serves Kafka
        (which needs a __meta quorum)."""
        for n in self.ids:
            self.nodes[n].start(wait=False)
        self.group.wait_all_ready(timeout_s)
        return self

    def wait_ready(self, n: int, timeout_s: float = READY_TIMEOUT_S) -> None:
        self.nodes[n].wait_ready(timeout_s)

    def join_node(self, n: int, *, via: int, wait: bool = True, timeout_s: float = READY_TIMEOUT_S,
                  through_raft: bool = False, extra_args: tuple[str, ...] = ()) -> None:
        """Start a new node n on an empty data dir with `--join` through node `via`'s Kafka
        address, or with through_raft its Raft address (ID@HOST:PORT); its --peers names
        only itself. It becomes one of self.ids."""
        assert n not in self.nodes, f"node {n} exists"
        kafka_port, raft_port = free_ports(2)
        self.raft_ports[n] = raft_port
        join = f"{via}@127.0.0.1:{self.raft_ports[via]}" if through_raft else self.nodes[via].bootstrap
        args = ["--peers", f"{n}@127.0.0.1:{raft_port}", "--join", join, *self._shared_args, *extra_args]
        self.nodes[n] = BrokerProcess(self.root / f"node{n}" / "data", node_id=n, port=kafka_port, extra_args=args)
        self.group.add(self.nodes[n].process)
        self.ids.append(n)
        self.nodes[n].start(wait=False)
        if wait:
            self.wait_ready(n, timeout_s)

    def pid(self, n: int) -> int:
        return self.nodes[n].proc.pid

    def is_running(self, n: int) -> bool:
        return self.nodes[n].process.running

    def running(self) -> list[int]:
        return [n for n in self.ids if self.is_running(n)]

    def kill(self, n: int) -> float:
        """SIGKILL node n by PID and reap it; returns time.monotonic() just before the signal."""
        t = time.monotonic()
        self.nodes[n].kill()
        return t

    def restart(self, n: int, *, wait: bool = True, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Start node n again from its data dir (after kill or stop)."""
        assert not self.is_running(n), f"node {n} is still running"
        self.nodes[n].start(wait=False)
        if wait:
            self.wait_ready(n, timeout_s)

    def pause(self, n: int) -> None:
        self.nodes[n].process.pause()

    def resume(self, n: int) -> None:
        self.nodes[n].process.resume()

    def problems(self) -> list[str]:
        """Every exit nobody caused (and unclean stop) so far, over all restarts."""
        return self.group.problems()

    def close(self) -> None:
        """Stop every process by PID: SIGTERM all at once, wait, SIGKILL stragglers; then
        raise nodeharness.UnexpectedExit if any node exited without the test causing it."""
        self.group.close()

    # --- logs ------------------------------------------------------------------------------

    def log(self, n: int) -> str:
        """Everything node n logged, over all its processes."""
        return self.nodes[n].log_text()

    def current_log(self, n: int) -> str:
        """What node n's current (last started) process logged."""
        return self.nodes[n].process.current_log()

    def forget_log_so_far(self, n: int) -> None:
        """current_log(n) starts from here on (to look only at what is logged next)."""
        self.nodes[n].process.forget_log_so_far()

    def leader_lines(self, group: str | None = None) -> list[LeaderSeen]:
        seen = [s for n in self.ids for s in parse_leader_lines(self.log(n))]
        return [s for s in seen if group is None or s.group == group]

    def log_excerpt(self, pattern: str, limit: int = 40) -> str:
        """Matching lines of every node, for assertion messages."""
        lines = [f"[node {n}] {line}" for n in self.ids for line in self.log(n).splitlines()
                 if re.search(pattern, line)]
        return "\n".join(lines[-limit:])

    # --- Kafka -----------------------------------------------------------------------------

    def port(self, n: int) -> int:
        return self.nodes[n].port

    def connect(self, n: int, timeout_s: float = 15.0) -> KafkaWire:
        return KafkaWire.connect(self.port(n), timeout=timeout_s)

    def metadata(self, n: int, topics: list[str] | None = None, *, timeout_s: float = 15.0) -> Any:
        with self.connect(n, timeout_s) as conn:
            return conn.metadata(topics)

    def controller(self, n: int) -> int:
        """The __meta leader node n knows (Metadata's controller_id; -1 if none)."""
        return int(self.metadata(n).controller_id)

    def raft_metric(self, n: int, name: str, labels: str = "") -> float:
        """Sum over labels of one counter or gauge from node n's /metrics (on its Raft port);
        labels (e.g. 'group="__meta"'): only the series whose labels begin so."""
        url = f"http://127.0.0.1:{self.raft_ports[n]}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        prefixes = (name + "{" + labels,) if labels else (name + "{", name + " ")
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefixes))

    def wait_meta_leader(self, nodes: list[int] | None = None, timeout_s: float = 30.0) -> int:
        """Until the given (default: running) nodes all name one live __meta leader."""
        deadline = time.monotonic() + timeout_s
        answers: dict[int, int | str] = {}
        while time.monotonic() < deadline:
            answers = {}
            for n in nodes or self.running():
                try:
                    answers[n] = self.controller(n)
                except CONNECTION_ERRORS as exc:
                    answers[n] = repr(exc)
            leaders = set(answers.values())
            if len(leaders) == 1:
                (leader,) = leaders
                if isinstance(leader, int) and self.is_running(leader):
                    return leader
            time.sleep(POLL_S * 4)
        raise TimeoutError(f"nodes did not agree on a live __meta leader: {answers}")


def create_topics_request(names: list[str], *, partitions: int = 1, replication_factor: int = -1,
                          assignment: list[list[int]] | None = None, timeout_ms: int = 10_000) -> dict:
    def spec(name: str) -> dict:
        if assignment is not None:
            return {"name": name, "num_partitions": -1, "replication_factor": -1,
                    "assignments": [{"partition_index": i, "broker_ids": b}
                                    for i, b in enumerate(assignment)]}
        return {"name": name, "num_partitions": partitions, "replication_factor": replication_factor}
    return {"topics": [spec(n) for n in names], "timeout": timeout_ms}


def create_topics(conn: KafkaWire, names: list[str], **kwargs) -> dict[str, tuple[int, str | None]]:
    """One CreateTopics request; name -> (error code, error message)."""
    r = conn.request(CREATE_TOPICS, create_topics_request(names, **kwargs))
    return {t.name: (int(t.error_code), t.error_message) for t in r.topics}


def delete_topics(conn: KafkaWire, names: list[str], timeout_ms: int = 10_000) -> dict[str, int]:
    r = conn.request(DELETE_TOPICS, {"topic_names": names, "topics": [{"name": n} for n in names],
                                     "timeout": timeout_ms})
    return {t.name: int(t.error_code) for t in r.responses}


def topic_map(metadata: Any) -> dict[str, uuid.UUID]:
    return {t.name: t.topic_id for t in metadata.topics if int(t.error_code) == NONE}


def leader_epochs(metadata: Any) -> dict[tuple[str, int], tuple[int, int]]:
    """(topic, partition) -> (leader id, leader epoch) as one node's Metadata reports it."""
    return {(t.name, int(p.partition_index)): (int(p.leader_id), int(p.leader_epoch))
            for t in metadata.topics for p in t.partitions}


def create_until_committed(cluster: ClusterProcesses, via: list[int], name: str, *,
                           timeout_s: float = 30.0, request_timeout_ms: int = 5000) -> int:
    """CreateTopics of `name` (one partition, its one replica on the answering node) through
    the nodes `via` in turn until one answers that it exists; returns that node.

    A retried request may find the topic already created by an earlier attempt whose answer
    was lost; that counts as committed. Any other error fails."""
    deadline = time.monotonic() + timeout_s
    attempts: list[str] = []
    while time.monotonic() < deadline:
        n = via[len(attempts) % len(via)]
        try:
            with cluster.connect(n, timeout_s=request_timeout_ms / 1000 + 20) as conn:
                code, message = create_topics(conn, [name], assignment=[[n]],
                                              timeout_ms=request_timeout_ms)[name]
        except CONNECTION_ERRORS as exc:
            attempts.append(f"node {n}: {exc!r}")
            time.sleep(POLL_S)
            continue
        attempts.append(f"node {n}: error {code} {message}")
        if code == NONE or (code == TOPIC_ALREADY_EXISTS and len(attempts) > 1):
            return n
        assert code in RETRIABLE, f"CreateTopics {name} failed: {attempts}"
        time.sleep(POLL_S)
    raise TimeoutError(f"CreateTopics {name} not committed within {timeout_s} s: {attempts[-5:]}")


def wait_topics_equal(cluster: ClusterProcesses, nodes: list[int], timeout_s: float = 30.0
                      ) -> dict[str, uuid.UUID]:
    """Until every node in `nodes` reports the same topics with the same ids; returns them."""
    deadline = time.monotonic() + timeout_s
    maps: dict[int, dict[str, uuid.UUID]] = {}
    while time.monotonic() < deadline:
        maps = {n: topic_map(cluster.metadata(n)) for n in nodes}
        if all(m == maps[nodes[0]] for m in maps.values()):
            return maps[nodes[0]]
        time.sleep(POLL_S * 4)
    sizes = {n: len(m) for n, m in maps.items()}
    raise AssertionError(f"nodes disagree on the topics after {timeout_s} s (counts {sizes})")
