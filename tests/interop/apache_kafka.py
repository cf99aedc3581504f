"""Apache Kafka itself (KRaft, broker and controller in one process per node, from the Maven
jars of tests/java/apache-kafka) on loopback: a reference peer to run the same clients and
the same bench against.

    python -m tests.interop.apache_kafka --nodes 1 --dir DIR     # prints the bootstrap, serves
                                                                 # until SIGTERM or --max-s

Every process is started, stopped and killed by its PID. fsync is Kafka's default: the
broker leaves flushing to the OS (log.flush.interval.messages unset) and relies on
replication, where chronik-trio fsyncs every acknowledged write.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time

from chaos.apache_kafka import (classpath, cluster_id, format_storage, listening, server_command,
                                server_properties, write_node_files)
from tests.brokers import free_port

READY_TIMEOUT_S = 90.0  # a JVM broker on a loaded 2-core machine
STOP_TIMEOUT_S = 30.0


class ApacheKafka:
    """`size` combined broker+controller nodes (ids 1..size), all voters of the KRaft quorum."""

    def __init__(self, root: pathlib.Path, size: int = 1, extra: dict[str, object] | None = None) -> None:
        self.root = root
        self.extra = dict(extra or {})  # server properties beyond the defaults
        self.ids = list(range(1, size + 1))
        self.ports = {n: free_port() for n in self.ids}
        self.controller_ports = {n: free_port() for n in self.ids}
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[n]}" for n in self.ids)

    def config_path(self, n: int) -> pathlib.Path:
        return self.root / f"kafka{n}" / "server.properties"

    def log_path(self, n: int) -> pathlib.Path:
        return self.root / f"kafka{n}" / "server.log"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "ApacheKafka":
        cp = classpath()
        cid = cluster_id()
        voters = ",".join(f"{i}@127.0.0.1:{self.controller_ports[i]}" for i in self.ids)
        for n in self.ids:
            plain = f"127.0.0.1:{self.ports[n]}"
            props = server_properties(n, listeners={"PLAINTEXT": plain,
                                                    "CONTROLLER": f"127.0.0.1:{self.controller_ports[n]}"},
                                      advertised={"PLAINTEXT": plain}, inter_broker="PLAINTEXT", voters=voters,
                                      data_dir=self.root / f"kafka{n}" / "data", size=len(self.ids),
                                      extra=self.extra)
            format_storage(cp, cid, write_node_files(self.config_path(n).parent, props))
        for n in self.ids:
            with open(self.log_path(n), "ab") as log:
                self.procs[n] = subprocess.Popen(server_command(cp, self.config_path(n)), stdout=log,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        for n in self.ids:
            self._wait_listening(n, deadline)
        return self

    def _wait_listening(self, n: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.procs[n].poll() is not None:
                raise RuntimeError(f"Apache Kafka node {n} exited {self.procs[n].returncode}:\n"
                                   f"{self.log_path(n).read_text(errors='replace')[-4000:]}")
            if listening(f"127.0.0.1:{self.ports[n]}"):
                return
            time.sleep(0.1)
        raise TimeoutError(f"Apache Kafka node {n} not listening:\n{self.log_path(n).read_text(errors='replace')[-4000:]}")

    def kill(self, n: int) -> None:
        proc = self.procs[n]
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)

    def close(self) -> None:
        """SIGTERM every node by PID (a controlled shutdown), SIGKILL what does not exit."""
        live = [p for p in self.procs.values() if p.poll() is None]
        for proc in live:
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.interop.apache_kafka", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1, choices=(1, 3))
    parser.add_argument("--dir", type=pathlib.Path, required=True, help="where the nodes keep config, logs and data")
    parser.add_argument("--max-s", type=float, default=3600.0, help="stop by itself after this long")
    args = parser.parse_args(argv)
    kafka = ApacheKafka(args.dir, args.nodes)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        kafka.start()
        print(kafka.bootstrap, flush=True)
        deadline = time.monotonic() + args.max_s
        while not stop and time.monotonic() < deadline and all(p.poll() is None for p in kafka.procs.values()):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        kafka.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
