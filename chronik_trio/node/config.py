"""Node configuration: flags and a TOML file (flags win). Pure parsing, no side effects."""

from __future__ import annotations

import pathlib
import tomllib

import attrs

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad config file or flag; the message names the key and the file."""


def _host_port(value: str, *, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    return host, int(port)


@attrs.frozen(kw_only=True)
class NodeConfig:
    node_id: int = 1
    listen: str = "127.0.0.1:9092"
    advertised: str | None = None  # what clients are told; defaults to listen
    data_dir: pathlib.Path = attrs.field(default=pathlib.Path("data"), converter=pathlib.Path)
    log_level: str = "info"
    default_partitions: int = 1
    auto_create_topics: bool = True
    message_max_bytes: int = 1048588  # Kafka's message.max.bytes default
    request_max_bytes: int = 100 << 20  # Kafka's socket.request.max.bytes default
    segment_bytes: int = 64 << 20
    retention_check_interval_ms: int = 300_000  # Kafka's log.retention.check.interval.ms
    # The cluster's Raft members: "1@host:port,2@host:port,..." (Raft addresses); this node's
    # entry is where it listens for peers. None: a one-node cluster with no Raft port.
    peers: str | None = None
    # Where a node without peers serves /health and /metrics (with peers: its Raft address).
    admin_listen: str | None = None
    # Join an existing cluster: never bootstrap __meta, wait to be sent its state.
    join: bool = False
    rack: str | None = None
    # The chaos harness's seam: storage goes through a FaultyDisk and the HTTP server answers
    # POST /faults (node/faults.py). Off in production.
    fault_injection: bool = False
    # How often leaders check whether to hand a partition back to its preferred replica.
    leader_balance_interval_ms: int = 5000
    # A follower that has not caught up with the leader for this long leaves the ISR.
    replica_lag_time_max_ms: int = 10_000
    # __meta snapshots its state and drops older log segments every this many entries;
    # a member further behind is sent the snapshot instead of the entries.
    meta_snapshot_entries: int = 10_000
    meta_segment_bytes: int = 4 << 20
    # Kafka's producer.id.expiration.ms: a producer whose newest batch in a partition is this
    # much older than the partition's newest is forgotten there (partition/producers.py).
    producer_id_expiration_ms: int = 86_400_000
    # Consumer groups (node/group_coordinator.py), Kafka's names with _ for the dots.
    offsets_topic_num_partitions: int = 10  # Kafka: 50; each partition is a Raft group here
    offsets_topic_replication_factor: int = 3  # capped at the number of brokers
    offsets_retention_minutes: int = 7 * 24 * 60
    offsets_retention_check_interval_ms: int = 600_000
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000

    def __attrs_post_init__(self) -> None:
        if self.node_id < 1:
            raise ConfigError(f"node_id must be >= 1 (it is a Raft member id), got {self.node_id}")
        _host_port(self.listen, key="listen")
        if self.advertised is not None:
            _host_port(self.advertised, key="advertised")
        if self.admin_listen is not None:
            _host_port(self.admin_listen, key="admin_listen")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level must be one of {LOG_LEVELS}, got {self.log_level!r}")
        for key in ("default_partitions", "message_max_bytes", "request_max_bytes",
                    "segment_bytes", "retention_check_interval_ms", "meta_snapshot_entries", "meta_segment_bytes",
                    "replica_lag_time_max_ms", "leader_balance_interval_ms", "producer_id_expiration_ms",
                    "offsets_topic_num_partitions", "offsets_topic_replication_factor",
                    "offsets_retention_minutes", "offsets_retention_check_interval_ms",
                    "group_min_session_timeout_ms", "group_max_session_timeout_ms"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")

        if self.peers is not None:
            members = self.peer_addresses
            if self.node_id not in members:
                raise ConfigError(f"peers {self.peers!r} has no entry for node_id {self.node_id}")

    @property
    def peer_addresses(self) -> dict[int, tuple[str, int]]:
        """node id -> Raft (host, port); just this node (no address) without peers."""
        if self.peers is None:
            return {}
        members = {}
        for item in self.peers.split(","):
            node, sep, address = item.strip().partition("@")
            if not sep or not node.isdigit():
                raise ConfigError(f"peers: expected ID@HOST:PORT, got {item!r}")
            if int(node) in members:
                raise ConfigError(f"peers: node {node} appears twice")
            members[int(node)] = _host_port(address, key="peers")
        return members

    @property
    def voters(self) -> tuple[int, ...]:
        return tuple(sorted(self.peer_addresses)) or (self.node_id,)

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return _host_port(self.listen, key="listen")

    @property
    def admin_host_port(self) -> tuple[str, int]:
        return _host_port(self.admin_listen, key="admin_listen")

    @property
    def advertised_host_port(self) -> tuple[str, int]:
        return _host_port(self.advertised or self.listen, key="advertised")

    def kafka_configs(self) -> dict[str, str]:
        """This node's static settings under Kafka's broker config names (DescribeConfigs;
        message.max.bytes and log.segment.bytes are also the topics' static defaults)."""
        return {
            "broker.id": str(self.node_id), "node.id": str(self.node_id),
            "listeners": f"PLAINTEXT://{self.listen}",
            "advertised.listeners": f"PLAINTEXT://{self.advertised or self.listen}",
            "log.dirs": str(self.data_dir), "num.partitions": str(self.default_partitions),
            "auto.create.topics.enable": str(self.auto_create_topics).lower(),
            "broker.rack": self.rack or "",
            "message.max.bytes": str(self.message_max_bytes),
            "socket.request.max.bytes": str(self.request_max_bytes),
            "log.segment.bytes": str(self.segment_bytes),
            "log.retention.check.interval.ms": str(self.retention_check_interval_ms),
            "replica.lag.time.max.ms": str(self.replica_lag_time_max_ms),
            "producer.id.expiration.ms": str(self.producer_id_expiration_ms),
            "offsets.topic.num.partitions": str(self.offsets_topic_num_partitions),
            "offsets.topic.replication.factor": str(self.offsets_topic_replication_factor),
            "offsets.retention.minutes": str(self.offsets_retention_minutes),
            "offsets.retention.check.interval.ms": str(self.offsets_retention_check_interval_ms),
            "group.initial.rebalance.delay.ms": str(self.group_initial_rebalance_delay_ms),
            "group.min.session.timeout.ms": str(self.group_min_session_timeout_ms),
            "group.max.session.timeout.ms": str(self.group_max_session_timeout_ms),
        }


FIELD_TYPES = {f.name: f.type for f in attrs.fields(NodeConfig)}


def load(config_file: pathlib.Path | None, overrides: dict[str, object]) -> NodeConfig:
    """Merge a TOML file (keys are the field names) with flag overrides (flags win)."""
    values: dict[str, object] = {}
    if config_file is not None:
        try:
            with open(config_file, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {config_file} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
        data = data.get("node", data)
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in FIELD_TYPES:
                raise ConfigError(f"config file {config_file}: unknown key {key!r}")
            values[name] = value
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return NodeConfig(**values)
    except TypeError as exc:
        raise ConfigError(f"bad config value: {exc}") from None
