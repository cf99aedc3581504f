"""Well-formed requests of every API and version, built from kio's schemas, and the checks
their answers must pass. Used by the conformance sweep (test_conformance.py) and as the
seed corpus of the fuzzer (fuzz.py).

A request is built by walking its dataclass fields: each field gets a plausible value by
its name (`acks` -1, `timeout` 5 s, `fetch_offset` 0, ...) or else by its type, a topic
name or id field gets the target topic, an array of entities gets one entity. So an API or
version the broker starts advertising tomorrow is built and checked without new code.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

from kio.schema.errors import ErrorCode
from kio.serial._introspect import EntityField, EntityTupleField, classify_field

from tests.kafka_wire import API_VERSIONS, KafkaWire, Record, build_batch, request_class

UNKNOWN_SERVER_ERROR = -1
NONE = 0
UNKNOWN_TOPIC_OR_PARTITION = 3
NOT_LEADER_OR_FOLLOWER = 6
TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_ID = 100

PRODUCE, FETCH, LIST_OFFSETS, METADATA = 0, 1, 2, 3
CREATE_TOPICS, DELETE_TOPICS = 19, 20
OFFSET_FOR_LEADER_EPOCH, DESCRIBE_CONFIGS, CREATE_PARTITIONS = 23, 32, 37
ELECT_LEADERS, DESCRIBE_PRODUCERS = 43, 61
ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS, DELETE_RECORDS = 33, 44, 21
FOLLOWER_FETCH_MIN_VERSION = 11  # KIP-392

# APIs that name topics and must answer every entry of a topic that does not exist with
# UNKNOWN_TOPIC_OR_PARTITION (UNKNOWN_TOPIC_ID where the version names topics by id).
TOPIC_APIS = {PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_FOR_LEADER_EPOCH, DESCRIBE_CONFIGS,
              DELETE_TOPICS, CREATE_PARTITIONS, ELECT_LEADERS, DESCRIBE_PRODUCERS, ALTER_CONFIGS,
              INCREMENTAL_ALTER_CONFIGS, DELETE_RECORDS}
# APIs that read or write a partition and answer 0 for one that exists, from its leader.
SERVE_APIS = {PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_FOR_LEADER_EPOCH, DESCRIBE_CONFIGS,
              DESCRIBE_PRODUCERS, ALTER_CONFIGS, INCREMENTAL_ALTER_CONFIGS, DELETE_RECORDS}
# Of those, the ones only the partition's leader serves (Fetch: below v11).
LEADER_ONLY_APIS = {PRODUCE, FETCH, LIST_OFFSETS, OFFSET_FOR_LEADER_EPOCH, DESCRIBE_PRODUCERS, DELETE_RECORDS}
# APIs whose "existing topic" request would change it (DeleteTopics deletes it): only the
# missing-topic form is sent.
DESTRUCTIVE_APIS = {DELETE_TOPICS}

TIMEOUT_MS = 5000

# Values by field name, for every API that has such a field. Callables take the Target.
_BY_NAME: dict[str, Any] = {
    "acks": -1, "timeout": TIMEOUT_MS, "timeout_ms": TIMEOUT_MS, "max_wait": 0, "min_bytes": 0,
    "max_bytes": 1 << 20, "partition_max_bytes": 1 << 20, "fetch_offset": 0, "log_start_offset": -1,
    "timestamp": -1, "current_leader_epoch": -1, "leader_epoch": -1, "last_fetched_epoch": -1,
    "replica_id": -1, "replica_epoch": -1, "session_id": 0, "session_epoch": -1, "isolation_level": 0,
    "producer_id": -1, "producer_epoch": -1, "generation_id": -1, "generation_id_or_member_epoch": -1,
    "member_id": "", "group_instance_id": None, "session_timeout": 10000, "rebalance_timeout": 10000,
    "protocol_type": "consumer", "protocol_name": None, "num_partitions": 1, "replication_factor": -1,
    "validate_only": True, "allow_auto_topic_creation": False, "key_type": 0,
    "key": lambda t: t.group, "group_id": lambda t: t.group, "groups": lambda t: (t.group,),
    "groups_names": lambda t: (t.group,), "coordinator_keys": lambda t: (t.group,), "partition_indexes": (0,), "resource_type": 2,
    "configuration_keys": None, "transactional_id": None, "transaction_timeout": 60000,
    "election_type": 0, "states_filter": (), "types_filter": (), "rack_id": "",
    "client_software_name": "conformance", "client_software_version": "1.0",
    "metadata": b"", "assignment": b"", "committed_offset": 0, "committed_metadata": "",
    "committed_leader_epoch": -1, "endpoint_type": 1, "count": 2, "retention_time": -1,
    "partition": 0, "partition_index": 0, "index": 0, "partition_id": 0, "require_stable": False,
    "partitions": (0,),
    "name": lambda t: t.topic, "topic": lambda t: t.topic, "resource_name": lambda t: t.topic,
    "topic_names": lambda t: (t.topic,), "topic_id": lambda t: t.topic_id,
    "transactional_ids": lambda t: (t.group,),
    "records": lambda t: t.records,
}
# Arrays of entities that stay empty (one entry would ask for something else: a topic config
# named like the topic, a manual assignment, a fetch session's forgotten topics).
_EMPTY_ARRAYS = {"assignments", "configs", "forgotten_topics_data"}


@dataclass(frozen=True)
class Target:
    """What the request addresses: a topic name and id (existing or not), records, and a
    consumer group (one per request, so no JoinGroup waits for another's members)."""
    topic: str
    topic_id: uuid.UUID
    records: bytes
    group: str = "conformance-group"


def _by_type(f: dataclasses.Field) -> Any:
    kafka_type = f.metadata.get("kafka_type", "")
    if "None" in str(f.type) and kafka_type in ("string", "bytes", "records", "uuid"):
        return None
    return {"bool": False, "string": "conformance", "bytes": b"", "records": b"", "float64": 0.0,
            "uuid": uuid.UUID(int=0), "error_code": ErrorCode.none,
            "timedelta_i32": datetime.timedelta(0), "timedelta_i64": datetime.timedelta(0),
            "datetime_i64": datetime.datetime.fromtimestamp(0, datetime.timezone.utc)}.get(kafka_type, 0)


def plausible(cls: type, target: Target) -> Any:
    """A well-formed instance of kio entity class cls addressing target."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        shape = classify_field(f)
        kafka_type = f.metadata.get("kafka_type", "")
        if isinstance(shape, EntityTupleField):
            kwargs[f.name] = () if f.name in _EMPTY_ARRAYS else (plausible(shape.type_, target),)
            continue
        if isinstance(shape, EntityField):
            kwargs[f.name] = plausible(shape.type_, target)
            continue
        value = _BY_NAME[f.name] if f.name in _BY_NAME else None
        if callable(value):
            value = value(target)
        elif f.name not in _BY_NAME:
            value = () if shape.is_array else _by_type(f)
        if value is None and "None" not in str(f.type):  # e.g. a transactional id that is not nullable here
            value = _by_type(f)
        if kafka_type.startswith("timedelta") and isinstance(value, int):
            value = datetime.timedelta(milliseconds=value)
        if shape.is_array and value is not None and not isinstance(value, tuple):
            value = (value,)
        kwargs[f.name] = value
    return cls(**kwargs)


def request_for(api_key: int, version: int, target: Target) -> Any:
    return plausible(request_class(api_key, version), target)


def advertised(conn: KafkaWire) -> list[tuple[int, int]]:
    """Every (api_key, version) the node's ApiVersions answer offers."""
    assert conn.versions is not None
    return [(key, v) for key, (lo, hi) in sorted(conn.versions.items()) for v in range(lo, hi + 1)]


def records() -> bytes:
    return build_batch([Record(b"k", b"conformance")])


# --------------------------------------------------------------------------- answers


def error_codes(obj: Any, path: str = "") -> Iterator[tuple[str, int]]:
    """(path, code) of every error_code field in a decoded answer; top-level paths have no dot."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("kafka_type") == "error_code":
            yield (path + f.name, int(value))
        elif dataclasses.is_dataclass(value):
            yield from error_codes(value, f"{path}{f.name}.")
        elif isinstance(value, tuple):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    yield from error_codes(item, f"{path}{f.name}[{i}].")


def entry_codes(answer: Any) -> list[tuple[str, int]]:
    """The error codes of the answer's entries (topics, partitions, resources), not its top."""
    return [(p, c) for p, c in error_codes(answer) if "." in p]


def by_id(api_key: int, version: int) -> bool:
    """Whether this version names topics by id only (Fetch v13+, DeleteTopics v6 by choice)."""
    return api_key == FETCH and version >= 13


def check_missing(api_key: int, version: int, answer: Any) -> str | None:
    """The failure of a missing-topic answer, or None."""
    if api_key not in TOPIC_APIS:
        return None
    codes = entry_codes(answer)
    if not codes:
        return f"no entry answers the missing topic: {answer}"
    wanted = {UNKNOWN_TOPIC_ID} if by_id(api_key, version) else {UNKNOWN_TOPIC_OR_PARTITION, UNKNOWN_TOPIC_ID}
    bad = [(p, c) for p, c in codes if c not in wanted]
    return f"missing topic answered {bad}, wanted {sorted(wanted)}" if bad else None


def check_existing(api_key: int, version: int, answer: Any, *, leader: bool) -> str | None:
    """The failure of an existing-topic answer from the partition's leader or a follower."""
    if api_key not in SERVE_APIS:
        return None
    codes = entry_codes(answer)
    if not codes:
        return f"no entry answers the existing topic: {answer}"
    not_leader_answer = (not leader and api_key in LEADER_ONLY_APIS
                         and not (api_key == FETCH and version >= FOLLOWER_FETCH_MIN_VERSION))
    wanted = NOT_LEADER_OR_FOLLOWER if not_leader_answer else NONE
    bad = [(p, c) for p, c in codes if c != wanted]
    return f"existing topic answered {bad}, wanted {wanted}" if bad else None


def check_common(answer: Any) -> str | None:
    bad = [(p, c) for p, c in error_codes(answer) if c == UNKNOWN_SERVER_ERROR]
    return f"UNKNOWN_SERVER_ERROR in {bad}" if bad else None


@dataclass
class SweepResult:
    pairs: list[tuple[int, int]]
    failures: list[str]


def sweep(conn: KafkaWire, existing: Target, missing: Target, *, leader: bool = True,
          variants: tuple[str, ...] = ("missing", "existing")) -> SweepResult:
    """Send every advertised (api_key, version) a request for each target; check the answers.

    Requests are sent one at a time on conn (each answer must decode at its version with
    nothing left over: KafkaWire.recv checks that)."""
    failures = []
    pairs = [(k, v) for k, v in advertised(conn) if k != API_VERSIONS] + \
        [(k, v) for k, v in advertised(conn) if k == API_VERSIONS]
    for api_key, version in pairs:
        for variant in variants:
            if variant == "existing" and api_key in DESTRUCTIVE_APIS:
                continue
            target = dataclasses.replace(existing if variant == "existing" else missing,
                                         group=f"conformance-{api_key}-{version}-{variant}")
            body = request_for(api_key, version, target)
            try:
                answer = conn.request(api_key, body, version=version)
            except Exception as exc:  # the report names the pair; the test fails on any
                failures.append(f"api {api_key} v{version} {variant}: no answer: {type(exc).__name__}: {exc}")
                return SweepResult(pairs, failures)  # the connection is gone
            problem = check_common(answer) or (
                check_missing(api_key, version, answer) if variant == "missing"
                else check_existing(api_key, version, answer, leader=leader))
            if problem:
                failures.append(f"api {api_key} v{version} {variant}: {problem}")
    return SweepResult(pairs, failures)
