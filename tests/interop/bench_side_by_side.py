"""`chronik-trio bench` against Apache Kafka and chronik-trio one after the other, with the
same arguments and the same number of nodes, and a table of the two medians and their ratio:

    python -m tests.interop.bench_side_by_side --nodes 1 --dir DIR -- \\
        --modes throughput,latency --record-bytes 100 --acks all --rate 200

Apache Kafka (tests/interop/apache_kafka.py) is started, measured with `--bootstrap` and
stopped before chronik-trio's nodes are started with `--cluster`, so the two never share
the machine. Both reports are kept as DIR/apache-kafka.json and DIR/chronik-trio.json; each
carries its load average before and after, which says whether the figures mean anything.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

from tests.brokers import CHRONIK_TRIO
from tests.interop.apache_kafka import ApacheKafka

BENCH_TIMEOUT_S = 3600


def _bench(args: list[str], out: pathlib.Path) -> dict:
    subprocess.run([CHRONIK_TRIO, "bench", *args, "--json", str(out)], check=True, timeout=BENCH_TIMEOUT_S,
                   stdin=subprocess.DEVNULL)
    return json.loads(out.read_text())


def _table(kafka: dict, chronik: dict) -> str:
    rows = ["| median | Apache Kafka | chronik-trio | chronik-trio / Kafka |", "|---|---|---|---|"]
    for key, k in kafka["summary"].items():
        c = chronik["summary"].get(key)
        if isinstance(k, (int, float)) and isinstance(c, (int, float)):
            ratio = f"{c / k:.2f}" if k else "-"
            rows.append(f"| {key} | {k:,.3f} | {c:,.3f} | {ratio} |")
    loads = (f"load average: Apache Kafka {kafka['load_average']['before']} -> {kafka['load_average']['after']}, "
             f"chronik-trio {chronik['load_average']['before']} -> {chronik['load_average']['after']}")
    return "\n".join(rows) + "\n\n" + loads


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.interop.bench_side_by_side",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1, choices=(1, 3))
    parser.add_argument("--dir", type=pathlib.Path, required=True)
    parser.add_argument("bench_args", nargs=argparse.REMAINDER, help="after --: arguments for chronik-trio bench")
    args = parser.parse_args(argv)
    bench_args = [a for a in args.bench_args if a != "--"]
    args.dir.mkdir(parents=True, exist_ok=True)
    kafka_peer = ApacheKafka(args.dir / "apache-kafka", args.nodes)
    try:
        kafka_peer.start()
        kafka = _bench(["--bootstrap", kafka_peer.bootstrap, "--replication-factor", str(args.nodes), *bench_args],
                       args.dir / "apache-kafka.json")
    finally:
        kafka_peer.close()
    chronik = _bench(["--cluster", str(args.nodes), *bench_args], args.dir / "chronik-trio.json")
    print(_table(kafka, chronik))
    return 0


if __name__ == "__main__":
    sys.exit(main())
