"""Apache Kafka itself as the harness's broker (`cluster: {broker: apache-kafka}`), and the
pieces every harness uses to run it from the Maven jars of tests/java/apache-kafka.

Each node is one JVM in KRaft combined mode (broker and controller), started, signalled and
reaped by its PID through the node-process harness like a chronik-trio node. Listeners: the
clients' one (behind the client proxy in proxy mode), the controller's (the KRaft quorum)
and the replication one (followers fetch from leaders there). Kafka's broker settings are
its defaults except what a loopback cluster needs and min.insync.replicas=2 (a majority of
3, as chronik-trio's Raft quorum); in particular it does not fsync on acknowledgement
(log.flush.interval.messages unset: the OS flushes the page cache). A scenario's
`node_args` are extra server properties (`KEY=VALUE`), e.g. log.flush.interval.messages=1.

What the harness cannot do to Kafka: disk faults and power loss (no fault seam in Kafka),
`meta-leader` targets (the KRaft leader is not in Kafka's client-facing metadata), and
partition or link faults in proxy mode (brokers and controllers find each other at the
addresses they register, one for every peer, so the harness cannot proxy each link); in
netns mode partitions are routes between namespaces and apply to Kafka as to chronik-trio.
scenario.py refuses such scenarios.
"""

from __future__ import annotations

import base64
import logging
import pathlib
import shutil
import signal
import socket
import subprocess
import uuid

import attrs
import trio

from nodeharness import NodeProcess, free_ports
from nodeharness.process import CLEAN_STOP_CODES

from .cluster import ChaosNode, Cluster, ClusterError
from .network import NetworkUnavailable, ProxyNetwork
from .proxy import LinkState
from .replica_log import BATCH, decode_batch, record_replica_logs

log = logging.getLogger(__name__)

PEER_DIR = pathlib.Path(__file__).resolve().parents[1] / "tests" / "java" / "apache-kafka"
CLASSPATH_FILE = PEER_DIR / "target" / "classpath.txt"
BUILD_TIMEOUT_S = 600
FORMAT_TIMEOUT_S = 120
# Kafka's own scripts run the broker with a 1 GB heap and G1.
JVM_FLAGS = ["-Xmx1g", "-Xms1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]
# What a JVM ending on SIGTERM exits with (128 + 15), after Kafka's shutdown hook ran.
JVM_SIGTERM_EXIT = 143
STARTED_LINE = "Kafka Server started"
REPLICATION_PORT_NETNS = 9094
METADATA_TIMEOUT_S = 5.0
LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = info
logger.request.name = kafka.request.logger
logger.request.level = warn
"""


def classpath() -> str:
    """The broker's classpath; `mvn dependency:build-classpath` the first time (Maven fetches
    the jars into its local repository once)."""
    if not CLASSPATH_FILE.exists() or CLASSPATH_FILE.stat().st_mtime < (PEER_DIR / "pom.xml").stat().st_mtime:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Apache Kafka needs mvn on PATH to fetch its jars (tests/java/apache-kafka)")
        subprocess.run([mvn, "-q", "-B", "dependency:build-classpath", f"-Dmdep.outputFile={CLASSPATH_FILE}"],
                       cwd=PEER_DIR, check=True, timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
    return CLASSPATH_FILE.read_text().strip()


def java() -> str:
    return shutil.which("java") or "java"


def cluster_id() -> str:
    """A random cluster id as Kafka's Uuid.randomUuid makes them: never starting with '-',
    which the storage tool's command line would take for an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def server_properties(node_id: int, *, listeners: dict[str, str], advertised: dict[str, str],
                      inter_broker: str, voters: str, data_dir: pathlib.Path, size: int,
                      extra: dict[str, str] | None = None) -> dict[str, object]:
    """One combined broker+controller node's server.properties. listeners: name -> HOST:PORT
    (one named CONTROLLER); advertised: what brokers register for the other names."""
    rf = size
    props: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "controller.quorum.voters": voters,
        "listeners": ",".join(f"{name}://{address}" for name, address in listeners.items()),
        "advertised.listeners": ",".join(f"{name}://{address}" for name, address in advertised.items()),
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": ",".join(f"{name}:PLAINTEXT" for name in listeners),
        "inter.broker.listener.name": inter_broker,
        "log.dirs": data_dir,
        "num.partitions": 1,
        "default.replication.factor": rf,
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min(rf, 2),
        "group.initial.rebalance.delay.ms": 0,
    }
    props.update(extra or {})
    return props


def write_node_files(directory: pathlib.Path, props: dict[str, object]) -> pathlib.Path:
    """server.properties and log4j2.properties in `directory`; returns the former's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "log4j2.properties").write_text(LOG4J2)
    path = directory / "server.properties"
    path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return path


def format_storage(cp: str, cluster: str, config: pathlib.Path, prefix: list[str] = ()) -> None:
    """`kafka-storage format`: a node's data dir must be formatted once before its first start."""
    subprocess.run([*prefix, java(), "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster,
                    "-c", str(config)], check=True, capture_output=True, timeout=FORMAT_TIMEOUT_S,
                   stdin=subprocess.DEVNULL)


def server_command(cp: str, config: pathlib.Path) -> list[str]:
    """`kafka-server-start` as its script runs it, logging at INFO to stdout."""
    log4j = config.parent / "log4j2.properties"
    return [java(), *JVM_FLAGS, f"-Dlog4j2.configurationFile={log4j}", "-cp", cp, "kafka.Kafka", str(config)]


def listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


@attrs.define(eq=False)
class KafkaProcess(NodeProcess):
    """One Kafka JVM: ready once it logged that it started and its client listener accepts;
    its SIGTERM exit (143, after Kafka's controlled shutdown) counts as a clean stop."""

    kafka_address: str = ""

    def is_ready(self) -> bool:
        if not self.running or self.paused:
            return False
        return STARTED_LINE in self.current_log() and listening(self.kafka_address)

    def signal(self, sig: signal.Signals) -> bool:
        sent = super().signal(sig)
        if sent and sig == signal.SIGTERM:
            self._exit_caused = CLEAN_STOP_CODES | {-signal.SIGTERM, JVM_SIGTERM_EXIT}
        return sent


def read_kafka_partition(directory: pathlib.Path) -> dict[int, str]:
    """offset -> value of one Kafka replica's partition directory: its `.log` segments are
    v2 RecordBatches back to back (baseOffset int64, batchLength int32, the rest); reading
    stops at a batch that does not fit (a torn tail)."""
    records: dict[int, str] = {}
    for segment in sorted(p for p in directory.glob("*.log") if p.stem.isdigit()):
        data = segment.read_bytes()
        pos = 0
        while pos + BATCH.size <= len(data):
            length = int.from_bytes(data[pos + 8:pos + 12], "big", signed=True)
            end = pos + 12 + length
            if length <= 0 or end > len(data):
                break
            for offset, _, value in decode_batch(data[pos:end]):
                records[offset] = value.decode(errors="replace") if value is not None else ""
            pos = end
    return records


class ApacheKafkaCluster(Cluster):
    """`size` Apache Kafka nodes (ids 1..size, every one a KRaft voter) with the interface the
    nemesis and the runner use. Who leads a partition comes from Kafka's Metadata."""

    def __init__(self, root: pathlib.Path, size: int, *, node_args: tuple[str, ...] = (),
                 record=lambda event: None, ready_timeout_s: float = 90.0, network: str = "proxy",
                 fault_injection: bool = False, peer_tls: bool = False) -> None:
        if fault_injection:
            raise ClusterError("Apache Kafka has no fault-injection seam (disk faults, power loss)")
        if peer_tls:
            raise ClusterError("the harness starts Apache Kafka with plaintext listeners only")
        super().__init__(root, size, record=record, ready_timeout_s=ready_timeout_s, network=network)
        self.extra = dict(a.split("=", 1) for a in node_args)
        self._partitions: dict[tuple[str, int], tuple[int, list[int]]] = {}

    async def start(self, nursery: trio.Nursery) -> None:
        try:
            cp = await trio.to_thread.run_sync(classpath)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            raise ClusterError(f"Apache Kafka's jars: {exc}") from None
        try:
            await self.network.setup(nursery, self.ids, free_ports(2 * self.size))
        except NetworkUnavailable as exc:
            raise ClusterError(str(exc)) from None
        proxied = isinstance(self.network, ProxyNetwork)
        replication = dict(zip(self.ids, free_ports(self.size))) if proxied else {}
        addresses = {n: self.network.addresses(n, self.ids) for n in self.ids}
        # Every voter at its real controller address: links are faulted below TCP (netns) or not.
        voters = ",".join(f"{n}@{a.raft_host}:{a.raft_port}" for n, a in addresses.items())
        cid = cluster_id()
        for n, a in addresses.items():
            host = a.raft_host
            repl = f"{host}:{replication[n] if proxied else REPLICATION_PORT_NETNS}"
            data_dir = self.root / "nodes" / f"node{n}"
            props = server_properties(
                n, listeners={"CLIENT": a.listen, "CONTROLLER": f"{host}:{a.raft_port}", "REPLICATION": repl},
                advertised={"CLIENT": a.advertised, "REPLICATION": repl}, inter_broker="REPLICATION",
                voters=voters, data_dir=data_dir, size=self.size,
                extra={"min.insync.replicas": min(2, self.size), **self.extra})
            config = write_node_files(self.root / "nodes" / f"node{n}-config", props)
            prefix = self.network.command_prefix(n)
            try:
                await trio.to_thread.run_sync(format_storage, cp, cid, config, prefix)
            except subprocess.CalledProcessError as exc:
                raise ClusterError(f"kafka-storage format of node {n}: {exc.stderr.decode(errors='replace')[-2000:]}")
            process = KafkaProcess(n, [*prefix, *server_command(cp, config)],
                                   self.root / "nodes" / f"node{n}.log", None, kafka_address=a.listen)
            self.group.add(process)
            self.nodes[n] = ChaosNode(process, int(a.listen.rpartition(":")[2]), a.raft_port, data_dir,
                                      raft_host=host)
        await self._start_nodes(nursery)

    # --- what Kafka's metadata says ------------------------------------------------------------

    async def refresh_leaders(self) -> None:
        try:
            fresh = await trio.to_thread.run_sync(self._metadata)
        except Exception as exc:  # no broker answered in time: keep what we knew
            log.info("Apache Kafka metadata: %r", exc)
            return
        self._partitions.update(fresh)

    def _metadata(self) -> dict[tuple[str, int], tuple[int, list[int]]]:
        from confluent_kafka.admin import AdminClient  # an extra of the harness, as in runner.py

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 3000})
        md = admin.list_topics(timeout=METADATA_TIMEOUT_S)
        return {(t.topic, p.id): (p.leader, list(p.replicas))
                for t in md.topics.values() for p in t.partitions.values()}

    def group_leader(self, group: str) -> tuple[int, int] | None:
        return None  # the KRaft leader is not in the metadata Kafka gives clients

    def partition_group(self, topic: str, partition: int) -> str | None:
        return None

    def partition_leader(self, topic: str, partition: int) -> int | None:
        leader, _ = self._partitions.get((topic, partition), (-1, []))
        return leader if leader in self.ids else None

    def partition_replicas(self, topic: str, partition: int) -> list[int]:
        return list(self._partitions.get((topic, partition), (-1, []))[1])

    # --- what the harness cannot do to Kafka ----------------------------------------------------

    def set_link(self, src: int, dst: int, state: LinkState, delay_s: float = 0.0) -> None:
        if isinstance(self.network, ProxyNetwork):
            raise NetworkUnavailable("Apache Kafka's nodes reach each other at the addresses they register, "
                                     "not through per-link proxies; use network: netns")
        super().set_link(src, dst, state, delay_s)

    async def set_disk_faults(self, n: int, faults: dict) -> tuple[int, dict] | None:
        return None

    def record_replica_logs(self, topics, high_watermarks: dict, record) -> None:
        record_replica_logs(topics, {n: node.data_dir for n, node in self.nodes.items()}, high_watermarks,
                            record, partition_dir=lambda data_dir, topic, p: data_dir / f"{topic}-{p}",
                            read=read_kafka_partition)
