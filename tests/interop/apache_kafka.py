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
import base64
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid

from tests.brokers import free_port

PEER_DIR = pathlib.Path(__file__).resolve().parents[1] / "java" / "apache-kafka"
CLASSPATH_FILE = PEER_DIR / "target" / "classpath.txt"
BUILD_TIMEOUT_S = 600
READY_TIMEOUT_S = 90.0  # a JVM broker on a loaded 2-core machine
STOP_TIMEOUT_S = 30.0
FORMAT_TIMEOUT_S = 120
# Kafka's own scripts run the broker with a 1 GB heap and G1.
JVM_FLAGS = ["-Xmx1g", "-Xms1g", "-XX:+UseG1GC", "-Djava.awt.headless=true"]


def classpath() -> str:
    """The broker's classpath; `mvn dependency:build-classpath` the first time."""
    if not CLASSPATH_FILE.exists() or CLASSPATH_FILE.stat().st_mtime < (PEER_DIR / "pom.xml").stat().st_mtime:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise RuntimeError("Apache Kafka as a peer needs mvn on PATH")
        subprocess.run([mvn, "-q", "-B", "dependency:build-classpath", f"-Dmdep.outputFile={CLASSPATH_FILE}"],
                       cwd=PEER_DIR, check=True, timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL)
    return CLASSPATH_FILE.read_text().strip()


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class ApacheKafka:
    """`size` combined broker+controller nodes (ids 1..size), all voters of the KRaft quorum."""

    def __init__(self, root: pathlib.Path, size: int = 1) -> None:
        self.root = root
        self.ids = list(range(1, size + 1))
        self.ports = {n: free_port() for n in self.ids}
        self.controller_ports = {n: free_port() for n in self.ids}
        self.procs: dict[int, subprocess.Popen] = {}
        self.java = shutil.which("java") or "java"

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.ports[n]}" for n in self.ids)

    def config_path(self, n: int) -> pathlib.Path:
        return self.root / f"kafka{n}" / "server.properties"

    def log_path(self, n: int) -> pathlib.Path:
        return self.root / f"kafka{n}" / "server.log"

    def _write_config(self, n: int) -> None:
        voters = ",".join(f"{i}@127.0.0.1:{self.controller_ports[i]}" for i in self.ids)
        rf = len(self.ids)
        lines = {
            "process.roles": "broker,controller",
            "node.id": n,
            "controller.quorum.voters": voters,
            "listeners": f"PLAINTEXT://127.0.0.1:{self.ports[n]},CONTROLLER://127.0.0.1:{self.controller_ports[n]}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.ports[n]}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": self.root / f"kafka{n}" / "data",
            "num.partitions": 1,
            "default.replication.factor": rf,
            "offsets.topic.replication.factor": rf,
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min(rf, 2),
            "group.initial.rebalance.delay.ms": 0,
        }
        path = self.config_path(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{k}={v}\n" for k, v in lines.items()))

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "ApacheKafka":
        cp = classpath()
        cluster_id = _cluster_id()
        for n in self.ids:
            self._write_config(n)
            subprocess.run([self.java, "-cp", cp, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                            "-c", str(self.config_path(n))], check=True, capture_output=True,
                           timeout=FORMAT_TIMEOUT_S, stdin=subprocess.DEVNULL)
        for n in self.ids:
            with open(self.log_path(n), "ab") as log:
                self.procs[n] = subprocess.Popen([self.java, *JVM_FLAGS, "-cp", cp, "kafka.Kafka",
                                                  str(self.config_path(n))],
                                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        for n in self.ids:
            self._wait_listening(n, deadline)
        return self

    def _wait_listening(self, n: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.procs[n].poll() is not None:
                raise RuntimeError(f"Apache Kafka node {n} exited {self.procs[n].returncode}:\n"
                                   f"{self.log_path(n).read_text(errors='replace')[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.ports[n]), timeout=0.5):
                    return
            except OSError:
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
