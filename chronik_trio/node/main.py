"""`chronik-trio node`: flags and config file -> NodeConfig -> a Node under trio.run.

Exit codes: 0 after a clean shutdown (SIGINT/SIGTERM), 2 for a bad config, 1 when the node
stops on an error (the last log line says which).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import pathlib
import signal
import sys
import time

import trio

from . import config as config_mod
from .faults import FaultInjectingNode
from .node import Node

log = logging.getLogger("chronik_trio")


def _node_parser(sub) -> None:
    p = sub.add_parser("node", help="run a broker node")
    p.add_argument("--config", type=pathlib.Path, help="TOML file (keys as below, with _); flags win")
    p.add_argument("--node-id", type=int)
    p.add_argument("--listen", help="HOST:PORT for Kafka clients (default 127.0.0.1:9092)")
    p.add_argument("--advertised", help="HOST:PORT clients are told to connect to (default: --listen)")
    p.add_argument("--data-dir", type=pathlib.Path, help="where logs and metadata live (default ./data)")
    p.add_argument("--log-level", choices=config_mod.LOG_LEVELS)
    p.add_argument("--default-partitions", type=int, help="partitions of auto-created topics (default 1)")
    p.add_argument("--auto-create-topics", dest="auto_create_topics", action="store_true", default=None)
    p.add_argument("--no-auto-create-topics", dest="auto_create_topics", action="store_false")
    p.add_argument("--message-max-bytes", type=int, help="largest record batch accepted")
    p.add_argument("--request-max-bytes", type=int, help="largest request frame accepted")
    p.add_argument("--segment-bytes", type=int)
    p.add_argument("--retention-check-interval-ms", type=int)
    p.add_argument("--log-cleaner-backoff-ms", type=int,
                   help="how often the cleaner of compacted topics runs (default 15000)")
    p.add_argument("--fetch-session-cache-slots", type=int,
                   help="fetch sessions (KIP-227) kept, Kafka's max.incremental.fetch.session.cache.slots "
                   "(default 1000; 0: none)")
    p.add_argument("--peers", help='the cluster\'s Raft members, "1@host:port,2@host:port,..."')
    p.add_argument("--admin-listen", help="HOST:PORT for /health and /metrics in cleartext (with peers they "
                   "are on the node's Raft address too, which needs a node certificate under --peer-ssl-*)")
    p.add_argument("--join", metavar="[ID@]HOST:PORT",
                   help="join a running cluster through this member's Kafka address, or with ID@ its Raft "
                   "address (through the peer transport, with this node's --peer-ssl-* certificate: for "
                   "clusters whose Kafka listeners require SASL or TLS); an empty data dir asks to be "
                   "added; --peers then needs only this node's entry; docs/operations.md")
    p.add_argument("--rack", help="this broker's rack (for rack-aware replica placement and fetch)")
    p.add_argument("--listeners", help='named Kafka listeners, "NAME://HOST:PORT,..." (replaces --listen; '
                   'docs/security.md)')
    p.add_argument("--advertised-listeners", help='what clients of each listener are told, "NAME://HOST:PORT,..."')
    p.add_argument("--listener-security-protocol-map",
                   help='"NAME:PROTOCOL,..." with PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL')
    p.add_argument("--ssl-certfile", help="PEM certificate (chain) of the SSL and SASL_SSL listeners")
    p.add_argument("--ssl-keyfile", help="PEM private key of that certificate")
    p.add_argument("--ssl-cafile", help="PEM CA certificates that client certificates must chain to")
    p.add_argument("--ssl-client-auth", choices=config_mod.SSL_CLIENT_AUTH,
                   help="ask TLS clients for a certificate (default none)")
    p.add_argument("--sasl-enabled-mechanisms", help="comma-separated: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (default all)")
    p.add_argument("--peer-ssl-cafile", help="PEM CA that signs every node's certificate: mutual TLS between "
                   "nodes on the Raft port (with --peer-ssl-certfile and --peer-ssl-keyfile)")
    p.add_argument("--peer-ssl-certfile", help="PEM certificate of this node, with subjectAltName DNS:node-<id>")
    p.add_argument("--peer-ssl-keyfile", help="PEM private key of that certificate")
    p.add_argument("--authentication-timeout-ms", type=int,
                   help="close a connection that has not finished TLS and SASL this long after it was "
                   "accepted (default 10000)")
    p.add_argument("--authorizer-enabled", action="store_true", default=None,
                   help="check every request against the ACLs; no ACL, no access (docs/security.md)")
    p.add_argument("--super-users", help='principals allowed everything, "User:admin;User:CN=ops,O=example"')
    p.add_argument("--fault-injection", action="store_true", default=None,
                   help="for the chaos harness: storage through a FaultyDisk and POST /faults on "
                   "the HTTP server (latency, EIO/ENOSPC, power loss); never in production")


def add_parser(sub) -> None:
    _node_parser(sub)


async def _run_node(node: Node) -> None:
    async with trio.open_nursery() as nursery:
        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    node.request_shutdown()

        nursery.start_soon(on_signals)
        trim = _malloc_trim()
        if trim is not None:
            nursery.start_soon(_trim_heap, trim)
        interval_s = float(os.environ.get("CHRONIK_TRACEMALLOC_S", "0") or 0)
        if interval_s > 0:
            nursery.start_soon(_log_heap_growth, interval_s)
        await node.run()
        nursery.cancel_scope.cancel()


# A full (generation 2) collection longer than this is logged (_watch_gc): with 10,000
# partition groups a node holds millions of objects, and a full collection stops the loop
# for as long as it scans them (issue 20).
GC_FULL_LOG_S = 0.25


def _watch_gc() -> None:
    """Log every full garbage collection that took longer than GC_FULL_LOG_S, and freeze
    what survived it (gc.freeze: out of every later scan). The real process only: the
    simulator tunes the collector itself.

    Why freeze: survivors of a full collection are long-lived (groups, their Raft state).
    After replicas.py froze the objects of a creation, CPython's rule that a full collection
    waits until a quarter as many objects as it already holds are new no longer held one
    back (it holds almost none), so full collections of the unfrozen survivors came every
    few seconds, 0.3-2.7 s each on a loaded machine (issue 20, docs/bench.md)."""
    started = [0.0]

    def callback(phase: str, info: dict) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            started[0] = time.perf_counter()
            return
        took_s = time.perf_counter() - started[0]
        if took_s > GC_FULL_LOG_S:
            gc.freeze()
            log.warning("a full garbage collection took %.2f s (%d objects collected); its survivors "
                        "are now frozen out of later scans", took_s, info.get("collected", 0))

    gc.callbacks.append(callback)


# How often the C heap hands freed memory back to the OS (_trim_heap).
HEAP_TRIM_INTERVAL_S = 10.0


def _malloc_trim():
    """glibc's malloc_trim, or None elsewhere (musl, macOS)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


async def _trim_heap(trim, interval_s: float = HEAP_TRIM_INTERVAL_S) -> None:
    """A burst of produce holds hundreds of MB in flight (1 MB batches in requests, Raft
    entries, peer queues); once written, Python frees them, but glibc keeps the freed
    pages in its heap, so a node's RSS stayed at its peak (62 -> 250-300 MB after 3 GB of
    1 KB records, while tracemalloc counted under 10 MB live). malloc_trim(0) returns free
    pages to the OS (measured 0.15-0.3 ms a call)."""
    while True:
        await trio.sleep(interval_s)
        started = time.perf_counter()
        trim(0)
        log.debug("malloc_trim took %.2f ms", (time.perf_counter() - started) * 1000)


async def _log_heap_growth(interval_s: float, top: int = 12) -> None:
    """A diagnostic for memory growth (CHRONIK_TRACEMALLOC_S=60): every interval_s, log
    the allocation sites whose live bytes grew most since the first snapshot. tracemalloc
    slows allocation a lot; never leave it on in production."""
    import tracemalloc

    tracemalloc.start(1)
    await trio.sleep(interval_s)
    first = tracemalloc.take_snapshot()
    while True:
        await trio.sleep(interval_s)
        stats = tracemalloc.take_snapshot().compare_to(first, "lineno")
        current, _ = tracemalloc.get_traced_memory()
        log.warning("tracemalloc: %.1f MB traced; grown most since the first snapshot:\n%s",
                    current / 1e6, "\n".join(f"  {s}" for s in stats[:top]))


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "config", "func")}
    try:
        cfg = config_mod.load(args.config, overrides)
    except config_mod.ConfigError as exc:
        print(f"chronik-trio: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        node = _make_node(cfg)
    except config_mod.ConfigError as exc:
        print(f"chronik-trio: {exc}", file=sys.stderr)
        return 2
    _watch_gc()
    try:
        trio.run(_run_node, node)
    except BaseException as exc:  # the process boundary: say what stopped the node, exit 1
        if isinstance(exc, KeyboardInterrupt):
            return 0
        log.critical("node %d stopped on an error: %s", cfg.node_id, _describe(exc), exc_info=exc)
        return 1
    return 0


def _make_node(cfg: config_mod.NodeConfig) -> Node:
    if not cfg.fault_injection:
        return Node(cfg)
    log.warning("node %d: fault injection is on (POST /faults)", cfg.node_id)
    return FaultInjectingNode(cfg)


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
