"""`chronik-trio admin`: inspect and change a cluster over the Kafka protocol.

Every command asks the cluster through `--bootstrap` with confluent-kafka's AdminClient
(Metadata, CreateTopics, DeleteTopics, DescribeCluster), exactly as any Kafka tool would.
Two things librdkafka does not expose are asked with one plain request each, encoded by
kio: the leader epoch and offline replicas of each partition (a Metadata v12 request to
the broker that answered the AdminClient's Metadata), and whether a broker answers at all
(an ApiVersions request to each broker, for `health`).

Exit codes: 0 done (and, for `health`, healthy); 1 the cluster refused the operation or
`health` found problems; 2 bad options, no answer from the cluster, or confluent-kafka is
not installed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import socket
import struct
import sys

import kio.index
from kio.serial import entity_reader, entity_writer

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TIMEOUT_S = 10.0
METADATA_API_KEY, METADATA_VERSION = 3, 12
API_VERSIONS_API_KEY, API_VERSIONS_VERSION = 18, 0
RESPONSE_BYTES_MAX = 64 << 20  # a Metadata answer for many thousands of partitions fits
CLIENT_ID = "chronik-trio-admin"
# librdkafka logs every refused connection at level 3 (error) on stderr; this tool reports
# what failed itself, so only critical library messages get through.
LIBRDKAFKA_LOG_LEVEL = 2


class AdminError(Exception):
    """The command could not be done; the message says why. exit_code: 1 or 2 (see above)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- confluent-kafka -------------------------------------------------------------------------

def _confluent():
    try:
        import confluent_kafka
        import confluent_kafka.admin
    except ImportError:
        raise AdminError("chronik-trio admin needs confluent-kafka, which is not installed; "
                         "install it with: pip install 'chronik-trio[bench]' (or the [test] extra)",
                         exit_code=2) from None
    return confluent_kafka


def _admin_client(args):
    ck = _confluent()
    return ck.admin.AdminClient({"bootstrap.servers": args.bootstrap, "client.id": CLIENT_ID,
                                 "log_level": LIBRDKAFKA_LOG_LEVEL})


def _kafka_error(exc: BaseException):
    """The KafkaError inside a confluent-kafka exception, or None."""
    ck = _confluent()
    if isinstance(exc, ck.KafkaException) and exc.args and isinstance(exc.args[0], ck.KafkaError):
        return exc.args[0]
    return None


def _unreachable(args, exc: BaseException) -> AdminError:
    error = _kafka_error(exc)
    reason = f"{error.name()}: {error.str()}" if error is not None else f"{type(exc).__name__}: {exc}"
    return AdminError(f"no answer from {args.bootstrap} within {args.timeout:g} s ({reason})", exit_code=2)


def _metadata(args, client):
    try:
        return client.list_topics(timeout=args.timeout)
    except Exception as exc:  # librdkafka raises KafkaException; anything else is as fatal
        raise _unreachable(args, exc) from None


def _result(args, future, what: str):
    """The result of an AdminClient future; a refusal is an AdminError naming the Kafka error."""
    try:
        return future.result(timeout=args.timeout + 1)  # librdkafka gives up after args.timeout
    except concurrent.futures.TimeoutError:
        raise AdminError(f"{what}: no answer within {args.timeout:g} s", exit_code=2) from None
    except Exception as exc:
        error = _kafka_error(exc)
        if error is None:
            raise
        if error.name() in ("_TRANSPORT", "_TIMED_OUT", "_ALL_BROKERS_DOWN"):
            raise _unreachable(args, exc) from None
        raise AdminError(f"{what}: {error.name()}: {error.str()}") from None


# --- plain Kafka requests (kio) --------------------------------------------------------------

def kafka_request(address: str, api_key: int, version: int, body, timeout_s: float):
    """Send one request on a fresh connection and return the decoded response body.

    Raises OSError (refused, reset, timed out, closed early) or ValueError (a bad answer).
    """
    request_cls = kio.index.load_request_schema(api_key, version)
    response_cls = kio.index.load_response_schema(api_key, version)
    correlation_id = 1
    header = request_cls.__header_schema__(request_api_key=api_key, request_api_version=version,
                                           correlation_id=correlation_id, client_id=CLIENT_ID)
    sink = io.BytesIO()
    entity_writer(type(header))(sink, header)
    entity_writer(request_cls)(sink, body)
    payload = sink.getvalue()
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        sock.sendall(struct.pack(">i", len(payload)) + payload)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if not 0 < size <= RESPONSE_BYTES_MAX:
            raise ValueError(f"{address} answered a frame of {size} bytes")
        frame = _recv_exact(sock, size)
    # ApiVersions answers always carry response header v0 (KIP-511).
    header_cls = (kio.index.load_response_schema(api_key, 0).__header_schema__
                  if api_key == API_VERSIONS_API_KEY else response_cls.__header_schema__)
    response_header, offset = entity_reader(header_cls)(frame, 0)
    if response_header.correlation_id != correlation_id:
        raise ValueError(f"{address} answered correlation id {response_header.correlation_id}")
    response, _ = entity_reader(response_cls)(frame, offset)
    return response


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def partition_extras(address: str, timeout_s: float) -> dict[tuple[str, int], tuple[int, int, list[int]]]:
    """(topic, partition) -> (leader, leader epoch, offline replicas) from one broker."""
    request_cls = kio.index.load_request_schema(METADATA_API_KEY, METADATA_VERSION)
    body = request_cls(topics=None, allow_auto_topic_creation=False,
                       include_topic_authorized_operations=False)
    response = kafka_request(address, METADATA_API_KEY, METADATA_VERSION, body, timeout_s)
    return {(t.name, p.partition_index): (p.leader_id, p.leader_epoch, list(p.offline_replicas))
            for t in response.topics for p in t.partitions}


def probe(address: str, timeout_s: float) -> str | None:
    """None if the broker answers an ApiVersions request, else why not."""
    request_cls = kio.index.load_request_schema(API_VERSIONS_API_KEY, API_VERSIONS_VERSION)
    try:
        response = kafka_request(address, API_VERSIONS_API_KEY, API_VERSIONS_VERSION, request_cls(), timeout_s)
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if response.error_code != 0:
        return f"ApiVersions error code {int(response.error_code)}"
    return None


# --- topics ------------------------------------------------------------------------------------

def topic_rows(md, extras) -> list[dict]:
    topics = []
    for name in sorted(md.topics):
        t = md.topics[name]
        partitions = []
        for p in sorted(t.partitions.values(), key=lambda p: p.id):
            leader, epoch, offline = extras.get((name, p.id), (None, None, None))
            partitions.append({
                "partition": p.id, "leader": p.leader,
                # only when the extra answer agrees on the leader (both come from one broker,
                # moments apart, so a leader change in between shows as unknown)
                "leader_epoch": epoch if leader == p.leader else None,
                "replicas": list(p.replicas), "isr": list(p.isrs),
                "offline_replicas": offline,
                "error": p.error.name() if p.error is not None else None})
        topics.append({"name": name, "error": t.error.name() if t.error is not None else None,
                       "partitions": partitions})
    return topics


def _ids(ids) -> str:
    return ",".join(map(str, ids)) if ids else "-"


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in [header, *rows])


def _extras(args, md) -> dict:
    """partition_extras from the broker that answered `md` (so both views are its own), else
    from a bootstrap address; {} with a warning on stderr if none answers. librdkafka names
    the answering broker only once it knows its id (-1 while it talks to a bootstrap address)."""
    answered = md.brokers.get(md.orig_broker_id)
    candidates = ([f"{answered.host}:{answered.port}"] if answered is not None else []) + \
        [a.strip() for a in args.bootstrap.split(",") if a.strip()]
    why = "no address to ask"
    for address in candidates:
        try:
            return partition_extras(address, args.timeout)
        except (OSError, ValueError) as exc:
            why = f"{address} did not answer ({exc})"
    print(f"chronik-trio admin: leader epochs and offline replicas unknown: {why}", file=sys.stderr)
    return {}


def cmd_topics(args) -> int:
    md = _metadata(args, _admin_client(args))
    extras = _extras(args, md)
    topics = topic_rows(md, extras)
    wanted = set(args.names)
    if wanted:
        missing = sorted(wanted - set(md.topics))
        if missing:
            raise AdminError(f"no such topic(s): {', '.join(missing)}")
        topics = [t for t in topics if t["name"] in wanted]
    if args.json:
        print(json.dumps({"topics": topics}, indent=2))
        return 0
    rows = [[t["name"], p["partition"], p["leader"] if p["leader"] >= 0 else "none",
             "?" if p["leader_epoch"] is None else p["leader_epoch"], _ids(p["replicas"]), _ids(p["isr"]),
             "?" if p["offline_replicas"] is None else _ids(p["offline_replicas"]), p["error"] or ""]
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


def cmd_create_topic(args) -> int:
    configs = _configs(args.config)
    client = _admin_client(args)
    ck = _confluent()
    new = ck.admin.NewTopic(args.name, args.partitions, args.replication_factor, config=configs)
    futures = client.create_topics([new], operation_timeout=args.timeout, request_timeout=args.timeout)
    _result(args, futures[args.name], f"create-topic {args.name}")
    print(f"created topic {args.name}")
    return 0


def cmd_delete_topic(args) -> int:
    client = _admin_client(args)
    futures = client.delete_topics([args.name], operation_timeout=args.timeout, request_timeout=args.timeout)
    _result(args, futures[args.name], f"delete-topic {args.name}")
    print(f"deleted topic {args.name}")
    return 0


def cmd_elect_preferred(args) -> int:
    """Move leadership to each partition's preferred replica (ElectLeaders, PREFERRED)."""
    ck = _confluent()
    client = _admin_client(args)
    partitions = None
    if args.name is not None:
        count = len(client.list_topics(args.name, timeout=args.timeout).topics[args.name].partitions)
        chosen = args.partitions or list(range(count))
        partitions = [ck.TopicPartition(args.name, p) for p in chosen]
    # confluent-kafka 2.16's elect_leaders refuses timeout keywords (a binding bug); the
    # broker applies its own timeout and _result bounds the wait.
    future = client.elect_leaders(ck.ElectionType.PREFERRED, partitions)
    results = _result(args, future, "elect-preferred")
    failed = 0
    for tp, error in sorted(results.items(), key=lambda item: (item[0].topic, item[0].partition)):
        if error is None:
            state = "moved to its preferred replica"
        elif error.name() == "ELECTION_NOT_NEEDED":
            state = "already led by its preferred replica"
        else:
            state, failed = f"{error.name()}: {error.str()}", failed + 1
        print(f"{tp.topic}-{tp.partition}: {state}")
    return 1 if failed else 0


# --- cluster and health ------------------------------------------------------------------------

def cmd_cluster(args) -> int:
    client = _admin_client(args)
    cluster = _result(args, client.describe_cluster(request_timeout=args.timeout), "cluster")
    brokers = [{"id": n.id, "host": n.host, "port": n.port, "rack": n.rack}
               for n in sorted(cluster.nodes, key=lambda n: n.id)]
    controller = cluster.controller.id if cluster.controller is not None else None
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
    """Every problem of a cluster, from its metadata and which brokers did not answer (pure).

    A broker stays registered after it dies, so its absence shows only as no answer; the
    partitions it led show as led by an unreachable broker until a new leader reports in,
    and those it replicates as under-replicated once their leaders shrink the ISR.
    """
    problems = []

    def problem(kind: str, message: str, **where) -> None:
        problems.append({"kind": kind, **where, "message": message})

    if md.controller_id < 0:
        problem("no_controller", "no controller: the answering broker knows no leader of __meta")
    brokers = {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}
    for broker_id in sorted(unreachable):
        problem("broker_unreachable", f"broker {broker_id} at {brokers[broker_id]} does not answer: "
                f"{unreachable[broker_id]}", broker=broker_id)
    for name in sorted(md.topics):
        for p in sorted(md.topics[name].partitions.values(), key=lambda p: p.id):
            where = {"topic": name, "partition": p.id}
            tp = f"{name}-{p.id}"
            if p.leader < 0:
                reason = f" ({p.error.name()})" if p.error is not None else ""
                problem("no_leader", f"{tp}: no leader{reason}", **where)
            elif p.leader not in brokers:
                problem("leader_not_registered", f"{tp}: leader {p.leader} is not a registered broker", **where)
            elif p.leader in unreachable:
                problem("leader_unreachable", f"{tp}: leader {p.leader} does not answer", **where)
            unregistered = [r for r in p.replicas if r not in brokers]
            if unregistered:
                problem("replica_not_registered", f"{tp}: replica(s) {_ids(unregistered)} not registered "
                        f"brokers", replicas=unregistered, **where)
            down = [r for r in p.replicas if r in unreachable]
            if down:
                problem("replica_unreachable", f"{tp}: replica(s) {_ids(down)} on brokers that do not answer",
                        replicas=down, **where)
            out_of_sync = [r for r in p.replicas if r not in p.isrs]
            if out_of_sync:
                problem("under_replicated", f"{tp}: under-replicated: ISR {_ids(p.isrs)} of replicas "
                        f"{_ids(p.replicas)}", replicas=out_of_sync, **where)
    return problems


def cmd_health(args) -> int:
    md = _metadata(args, _admin_client(args))
    addresses = {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(addresses))) as pool:
        answers = dict(zip(addresses, pool.map(lambda a: probe(a, args.timeout), addresses.values())))
    unreachable = {broker_id: why for broker_id, why in answers.items() if why is not None}
    problems = health_problems(md, unreachable)
    partitions = sum(len(t.partitions) for t in md.topics.values())
    summary = {"healthy": not problems, "brokers": len(addresses), "topics": len(md.topics),
               "partitions": partitions, "controller": md.controller_id, "problems": problems}
    if args.json:
        print(json.dumps(summary, indent=2))
    elif problems:
        print(f"unhealthy: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p['message']}")
    else:
        print(f"healthy: {len(addresses)} broker(s) answer, controller {md.controller_id}, "
              f"{len(md.topics)} topic(s), {partitions} partition(s) each with a leader and a full ISR")
    return 1 if problems else 0


# --- the command -------------------------------------------------------------------------------

COMMANDS = {"topics": cmd_topics, "create-topic": cmd_create_topic, "delete-topic": cmd_delete_topic,
            "elect-preferred": cmd_elect_preferred, "cluster": cmd_cluster, "health": cmd_health}


def _common_options(parser, *, defaults: bool) -> None:
    # On `admin` with defaults and on each subcommand without, so both
    # `admin --bootstrap X topics` and `admin topics --bootstrap X` work.
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    parser.add_argument("--bootstrap", default=default(DEFAULT_BOOTSTRAP),
                        help=f"HOST:PORT[,HOST:PORT...] of the cluster (default {DEFAULT_BOOTSTRAP})")
    parser.add_argument("--timeout", type=float, default=default(DEFAULT_TIMEOUT_S),
                        help=f"seconds to wait for each answer (default {DEFAULT_TIMEOUT_S:g})")


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
    c = command("cluster", "cluster id, controller, brokers")
    c.add_argument("--json", action="store_true")
    c = command("health", "exit 0 if every broker answers and every partition has a leader and a full ISR")
    c.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.admin_command](args)
    except AdminError as exc:
        print(f"chronik-trio admin: {exc}", file=sys.stderr)
        return exc.exit_code
