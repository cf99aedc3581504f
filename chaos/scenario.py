"""Scenario files: YAML -> frozen attrs classes, with errors that name the file and the key.

A scenario says what cluster to start, which topics, what workload to drive, which faults
to inject when (the nemesis schedule), and which checks to run with which limits. Every
random choice the harness makes comes from `seed` (a `--seed` flag overrides it).

Example (chaos/scenarios/failover.yaml has the full set of keys with comments):

    name: failover
    seed: 1
    duration_s: 60
    cluster: {nodes: 3}
    topics: [{name: chaos, partitions: 1, replication_factor: 3}]
    workload: {producers: 2, consumers: 1, rate_per_s: 50, acks: all}
    nemesis:
      schedule:
        - {every_s: 15, start_s: 10, fault: {kind: kill, target: leader, restart_after_s: 5}}
    checks: {unavailability: {max_s: 10}}
"""

from __future__ import annotations

import pathlib
from typing import Any

import attrs
import yaml


class ScenarioError(Exception):
    """A scenario file the harness cannot run; the message names the file and the key."""


CLIENTS = ("confluent-kafka", "kafka-python", "aiokafka")
ACKS = ("all", "1", "0")
NETWORKS = ("proxy", "netns")
# The broker the cluster runs: chronik-trio's nodes, or Apache Kafka from the tests' jars
# (apache_kafka.py), to see both under the same faults.
BROKERS = ("chronik-trio", "apache-kafka")
SIGNALS = ("KILL", "TERM")
# Targets of process and disk faults; `node:N` names one node.
TARGETS = ("leader", "follower", "random", "meta-leader", "all")
PARTITION_MODES = ("isolate-leader", "isolate-random", "majority-minority", "bridge",
                   "one-way-leader")
LINK_MODES = ("cut", "blackhole", "delay")
# membership: what else happens while the partition's joint-consensus change is in flight.
MEMBERSHIP_MODES = ("none", "kill-leader", "kill-joining", "isolate-leader")
FAULT_KINDS = ("kill", "pause", "restart", "partition", "link", "disk", "power-loss",
               "rolling-restart", "join-remove", "membership")
CHECKS = ("lost_writes", "duplicates", "inconsistent_offsets", "nonmonotonic_sends",
          "nonmonotonic_polls", "poll_skips", "unseen", "divergence", "unavailability",
          "node_crashes", "compaction", "aborted_reads", "torn_transactions", "precommitted_reads",
          "exactly_once_output", "lost_commits", "lso_monotonic")
# Checks that are report-only unless a scenario says otherwise; both become failing checks
# when the workload is idempotent (see checker.py).
REPORT_ONLY_DEFAULT = frozenset({"duplicates", "nonmonotonic_sends"})
DURATION_S_MAX = 3600.0
NODES_MAX = 9


@attrs.frozen
class ClusterSpec:
    nodes: int = 3
    broker: str = "chronik-trio"
    network: str = "proxy"
    fault_injection: bool = False
    node_args: tuple[str, ...] = ()
    ready_timeout_s: float = 90.0
    peer_tls: bool = False  # mutual TLS between the nodes (certificates made for the run)
    spares: int = 0  # nodes not started with the cluster: a join-remove fault adds one with --join


@attrs.frozen
class TopicSpec:
    name: str
    partitions: int = 1
    replication_factor: int = 3
    configs: tuple[tuple[str, str], ...] = ()  # topic configs at creation, e.g. cleanup.policy

    @property
    def compacted(self) -> bool:
        return "compact" in dict(self.configs).get("cleanup.policy", "")


@attrs.frozen
class WorkloadSpec:
    client: str = "confluent-kafka"
    producers: int = 2
    consumers: int = 1
    rate_per_s: float = 50.0  # per producer
    keys: int = 16
    acks: str = "all"
    idempotence: bool = False
    request_timeout_s: float = 5.0
    delivery_timeout_s: float = 10.0
    final_read_timeout_s: float = 60.0
    tombstone_every: int = 0  # every Nth send a tombstone (null value) of its key; 0: none
    # Transactions (confluent-kafka only): each producer writes transactions of txn_records
    # sends (across partitions), every abort_every-th aborted on purpose; consumers and the
    # final read are read_committed.
    transactional: bool = False
    txn_records: int = 5
    abort_every: int = 3
    # A consume-transform-produce stage: one copier reads the other topics (read_committed,
    # consumer group) and writes "copy:<value>" to this topic in transactions that carry
    # its input offsets (send_offsets_to_transaction). None: no copier.
    copy_to: str | None = None
    # Consumers in one group (classic protocol, committed offsets). Simulation only for now:
    # chaos run's clients do not run them.
    group_consumers: int = 0


@attrs.frozen
class FaultSpec:
    """One fault. `duration_s`: how long it is held before it heals (kill: restart after)."""

    kind: str
    target: str = "leader"
    duration_s: float = 5.0
    signal: str = "KILL"
    mode: str = "isolate-leader"      # partition; membership: MEMBERSHIP_MODES
    link: str = "cut"                 # link: cut | blackhole | delay
    one_way: bool = False             # link: only from the target outwards
    clients: bool = False             # link: the clients' link to the target too
    delay_ms: float = 0.0             # link delay
    latency_ms: float = 0.0           # disk
    error: str | None = None          # disk: EIO | ENOSPC
    error_on: str = "both"            # disk: write | fsync | both
    topic: str | None = None          # whose leader `leader`/`follower` means (default: first)
    partition: int = 0
    # power-loss: for this long before the cut, the fsyncs of every target but the partition's
    # leader stall (do not finish), so what they acknowledge then is not yet durable there
    stall_followers_s: float = 0.0
    # power-loss: the partition's leader restarts this long after the other targets are up
    leader_back_after_s: float = 0.0


@attrs.frozen
class ScheduleEntry:
    """When faults happen: once `at_s`, every `every_s` from `start_s`, or at random
    intervals drawn from [interval_s[0], interval_s[1]] with a fault chosen from `faults`."""

    faults: tuple[FaultSpec, ...]
    at_s: float | None = None
    every_s: float | None = None
    start_s: float = 0.0
    interval_s: tuple[float, float] | None = None


@attrs.frozen
class NemesisSpec:
    schedule: tuple[ScheduleEntry, ...] = ()
    # No fault starts in the last `quiet_s` of the run: the cluster heals before the final read.
    quiet_s: float = 10.0


@attrs.frozen
class CheckSpec:
    name: str
    enabled: bool = True
    report_only: bool = False
    max_s: float | None = None  # unavailability: the longest window allowed


@attrs.frozen
class Scenario:
    name: str
    path: pathlib.Path | None
    seed: int
    duration_s: float
    cluster: ClusterSpec
    topics: tuple[TopicSpec, ...]
    workload: WorkloadSpec
    nemesis: NemesisSpec
    checks: tuple[CheckSpec, ...]
    description: str = ""

    def check(self, name: str) -> CheckSpec:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)


class _Reader:
    """Reads one mapping of the file, naming `where` in every error."""

    def __init__(self, source: str, where: str, data: Any, allowed: set[str]) -> None:
        self.source, self.where = source, where
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(f"expected a mapping, got {type(data).__name__}")
        unknown = sorted(set(map(str, data)) - allowed)
        if unknown:
            self.fail(f"unknown key(s) {unknown}; allowed: {sorted(allowed)}")
        self.data = data

    def fail(self, message: str, key: str | None = None):
        place = f"{self.where}.{key}" if key and self.where else (key or self.where or "top level")
        raise ScenarioError(f"{self.source}: {place}: {message}")

    def get(self, key: str, kind: type | tuple, default: Any, *, choices=None,
            minimum: float | None = None, maximum: float | None = None) -> Any:
        if key not in self.data:
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(f"expected {names}, got {value!r}", key)
        if choices is not None and value not in choices:
            self.fail(f"must be one of {list(choices)}, got {value!r}", key)
        if minimum is not None and value < minimum:
            self.fail(f"must be >= {minimum}, got {value!r}", key)
        if maximum is not None and value > maximum:
            self.fail(f"must be <= {maximum}, got {value!r}", key)
        return value

    def sub(self, key: str, allowed: set[str]) -> "_Reader":
        return _Reader(self.source, f"{self.where}.{key}" if self.where else key,
                       self.data.get(key), allowed)


def _fields(cls) -> set[str]:
    return {f.name for f in attrs.fields(cls)}


def _cluster(r: _Reader) -> ClusterSpec:
    c = r.sub("cluster", _fields(ClusterSpec))
    args = c.get("node_args", list, [])
    if not all(isinstance(a, str) for a in args):
        c.fail("must be a list of strings", "node_args")
    return ClusterSpec(nodes=c.get("nodes", int, 3, minimum=1, maximum=NODES_MAX),
                       broker=c.get("broker", str, "chronik-trio", choices=BROKERS),
                       network=c.get("network", str, "proxy", choices=NETWORKS),
                       fault_injection=c.get("fault_injection", bool, False),
                       node_args=tuple(args),
                       ready_timeout_s=c.get("ready_timeout_s", float, 90.0, minimum=1),
                       peer_tls=c.get("peer_tls", bool, False),
                       spares=c.get("spares", int, 0, minimum=0, maximum=3))


def _topics(r: _Reader, nodes: int) -> tuple[TopicSpec, ...]:
    items = r.data.get("topics", [{"name": "chaos"}])
    if not isinstance(items, list) or not items:
        r.fail("must be a non-empty list of topics", "topics")
    topics = []
    for i, item in enumerate(items):
        t = _Reader(r.source, f"topics[{i}]", item, _fields(TopicSpec))
        name = t.get("name", str, None)
        if not name:
            t.fail("is required", "name")
        configs = t.data.get("configs", {})
        if not isinstance(configs, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float))
                                                    and not isinstance(v, bool) for k, v in configs.items()):
            t.fail("must be a mapping of config names to values", "configs")
        topics.append(TopicSpec(name=name, partitions=t.get("partitions", int, 1, minimum=1, maximum=64),
                                replication_factor=t.get("replication_factor", int, min(3, nodes),
                                                         minimum=1, maximum=nodes),
                                configs=tuple(sorted((k, str(v)) for k, v in configs.items()))))
    if len({t.name for t in topics}) != len(topics):
        r.fail("topic names must be distinct", "topics")
    return tuple(topics)


def _workload(r: _Reader) -> WorkloadSpec:
    w = r.sub("workload", _fields(WorkloadSpec))
    acks = w.get("acks", (str, int), "all")
    acks = str(acks)
    if acks not in ACKS:
        w.fail(f"must be one of {list(ACKS)}, got {acks!r}", "acks")
    spec = WorkloadSpec(
        client=w.get("client", str, "confluent-kafka", choices=CLIENTS),
        producers=w.get("producers", int, 2, minimum=0, maximum=32),
        consumers=w.get("consumers", int, 1, minimum=0, maximum=32),
        rate_per_s=w.get("rate_per_s", float, 50.0, minimum=0.1, maximum=10_000),
        keys=w.get("keys", int, 16, minimum=1),
        acks=acks, idempotence=w.get("idempotence", bool, False),
        request_timeout_s=w.get("request_timeout_s", float, 5.0, minimum=0.1),
        delivery_timeout_s=w.get("delivery_timeout_s", float, 10.0, minimum=0.1),
        final_read_timeout_s=w.get("final_read_timeout_s", float, 60.0, minimum=1),
        tombstone_every=w.get("tombstone_every", int, 0, minimum=0),
        transactional=w.get("transactional", bool, False),
        txn_records=w.get("txn_records", int, 5, minimum=1, maximum=1000),
        abort_every=w.get("abort_every", int, 3, minimum=0),
        copy_to=w.get("copy_to", (str, type(None)), None),
        group_consumers=w.get("group_consumers", int, 0, minimum=0, maximum=32))
    if spec.copy_to is not None and not spec.transactional:
        w.fail("a copier needs transactional: true", "copy_to")
    if spec.transactional and (spec.client != "confluent-kafka" or not spec.idempotence):
        w.fail("needs client: confluent-kafka and idempotence: true", "transactional")
    if spec.idempotence and spec.acks != "all":
        w.fail("idempotence needs acks: all", "idempotence")
    if spec.producers == 0:
        w.fail("must be >= 1 (nothing to check without writes)", "producers")
    return spec


def _fault(r: _Reader, where: str, data: Any, nodes: int) -> FaultSpec:
    f = _Reader(r.source, where, data, _fields(FaultSpec))
    kind = f.get("kind", str, None, choices=FAULT_KINDS)
    if kind is None:
        f.fail(f"is required (one of {list(FAULT_KINDS)})", "kind")
    target = f.get("target", str, "leader")
    if target not in TARGETS and not (target.startswith("node:") and target[5:].isdigit()
                                      and 1 <= int(target[5:]) <= nodes):
        f.fail(f"must be one of {list(TARGETS)} or node:N with N in 1..{nodes}, got {target!r}",
               "target")
    error = f.get("error", (str, type(None)), None)
    if error is not None and error not in ("EIO", "ENOSPC"):
        f.fail(f"must be EIO, ENOSPC or null, got {error!r}", "error")
    spec = FaultSpec(kind=kind, target=target,
                     duration_s=f.get("duration_s", float, 5.0, minimum=0, maximum=DURATION_S_MAX),
                     signal=f.get("signal", str, "KILL", choices=SIGNALS),
                     mode=f.get("mode", str, "isolate-leader",
                                choices=PARTITION_MODES + MEMBERSHIP_MODES[:-1]),
                     link=f.get("link", str, "cut", choices=LINK_MODES),
                     one_way=f.get("one_way", bool, False),
                     clients=f.get("clients", bool, False),
                     delay_ms=f.get("delay_ms", float, 0.0, minimum=0, maximum=60_000),
                     latency_ms=f.get("latency_ms", float, 0.0, minimum=0, maximum=60_000),
                     error=error, error_on=f.get("error_on", str, "both", choices=("write", "fsync", "both")),
                     topic=f.get("topic", (str, type(None)), None),
                     partition=f.get("partition", int, 0, minimum=0),
                     stall_followers_s=f.get("stall_followers_s", float, 0.0, minimum=0, maximum=60),
                     leader_back_after_s=f.get("leader_back_after_s", float, 0.0, minimum=0,
                                               maximum=DURATION_S_MAX))
    if kind != "power-loss":
        for key in ("stall_followers_s", "leader_back_after_s"):
            if getattr(spec, key):
                f.fail("only a power-loss fault takes it", key)
    if kind == "disk" and target == "all":  # power-loss may take all: the whole cluster's power
        f.fail("a disk fault takes one node, not all", "target")
    if kind == "disk" and spec.latency_ms == 0 and spec.error is None:
        f.fail("a disk fault needs latency_ms or error", "kind")
    if kind == "membership" and spec.mode not in MEMBERSHIP_MODES:
        f.fail(f"a membership fault's mode is one of {list(MEMBERSHIP_MODES)}", "mode")
    if kind == "partition" and spec.mode not in PARTITION_MODES:
        f.fail(f"a partition's mode is one of {list(PARTITION_MODES)}", "mode")
    if spec.clients and kind != "link":
        f.fail("only a link fault takes clients", "clients")
    if kind == "link" and spec.link == "delay" and spec.delay_ms == 0:
        f.fail("a delay needs delay_ms > 0", "delay_ms")
    return spec


def _schedule(r: _Reader, nodes: int, duration_s: float) -> NemesisSpec:
    n = r.sub("nemesis", _fields(NemesisSpec))
    items = n.data.get("schedule", [])
    if not isinstance(items, list):
        n.fail("must be a list", "schedule")
    entries = []
    for i, item in enumerate(items):
        where = f"{n.where}.schedule[{i}]"
        e = _Reader(r.source, where, item, {"fault", "faults", "at_s", "every_s", "start_s", "interval_s"})
        if ("fault" in e.data) == ("faults" in e.data):
            e.fail("needs exactly one of fault (one) or faults (a list to choose from)")
        raw = [e.data["fault"]] if "fault" in e.data else e.data["faults"]
        if not isinstance(raw, list) or not raw:
            e.fail("must be a non-empty list", "faults")
        faults = tuple(_fault(r, f"{where}.faults[{j}]" if "faults" in e.data else f"{where}.fault",
                              x, nodes) for j, x in enumerate(raw))
        when = [k for k in ("at_s", "every_s", "interval_s") if k in e.data]
        if len(when) != 1:
            e.fail("needs exactly one of at_s, every_s, interval_s")
        interval = e.data.get("interval_s")
        if interval is not None:
            if (not isinstance(interval, list) or len(interval) != 2
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in interval)
                    or not 0 < interval[0] <= interval[1]):
                e.fail(f"must be [min, max] with 0 < min <= max, got {interval!r}", "interval_s")
            interval = (float(interval[0]), float(interval[1]))
        entries.append(ScheduleEntry(
            faults=faults, at_s=e.get("at_s", float, None, minimum=0, maximum=duration_s),
            every_s=e.get("every_s", float, None, minimum=0.5),
            start_s=e.get("start_s", float, 0.0, minimum=0), interval_s=interval))
    return NemesisSpec(schedule=tuple(entries),
                       quiet_s=n.get("quiet_s", float, 10.0, minimum=0, maximum=duration_s))


def _checks(r: _Reader) -> tuple[CheckSpec, ...]:
    c = r.sub("checks", set(CHECKS))
    out = []
    for name in CHECKS:
        item = _Reader(r.source, f"checks.{name}", c.data.get(name), {"enabled", "report_only", "max_s"})
        max_s = item.get("max_s", (float, type(None)), None, minimum=0)
        if max_s is not None and name != "unavailability":
            item.fail("only unavailability takes max_s", "max_s")
        out.append(CheckSpec(name=name, enabled=item.get("enabled", bool, True),
                             report_only=item.get("report_only", bool, name in REPORT_ONLY_DEFAULT),
                             max_s=max_s))
    return tuple(out)


TOP_KEYS = {"name", "description", "seed", "duration_s", "cluster", "topics", "workload",
            "nemesis", "checks"}


def parse_scenario(text: str, source: str = "<scenario>", path: pathlib.Path | None = None
                   ) -> Scenario:
    """Parse and validate a scenario's YAML text.

    Raises:
        ScenarioError: bad YAML or a bad key; the message names `source` and the key.
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"{source}: not valid YAML: {exc}") from None
    r = _Reader(source, "", data, TOP_KEYS)
    name = r.get("name", str, None)
    if not name:
        r.fail("is required", "name")
    duration_s = r.get("duration_s", float, 60.0, minimum=5, maximum=DURATION_S_MAX)
    cluster = _cluster(r)
    scenario = Scenario(name=name, path=path, seed=r.get("seed", int, 1), duration_s=duration_s,
                        cluster=cluster, topics=_topics(r, cluster.nodes), workload=_workload(r),
                        nemesis=_schedule(r, cluster.nodes, duration_s), checks=_checks(r),
                        description=r.get("description", str, ""))
    _check_broker(scenario, source)
    return scenario


# Apache Kafka has no fault seam for the disk, no KRaft leader in its clients' metadata, and
# its nodes reach each other at the addresses they register (no per-link proxies).
KAFKA_REFUSED_KINDS = ("disk", "power-loss", "join-remove")


def _check_broker(scenario: Scenario, source: str) -> None:
    """Refuse what the harness cannot do to the scenario's broker (apache_kafka.py says why)."""
    if scenario.cluster.broker != "apache-kafka":
        return
    where = f"{source}: cluster.broker: apache-kafka"
    if scenario.cluster.fault_injection:
        raise ScenarioError(f"{where}: no fault_injection (Kafka has no fault seam)")
    if scenario.cluster.peer_tls:
        raise ScenarioError(f"{where}: no peer_tls (the harness starts Kafka with plaintext listeners only)")
    if scenario.cluster.spares:
        raise ScenarioError(f"{where}: no spares (joining a node is chronik-trio's --join)")
    for i, entry in enumerate(scenario.nemesis.schedule):
        for fault in entry.faults:
            if fault.kind in KAFKA_REFUSED_KINDS:
                raise ScenarioError(f"{where}: nemesis.schedule[{i}]: {fault.kind} faults need chronik-trio's "
                                    "fault seam")
            if fault.target == "meta-leader":
                raise ScenarioError(f"{where}: nemesis.schedule[{i}]: target meta-leader is not known for Kafka")
            if fault.kind in ("partition", "link") and scenario.cluster.network != "netns":
                raise ScenarioError(f"{where}: nemesis.schedule[{i}]: {fault.kind} faults against Kafka need "
                                    "network: netns (its nodes do not dial each other through the proxies)")
    for arg in scenario.cluster.node_args:
        if "=" not in arg:
            raise ScenarioError(f"{where}: node_args are server properties KEY=VALUE, got {arg!r}")


def load_scenario(path: str | pathlib.Path) -> Scenario:
    """Read and validate a scenario file (see parse_scenario)."""
    path = pathlib.Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_scenario(text, str(path), path)


def with_overrides(scenario: Scenario, *, seed: int | None = None,
                   duration_s: float | None = None, broker: str | None = None,
                   network: str | None = None) -> Scenario:
    """The scenario with a command line's --seed / --duration / --broker / --network applied.

    Raises:
        ScenarioError: the scenario has faults the harness cannot apply to that broker."""
    cluster = {k: v for k, v in (("broker", broker), ("network", network)) if v is not None}
    if cluster:
        scenario = attrs.evolve(scenario, cluster=attrs.evolve(scenario.cluster, **cluster))
        _check_broker(scenario, str(scenario.path or scenario.name))
    changes: dict[str, Any] = {}
    if seed is not None:
        changes["seed"] = seed
    if duration_s is not None:
        changes["duration_s"] = duration_s
    return attrs.evolve(scenario, **changes)
