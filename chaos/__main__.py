"""`python -m chaos run SCENARIO.yaml [--seed N] [--duration S] [--out DIR]`
`python -m chaos check RUN_DIR` (re-check a recorded history)
`python -m chaos validate SCENARIO.yaml...`

Exit codes: 0 every check passed; 1 a check failed; 2 a bad scenario or command line;
3 the run could not be carried out (the cluster did not start, ...).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import trio

from . import checker, report
from .cluster import ClusterError
from .history import read_history
from .scenario import ScenarioError, load_scenario, with_overrides

DEFAULT_OUT = pathlib.Path("chaos-runs")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and check it")
    run.add_argument("scenario", type=pathlib.Path)
    run.add_argument("--seed", type=int, help="overrides the scenario's seed")
    run.add_argument("--duration", type=float, help="overrides duration_s")
    run.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                     help=f"where run directories go (default ./{DEFAULT_OUT})")
    run.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    run.add_argument("--drop-data", action="store_true", help="delete node data dirs after the run")
    check = sub.add_parser("check", help="check a run directory's history.jsonl again")
    check.add_argument("run_dir", type=pathlib.Path)
    validate = sub.add_parser("validate", help="validate scenario files")
    validate.add_argument("scenarios", type=pathlib.Path, nargs="+")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        if args.command == "validate":
            for path in args.scenarios:
                load_scenario(path)
                print(f"{path}: ok")
            return 0
        if args.command == "check":
            return _check(args.run_dir)
        scenario = with_overrides(load_scenario(args.scenario), seed=args.seed, duration_s=args.duration)
    except ScenarioError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    from .runner import make_run_dir, run_scenario

    run_dir = make_run_dir(args.out, scenario)
    print(f"chaos: {scenario.name} seed {scenario.seed}, {scenario.duration_s:g} s -> {run_dir}",
          file=sys.stderr)
    try:
        result = trio.run(lambda: run_scenario(scenario, run_dir, progress=not args.no_progress,
                                               keep_data=not args.drop_data,
                                               argv=["python", "-m", "chaos", *argv]))
    except ClusterError as exc:
        print(f"chaos: the run could not be carried out: {exc}", file=sys.stderr)
        return 3
    print(result.verdict_line)
    return 0 if result.passed else 1


def _check(run_dir: pathlib.Path) -> int:
    events = list(read_history(run_dir / "history.jsonl"))
    scenario = load_scenario(run_dir / "scenario.yaml")
    results = checker.check_history(events, checker.options_for(scenario))
    passed = checker.verdict(results)
    for r in results:
        print(f"{r.name:22} {r.verdict:12} {r.summary}")
    print(report.verdict_line(scenario, results, passed, run_dir))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
