"""Topic and broker configuration: every topic config Kafka defines, its type, default,
broker-level synonym and documentation; validation; resolution of a topic's effective value
(topic override, then this broker's dynamic config, then the cluster-wide dynamic default,
then the node's static setting, then the default), as Kafka's DescribeConfigs reports it;
and the incremental operations (SET, DELETE, APPEND, SUBTRACT).

Pure: no I/O. docs/configuration.md says which configs take effect and which are only stored.
"""

from __future__ import annotations

import enum
import re
import typing

import attrs
from kio.schema.errors import ErrorCode

from chronik_trio.errors import BrokerError

LONG_MAX = 2**63 - 1
INT_MAX = 2**31 - 1
SHORT_MAX = 2**15 - 1
LIST_SEPARATOR = ","
CLUSTER_DEFAULT = ""  # the broker resource name of the cluster-wide dynamic default


class InvalidConfig(BrokerError):
    """An unknown config key or a value it cannot take; the message names the key."""

    error_code = ErrorCode.invalid_config


class ConfigType(enum.IntEnum):
    """DescribeConfigs' config_type (KIP-569)."""

    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7
    CLASS = 8
    PASSWORD = 9


class ConfigSource(enum.IntEnum):
    """DescribeConfigs' config_source."""

    DYNAMIC_TOPIC_CONFIG = 1
    DYNAMIC_BROKER_CONFIG = 2
    DYNAMIC_DEFAULT_BROKER_CONFIG = 3
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5
    DYNAMIC_GROUP_CONFIG = 8


class AlterOp(enum.IntEnum):
    """IncrementalAlterConfigs' config_operation."""

    SET = 0
    DELETE = 1
    APPEND = 2
    SUBTRACT = 3


@attrs.frozen(slots=True)
class ConfigDef:
    name: str
    type: ConfigType
    default: str
    doc: str
    synonym: str | None = None  # the broker config that gives the topic's default
    choices: frozenset[str] | None = None  # STRING: one of; LIST: each item one of
    low: float | None = None  # numeric lower bound (inclusive)
    high: float | None = None
    implemented: bool = True  # False: stored and reported; the broker does not act on it


def _d(name, type_, default, doc, synonym=None, choices=None, low=None, high=None, implemented=True):
    return ConfigDef(name, type_, str(default), doc, synonym,
                     frozenset(choices) if choices else None, low, high, implemented)


_LONG, _INT, _STR, _BOOL, _DOUBLE, _LIST = (ConfigType.LONG, ConfigType.INT, ConfigType.STRING,
                                           ConfigType.BOOLEAN, ConfigType.DOUBLE, ConfigType.LIST)
COMPRESSION_TYPES = ("uncompressed", "zstd", "lz4", "snappy", "gzip", "producer")

# Kafka 4.0's topic configs (TopicConfig / LogConfig), with Kafka's defaults except where
# this broker differs (segment.bytes: 64 MiB, each partition a Raft group).
TOPIC_CONFIGS: dict[str, ConfigDef] = {c.name: c for c in (
    _d("cleanup.policy", _LIST, "delete", "delete: whole old segments are deleted by retention.ms / "
       "retention.bytes; compact: the cleaner keeps the latest record of each key (docs/compaction.md); "
       "compact alone turns retention off",
       "log.cleanup.policy", choices=("delete", "compact")),
    _d("compression.type", _STR, "producer", "Stored; batches are always kept as the producer "
       "compressed them (the producer setting)", "compression.type", choices=COMPRESSION_TYPES,
       implemented=False),
    _d("compression.gzip.level", _INT, -1, "Stored; no recompression", "compression.gzip.level",
       low=-1, high=9, implemented=False),
    _d("compression.lz4.level", _INT, 9, "Stored; no recompression", "compression.lz4.level",
       low=1, high=17, implemented=False),
    _d("compression.zstd.level", _INT, 3, "Stored; no recompression", "compression.zstd.level",
       low=-131072, high=22, implemented=False),
    _d("delete.retention.ms", _LONG, 86_400_000, "Compacted topics: a tombstone (null value) is "
       "removed by the cleaner once its batch's newest timestamp is this old",
       "log.cleaner.delete.retention.ms", low=0),
    _d("file.delete.delay.ms", _LONG, 60_000, "Stored; segments are deleted at once",
       "log.segment.delete.delay.ms", low=0, implemented=False),
    _d("flush.messages", _LONG, LONG_MAX, "Stored; every acknowledged entry is already fsynced",
       "log.flush.interval.messages", low=1, implemented=False),
    _d("flush.ms", _LONG, LONG_MAX, "Stored; every acknowledged entry is already fsynced",
       "log.flush.interval.ms", low=0, implemented=False),
    _d("follower.replication.throttled.replicas", _LIST, "", "Stored; replication is not throttled",
       "follower.replication.throttled.replicas", implemented=False),
    _d("index.interval.bytes", _INT, 4096, "Stored; the offset index interval is fixed",
       "log.index.interval.bytes", low=0, implemented=False),
    _d("leader.replication.throttled.replicas", _LIST, "", "Stored; replication is not throttled",
       "leader.replication.throttled.replicas", implemented=False),
    _d("local.retention.bytes", _LONG, -2, "Stored; no tiered storage", "log.local.retention.bytes",
       low=-2, implemented=False),
    _d("local.retention.ms", _LONG, -2, "Stored; no tiered storage", "log.local.retention.ms",
       low=-2, implemented=False),
    _d("max.compaction.lag.ms", _LONG, LONG_MAX, "Compacted topics: a closed segment whose oldest "
       "records are this old is cleaned whatever the dirty ratio",
       "log.cleaner.max.compaction.lag.ms", low=1),
    _d("max.message.bytes", _INT, 1_048_588, "Largest record batch a produce may carry, checked "
       "on every produce (MESSAGE_TOO_LARGE)", "message.max.bytes", low=0),
    _d("message.downconversion.enable", _BOOL, "true", "Stored; batches are never down-converted",
       "log.message.downconversion.enable", implemented=False),
    _d("message.format.version", _STR, "3.0-IV1", "Stored (deprecated by Kafka 3, gone in 4); "
       "batches are always kept as magic 2", "log.message.format.version", implemented=False),
    _d("message.timestamp.after.max.ms", _LONG, LONG_MAX, "Stored; timestamps are not checked",
       "log.message.timestamp.after.max.ms", low=0, implemented=False),
    _d("message.timestamp.before.max.ms", _LONG, LONG_MAX, "Stored; timestamps are not checked",
       "log.message.timestamp.before.max.ms", low=0, implemented=False),
    _d("message.timestamp.difference.max.ms", _LONG, LONG_MAX, "Stored; timestamps are not checked",
       "log.message.timestamp.difference.max.ms", low=0, implemented=False),
    _d("message.timestamp.type", _STR, "CreateTime", "Stored; timestamps are the producer's "
       "(CreateTime)", "log.message.timestamp.type", choices=("CreateTime", "LogAppendTime"),
       implemented=False),
    _d("min.cleanable.dirty.ratio", _DOUBLE, 0.5, "Compacted topics: a pass runs when the bytes "
       "not yet cleaned are at least this share of the closed segments' bytes",
       "log.cleaner.min.cleanable.ratio", low=0, high=1),
    _d("min.compaction.lag.ms", _LONG, 0, "Compacted topics: a segment is cleaned only once its "
       "newest record is this old", "log.cleaner.min.compaction.lag.ms",
       low=0),
    _d("min.insync.replicas", _INT, 1, "acks=all produce is refused (NOT_ENOUGH_REPLICAS) with "
       "fewer in-sync replicas; checked on every produce", "min.insync.replicas", low=1),
    _d("preallocate", _BOOL, "false", "Stored; segment files are not preallocated", "log.preallocate",
       implemented=False),
    _d("remote.log.copy.disable", _BOOL, "false", "Stored; no tiered storage", implemented=False),
    _d("remote.log.delete.on.disable", _BOOL, "false", "Stored; no tiered storage", implemented=False),
    _d("remote.storage.enable", _BOOL, "false", "Stored; no tiered storage", implemented=False),
    _d("retention.bytes", _LONG, -1, "Per partition: whole oldest segments are deleted while the "
       "log is larger (-1: no limit); checked every log.retention.check.interval.ms",
       "log.retention.bytes", low=-1),
    _d("retention.ms", _LONG, 604_800_000, "Whole segments whose newest record is older are deleted "
       "(-1: no limit); checked every log.retention.check.interval.ms", "log.retention.ms", low=-1),
    _d("segment.bytes", _INT, 64 << 20, "Segment file size; after a change each replica rolls "
       "its active segment when the next append would take it past the new size",
       "log.segment.bytes", low=14),
    _d("segment.index.bytes", _INT, 10_485_760, "Stored; the offset index is in memory",
       "log.index.size.max.bytes", low=4, implemented=False),
    _d("segment.jitter.ms", _LONG, 0, "Stored; segments roll by size only", "log.roll.jitter.ms",
       low=0, implemented=False),
    _d("segment.ms", _LONG, 604_800_000, "Compacted topics: the active segment rolls once its oldest "
       "batches are this old, checked every log.cleaner.backoff.ms; other "
       "topics roll by size only", "log.roll.ms", low=1),
    _d("unclean.leader.election.enable", _BOOL, "false", "Stored; Raft never elects a replica that "
       "may lack committed data", "unclean.leader.election.enable", implemented=False),
)}

# Broker configs that can be changed while running (per broker or cluster-wide, in __meta):
# the broker-level synonyms of the topic configs, which give every topic its default.
DYNAMIC_BROKER_CONFIGS: dict[str, ConfigDef] = {
    c.synonym: attrs.evolve(c, name=c.synonym, synonym=None)
    for c in TOPIC_CONFIGS.values() if c.synonym is not None}
# The cleaner's own bounds (docs/compaction.md), read at every pass.
DOUBLE_MAX = 1.7976931348623157e308
DYNAMIC_BROKER_CONFIGS.update({c.name: c for c in (
    _d("log.cleaner.dedupe.buffer.size", _LONG, 16 << 20, "Memory of one cleaning pass's key map "
       "(128 bytes a key): a pass cleans as many segments as their keys fit", low=1 << 10),
    _d("log.cleaner.backoff.ms", _LONG, 15_000, "How often the cleaner looks at every replica of a "
       "compacted topic (static default: the node's log_cleaner_backoff_ms)", low=1),
    _d("log.cleaner.io.max.bytes.per.second", _DOUBLE, "1.7976931348623157E308", "The cleaner's "
       "reads plus writes per second, per pass (a pass sleeps to keep under it)", low=1,
       high=DOUBLE_MAX),
)})
# Leader balancing (node/preferred_leaders.py), Kafka's names; the static values are the
# node's own settings (node/config.py), a dynamic one (per broker or cluster-wide) wins.
DYNAMIC_BROKER_CONFIGS.update({c.name: c for c in (
    _d("auto.leader.rebalance.enable", _BOOL, "true", "Leaders hand partitions back to their "
       "preferred replica when a broker's imbalance is above leader.imbalance.per.broker.percentage"),
    _d("leader.imbalance.check.interval.seconds", _LONG, 5, "How often each leader checks the "
       "balance (Kafka's default is 300)", low=1),
    _d("leader.imbalance.per.broker.percentage", _INT, 10, "The share of a broker's preferred "
       "partitions led elsewhere above which leadership is handed back to it", low=0, high=100),
)})
# The catch-up throttle of partition moves (node/throttle.py), Kafka's names, bytes/s.
DYNAMIC_BROKER_CONFIGS.update({c.name: c for c in (
    _d("leader.replication.throttled.rate", _LONG, LONG_MAX, "Bytes/s this broker sends, as a "
       "partition leader, to replicas catching up as learners during a move, summed over them", low=1),
    _d("follower.replication.throttled.rate", _LONG, LONG_MAX, "Stored; Raft followers do not "
       "fetch: the leader's throttle (leader.replication.throttled.rate) limits catch-up", low=1,
       implemented=False),
    _d("replica.alter.log.dirs.io.max.bytes.per.second", _LONG, LONG_MAX, "Stored; one log "
       "directory per broker: replicas never move between directories", low=1, implemented=False),
)})

# Kafka 4's other dynamic broker configs (DynamicBrokerConfig: thread pools, the log cleaner's
# buffers, connection limits, the SASL login settings of a listener, metrics reporters), with
# Kafka's types and defaults: admin clients set and read them by name (librdkafka's test 0081
# sets sasl.kerberos.min.time.before.relogin and background.threads). Stored in __meta and
# reported; this broker does not act on them (no JVM thread pools; SASL here is PLAIN/SCRAM).
_STORED = "Stored and reported; not acted on here (docs/configuration.md)"
_SHORT = ConfigType.SHORT
DYNAMIC_BROKER_CONFIGS.update({c.name: c for c in (
    _d("background.threads", _INT, 10, _STORED, low=1, implemented=False),
    _d("num.io.threads", _INT, 8, _STORED, low=1, implemented=False),
    _d("num.network.threads", _INT, 3, _STORED, low=1, implemented=False),
    _d("num.replica.fetchers", _INT, 1, _STORED, low=1, implemented=False),
    _d("num.recovery.threads.per.data.dir", _INT, 2, _STORED, low=1, implemented=False),
    _d("log.cleaner.threads", _INT, 1, "Stored; one cleaning pass at a time per node", low=0,
       implemented=False),
    _d("log.cleaner.io.buffer.size", _INT, 524_288, "Stored; a pass reads whole segments", low=0,
       implemented=False),
    _d("log.cleaner.io.buffer.load.factor", _DOUBLE, 0.9, "Stored; the key map is bounded by "
       "log.cleaner.dedupe.buffer.size", implemented=False),
    _d("max.connections", _INT, INT_MAX, _STORED, low=0, implemented=False),
    _d("max.connections.per.ip", _INT, INT_MAX, _STORED, low=0, implemented=False),
    _d("max.connections.per.ip.overrides", _STR, "", _STORED, implemented=False),
    _d("max.connection.creation.rate", _INT, INT_MAX, _STORED, low=0, implemented=False),
    _d("metric.reporters", _LIST, "", "Stored; metrics are served at /metrics", implemented=False),
    _d("transaction.partition.verification.enable", _BOOL, "true", _STORED, implemented=False),
    _d("sasl.kerberos.kinit.cmd", _STR, "/usr/bin/kinit", "Stored; no GSSAPI (Kerberos)",
       implemented=False),
    _d("sasl.kerberos.min.time.before.relogin", _LONG, 60_000, "Stored; no GSSAPI (Kerberos)",
       implemented=False),
    _d("sasl.kerberos.principal.to.local.rules", _LIST, "DEFAULT", "Stored; no GSSAPI (Kerberos)",
       implemented=False),
    _d("sasl.kerberos.ticket.renew.jitter", _DOUBLE, 0.05, "Stored; no GSSAPI (Kerberos)",
       implemented=False),
    _d("sasl.kerberos.ticket.renew.window.factor", _DOUBLE, 0.8, "Stored; no GSSAPI (Kerberos)",
       implemented=False),
    _d("sasl.login.refresh.buffer.seconds", _SHORT, 300, "Stored; no OAUTHBEARER", low=0, high=3600,
       implemented=False),
    _d("sasl.login.refresh.min.period.seconds", _SHORT, 60, "Stored; no OAUTHBEARER", low=0, high=900,
       implemented=False),
    _d("sasl.login.refresh.window.factor", _DOUBLE, 0.8, "Stored; no OAUTHBEARER", low=0.5, high=1.0,
       implemented=False),
    _d("sasl.login.refresh.window.jitter", _DOUBLE, 0.05, "Stored; no OAUTHBEARER", low=0, high=0.25,
       implemented=False),
)})

# The types of the static broker settings DescribeConfigs lists (node/config.py's
# kafka_configs()); these change only with a restart.
STATIC_BROKER_TYPES: dict[str, ConfigType] = {
    "broker.id": _INT, "node.id": _INT, "listeners": _STR, "advertised.listeners": _STR,
    "log.dirs": _STR, "num.partitions": _INT, "auto.create.topics.enable": _BOOL,
    "broker.rack": _STR, "socket.request.max.bytes": _INT,
    "log.retention.check.interval.ms": _LONG, "replica.lag.time.max.ms": _LONG,
    "producer.id.expiration.ms": _INT, "offsets.topic.num.partitions": _INT,
    "offsets.topic.replication.factor": ConfigType.SHORT, "offsets.retention.minutes": _INT,
    "offsets.retention.check.interval.ms": _LONG, "group.initial.rebalance.delay.ms": _INT,
    "group.min.session.timeout.ms": _INT, "group.max.session.timeout.ms": _INT,
    "default.replication.factor": _INT,
    "transaction.state.log.num.partitions": _INT, "transaction.state.log.replication.factor": ConfigType.SHORT,
    "transaction.max.timeout.ms": _INT, "transactional.id.expiration.ms": _INT,
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": _INT,
    "max.incremental.fetch.session.cache.slots": _INT,
}


# Kafka 4.1's group configs (GroupConfig, KIP-848 / KIP-932 / KIP-1071), each with the broker
# config that gives its default (synonym) and the broker's bounds it must stay within
# (GROUP_BOUNDS). This broker has no KIP-848, share or streams groups: they are stored in
# __meta and reported, and act on nothing (docs/configuration.md).
_NO_KIP848 = "Stored and reported; no KIP-848 consumer groups here (classic groups use the member's session timeout)"
_NO_SHARE = "Stored and reported; no share groups (KIP-932) here"
_NO_STREAMS = "Stored and reported; no streams groups (KIP-1071) here"
GROUP_KINDS = {"consumer": _NO_KIP848, "share": _NO_SHARE, "streams": _NO_STREAMS}
GROUP_CONFIGS: dict[str, ConfigDef] = {c.name: c for c in (
    *(c for kind, doc in GROUP_KINDS.items() for c in (
        _d(f"{kind}.session.timeout.ms", _INT, 45_000, doc, f"group.{kind}.session.timeout.ms", low=1,
           implemented=False),
        _d(f"{kind}.heartbeat.interval.ms", _INT, 5_000, doc, f"group.{kind}.heartbeat.interval.ms", low=1,
           implemented=False))),
    _d("share.record.lock.duration.ms", _INT, 30_000, _NO_SHARE, "group.share.record.lock.duration.ms",
       low=1000, implemented=False),
    _d("share.auto.offset.reset", _STR, "latest", _NO_SHARE, implemented=False),
    _d("share.isolation.level", _STR, "read_uncommitted", _NO_SHARE,
       choices=("read_committed", "read_uncommitted"), implemented=False),
    _d("streams.num.standby.replicas", _INT, 0, _NO_STREAMS, "group.streams.num.standby.replicas", low=0,
       implemented=False),
)}
# group config -> (the broker setting of its minimum, of its maximum), either may be None.
GROUP_BOUNDS: dict[str, tuple[str | None, str | None]] = {
    **{f"{kind}.{what}": (f"group.{kind}.min.{what}", f"group.{kind}.max.{what}")
       for kind in GROUP_KINDS for what in ("session.timeout.ms", "heartbeat.interval.ms")},
    "share.record.lock.duration.ms": ("group.share.min.record.lock.duration.ms",
                                      "group.share.max.record.lock.duration.ms"),
    "streams.num.standby.replicas": (None, "group.streams.max.standby.replicas"),
}
# The broker's group settings (Kafka's names and defaults; fixed here, reported read-only by
# a broker's DescribeConfigs): the defaults of the group configs and their bounds.
GROUP_BROKER_SETTINGS: dict[str, str] = {
    **{f"group.{kind}.{setting}": value for kind in GROUP_KINDS for setting, value in (
        ("session.timeout.ms", "45000"), ("min.session.timeout.ms", "45000"), ("max.session.timeout.ms", "60000"),
        ("heartbeat.interval.ms", "5000"), ("min.heartbeat.interval.ms", "5000"),
        ("max.heartbeat.interval.ms", "15000"))},
    "group.share.record.lock.duration.ms": "30000", "group.share.min.record.lock.duration.ms": "15000",
    "group.share.max.record.lock.duration.ms": "60000",
    "group.streams.num.standby.replicas": "0", "group.streams.max.standby.replicas": "2",
}
# (session timeout, heartbeat interval): the first must stay above the second.
GROUP_SESSION_PAIRS = tuple((f"{kind}.session.timeout.ms", f"{kind}.heartbeat.interval.ms") for kind in GROUP_KINDS)
# share.auto.offset.reset: latest, earliest, or by_duration:<ISO-8601 duration> (KIP-1106).
_BY_DURATION = re.compile(r"by_duration:P(?:\d+D)?(?:T(?:\d+H)?(?:\d+M)?(?:\d+(?:\.\d+)?S)?)?")


STATIC_BROKER_TYPES.update(dict.fromkeys(GROUP_BROKER_SETTINGS, _INT))


def parse_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(LIST_SEPARATOR) if item.strip()]


def validate(definition: ConfigDef, value: str | None) -> None:
    """Raise InvalidConfig (naming the key) unless value is legal for definition."""
    key = definition.name
    if value is None:
        raise InvalidConfig(f"config {key} needs a value")
    kind = definition.type
    if kind in (ConfigType.SHORT, ConfigType.INT, ConfigType.LONG, ConfigType.DOUBLE):
        try:
            number = float(value) if kind == ConfigType.DOUBLE else int(value)
        except ValueError:
            raise InvalidConfig(f"config {key}={value!r} is not {kind.name.lower()}") from None
        top = definition.high if definition.high is not None else (
            SHORT_MAX if kind == ConfigType.SHORT else INT_MAX if kind == ConfigType.INT else LONG_MAX)
        low = definition.low
        if number != number or (low is not None and number < low) or number > top:  # NaN != NaN
            raise InvalidConfig(f"config {key}={value!r} is out of range [{low}, {top}]")
    elif kind == ConfigType.BOOLEAN:
        if value.lower() not in ("true", "false"):
            raise InvalidConfig(f"config {key}={value!r} is not true or false")
    elif kind == ConfigType.STRING and definition.choices and value not in definition.choices:
        raise InvalidConfig(f"config {key}={value!r}: one of {sorted(definition.choices)}")
    elif kind == ConfigType.LIST and definition.choices:
        items = parse_list(value)
        bad = [item for item in items if item not in definition.choices]
        if bad or not items:
            raise InvalidConfig(f"config {key}={value!r}: a list of {sorted(definition.choices)}")


def validate_topic_configs(configs: typing.Mapping[str, str | None]) -> None:
    """Raise InvalidConfig for an unknown topic config or a bad value."""
    for key, value in configs.items():
        definition = TOPIC_CONFIGS.get(key)
        if definition is None:
            raise InvalidConfig(f"unknown topic config {key!r}")
        validate(definition, value)


def validate_broker_configs(configs: typing.Mapping[str, str | None]) -> None:
    """Raise InvalidConfig for a broker config that is unknown or cannot change while running."""
    for key, value in configs.items():
        definition = DYNAMIC_BROKER_CONFIGS.get(key)
        if definition is None:
            raise InvalidConfig(f"broker config {key!r} is unknown or cannot be changed while running")
        validate(definition, value)


def normalize(definition: ConfigDef, value: str) -> str:
    """The stored form: booleans lower-case, lists without blanks."""
    if definition.type == ConfigType.BOOLEAN:
        return value.lower()
    if definition.type == ConfigType.LIST:
        return LIST_SEPARATOR.join(parse_list(value))
    return value


@attrs.frozen(slots=True)
class Resolved:
    """A config's effective value, where it came from, and every level that sets it (the
    synonyms, most specific first, as Kafka lists them)."""

    name: str
    value: str
    source: ConfigSource
    synonyms: tuple[tuple[str, str, ConfigSource], ...]


def resolve_topic(key: str, topic_configs: typing.Mapping[str, str],
                  broker_configs: typing.Mapping[str, typing.Mapping[str, str]], node_id: int,
                  static: typing.Mapping[str, str]) -> Resolved:
    """topic override > this broker's dynamic config > cluster default > static > default."""
    definition = TOPIC_CONFIGS[key]
    levels: list[tuple[str, str, ConfigSource]] = []
    if key in topic_configs:
        levels.append((key, topic_configs[key], ConfigSource.DYNAMIC_TOPIC_CONFIG))
    if definition.synonym is not None:
        levels.extend(_broker_levels(definition.synonym, broker_configs, node_id, static))
    levels.append((definition.synonym or key, definition.default, ConfigSource.DEFAULT_CONFIG))
    return Resolved(key, levels[0][1], levels[0][2], tuple(levels))


def resolve_broker(key: str, broker_configs: typing.Mapping[str, typing.Mapping[str, str]],
                   node_id: int, static: typing.Mapping[str, str]) -> Resolved:
    """This broker's dynamic config > cluster default > static > default."""
    levels = list(_broker_levels(key, broker_configs, node_id, static))
    definition = DYNAMIC_BROKER_CONFIGS.get(key)
    if definition is not None:
        levels.append((key, definition.default, ConfigSource.DEFAULT_CONFIG))
    return Resolved(key, levels[0][1], levels[0][2], tuple(levels))


def group_default(key: str, static: typing.Mapping[str, str]) -> str:
    """A group config's default: the broker setting named by its synonym, else Kafka's."""
    definition = GROUP_CONFIGS[key]
    if definition.synonym is not None and definition.synonym in static:
        return static[definition.synonym]
    return definition.default


def validate_group_configs(updated: typing.Mapping[str, str], static: typing.Mapping[str, str]) -> None:
    """A group's whole set of overrides after an alter: each within the broker's bounds
    (static: the broker settings, GROUP_BROKER_SETTINGS), each session timeout above its
    heartbeat interval. Raises InvalidConfig naming the key (as Kafka's GroupConfig does)."""
    for key, value in updated.items():
        if key == "share.auto.offset.reset" and value not in ("latest", "earliest") \
                and not (_BY_DURATION.fullmatch(value) and value != "by_duration:P"):
            raise InvalidConfig(f"config {key}={value!r}: latest, earliest or by_duration:<ISO-8601 duration>")
        low_key, high_key = GROUP_BOUNDS.get(key, (None, None))
        if low_key is not None and int(value) < int(static[low_key]):
            raise InvalidConfig(f"config {key}={value} must be greater than or equal to {low_key} "
                                f"({static[low_key]})")
        if high_key is not None and int(value) > int(static[high_key]):
            raise InvalidConfig(f"config {key}={value} must be less than or equal to {high_key} "
                                f"({static[high_key]})")
    for session, heartbeat in GROUP_SESSION_PAIRS:
        if session in updated or heartbeat in updated:
            s = int(updated.get(session, group_default(session, static)))
            h = int(updated.get(heartbeat, group_default(heartbeat, static)))
            if s <= h:
                raise InvalidConfig(f"config {session} ({s}) must be greater than {heartbeat} ({h})")


def resolve_group(key: str, group_configs: typing.Mapping[str, str], static: typing.Mapping[str, str]) -> Resolved:
    """The group's override (DYNAMIC_GROUP_CONFIG) > the broker's setting (its synonym) >
    Kafka's default."""
    definition = GROUP_CONFIGS[key]
    levels: list[tuple[str, str, ConfigSource]] = []
    if key in group_configs:
        levels.append((key, group_configs[key], ConfigSource.DYNAMIC_GROUP_CONFIG))
    if definition.synonym is not None and definition.synonym in static:
        levels.append((definition.synonym, static[definition.synonym], ConfigSource.DEFAULT_CONFIG))
    else:
        levels.append((key, definition.default, ConfigSource.DEFAULT_CONFIG))
    return Resolved(key, levels[0][1], levels[0][2], tuple(levels))


def _broker_levels(key, broker_configs, node_id, static):
    mine = broker_configs.get(str(node_id), {})
    if key in mine:
        yield key, mine[key], ConfigSource.DYNAMIC_BROKER_CONFIG
    cluster = broker_configs.get(CLUSTER_DEFAULT, {})
    if key in cluster:
        yield key, cluster[key], ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG
    if key in static:
        yield key, static[key], ConfigSource.STATIC_BROKER_CONFIG


@attrs.frozen(slots=True)
class ConfigChange:
    """What an alter does to one resource's stored overrides."""

    set: dict[str, str]
    removed: tuple[str, ...]


def incremental_change(catalog: typing.Mapping[str, ConfigDef], current: typing.Mapping[str, str],
                       effective: typing.Callable[[str], str],
                       ops: typing.Sequence[tuple[str, int, str | None]]) -> ConfigChange:
    """IncrementalAlterConfigs on one resource. current: its stored overrides; effective(key):
    the value APPEND and SUBTRACT start from. Raises InvalidConfig naming the key."""
    updated = dict(current)
    keys = [key for key, _, _ in ops]
    for key in keys:
        if keys.count(key) > 1:
            raise InvalidConfig(f"config {key} appears more than once in the request")
    for key, op, value in ops:
        definition = catalog.get(key)
        if definition is None:
            raise InvalidConfig(f"config {key!r} is unknown or cannot be changed")
        try:
            op = AlterOp(op)
        except ValueError:
            raise InvalidConfig(f"config {key}: unknown operation {op}") from None
        if op == AlterOp.DELETE:
            updated.pop(key, None)
            continue
        if op in (AlterOp.APPEND, AlterOp.SUBTRACT):
            if definition.type != ConfigType.LIST:
                raise InvalidConfig(f"config {key}: {op.name} needs a list config; it is "
                                    f"{definition.type.name}")
            items = parse_list(updated.get(key, effective(key)))
            given = parse_list(value or "")
            if op == AlterOp.APPEND:
                items += [item for item in given if item not in items]
            else:
                items = [item for item in items if item not in given]
            value = LIST_SEPARATOR.join(items)
            if not items and definition.choices:
                raise InvalidConfig(f"config {key}: SUBTRACT would leave it empty")
        validate(definition, value)
        updated[key] = normalize(definition, value)
    return _diff(current, updated)


def replace_change(catalog: typing.Mapping[str, ConfigDef], current: typing.Mapping[str, str],
                   configs: typing.Sequence[tuple[str, str | None]]) -> ConfigChange:
    """AlterConfigs (legacy): the given configs become the resource's whole set of overrides."""
    updated: dict[str, str] = {}
    for key, value in configs:
        if key in updated:
            raise InvalidConfig(f"config {key} appears more than once in the request")
        definition = catalog.get(key)
        if definition is None:
            raise InvalidConfig(f"config {key!r} is unknown or cannot be changed")
        validate(definition, value)
        updated[key] = normalize(definition, value)
    return _diff(current, updated)


def _diff(current: typing.Mapping[str, str], updated: dict[str, str]) -> ConfigChange:
    return ConfigChange({k: v for k, v in updated.items() if current.get(k) != v},
                        tuple(sorted(k for k in current if k not in updated)))
