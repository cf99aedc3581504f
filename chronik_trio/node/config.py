"""Node configuration: flags and a TOML file (flags win). Pure parsing, no side effects."""

from __future__ import annotations

import pathlib
import tomllib

import attrs

LOG_LEVELS = ("debug", "info", "warning", "error")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SSL_CLIENT_AUTH = ("none", "requested", "required")  # Kafka's ssl.client.auth
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class ConfigError(Exception):
    """A bad config file or flag; the message names the key and the file."""


def _host_port(value: str, *, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    return host, int(port)


@attrs.frozen(slots=True)
class Listener:
    """One named Kafka listener: where it binds, what clients are told, how they must speak."""

    name: str
    host: str
    port: int
    security_protocol: str
    advertised_host: str
    advertised_port: int

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")


def _listener_list(value: str, *, key: str) -> dict[str, tuple[str, int]]:
    """Kafka's "NAME://HOST:PORT,NAME://HOST:PORT" -> name -> (host, port), in order."""
    out: dict[str, tuple[str, int]] = {}
    for item in value.split(","):
        name, sep, address = item.strip().partition("://")
        if not sep or not name or not name.replace("_", "").isalnum():
            raise ConfigError(f"{key}: expected NAME://HOST:PORT, got {item.strip()!r}")
        if name.upper() in out:
            raise ConfigError(f"{key}: listener {name} appears twice")
        out[name.upper()] = _host_port(address, key=key)
    return out


def _protocol_map(value: str | None) -> dict[str, str]:
    """Kafka's listener.security.protocol.map "NAME:PROTOCOL,..."; a listener named like a
    protocol needs no entry (Kafka's default map)."""
    mapping = {p: p for p in SECURITY_PROTOCOLS}
    for item in (value or "").split(","):
        if not item.strip():
            continue
        name, sep, protocol = item.strip().partition(":")
        if not sep or protocol.upper() not in SECURITY_PROTOCOLS:
            raise ConfigError(f"listener_security_protocol_map: expected NAME:PROTOCOL with PROTOCOL one "
                              f"of {SECURITY_PROTOCOLS}, got {item.strip()!r}")
        mapping[name.upper()] = protocol.upper()
    return mapping


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
    # Kafka's log.cleaner.backoff.ms: the cleaner of compacted topics looks at every
    # replica's log this often (docs/compaction.md).
    log_cleaner_backoff_ms: int = 15_000
    # Kafka's max.incremental.fetch.session.cache.slots: fetch sessions (KIP-227) this node
    # keeps (kafka/fetch_sessions.py); 0 turns them off (every fetch is then a full one).
    fetch_session_cache_slots: int = 1000
    # The cluster's Raft members: "1@host:port,2@host:port,..." (Raft addresses); this node's
    # entry is where it listens for peers. None: a one-node cluster with no Raft port.
    peers: str | None = None
    # Where a node serves /health and /metrics in cleartext: without peers the only place;
    # with peers they are on its Raft address too, which speaks only mutual TLS once the
    # peer_ssl_* files are set (then this is the way to them without a node certificate).
    admin_listen: str | None = None
    # Join a running cluster (node/membership.py): the Kafka HOST:PORT of any member. With an
    # empty data dir the node asks that member to add it (AddRaftVoter) instead of
    # bootstrapping __meta; peers then needs only this node's own entry (its Raft address).
    # Ignored once the data dir holds __meta (a restart).
    join: str | None = None
    rack: str | None = None
    # The chaos harness's seam: storage goes through a FaultyDisk and the HTTP server answers
    # POST /faults (node/faults.py). Off in production.
    fault_injection: bool = False
    # How often leaders check whether to hand a partition back to its preferred replica
    # (Kafka's leader.imbalance.check.interval.seconds, also a dynamic broker config).
    leader_balance_interval_ms: int = 5000
    # Leader balancing (node/preferred_leaders.py; Kafka's names, also dynamic broker configs):
    # on/off, and the share of a broker's preferred partitions led elsewhere that starts it.
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_per_broker_percentage: int = 10
    # A node must have been alive, with a healthy disk, this long before leadership is handed
    # back to it (hysteresis: no flapping onto a node that comes and goes).
    leader_balance_min_healthy_ms: int = 10_000
    # A node whose recent fsync median is above this reports its disk degraded: it is given
    # no leadership and hands off what it leads.
    disk_degraded_fsync_ms: int = 500
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
    # Transactions (node/txn_coordinator.py), Kafka's names with _ for the dots.
    transaction_state_log_num_partitions: int = 10  # Kafka: 50; each partition is a Raft group here
    transaction_state_log_replication_factor: int = 3  # capped at the number of brokers
    transaction_max_timeout_ms: int = 900_000
    transactional_id_expiration_ms: int = 604_800_000
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10_000
    # Security (docs/security.md), Kafka's names with _ for the dots. listeners:
    # "NAME://HOST:PORT,..." (None: one PLAINTEXT listener at `listen`, told as `advertised`);
    # advertised_listeners: what clients of each listener are told (default: listeners).
    listeners: str | None = None
    advertised_listeners: str | None = None
    listener_security_protocol_map: str | None = None
    ssl_certfile: str | None = None  # PEM: this broker's certificate (chain)
    ssl_keyfile: str | None = None  # PEM: its private key
    ssl_cafile: str | None = None  # PEM: CAs whose client certificates are accepted
    ssl_client_auth: str = "none"
    sasl_enabled_mechanisms: str = ",".join(SASL_MECHANISMS)
    # Mutual TLS between nodes (docs/security.md): all three PEM files or none. The Raft port
    # then speaks only TLS; both ends show a certificate signed by peer_ssl_cafile whose one
    # subjectAltName DNS:node-<id> names their node id.
    peer_ssl_cafile: str | None = None
    peer_ssl_certfile: str | None = None
    peer_ssl_keyfile: str | None = None
    # A connection (Kafka listener or Raft port) that has not finished its TLS handshake and
    # SASL exchange this long after it was accepted is closed, logged and counted.
    authentication_timeout_ms: int = 10_000
    # ACLs (Kafka's authorizer.class.name set): every request is checked; no ACL, no access.
    authorizer_enabled: bool = False
    super_users: str = ""  # Kafka's super.users: "User:admin;User:CN=ops,O=example"

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
                    "segment_bytes", "retention_check_interval_ms", "log_cleaner_backoff_ms",
                    "meta_snapshot_entries", "meta_segment_bytes",
                    "replica_lag_time_max_ms", "leader_balance_interval_ms",
                    "leader_balance_min_healthy_ms", "disk_degraded_fsync_ms", "producer_id_expiration_ms",
                    "offsets_topic_num_partitions", "offsets_topic_replication_factor",
                    "offsets_retention_minutes", "offsets_retention_check_interval_ms",
                    "group_min_session_timeout_ms", "group_max_session_timeout_ms",
                    "authentication_timeout_ms",
                    "transaction_state_log_num_partitions", "transaction_state_log_replication_factor",
                    "transaction_max_timeout_ms", "transactional_id_expiration_ms",
                    "transaction_abort_timed_out_transaction_cleanup_interval_ms"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")

        if self.fetch_session_cache_slots < 0:
            raise ConfigError(f"fetch_session_cache_slots must be >= 0, got {self.fetch_session_cache_slots}")
        if not 0 <= self.leader_imbalance_per_broker_percentage <= 100:
            raise ConfigError(f"leader_imbalance_per_broker_percentage must be 0..100, got "
                              f"{self.leader_imbalance_per_broker_percentage}")
        if self.join is not None:
            self.join_target  # validates it
            if self.peers is None:
                raise ConfigError("join needs peers with at least this node's entry (where it listens "
                                  "for Raft traffic)")
        self._check_security()
        if self.peers is not None:
            members = self.peer_addresses
            if self.node_id not in members:
                raise ConfigError(f"peers {self.peers!r} has no entry for node_id {self.node_id}")

    def _check_security(self) -> None:
        specs = self.kafka_listeners
        if any(s.uses_tls for s in specs) and not (self.ssl_certfile and self.ssl_keyfile):
            raise ConfigError("a listener with SSL or SASL_SSL needs ssl_certfile and ssl_keyfile")
        if self.ssl_client_auth not in SSL_CLIENT_AUTH:
            raise ConfigError(f"ssl_client_auth must be one of {SSL_CLIENT_AUTH}, got {self.ssl_client_auth!r}")
        if self.ssl_client_auth != "none" and not self.ssl_cafile:
            raise ConfigError(f"ssl_client_auth={self.ssl_client_auth} needs ssl_cafile (the client CAs)")
        peer_files = (self.peer_ssl_cafile, self.peer_ssl_certfile, self.peer_ssl_keyfile)
        if any(peer_files) and not all(peer_files):
            raise ConfigError("mutual TLS between nodes needs all of peer_ssl_cafile, peer_ssl_certfile "
                              "and peer_ssl_keyfile")
        if any(peer_files) and self.peers is None:
            raise ConfigError("peer_ssl_* files are for the Raft port between nodes: they need peers")
        for principal in self.super_user_principals:
            if ":" not in principal:
                raise ConfigError(f"super_users: {principal!r} is not TYPE:NAME (e.g. User:admin)")
        for mechanism in self.sasl_mechanisms:
            if mechanism not in SASL_MECHANISMS:
                raise ConfigError(f"sasl_enabled_mechanisms: {mechanism!r} is not one of {SASL_MECHANISMS}")

    @property
    def peer_tls_enabled(self) -> bool:
        return self.peer_ssl_cafile is not None

    @property
    def super_user_principals(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.super_users.split(";") if p.strip())

    @property
    def sasl_mechanisms(self) -> tuple[str, ...]:
        return tuple(m.strip().upper() for m in self.sasl_enabled_mechanisms.split(",") if m.strip())

    @property
    def kafka_listeners(self) -> tuple[Listener, ...]:
        """The Kafka listeners in order; the first one's advertised address is the broker's
        default (what a client of a listener that another broker lacks is told)."""
        if self.listeners is None:
            (host, port), (ahost, aport) = self.listen_host_port, self.advertised_host_port
            protocol = _protocol_map(self.listener_security_protocol_map)["PLAINTEXT"]
            return (Listener("PLAINTEXT", host, port, protocol, ahost, aport),)
        binds = _listener_list(self.listeners, key="listeners")
        told = binds if self.advertised_listeners is None else _listener_list(
            self.advertised_listeners, key="advertised_listeners")
        protocols = _protocol_map(self.listener_security_protocol_map)
        specs = []
        for name, (host, port) in binds.items():
            if name not in protocols:
                raise ConfigError(f"listener {name} has no entry in listener_security_protocol_map")
            if name not in told:
                raise ConfigError(f"listener {name} is missing from advertised_listeners")
            ahost, aport = told[name]
            specs.append(Listener(name, host, port, protocols[name], ahost if ahost != "0.0.0.0" else host, aport))
        extra = set(told) - set(binds)
        if extra:
            raise ConfigError(f"advertised_listeners names listeners that do not exist: {sorted(extra)}")
        return tuple(specs)

    @property
    def join_target(self) -> tuple[int | None, tuple[str, int]]:
        """--join as (member id, (host, port)): a member's Raft address (ID@HOST:PORT, joined
        through the peer transport) or, with no id, its Kafka listener (HOST:PORT)."""
        assert self.join is not None
        node, sep, address = self.join.partition("@")
        if not sep:
            return None, _host_port(self.join, key="join")
        if not node.isdigit() or int(node) < 1 or int(node) == self.node_id:
            raise ConfigError(f"join: expected HOST:PORT or ID@HOST:PORT naming another node, got {self.join!r}")
        return int(node), _host_port(address, key="join")

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
            "log.cleaner.backoff.ms": str(self.log_cleaner_backoff_ms),
            "max.incremental.fetch.session.cache.slots": str(self.fetch_session_cache_slots),
            "replica.lag.time.max.ms": str(self.replica_lag_time_max_ms),
            "auto.leader.rebalance.enable": str(self.auto_leader_rebalance_enable).lower(),
            "leader.imbalance.check.interval.seconds": str(max(1, self.leader_balance_interval_ms // 1000)),
            "leader.imbalance.per.broker.percentage": str(self.leader_imbalance_per_broker_percentage),
            "producer.id.expiration.ms": str(self.producer_id_expiration_ms),
            "offsets.topic.num.partitions": str(self.offsets_topic_num_partitions),
            "offsets.topic.replication.factor": str(self.offsets_topic_replication_factor),
            "offsets.retention.minutes": str(self.offsets_retention_minutes),
            "offsets.retention.check.interval.ms": str(self.offsets_retention_check_interval_ms),
            "group.initial.rebalance.delay.ms": str(self.group_initial_rebalance_delay_ms),
            "group.min.session.timeout.ms": str(self.group_min_session_timeout_ms),
            "group.max.session.timeout.ms": str(self.group_max_session_timeout_ms),
            "transaction.state.log.num.partitions": str(self.transaction_state_log_num_partitions),
            "transaction.state.log.replication.factor": str(self.transaction_state_log_replication_factor),
            "transaction.max.timeout.ms": str(self.transaction_max_timeout_ms),
            "transactional.id.expiration.ms": str(self.transactional_id_expiration_ms),
            "transaction.abort.timed.out.transaction.cleanup.interval.ms":
                str(self.transaction_abort_timed_out_transaction_cleanup_interval_ms),
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
