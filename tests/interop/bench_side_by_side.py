"""Apache Kafka and chronik-trio measured side by side in one command, by `chronik-trio bench`
with the same arguments, rounds alternating, and a table of medians with ratios:

    python -m tests.interop.bench_side_by_side --nodes 1,3 --rounds 3 --dir DIR

For each cluster size and round, each broker in turn (Kafka first in odd rounds, chronik-trio
first in even ones, so a drift of the machine's load falls on both):

- Apache Kafka 4.4.0 (tests/interop/apache_kafka.py, from the tests' jars) is started and
  measured with `chronik-trio bench --bootstrap`, twice: with its defaults (no fsync on
  acknowledgement: the OS flushes the page cache) and on topics with `flush.messages=1`
  (every append fsynced before the leader or a follower goes on, as chronik-trio does);
  then it is stopped, so the brokers never share the machine;
- chronik-trio is measured with `chronik-trio bench --cluster N` (which starts its nodes;
  every acknowledged write is fsynced by a quorum);
- for one node, where a `tansu` binary is installed (tests/interop/tansu.py), tansu is
  started and measured with `chronik-trio bench --bootstrap` too, then stopped (its build
  here keeps records in memory only: no disk, no fsync). `--no-tansu` leaves it out.

The cases, each one `chronik-trio bench` run (`--repeat 1`, acks=all, replication factor N,
3 partitions): throughput of 100-byte records with the consume rate and the one-record
latency (open loop at `--rate`), and throughput of 1,000-byte records with the consume rate.
With `--transactional P`, one more case: `--transactional --txn-records 100` with P producer
processes (the plain run with the same P producers, then the transactional one, in one
bench run; issue 15's comparison), giving transactional records/s and its fraction of plain.
Every report is kept as DIR/n<N>/round<R>/<broker>-<case>.json; the table (DIR/table.md and
stdout) gives per figure the median over rounds with the range, the ratios chronik-trio /
Kafka, and the load average at every run's start (the figures mean little when it is high).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys

from tests.brokers import CHRONIK_TRIO
from tests.interop.apache_kafka import ApacheKafka
from tests.interop.tansu import Tansu, tansu_binary, tansu_title

BENCH_TIMEOUT_S = 1800
BROKERS = ("kafka", "kafka-fsync", "tansu", "chronik-trio")
TITLES = {"kafka": "Apache Kafka (defaults: no fsync)", "kafka-fsync": "Apache Kafka, flush.messages=1",
          "tansu": tansu_title(), "chronik-trio": "chronik-trio (fsync)"}
RATIO_TITLES = {"kafka": "Kafka", "kafka-fsync": "Kafka with fsync", "tansu": "tansu"}
# (figure, case, summary key)
FIGURES = (
    ("100 B, acks=all: produce rec/s", "100b", "produce_records_per_s"),
    ("100 B: consume rec/s", "100b", "consume_records_per_s"),
    ("1 KB, acks=all: produce MB/s", "1kb", "produce_mb_per_s"),
    ("1 KB: consume MB/s", "1kb", "consume_mb_per_s"),
    ("one record at a time: produce p50 ms", "100b", "produce_latency_p50_ms"),
    ("one record at a time: produce p99 ms", "100b", "produce_latency_p99_ms"),
    ("plain beside transactions (--transactional P): produce rec/s", "txn", "produce_records_per_s"),
    ("transactions of 100 records: produce rec/s", "txn", "txn_produce_records_per_s"),
    ("transactions of 100 records: fraction of plain", "txn", "txn_produce_fraction_of_plain"),
    ("transactions of 100 records: commit p50 ms", "txn", "txn_commit_p50_ms"),
)


def _cases(args) -> dict[str, list[str]]:
    common = ["--acks", "all", "--repeat", "1", "--partitions", "3", "--warmup-s", str(args.warmup_s)]
    cases = {
        "100b": [*common, "--modes", "throughput,latency", "--record-bytes", "100", "--records",
                 str(args.records_100b), "--rate", str(args.rate), "--duration-s", str(args.duration_s)],
        "1kb": [*common, "--modes", "throughput", "--record-bytes", "1000", "--records", str(args.records_1kb)],
    }
    if args.transactional:
        cases["txn"] = [*common, "--modes", "throughput", "--record-bytes", "100", "--records", str(args.records_txn),
                        "--transactional", "--txn-records", "100", "--producers", str(args.transactional)]
    if args.only:
        cases = {name: case for name, case in cases.items() if name in args.only.split(",")}
    return cases


def _load() -> float:
    return float(pathlib.Path("/proc/loadavg").read_text().split()[0])


def _bench(target: list[str], case_args: list[str], out: pathlib.Path) -> dict:
    """One `chronik-trio bench` run; its JSON report, or {"error": ...} when it failed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([CHRONIK_TRIO, "bench", *target, *case_args, "--json", str(out)],
                         timeout=BENCH_TIMEOUT_S, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    (out.with_suffix(".txt")).write_text(run.stdout + run.stderr)
    if not out.exists():
        return {"error": f"exit code {run.returncode}: {run.stderr[-2000:]}"}
    report = json.loads(out.read_text())
    if run.returncode != 0:
        report["error"] = f"exit code {run.returncode} (errors or unflushed records; see {out.with_suffix('.txt')})"
    return report


def measure_kafka(root: pathlib.Path, nodes: int, cases: dict[str, list[str]], out: pathlib.Path,
                  fsync_too: bool) -> dict[str, dict]:
    """Start Apache Kafka, run every case with its defaults (and with flush.messages=1), stop it."""
    results: dict[str, dict] = {}
    peer = ApacheKafka(root, nodes)
    try:
        peer.start()
        target = ["--bootstrap", peer.bootstrap, "--replication-factor", str(nodes)]
        for broker, extra in (("kafka", []), ("kafka-fsync", ["--topic-config", "flush.messages=1"])):
            if broker == "kafka-fsync" and not fsync_too:
                continue
            for case, case_args in cases.items():
                results[f"{broker}/{case}"] = _bench(target, [*case_args, *extra], out / f"{broker}-{case}.json")
    finally:
        peer.close()
    return results


def measure_tansu(root: pathlib.Path, cases: dict[str, list[str]], out: pathlib.Path) -> dict[str, dict]:
    """Start tansu (one node), run every case against it, stop it."""
    peer = Tansu(root)
    try:
        try:
            peer.start()
        except (RuntimeError, TimeoutError) as exc:  # e.g. a build without a storage engine we can use
            return {f"tansu/{case}": {"error": f"tansu did not start: {str(exc)[-500:]}"} for case in cases}
        target = ["--bootstrap", peer.bootstrap, "--replication-factor", "1"]
        return {f"tansu/{case}": _bench(target, case_args, out / f"tansu-{case}.json")
                for case, case_args in cases.items()}
    finally:
        peer.close()


def measure_chronik(nodes: int, cases: dict[str, list[str]], out: pathlib.Path) -> dict[str, dict]:
    return {f"chronik-trio/{case}": _bench(["--cluster", str(nodes)], case_args, out / f"chronik-trio-{case}.json")
            for case, case_args in cases.items()}


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    fmt = (lambda v: f"{v:,.0f}") if med >= 100 else (lambda v: f"{v:,.2f}") if med >= 1 else (lambda v: f"{v:.3f}")
    return fmt(med) + (f" ({fmt(min(values))}-{fmt(max(values))})" if len(values) > 1 else "")


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}" if x >= 0.1 else f"{x:.3f}"


def read_rounds(directory: pathlib.Path) -> dict[int, list[dict[str, dict]]]:
    """The reports a previous run left in `directory`, as main() collects them."""
    rounds: dict[int, list[dict[str, dict]]] = {}
    for size_dir in sorted(directory.glob("n[0-9]")):
        rounds[int(size_dir.name[1:])] = [
            {f"{f.stem.rsplit('-', 1)[0]}/{f.stem.rsplit('-', 1)[1]}": json.loads(f.read_text())
             for f in sorted(round_dir.glob("*.json"))}
            for round_dir in sorted(size_dir.glob("round[0-9]*"), key=lambda d: int(d.name[5:]))]
    return rounds


def table(rounds: dict[int, list[dict[str, dict]]]) -> str:
    """Markdown: per cluster size, per figure, each broker's median (range) over the rounds and
    the ratios chronik-trio / each peer; then every run's load average at its start."""
    lines = []
    for nodes, runs in sorted(rounds.items()):
        brokers = [b for b in BROKERS if any(k.startswith(b + "/") for r in runs for k in r)]
        peers = [b for b in brokers if b != "chronik-trio"]
        lines += [f"**{nodes} node(s)**, replication factor {nodes}, {len(runs)} round(s): median (range)", "",
                  "| figure | " + " | ".join(TITLES[b] for b in brokers)
                  + "".join(f" | chronik-trio / {RATIO_TITLES[b]}" for b in peers) + " |",
                  "|---" * (len(brokers) + 1 + len(peers)) + "|"]
        for title, case, key in FIGURES:
            values = {b: [r[f"{b}/{case}"]["summary"][key] for r in runs
                          if f"{b}/{case}" in r and "summary" in r[f"{b}/{case}"]
                          and r[f"{b}/{case}"]["summary"].get(key) is not None] for b in brokers}
            if not any(values.values()):
                continue  # a case not run (--only)
            medians = {b: statistics.median(v) if v else None for b, v in values.items()}
            ratios = [medians["chronik-trio"] / medians[k] if medians.get("chronik-trio") and medians.get(k) else None
                      for k in peers]
            lines.append(f"| {title} | " + " | ".join(_cell(values[b]) for b in brokers) + " | "
                         + " | ".join(_ratio(x) for x in ratios) + " |")
        loads = [f"{name.split('/')[0]} {name.split('/')[1]} {rep['load_average']['before'][0]}"
                 f"->{rep['load_average']['after'][0]}"
                 for name, rep in sorted(((n, x) for r in runs for n, x in r.items() if "load_average" in x),
                                         key=lambda item: item[1]["date"])]
        errors = [f"{name}: {rep['error']}" for r in runs for name, rep in r.items() if "error" in rep]
        lines += ["", "Load average (1 min) before -> after each run, in order: " + "; ".join(loads) + "."]
        lines += [f"- failed: {e}" for e in errors]
        lines.append("")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.interop.bench_side_by_side",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,3", help="cluster sizes, comma-separated: 1, 3 or 1,3")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=pathlib.Path, required=True, help="reports, Kafka's data and logs")
    parser.add_argument("--records-100b", type=int, default=200_000)
    parser.add_argument("--records-1kb", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=100.0, help="one-record latency: records/s, open loop")
    parser.add_argument("--duration-s", type=float, default=10.0, help="one-record latency: measured seconds")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--transactional", type=int, default=0, metavar="P",
                        help="also the transactional case with P producer processes (issue 15)")
    parser.add_argument("--records-txn", type=int, default=100_000, help="records of the transactional case")
    parser.add_argument("--only", help="run only these cases, comma-separated: 100b, 1kb, txn")
    parser.add_argument("--no-kafka-fsync", action="store_true", help="skip Kafka with flush.messages=1")
    parser.add_argument("--no-tansu", action="store_true", help="skip tansu (one node only; when installed)")
    parser.add_argument("--no-kafka", action="store_true", help="skip Apache Kafka")
    parser.add_argument("--table-only", action="store_true", help="measure nothing: the table of the reports "
                        "already in --dir")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.table_only:
        print(table(read_rounds(args.dir)))
        return 0
    sizes = [int(x) for x in args.nodes.split(",")]
    if any(n not in (1, 3) for n in sizes):
        parser().error("--nodes: 1, 3 or 1,3")
    unknown = set(args.only.split(",")) - {"100b", "1kb", "txn"} if args.only else set()
    cases = _cases(args)
    if unknown or not cases:
        parser().error(f"--only: no such case {sorted(unknown)}" if unknown else
                       "--only: no case left to run (txn needs --transactional P)")
    rounds: dict[int, list[dict[str, dict]]] = {}
    for nodes in sizes:
        rounds[nodes] = []
        for r in range(1, args.rounds + 1):
            out = args.dir / f"n{nodes}" / f"round{r}"
            print(f"{nodes} node(s), round {r}: load {_load()}", file=sys.stderr, flush=True)
            results: dict[str, dict] = {}
            peers = [] if args.no_kafka else ["kafka"]
            if nodes == 1 and not args.no_tansu and tansu_binary() is not None:
                peers.append("tansu")
            for broker in ((*peers, "chronik-trio") if r % 2 else ("chronik-trio", *peers)):
                if broker == "kafka":
                    results.update(measure_kafka(out / "apache-kafka", nodes, cases, out, not args.no_kafka_fsync))
                elif broker == "tansu":
                    results.update(measure_tansu(out / "tansu", cases, out))
                else:
                    results.update(measure_chronik(nodes, cases, out))
            rounds[nodes].append(results)
            (args.dir / "table.md").write_text(table(rounds))
    text = table(rounds)
    print(text)
    return 1 if "- failed:" in text else 0


if __name__ == "__main__":
    sys.exit(main())
