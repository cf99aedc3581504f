"""tansu (a Kafka-compatible broker in Rust) on loopback: a single-node peer for the
side-by-side bench (bench_side_by_side.py), where a `tansu` binary is installed
(`cargo install tansu`; looked for on PATH, then in ~/.cargo/bin).

    python -m tests.interop.tansu --dir DIR     # prints the bootstrap, serves until SIGTERM

It is started with the `memory://` storage engine (or $TANSU_STORAGE_ENGINE, e.g.
`sqlite://./tansu.db`, a file in its directory): with `memory://` every record stays in
memory, nothing is written to disk, so its figures are those of a broker without any fsync.
That engine needs tansu's `dynostore` feature (and `sqlite://` its `libsql` feature; postgres
and s3 need their servers); a build without it exits at start, which the side-by-side run
records as tansu's error for every case. Started, stopped and killed by its PID.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

from chaos.apache_kafka import listening
from tests.brokers import free_port

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
STORAGE_ENGINE = os.environ.get("TANSU_STORAGE_ENGINE", "memory://tansu/")


def tansu_title() -> str:
    """The peer's name in a table, with what its storage engine does with a record."""
    if STORAGE_ENGINE.startswith("memory:"):
        return "tansu 0.6.0 (memory: no disk)"
    if STORAGE_ENGINE.startswith("sqlite:"):
        return "tansu 0.6.0 (sqlite WAL, synchronous=normal: no fsync per commit)"
    return f"tansu 0.6.0 ({STORAGE_ENGINE.split(':', 1)[0]})"


def tansu_binary() -> str | None:
    found = shutil.which("tansu")
    if found:
        return found
    cargo = pathlib.Path.home() / ".cargo" / "bin" / "tansu"
    return str(cargo) if cargo.is_file() and os.access(cargo, os.X_OK) else None


class Tansu:
    """One tansu broker on 127.0.0.1 with the memory storage engine."""

    def __init__(self, root: pathlib.Path, binary: str | None = None) -> None:
        self.root = root
        self.binary = binary or tansu_binary()
        if self.binary is None:
            raise FileNotFoundError("no tansu binary on PATH or in ~/.cargo/bin")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> pathlib.Path:
        return self.root / "tansu.log"

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "Tansu":
        self.root.mkdir(parents=True, exist_ok=True)
        url = f"tcp://{self.bootstrap}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", STORAGE_ENGINE],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.root)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited {self.proc.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-4000:]}")
            if listening(self.bootstrap):
                return self
            time.sleep(0.1)
        self.close()
        raise TimeoutError(f"tansu not listening:\n{self.log_path.read_text(errors='replace')[-4000:]}")

    def close(self) -> None:
        """SIGTERM by PID, SIGKILL if it does not exit."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT_S)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.interop.tansu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=pathlib.Path, required=True)
    parser.add_argument("--max-s", type=float, default=3600.0)
    args = parser.parse_args(argv)
    peer = Tansu(args.dir).start()
    print(peer.bootstrap, flush=True)
    try:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        time.sleep(args.max_s)
    finally:
        peer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
