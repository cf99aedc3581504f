"""`chronik-trio admin`: inspect and change a cluster over the Kafka protocol.

Every command speaks the Kafka protocol itself, one request per blocking socket, encoded
and decoded by kio (a core dependency), so the tool works after a plain `pip install -e .`:
Metadata v12 (brokers, controller, and each partition's leader, leader epoch, replicas, ISR
and offline replicas in one answer), CreateTopics, DeleteTopics and ElectLeaders (sent to
the controller, as Kafka's own tools do), DescribeCluster, DescribeConfigs and
IncrementalAlterConfigs (`config get|set|delete`: any broker, the change goes through
__meta), Describe/AlterUserScramCredentials (`user`: SCRAM users, the password salted and
hashed here), the ACL APIs (`acl`), and an ApiVersions request to each broker to learn
whether it answers at all (for `health`). Bootstrap addresses are
tried in turn until one answers.

Secured listeners: --security-protocol SSL, SASL_PLAINTEXT or SASL_SSL, with the SASL
mechanism, user and CA as flags or in a --command-config file of librdkafka's property names
(`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`,
`ssl.ca.location`, `ssl.certificate.location`, `ssl.key.location`); the SASL password is
read from that file only, never from a flag. Each request's connection does its TLS
handshake and SASL exchange (PLAIN or SCRAM, whose server signature is checked) first.

Exit codes: 0 done (and, for `health`, healthy); 1 the cluster refused the operation or
`health` found problems; 2 bad options or no answer from the cluster.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import hashlib
import json
import os
import secrets
import socket
import ssl
import struct
import sys
import time
import uuid

import kio.index
from kio.schema.errors import ErrorCode

from chronik_trio.kafka.codec import build, decode_client_response, encode_client_request
from chronik_trio.kafka.sasl import MECHANISMS as SASL_MECHANISMS, PLAIN, SaslFailed, ScramClient

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TIMEOUT_S = 10.0
METADATA_API_KEY, METADATA_VERSION = 3, 12
CREATE_TOPICS_API_KEY, CREATE_TOPICS_VERSION = 19, 7
DELETE_TOPICS_API_KEY, DELETE_TOPICS_VERSION = 20, 6
ELECT_LEADERS_API_KEY, ELECT_LEADERS_VERSION = 43, 2
DESCRIBE_CLUSTER_API_KEY, DESCRIBE_CLUSTER_VERSION = 60, 0
API_VERSIONS_API_KEY, API_VERSIONS_VERSION = 18, 0
DESCRIBE_CONFIGS_API_KEY, DESCRIBE_CONFIGS_VERSION = 32, 4
INCREMENTAL_ALTER_CONFIGS_API_KEY, INCREMENTAL_ALTER_CONFIGS_VERSION = 44, 1
RESOURCE_TOPIC, RESOURCE_BROKER, RESOURCE_GROUP = 2, 4, 32  # DescribeConfigs resource types
OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3
CONFIG_SOURCES = {1: "topic", 2: "broker", 3: "cluster-default", 4: "static", 5: "default", 8: "group"}
CONFIG_TYPES = {1: "BOOLEAN", 2: "STRING", 3: "INT", 4: "SHORT", 5: "LONG", 6: "DOUBLE", 7: "LIST",
                8: "CLASS", 9: "PASSWORD"}
DESCRIBE_SCRAM_API_KEY, ALTER_SCRAM_API_KEY = 50, 51
SCRAM_MECHANISM_TYPES = {"SCRAM-SHA-256": 1, "SCRAM-SHA-512": 2}  # Kafka's ScramMechanism
SCRAM_ITERATIONS_DEFAULT = 8192  # Kafka's tools default (4096 is the minimum)
SCRAM_SALT_BYTES = 32
ELECTION_TYPE_PREFERRED = 0
NOT_CONTROLLER = 41
ELECTION_NOT_NEEDED = 84
RESPONSE_BYTES_MAX = 64 << 20  # a Metadata answer for many thousands of partitions fits
CLIENT_ID = "chronik-trio-admin"
# A request to the controller that finds it moved is sent again to the new one (the
# controller is __meta's Raft leader, which may change during an election); this many times.
CONTROLLER_ATTEMPTS_MAX = 5
CONTROLLER_RETRY_S = 0.2


class AdminError(Exception):
    """The command could not be done; the message says why. exit_code: 1 or 2 (see above)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def error_name(code) -> str | None:
    """The protocol's name of a Kafka error code (TOPIC_ALREADY_EXISTS), None for no error."""
    code = int(code)
    if code == 0:
        return None
    try:
        return ErrorCode(code).name.upper()
    except ValueError:
        return f"ERROR_{code}"


def _bootstrap(args) -> list[str]:
    return [a.strip() for a in args.bootstrap.split(",") if a.strip()]


# --- connections: plaintext, TLS, SASL ----------------------------------------------------------

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_HANDSHAKE_API_KEY, SASL_HANDSHAKE_VERSION = 17, 1
SASL_AUTHENTICATE_API_KEY, SASL_AUTHENTICATE_VERSION = 36, 2
# --command-config keys (librdkafka's names) -> our option names
COMMAND_CONFIG_KEYS = {"security.protocol": "security_protocol", "sasl.mechanism": "sasl_mechanism",
                       "sasl.username": "sasl_username", "sasl.password": "sasl_password",
                       "ssl.ca.location": "ssl_cafile", "ssl.certificate.location": "ssl_certfile",
                       "ssl.key.location": "ssl_keyfile"}


class Security:
    """How to open a connection: TLS (with which CA and client certificate) and SASL."""

    def __init__(self, *, security_protocol: str = "PLAINTEXT", sasl_mechanism: str | None = None,
                 sasl_username: str | None = None, sasl_password: str | None = None,
                 ssl_cafile: str | None = None, ssl_certfile: str | None = None,
                 ssl_keyfile: str | None = None) -> None:
        self.protocol = security_protocol.upper()
        if self.protocol not in SECURITY_PROTOCOLS:
            raise AdminError(f"security.protocol must be one of {', '.join(SECURITY_PROTOCOLS)}, got "
                             f"{security_protocol!r}", exit_code=2)
        self.mechanism = (sasl_mechanism or "SCRAM-SHA-512").upper()
        self.username, self.password = sasl_username, sasl_password
        self.context: ssl.SSLContext | None = None
        if self.protocol.startswith("SASL"):
            if self.mechanism not in SASL_MECHANISMS:
                raise AdminError(f"sasl.mechanism must be one of {', '.join(SASL_MECHANISMS)}", exit_code=2)
            if not self.username or self.password is None:
                raise AdminError(f"{self.protocol} needs sasl.username and sasl.password (the password in "
                                 f"the --command-config file)", exit_code=2)
        if self.protocol.endswith("SSL"):
            try:
                self.context = ssl.create_default_context(cafile=ssl_cafile)
                if ssl_certfile:
                    self.context.load_cert_chain(ssl_certfile, ssl_keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise AdminError(f"TLS files do not load: {exc}", exit_code=2) from None

    def connect(self, address: str, timeout_s: float) -> socket.socket:
        """A connection to `address`, through TLS and SASL as configured.

        Raises OSError (refused, TLS failed, timed out) or AdminError (authentication failed).
        """
        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        try:
            sock.settimeout(timeout_s)
            if self.context is not None:
                sock = self.context.wrap_socket(sock, server_hostname=host)
            if self.protocol.startswith("SASL"):
                self._authenticate(sock, address)
            return sock
        except BaseException:
            sock.close()
            raise

    def _authenticate(self, sock: socket.socket, address: str) -> None:
        answer = _exchange(sock, address, SASL_HANDSHAKE_API_KEY, SASL_HANDSHAKE_VERSION,
                           {"mechanism": self.mechanism})
        if answer.error_code != 0:
            raise AdminError(f"{address} does not offer SASL {self.mechanism} ({error_name(answer.error_code)}; "
                             f"it offers {', '.join(answer.mechanisms) or 'none'})", exit_code=2)
        if self.mechanism == PLAIN:
            self._step(sock, address, b"\0" + self.username.encode() + b"\0" + self.password.encode())
            return
        client = ScramClient(self.mechanism, self.username, self.password,
                             base64.b64encode(secrets.token_bytes(24)).decode())
        try:
            client.verify(self._step(sock, address, client.final(self._step(sock, address, client.first()))))
        except SaslFailed as exc:
            raise AdminError(f"{address}: SASL {self.mechanism}: {exc}", exit_code=2) from None

    def _step(self, sock: socket.socket, address: str, token: bytes) -> bytes:
        answer = _exchange(sock, address, SASL_AUTHENTICATE_API_KEY, SASL_AUTHENTICATE_VERSION,
                           {"auth_bytes": token})
        if answer.error_code != 0:
            raise AdminError(f"{address}: SASL {self.mechanism} authentication as {self.username!r} failed "
                             f"({error_name(answer.error_code)}: {answer.error_message})", exit_code=2)
        return answer.auth_bytes


def security_of(args) -> Security:
    """The Security of the --command-config file, with flags overriding it."""
    options: dict[str, str] = {}
    path = getattr(args, "command_config", None)
    if path:
        try:
            lines = open(path, encoding="utf-8").read().splitlines()
        except OSError as exc:
            raise AdminError(f"--command-config: {exc}", exit_code=2) from None
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if not line or line.startswith(("#", "!")):
                continue
            key, sep, value = line.partition("=")
            if not sep or key.strip() not in COMMAND_CONFIG_KEYS:
                raise AdminError(f"--command-config {path}, line {number}: expected one of "
                                 f"{', '.join(COMMAND_CONFIG_KEYS)} as KEY=VALUE", exit_code=2)
            options[COMMAND_CONFIG_KEYS[key.strip()]] = value.strip()
    for name in ("security_protocol", "sasl_mechanism", "sasl_username", "ssl_cafile", "ssl_certfile",
                 "ssl_keyfile"):
        if getattr(args, name, None):
            options[name] = getattr(args, name)
    return Security(**options)


# --- plain Kafka requests (kio) --------------------------------------------------------------

def kafka_request(address: str, api_key: int, version: int, body, timeout_s: float,
                  security: Security | None = None):
    """Send one request on a fresh connection and return the decoded response body.

    `body` is a kio request entity, or a dict of its fields (nested entities as dicts).

    Raises OSError (refused, reset, timed out, closed early, TLS failed), ValueError (a bad
    answer) or AdminError (SASL authentication failed).
    """
    with (security or Security()).connect(address, timeout_s) as sock:
        return _exchange(sock, address, api_key, version, body)


def _exchange(sock: socket.socket, address: str, api_key: int, version: int, body):
    """One request and its answer on an open connection."""
    correlation_id = 1
    sock.sendall(encode_client_request(api_key, version, body, correlation_id, CLIENT_ID))
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    if not 0 < size <= RESPONSE_BYTES_MAX:
        raise ValueError(f"{address} answered a frame of {size} bytes")
    answer = _recv_exact(sock, size)
    try:
        return decode_client_response(api_key, version, answer, correlation_id)
    except ValueError as exc:
        raise ValueError(f"{address}: {exc}") from None


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def probe(address: str, timeout_s: float, security: Security | None = None) -> str | None:
    """None if the broker answers an ApiVersions request, else why not."""
    request_cls = kio.index.load_request_schema(API_VERSIONS_API_KEY, API_VERSIONS_VERSION)
    try:
        response = kafka_request(address, API_VERSIONS_API_KEY, API_VERSIONS_VERSION, request_cls(), timeout_s,
                                 security)
    except (OSError, ValueError, AdminError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if response.error_code != 0:
        return f"ApiVersions error code {int(response.error_code)}"
    return None


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def ask_any(args, api_key: int, version: int, body) -> tuple[str, object]:
    """(address, answer) of the first bootstrap address that answers the request.

    Raises:
        AdminError (exit code 2): none answered within args.timeout each.
    """
    reasons = []
    for address in _bootstrap(args):
        try:
            return address, kafka_request(address, api_key, version, body, args.timeout, getattr(args, "security", None))
        except (OSError, ValueError) as exc:
            reasons.append(f"{address}: {_reason(exc)}")
    raise AdminError(f"no answer from {args.bootstrap} within {args.timeout:g} s "
                     f"({'; '.join(reasons) or 'no address given'})", exit_code=2)


def metadata(args):
    """Metadata v12 of every topic from the first bootstrap address that answers."""
    _, md = ask_any(args, METADATA_API_KEY, METADATA_VERSION,
                    {"topics": None, "allow_auto_topic_creation": False})
    return md


def ask_controller(args, api_key: int, version: int, body, what: str, error_codes):
    """Send the request to the controller (the __meta leader) as the Metadata answer names
    it; again to the new one when the answer is NOT_CONTROLLER (error_codes(answer) lists the
    answer's codes), at most CONTROLLER_ATTEMPTS_MAX times. Returns the last answer."""
    answer = None
    for _ in range(CONTROLLER_ATTEMPTS_MAX):
        md = metadata(args)
        brokers = {int(b.node_id): f"{b.host}:{b.port}" for b in md.brokers}
        address = brokers.get(int(md.controller_id))
        if address is None:
            time.sleep(CONTROLLER_RETRY_S)
            continue
        try:
            answer = kafka_request(address, api_key, version, body, args.timeout, getattr(args, "security", None))
        except (OSError, ValueError) as exc:
            raise AdminError(f"{what}: no answer from the controller at {address} within "
                             f"{args.timeout:g} s ({_reason(exc)})", exit_code=2) from None
        if NOT_CONTROLLER not in [int(c) for c in error_codes(answer)]:
            return answer
        time.sleep(CONTROLLER_RETRY_S)
    if answer is None:
        raise AdminError(f"{what}: the cluster names no controller (the __meta group has no "
                         f"leader)", exit_code=2)
    return answer


# --- topics ------------------------------------------------------------------------------------

def topic_rows(md) -> list[dict]:
    topics = []
    for t in sorted(md.topics, key=lambda t: t.name):
        partitions = [{
            "partition": int(p.partition_index), "leader": int(p.leader_id),
            "leader_epoch": int(p.leader_epoch) if int(p.leader_epoch) >= 0 else None,
            "replicas": [int(r) for r in p.replica_nodes], "isr": [int(r) for r in p.isr_nodes],
            "offline_replicas": [int(r) for r in p.offline_replicas],
            "error": error_name(p.error_code)}
            for p in sorted(t.partitions, key=lambda p: p.partition_index)]
        topics.append({"name": t.name, "error": error_name(t.error_code), "partitions": partitions})
    return topics


def _ids(ids) -> str:
    return ",".join(map(str, ids)) if ids else "-"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def cmd_topics(args) -> int:
    topics = topic_rows(metadata(args))
    wanted = set(args.names)
    if wanted:
        missing = sorted(wanted - {t["name"] for t in topics})
        if missing:
            raise AdminError(f"no such topic(s): {', '.join(missing)}")
        topics = [t for t in topics if t["name"] in wanted]
    if args.json:
        print(json.dumps({"topics": topics}, indent=2))
        return 0
    rows = [[t["name"], p["partition"], p["leader"] if p["leader"] >= 0 else "none",
             "?" if p["leader_epoch"] is None else p["leader_epoch"], _ids(p["replicas"]), _ids(p["isr"]),
             _ids(p["offline_replicas"]), p["error"] or ""]
            for t in topics for p in t["partitions"]]
    if not rows:
        print("no topics")
        return 0
    print(format_table(["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE", "ERROR"], rows))
    return 0


def _configs(pairs: list[str]) -> dict[str, str]:
    configs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AdminError(f"--config expects KEY=VALUE, got {pair!r}", exit_code=2)
        configs[key] = value
    return configs


def _timeout_ms(args) -> int:
    return int(args.timeout * 1000)


def _refused(what: str, code, message: str | None) -> AdminError:
    return AdminError(f"{what}: {error_name(code)}" + (f": {message}" if message else ""))


def _ask_one_topic(args, api_key: int, version: int, body, what: str, results) -> None:
    """A request about one topic to the controller; results(answer) lists the answer's one
    per-topic result, whose error is raised as AdminError."""
    answer = ask_controller(args, api_key, version, body, what, lambda a: [t.error_code for t in results(a)])
    (topic,) = results(answer)
    if int(topic.error_code) != 0:
        raise _refused(what, topic.error_code, topic.error_message)


def cmd_create_topic(args) -> int:
    configs = _configs(args.config)
    what = f"create-topic {args.name}"
    _ask_one_topic(args, CREATE_TOPICS_API_KEY, CREATE_TOPICS_VERSION, {
        "topics": [{"name": args.name, "num_partitions": args.partitions,
                    "replication_factor": args.replication_factor,
                    "configs": [{"name": k, "value": v} for k, v in configs.items()]}],
        "timeout": _timeout_ms(args), "validate_only": False}, what, lambda a: a.topics)
    print(f"created topic {args.name}")
    return 0


def cmd_delete_topic(args) -> int:
    what = f"delete-topic {args.name}"
    _ask_one_topic(args, DELETE_TOPICS_API_KEY, DELETE_TOPICS_VERSION, {
        "topics": [{"name": args.name}], "timeout": _timeout_ms(args)}, what, lambda a: a.responses)
    print(f"deleted topic {args.name}")
    return 0


def cmd_elect_preferred(args) -> int:
    """Move leadership to each partition's preferred replica (ElectLeaders, PREFERRED)."""
    partitions = None  # every partition of every topic
    if args.name is not None:
        (topic,) = [t for t in topic_rows(metadata(args)) if t["name"] == args.name] or [None]
        if topic is None:
            raise AdminError(f"no such topic: {args.name}")
        chosen = args.partitions or [p["partition"] for p in topic["partitions"]]
        partitions = [{"topic": args.name, "partitions": chosen}]
    answer = ask_controller(args, ELECT_LEADERS_API_KEY, ELECT_LEADERS_VERSION, {
        "election_type": ELECTION_TYPE_PREFERRED, "topic_partitions": partitions,
        "timeout": _timeout_ms(args)}, "elect-preferred",
        lambda a: [a.error_code, *(p.error_code for r in a.replica_election_results
                                   for p in r.partition_result)])
    if int(answer.error_code) != 0:
        raise _refused("elect-preferred", answer.error_code, None)
    results = sorted((r.topic, int(p.partition_id), int(p.error_code), p.error_message)
                     for r in answer.replica_election_results for p in r.partition_result)
    failed = 0
    for topic, partition, code, message in results:
        if code == 0:
            state = "moved to its preferred replica"
        elif code == ELECTION_NOT_NEEDED:
            state = "already led by its preferred replica"
        else:
            state, failed = f"{error_name(code)}: {message or ''}".rstrip(": "), failed + 1
        print(f"{topic}-{partition}: {state}")
    return 1 if failed else 0


# --- configs -----------------------------------------------------------------------------------

def _config_resource(args) -> tuple[int, str, str]:
    """(resource type, name, what) from --topic / --group / --broker / --broker-default."""
    if args.topic is not None:
        return RESOURCE_TOPIC, args.topic, f"topic {args.topic}"
    if args.group is not None:
        return RESOURCE_GROUP, args.group, f"group {args.group}"
    if args.broker is not None:
        return RESOURCE_BROKER, str(args.broker), f"broker {args.broker}"
    return RESOURCE_BROKER, "", "the cluster-wide broker default"


def cmd_config_get(args) -> int:
    rtype, name, what = _config_resource(args)
    _, answer = ask_any(args, DESCRIBE_CONFIGS_API_KEY, DESCRIBE_CONFIGS_VERSION, {
        "resources": [{"resource_type": rtype, "resource_name": name,
                       "configuration_keys": args.keys or None}],
        "include_synonyms": True, "include_documentation": True})
    (result,) = answer.results
    if int(result.error_code) != 0:
        raise _refused(f"config get {what}", result.error_code, result.error_message)
    rows = [{"name": c.name, "value": c.value, "source": CONFIG_SOURCES.get(int(c.config_source), "unknown"),
             "type": CONFIG_TYPES.get(int(c.config_type), "UNKNOWN"), "read_only": bool(c.read_only),
             "documentation": c.documentation} for c in sorted(result.configs, key=lambda c: c.name)]
    if args.json:
        print(json.dumps({"resource": what, "configs": rows}, indent=2))
    elif rows:
        print(format_table(["NAME", "VALUE", "SOURCE", "TYPE", "READ-ONLY"],
                           [[r["name"], r["value"] if r["value"] is not None else "-", r["source"], r["type"],
                             "yes" if r["read_only"] else ""] for r in rows]))
    else:
        print(f"no configs set for {what}")
    return 0


def _alter(args, ops: list[tuple[str, int, str | None]], verb: str) -> int:
    rtype, name, what = _config_resource(args)
    _, answer = ask_any(args, INCREMENTAL_ALTER_CONFIGS_API_KEY, INCREMENTAL_ALTER_CONFIGS_VERSION, {
        "resources": [{"resource_type": rtype, "resource_name": name, "configs": [
            {"name": k, "config_operation": op, "value": v} for k, op, v in ops]}],
        "validate_only": args.validate_only})
    (result,) = answer.responses
    if int(result.error_code) != 0:
        raise _refused(f"config {verb} {what}", result.error_code, result.error_message)
    done = "valid (nothing changed: --validate-only)" if args.validate_only else "changed"
    print(f"{what}: {', '.join(k for k, _, _ in ops)} {done}")
    return 0


def cmd_config_set(args) -> int:
    ops = [(k, OP_SET, v) for k, v in _configs(args.pairs).items()]
    ops += [(k, OP_APPEND, v) for k, v in _configs(args.append).items()]
    ops += [(k, OP_SUBTRACT, v) for k, v in _configs(args.subtract).items()]
    if not ops:
        raise AdminError("config set: give KEY=VALUE, --append KEY=ITEM or --subtract KEY=ITEM", exit_code=2)
    return _alter(args, ops, "set")


def cmd_config_delete(args) -> int:
    return _alter(args, [(k, OP_DELETE, None) for k in args.keys], "delete")


def cmd_config(args) -> int:
    return {"get": cmd_config_get, "set": cmd_config_set, "delete": cmd_config_delete}[args.config_command](args)


# --- cluster and health ------------------------------------------------------------------------

def cmd_cluster(args) -> int:
    _, cluster = ask_any(args, DESCRIBE_CLUSTER_API_KEY, DESCRIBE_CLUSTER_VERSION,
                         {"include_cluster_authorized_operations": False})
    if int(cluster.error_code) != 0:
        raise _refused("cluster", cluster.error_code, cluster.error_message)
    brokers = [{"id": int(b.broker_id), "host": b.host, "port": int(b.port), "rack": b.rack}
               for b in sorted(cluster.brokers, key=lambda b: b.broker_id)]
    controller = int(cluster.controller_id) if int(cluster.controller_id) >= 0 else None
    if args.json:
        print(json.dumps({"cluster_id": cluster.cluster_id, "controller": controller, "brokers": brokers},
                         indent=2))
        return 0
    print(f"cluster id: {cluster.cluster_id}")
    print(f"controller: {controller if controller is not None else 'none (the __meta group has no leader)'}")
    print(format_table(["BROKER", "ADDRESS", "RACK"],
                       [[b["id"], f"{b['host']}:{b['port']}", b["rack"] or "-"] for b in brokers]))
    return 0


def health_problems(md, unreachable: dict[int, str]) -> list[dict]:
    """Every problem of a cluster, from its Metadata and which brokers did not answer (pure).

    A broker stays registered after it dies, so its absence shows only as no answer; the
    partitions it led show as led by an unreachable broker until a new leader reports in,
    and those it replicates as under-replicated once their leaders shrink the ISR.
    """
    problems = []

    def problem(kind: str, message: str, **where) -> None:
        problems.append({"kind": kind, **where, "message": message})

    if int(md.controller_id) < 0:
        problem("no_controller", "no controller: the answering broker knows no leader of __meta")
    brokers = {int(b.node_id): f"{b.host}:{b.port}" for b in md.brokers}
    for broker_id in sorted(unreachable):
        problem("broker_unreachable", f"broker {broker_id} at {brokers[broker_id]} does not answer: "
                f"{unreachable[broker_id]}", broker=broker_id)
    for t in topic_rows(md):
        for p in t["partitions"]:
            where = {"topic": t["name"], "partition": p["partition"]}
            tp, leader = f"{t['name']}-{p['partition']}", p["leader"]
            if leader < 0:
                reason = f" ({p['error']})" if p["error"] is not None else ""
                problem("no_leader", f"{tp}: no leader{reason}", **where)
            elif leader not in brokers:
                problem("leader_not_registered", f"{tp}: leader {leader} is not a registered broker", **where)
            elif leader in unreachable:
                problem("leader_unreachable", f"{tp}: leader {leader} does not answer", **where)
            unregistered = [r for r in p["replicas"] if r not in brokers]
            if unregistered:
                problem("replica_not_registered", f"{tp}: replica(s) {_ids(unregistered)} not registered "
                        f"brokers", replicas=unregistered, **where)
            down = [r for r in p["replicas"] if r in unreachable]
            if down:
                problem("replica_unreachable", f"{tp}: replica(s) {_ids(down)} on brokers that do not answer",
                        replicas=down, **where)
            out_of_sync = [r for r in p["replicas"] if r not in p["isr"]]
            if out_of_sync:
                problem("under_replicated", f"{tp}: under-replicated: ISR {_ids(p['isr'])} of replicas "
                        f"{_ids(p['replicas'])}", replicas=out_of_sync, **where)
    return problems


def cmd_health(args) -> int:
    md = metadata(args)
    addresses = {int(b.node_id): f"{b.host}:{b.port}" for b in md.brokers}
    unreachable = unreachable_brokers(args, md, set(addresses))
    problems = health_problems(md, unreachable)
    partitions = sum(len(t.partitions) for t in md.topics)
    controller = int(md.controller_id)
    summary = {"healthy": not problems, "brokers": len(addresses), "topics": len(md.topics),
               "partitions": partitions, "controller": controller, "problems": problems}
    if args.json:
        print(json.dumps(summary, indent=2))
    elif problems:
        print(f"unhealthy: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p['message']}")
    else:
        print(f"healthy: {len(addresses)} broker(s) answer, controller {controller}, "
              f"{len(md.topics)} topic(s), {partitions} partition(s) each with a leader and a full ISR")
    return 1 if problems else 0


# --- users (SCRAM credentials) ----------------------------------------------------------------

def _read_password(args) -> str:
    """The password from --password-file, else the first line of stdin (never a flag: flags
    are visible in the process list)."""
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as f:
            text = f.readline()
    else:
        text = sys.stdin.readline()
    password = text.rstrip("\r\n")
    if not password:
        raise AdminError("empty password", exit_code=2)
    return password


def cmd_user(args) -> int:
    what = f"user {args.action}" + (f" {args.name}" if args.name else "")
    if args.action == "list" or (args.action == "describe" and args.name):
        users = None if args.action == "list" else [{"name": args.name}]
        _, answer = ask_any(args, DESCRIBE_SCRAM_API_KEY, 0, {"users": users})
        if int(answer.error_code) != 0:
            raise _refused(what, answer.error_code, answer.error_message)
        names = {v: k for k, v in SCRAM_MECHANISM_TYPES.items()}
        rows = []
        for result in answer.results:
            if int(result.error_code) != 0:
                raise _refused(what, result.error_code, result.error_message)
            for info in result.credential_infos:
                rows.append([result.user, names.get(int(info.mechanism), str(int(info.mechanism))),
                             str(int(info.iterations))])
        print(format_table(["USER", "MECHANISM", "ITERATIONS"], rows))
        return 0
    if not args.name:
        raise AdminError(f"{what}: a user name is needed", exit_code=2)
    mechanisms = args.mechanism or list(SCRAM_MECHANISM_TYPES)
    if args.action == "delete":
        body = {"deletions": [{"name": args.name, "mechanism": SCRAM_MECHANISM_TYPES[m]} for m in mechanisms],
                "upsertions": []}
    else:
        password = _read_password(args)
        upsertions = []
        for m in mechanisms:
            salt = os.urandom(SCRAM_SALT_BYTES)
            hashed = hashlib.pbkdf2_hmac(m.removeprefix("SCRAM-").replace("-", "").lower(), password.encode(),
                                         salt, args.iterations)
            upsertions.append({"name": args.name, "mechanism": SCRAM_MECHANISM_TYPES[m],
                               "iterations": args.iterations, "salt": salt, "salted_password": hashed})
        body = {"deletions": [], "upsertions": upsertions}
    _, answer = ask_any(args, ALTER_SCRAM_API_KEY, 0, body)
    for result in answer.results:
        if int(result.error_code) != 0:
            raise _refused(what, result.error_code, result.error_message)
    print(f"{'deleted' if args.action == 'delete' else 'set'} {', '.join(mechanisms)} credentials of user {args.name}")
    return 0


# --- ACLs -------------------------------------------------------------------------------------

ACL_VERSION = 3
DESCRIBE_ACLS_API_KEY, CREATE_ACLS_API_KEY, DELETE_ACLS_API_KEY = 29, 30, 31
RESOURCE_TYPES = {"any": 1, "topic": 2, "group": 3, "cluster": 4, "transactional-id": 5}
PATTERN_TYPES = {1: "ANY", 3: "LITERAL", 4: "PREFIXED"}
OPERATIONS = {name: number for number, name in enumerate(
    ("unknown", "any", "all", "read", "write", "create", "delete", "alter", "describe", "cluster-action",
     "describe-configs", "alter-configs", "idempotent-write"))}
PERMISSIONS = {1: "ANY", 2: "DENY", 3: "ALLOW"}
CLUSTER_RESOURCE = "kafka-cluster"


def _acl_resource(args) -> tuple[int, str | None]:
    given = [(kind, value) for kind, value in (("topic", args.topic), ("group", args.group),
                                                ("transactional-id", args.transactional_id)) if value]
    if args.cluster:
        given.append(("cluster", CLUSTER_RESOURCE))
    if len(given) > 1:
        raise AdminError("give one of --topic, --group, --transactional-id, --cluster", exit_code=2)
    if not given:
        return RESOURCE_TYPES["any"], None
    kind, name = given[0]
    return RESOURCE_TYPES[kind], name


def _acl_rows(resource_type, name, pattern, principal, host, operation, permission) -> list[str]:
    kinds = {v: k for k, v in RESOURCE_TYPES.items()}
    operations = {v: k for k, v in OPERATIONS.items()}
    return [kinds.get(int(resource_type), str(int(resource_type))), name, PATTERN_TYPES.get(int(pattern), "?"),
            principal, host, operations.get(int(operation), str(int(operation))).upper(),
            PERMISSIONS.get(int(permission), "?")]


ACL_HEADER = ["RESOURCE", "NAME", "PATTERN", "PRINCIPAL", "HOST", "OPERATION", "PERMISSION"]


def cmd_acl(args) -> int:
    resource_type, name = _acl_resource(args)
    what = f"acl {args.action}"
    pattern = 4 if args.prefixed else 3
    if args.action == "list":
        _, answer = ask_any(args, DESCRIBE_ACLS_API_KEY, ACL_VERSION, {
            "resource_type_filter": resource_type, "resource_name_filter": name,
            "pattern_type_filter": 2 if name is not None and not args.prefixed else (4 if args.prefixed else 1),
            "principal_filter": args.principal, "host_filter": None, "operation": 1, "permission_type": 1})
        if int(answer.error_code) != 0:
            raise _refused(what, answer.error_code, answer.error_message)
        rows = [_acl_rows(r.resource_type, r.resource_name, r.pattern_type, a.principal, a.host, a.operation,
                          a.permission_type) for r in answer.resources for a in r.acls]
        print(format_table(ACL_HEADER, rows))
        return 0
    if not args.principal or not args.operation or name is None:
        raise AdminError(f"{what}: needs --principal, --operation and a resource", exit_code=2)
    permission = 2 if args.deny else 3
    entries = [{"resource_type": resource_type, "resource_name": name, "principal": args.principal,
                "host": args.host, "operation": OPERATIONS[op], "permission_type": permission}
               for op in args.operation]
    if args.action == "add":
        _, answer = ask_any(args, CREATE_ACLS_API_KEY, ACL_VERSION, {
            "creations": [{**e, "resource_pattern_type": pattern} for e in entries]})
        for result in answer.results:
            if int(result.error_code) != 0:
                raise _refused(what, result.error_code, result.error_message)
        print(f"added {len(entries)} ACL(s)")
        return 0
    _, answer = ask_any(args, DELETE_ACLS_API_KEY, ACL_VERSION, {"filters": [
        {"resource_type_filter": e["resource_type"], "resource_name_filter": e["resource_name"],
         "pattern_type_filter": pattern, "principal_filter": e["principal"], "host_filter": e["host"],
         "operation": e["operation"], "permission_type": e["permission_type"]} for e in entries]})
    removed = 0
    for result in answer.filter_results:
        if int(result.error_code) != 0:
            raise _refused(what, result.error_code, result.error_message)
        removed += len(result.matching_acls)
    print(f"removed {removed} ACL(s)")
    return 0


# --- the command -------------------------------------------------------------------------------

REMOVE_RAFT_VOTER_API_KEY, UNREGISTER_BROKER_API_KEY = 81, 64
REMOVE_NODE_WAIT_S = 40.0  # the broker answers once __meta's voters changed (it waits up to 30 s)


def cmd_remove_node(args) -> int:
    """Take a node out of the cluster: RemoveRaftVoter, or UnregisterBroker with --force (a
    dead node that still hosts replicas). Refusals name the reason (docs/operations.md)."""
    if args.force:
        api_key, body = UNREGISTER_BROKER_API_KEY, {"broker_id": args.node_id}
    else:
        api_key, body = REMOVE_RAFT_VOTER_API_KEY, {"cluster_id": None, "voter_id": args.node_id,
                                                    "voter_directory_id": uuid.UUID(int=0)}
    args.timeout = max(args.timeout, REMOVE_NODE_WAIT_S)
    _, answer = ask_any(args, api_key, 0, body)
    if int(answer.error_code) != 0:
        raise _refused(f"remove-node {args.node_id}", answer.error_code, answer.error_message)
    print(f"node {args.node_id} removed: out of the broker registry and of __meta's voters")
    return 0


# --- moving partitions (issue 17) ---------------------------------------------------------------

ALTER_REASSIGNMENTS_API_KEY, ALTER_REASSIGNMENTS_VERSION = 45, 0
LIST_REASSIGNMENTS_API_KEY, LIST_REASSIGNMENTS_VERSION = 46, 0
MOVE_WAIT_POLL_S = 0.5


class Refused(AdminError):
    """A move that would break a partition (named in the message)."""


def _majority(count: int) -> int:
    return count // 2 + 1


def plan_decommission(topics: list[dict], brokers: list[int], node: int) -> dict[tuple[str, int], list[int]]:
    """(topic, partition) -> new replicas moving every replica off node, each partition
    keeping its replication factor: node's place goes to the broker holding fewest replicas
    (after the moves planned so far) among those not holding one of that partition. topics:
    topic_rows(). Raises Refused naming every partition that cannot move: no other broker is
    free to take the replica, or its in-sync replicas are no quorum of the old or the new
    replica set (a joint-consensus change needs both)."""
    load = {b: 0 for b in brokers if b != node}
    for t in topics:
        for p in t["partitions"]:
            for r in p["replicas"]:
                if r in load:
                    load[r] += 1
    plan, refusals = {}, []
    for t in topics:
        for p in t["partitions"]:
            replicas, isr = p["replicas"], set(p["isr"])
            if node not in replicas:
                continue
            name = f"{t['name']}-{p['partition']}"
            free = sorted((count, b) for b, count in load.items() if b not in replicas)
            if not free:
                refusals.append(f"{name}: replicas {_ids(replicas)} cover every other broker; no broker "
                                f"can take node {node}'s replica (replication factor {len(replicas)})")
                continue
            if len(isr) < _majority(len(replicas)) or len(isr - {node}) + 1 < _majority(len(replicas)):
                refusals.append(f"{name}: only {_ids(sorted(isr)) if isr else 'no replica'} in sync of "
                                f"replicas {_ids(replicas)}: moving node {node}'s replica needs a quorum")
                continue
            new = free[0][1]
            load[new] += 1
            plan[(t["name"], p["partition"])] = [new if r == node else r for r in replicas]
    if refusals:
        raise Refused("refusing to decommission node %d:\n  %s" % (node, "\n  ".join(refusals)))
    return plan


def alter_reassignments(args, moves: dict[tuple[str, int], list[int] | None]) -> list[str]:
    """Send one AlterPartitionReassignments; the failures as lines (empty: all accepted)."""
    by_topic: dict[str, list[dict]] = {}
    for (topic, partition), replicas in sorted(moves.items()):
        by_topic.setdefault(topic, []).append({"partition_index": partition, "replicas": replicas})
    _, answer = ask_any(args, ALTER_REASSIGNMENTS_API_KEY, ALTER_REASSIGNMENTS_VERSION, {
        "timeout": _timeout_ms(args), "topics": [{"name": t, "partitions": ps} for t, ps in by_topic.items()]})
    if int(answer.error_code) != 0:
        raise _refused("reassign", answer.error_code, answer.error_message)
    return [f"{t.name}-{int(p.partition_index)}: {error_name(p.error_code)}: {p.error_message or ''}".rstrip(": ")
            for t in answer.responses for p in t.partitions if int(p.error_code) != 0]


def list_reassignments(args) -> dict[tuple[str, int], dict]:
    _, answer = ask_any(args, LIST_REASSIGNMENTS_API_KEY, LIST_REASSIGNMENTS_VERSION,
                        {"timeout": _timeout_ms(args), "topics": None})
    if int(answer.error_code) != 0:
        raise _refused("reassignments", answer.error_code, answer.error_message)
    return {(t.name, int(p.partition_index)): {
        "replicas": [int(r) for r in p.replicas], "adding": [int(r) for r in p.adding_replicas],
        "removing": [int(r) for r in p.removing_replicas]} for t in answer.topics for p in t.partitions}


def wait_moved(args, moves: dict[tuple[str, int], list[int]]) -> None:
    """Until no move of these partitions is listed in progress and Metadata shows each one's
    replicas as planned; AdminError after args.wait_timeout."""
    deadline = time.monotonic() + args.wait_timeout
    while True:
        pending = set(list_reassignments(args)) & set(moves)
        if not pending:
            current = {(t["name"], p["partition"]): p["replicas"] for t in topic_rows(metadata(args))
                       for p in t["partitions"]}
            pending = {k for k, want in moves.items() if want is not None and current.get(k) != want}
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise AdminError(f"still moving after {args.wait_timeout:g} s: "
                             + ", ".join(f"{t}-{p}" for t, p in sorted(pending)))
        time.sleep(MOVE_WAIT_POLL_S)


def cmd_reassign(args) -> int:
    """Move one partition's replicas (AlterPartitionReassignments), or cancel its move."""
    replicas = None if args.cancel else [int(r) for r in args.replicas.split(",") if r.strip()]
    if replicas is None and args.replicas:
        raise AdminError("give either REPLICAS or --cancel", exit_code=2)
    failed = alter_reassignments(args, {(args.topic, args.partition): replicas})
    if failed:
        print("\n".join(failed))
        return 1
    what = "cancelled" if replicas is None else f"moving to {_ids(replicas)}"
    print(f"{args.topic}-{args.partition}: {what}")
    if args.wait and replicas is not None:
        wait_moved(args, {(args.topic, args.partition): replicas})
        print(f"{args.topic}-{args.partition}: replicas are {_ids(replicas)}")
    return 0


def cmd_reassignments(args) -> int:
    """The moves in progress; STATE says "stalled" for a move whose new replica's broker does
    not answer (such a move waits until it comes back or the move is cancelled; the
    partition's leader logs for how long it has made no progress)."""
    moves = sorted(list_reassignments(args).items())
    adding = {r for _, m in moves for r in m["adding"]}
    down = unreachable_brokers(args, metadata(args), adding) if adding else {}
    rows = []
    for (t, p), m in moves:
        silent = [r for r in m["adding"] if r in down]
        state = f"stalled: node(s) {_ids(silent)} not answering" if silent else "moving"
        rows.append([f"{t}-{p}", _ids(m["replicas"]), _ids(m["adding"]), _ids(m["removing"]), state])
    print(format_table(["PARTITION", "REPLICAS", "ADDING", "REMOVING", "STATE"], rows))
    if down:
        print("a stalled move waits until its new replicas answer; to give up: "
              "chronik-trio admin reassign TOPIC PARTITION --cancel")
    return 0


def unreachable_brokers(args, md, nodes: set[int]) -> dict[int, str]:
    """node -> why it does not answer (ApiVersions, asked in parallel), for those of `nodes`
    that do not; a node Metadata does not list counts as not answering."""
    addresses = {int(b.node_id): f"{b.host}:{b.port}" for b in md.brokers}
    asked = sorted(n for n in nodes if n in addresses)
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(asked))) as pool:
        answers = pool.map(lambda n: probe(addresses[n], args.timeout, getattr(args, "security", None)), asked)
    silent = {n: why for n, why in zip(asked, answers) if why is not None}
    silent.update({n: "not in Metadata's brokers" for n in nodes if n not in addresses})
    return silent


def cmd_decommission(args) -> int:
    """Move every replica off a node (keeping replication factors), then take the node out
    of __meta's voters when the cluster supports it."""
    md = metadata(args)
    brokers = [int(b.node_id) for b in md.brokers]
    if args.node not in brokers:
        raise AdminError(f"no broker {args.node} in the cluster (brokers: {_ids(sorted(brokers))})")
    plan = plan_decommission(topic_rows(md), brokers, args.node)
    for (topic, partition), replicas in sorted(plan.items()):
        print(f"{topic}-{partition}: -> {_ids(replicas)}")
    if plan:
        failed = alter_reassignments(args, plan)
        if failed:
            print("\n".join(failed))
            return 1
        wait_moved(args, plan)
    print(f"node {args.node} holds no partition replica")
    return remove_from_meta_voters(args, args.node)


def remove_from_meta_voters(args, node: int) -> int:
    """The last step of a decommission: take node out of __meta's voters and the broker
    registry (`admin remove-node`, RemoveRaftVoter)."""
    args.node_id, args.force = node, False
    return cmd_remove_node(args)


COMMANDS = {"topics": cmd_topics, "remove-node": cmd_remove_node, "create-topic": cmd_create_topic, "delete-topic": cmd_delete_topic,
            "elect-preferred": cmd_elect_preferred, "cluster": cmd_cluster, "health": cmd_health,
            "config": cmd_config, "user": cmd_user, "acl": cmd_acl,
            "reassign": cmd_reassign, "reassignments": cmd_reassignments, "decommission": cmd_decommission}


def _common_options(parser, *, defaults: bool) -> None:
    # On `admin` with defaults and on each subcommand without, so both
    # `admin --bootstrap X topics` and `admin topics --bootstrap X` work.
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default=default(DEFAULT_BOOTSTRAP),
                        help=f"HOST:PORT[,HOST:PORT...] of the cluster (default {DEFAULT_BOOTSTRAP})")
    parser.add_argument("--timeout", type=float, default=default(DEFAULT_TIMEOUT_S),
                        help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--command-config", default=default(None), metavar="FILE",
                        help="client properties (librdkafka names): security.protocol, sasl.mechanism, "
                        "sasl.username, sasl.password, ssl.ca.location, ssl.certificate.location, ssl.key.location")
    parser.add_argument("--security-protocol", default=default(None), choices=SECURITY_PROTOCOLS)
    parser.add_argument("--sasl-mechanism", default=default(None), choices=SASL_MECHANISMS)
    parser.add_argument("--sasl-username", default=default(None))
    parser.add_argument("--ssl-cafile", default=default(None), help="PEM CA the brokers' certificates chain to")
    parser.add_argument("--ssl-certfile", default=default(None), help="PEM client certificate (mutual TLS)")
    parser.add_argument("--ssl-keyfile", default=default(None), help="PEM key of --ssl-certfile")


def add_parser(sub) -> None:
    p = sub.add_parser("admin", help="inspect and change a cluster over the Kafka protocol")
    _common_options(p, defaults=True)
    commands = p.add_subparsers(dest="admin_command", required=True)

    def command(name: str, help_: str):
        c = commands.add_parser(name, help=help_)
        _common_options(c, defaults=False)
        return c

    c = command("topics", "list topics: partitions, leader, leader epoch, replicas, ISR")
    c.add_argument("names", nargs="*", metavar="TOPIC", help="only these topics")
    c.add_argument("--json", action="store_true")
    c = command("create-topic", "create a topic")
    c.add_argument("name")
    c.add_argument("--partitions", type=int, default=-1, help="default: the brokers' default_partitions")
    c.add_argument("--replication-factor", type=int, default=-1,
                   help="default: the cluster size, at most 3")
    c.add_argument("--config", action="append", default=[], metavar="KEY=VALUE", help="a topic config")
    c = command("delete-topic", "delete a topic and its data on every replica")
    c.add_argument("name")
    c = command("elect-preferred", "hand leadership to the preferred (first) replica (a leader transfer)")
    c.add_argument("name", nargs="?", metavar="TOPIC", help="default: every topic")
    c.add_argument("partitions", nargs="*", type=int, metavar="PARTITION", help="default: all of the topic's")
    _add_config_parser(command("config", "show or change topic and broker configs (DescribeConfigs, "
                               "IncrementalAlterConfigs)"))
    c = command("cluster", "cluster id, controller, brokers")
    c.add_argument("--json", action="store_true")
    c = command("user", "SASL/SCRAM users: list, describe NAME, set NAME (password on stdin), delete NAME")
    c.add_argument("action", choices=("list", "describe", "set", "delete"))
    c.add_argument("name", nargs="?")
    c.add_argument("--mechanism", action="append", choices=tuple(SCRAM_MECHANISM_TYPES),
                   help="default: both SCRAM-SHA-256 and SCRAM-SHA-512")
    c.add_argument("--iterations", type=int, default=SCRAM_ITERATIONS_DEFAULT)
    c.add_argument("--password-file", help="read the password from this file's first line (default: stdin)")
    c = command("acl", "ACLs: list [filters], add/remove --allow|--deny --principal P --operation OP RESOURCE")
    c.add_argument("action", choices=("list", "add", "remove"))
    c.add_argument("--principal", help="User:NAME, User:CN=..., or User:* for everyone")
    c.add_argument("--operation", action="append", choices=tuple(o for o in OPERATIONS if o not in ("unknown", "any")))
    c.add_argument("--host", default="*", help="the client address the ACL applies to (default any)")
    c.add_argument("--deny", action="store_true", help="a DENY ACL (default ALLOW)")
    c.add_argument("--allow", action="store_true", help="an ALLOW ACL (the default)")
    c.add_argument("--topic")
    c.add_argument("--group")
    c.add_argument("--transactional-id")
    c.add_argument("--cluster", action="store_true")
    c.add_argument("--prefixed", action="store_true", help="the name is a prefix (default: literal)")
    c = command("remove-node", "take a node out of the cluster (refused while it hosts replicas)")
    c.add_argument("node_id", type=int, metavar="NODE_ID")
    c.add_argument("--force", action="store_true",
                   help="a dead node (unheard for 10 s) that still hosts replicas: they stay, offline, until moved")
    c = command("health", "exit 0 if every broker answers and every partition has a leader and a full ISR")
    c.add_argument("--json", action="store_true")
    c = command("reassign", "move a partition's replicas (AlterPartitionReassignments), or --cancel its move")
    c.add_argument("topic")
    c.add_argument("partition", type=int)
    c.add_argument("replicas", nargs="?", default="", metavar="REPLICAS",
                   help="comma-separated broker ids, the preferred leader first")
    c.add_argument("--cancel", action="store_true", help="cancel the move: back to the original replicas")
    c.add_argument("--wait", action="store_true", help="return once the move is complete")
    c.add_argument("--wait-timeout", type=float, default=600.0, help="seconds (default 600)")
    command("reassignments", "the partition moves in progress (ListPartitionReassignments)")
    c = command("decommission", "move every replica off a node, keeping replication factors")
    c.add_argument("node", type=int)
    c.add_argument("--wait-timeout", type=float, default=600.0, help="seconds (default 600)")


def _add_config_parser(parser) -> None:
    actions = parser.add_subparsers(dest="config_command", required=True)

    def action(name: str, help_: str):
        a = actions.add_parser(name, help=help_)
        _common_options(a, defaults=False)
        which = a.add_mutually_exclusive_group(required=True)
        which.add_argument("--topic", metavar="NAME")
        which.add_argument("--group", metavar="ID", help="a group's configs (Kafka 4's group configs)")
        which.add_argument("--broker", type=int, metavar="ID", help="one broker's dynamic configs")
        which.add_argument("--broker-default", action="store_true",
                           help="the cluster-wide dynamic broker defaults")
        return a

    a = action("get", "every config of the resource with its value, source and type")
    a.add_argument("keys", nargs="*", metavar="KEY", help="only these")
    a.add_argument("--json", action="store_true")
    a = action("set", "set configs (IncrementalAlterConfigs SET / APPEND / SUBTRACT)")
    a.add_argument("pairs", nargs="*", metavar="KEY=VALUE")
    a.add_argument("--append", action="append", default=[], metavar="KEY=ITEM", help="add to a list config")
    a.add_argument("--subtract", action="append", default=[], metavar="KEY=ITEM",
                   help="remove from a list config")
    a.add_argument("--validate-only", action="store_true", help="check, change nothing")
    a = action("delete", "remove overrides: the value falls back to the broker default")
    a.add_argument("keys", nargs="+", metavar="KEY")
    a.add_argument("--validate-only", action="store_true", help="check, change nothing")


def run(args: argparse.Namespace) -> int:
    try:
        args.security = security_of(args)
        return COMMANDS[args.admin_command](args)
    except AdminError as exc:
        print(f"chronik-trio admin: {exc}", file=sys.stderr)
        return exc.exit_code
