"""`python -m chaos run SCENARIO [--seed N] [--duration S] [--out DIR]
    [--broker apache-kafka] [--network netns]`
`python -m chaos sim [SCENARIO] (--seed N | --seeds A..B) [--trace]` (in simulation,
docs/simulation.md)
`python -m chaos list` (the shipped scenarios)
`python -m chaos check RUN_DIR` (re-check a recorded history)
`python -m chaos validate SCENARIO...`

SCENARIO is a scenario file's path, or the name of a shipped one (`failover` or
`failover.yaml`, see `list`), from any directory.

Exit codes: 0 every check passed; 1 a check failed; 2 a bad scenario or command line, or
the harness's extra dependencies are not installed; 3 the run could not be carried out
(the cluster did not start, ...).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

from . import shipped

DEFAULT_OUT = pathlib.Path("chaos-runs")
# The chaos extra (pyproject.toml): module -> the package that provides it.
EXTRA_MODULES = {"yaml": "PyYAML", "trio_asyncio": "trio-asyncio", "matplotlib": "matplotlib",
                 "confluent_kafka": "confluent-kafka", "kafka": "kafka-python", "aiokafka": "aiokafka"}
INSTALL_HINT = "pip install -e '.[chaos]'"


def missing_extras() -> list[str]:
    """Packages of the chaos extra that are not installed."""
    return [package for module, package in EXTRA_MODULES.items()
            if importlib.util.find_spec(module) is None]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m chaos", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario and check it")
    run.add_argument("scenario", help="a scenario file, or a shipped scenario's name (see list)")
    run.add_argument("--seed", type=int, help="overrides the scenario's seed")
    run.add_argument("--duration", type=float, help="overrides duration_s")
    run.add_argument("--broker", choices=["chronik-trio", "apache-kafka"],
                     help="overrides cluster.broker: run the scenario against Apache Kafka (from the "
                          "tests' jars) instead of chronik-trio")
    run.add_argument("--network", choices=["proxy", "netns"], help="overrides cluster.network")
    run.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT,
                     help=f"where run directories go (default ./{DEFAULT_OUT})")
    run.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    run.add_argument("--drop-data", action="store_true", help="delete node data dirs after the run")
    check = sub.add_parser("check", help="check a run directory's history.jsonl again")
    check.add_argument("run_dir", type=pathlib.Path)
    validate = sub.add_parser("validate", help="validate scenario files")
    validate.add_argument("scenarios", nargs="+", help="files or shipped scenarios' names")
    sub.add_parser("list", help="list the shipped scenarios")
    sim = sub.add_parser("sim", help="run a scenario in simulation (one process, virtual time)")
    sim.add_argument("scenario", nargs="?", help="a scenario file or shipped name (default: the "
                     "simulation's mixed scenario)")
    seeds = sim.add_mutually_exclusive_group()
    seeds.add_argument("--seed", help="one seed (default: the scenario's)")
    seeds.add_argument("--seeds", help="a range of seeds, A..B")
    sim.add_argument("--duration", type=float, help="overrides duration_s")
    sim.add_argument("--trace", action="store_true", help="also write trace.jsonl (every "
                     "client operation, fault and node event with its virtual time)")
    sim.add_argument("--jobs", type=int, help="processes for --seeds (default: every core)")
    sim.add_argument("--out", type=pathlib.Path, default=pathlib.Path("chaos-sim"),
                     help="where each seed's history goes (default ./chaos-sim)")
    return p


def scenario_path(argument: str) -> pathlib.Path:
    """The file a SCENARIO argument names (a path, or a shipped scenario's name)."""
    from .scenario import ScenarioError

    path = shipped.resolve(argument)
    if path is None:
        raise ScenarioError(f"{argument}: no such file, and no shipped scenario of that name "
                            f"(shipped: {', '.join(shipped.shipped_names())})")
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name in shipped.shipped_names():
            print(name)
        return 0
    missing = missing_extras()
    if missing:
        print(f"chaos: needs {', '.join(missing)}, not installed; install the harness's "
              f"dependencies with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    # Imported only now: they need the chaos extra.
    import trio

    from .cluster import ClusterError
    from .runner import make_run_dir, run_scenario
    from .scenario import ScenarioError, load_scenario, with_overrides
    try:
        if args.command == "validate":
            for argument in args.scenarios:
                load_scenario(scenario_path(argument))
                print(f"{argument}: ok")
            return 0
        if args.command == "check":
            return _check(args.run_dir)
        if args.command == "sim":
            return _sim(args, argv)
        scenario = with_overrides(load_scenario(scenario_path(args.scenario)), seed=args.seed,
                                  duration_s=args.duration, broker=args.broker,
                                  network=args.network)
    except ScenarioError as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2

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


def _sim(args, argv: list[str]) -> int:
    from .scenario import load_scenario, with_overrides
    from .sim import cli

    cli.ensure_fixed_hash_seed(argv)
    path = scenario_path(args.scenario) if args.scenario else cli.DEFAULT_SCENARIO
    scenario = with_overrides(load_scenario(path), duration_s=args.duration)
    if scenario.cluster.broker != "chronik-trio":
        print(f"chaos: sim simulates chronik-trio's code; {path} runs {scenario.cluster.broker}", file=sys.stderr)
        return 2
    seeds = cli.parse_seeds(args.seeds or args.seed or str(scenario.seed))
    return cli.run(scenario, seeds, args.out, trace=args.trace, jobs=args.jobs or cli.default_jobs())


def _check(run_dir: pathlib.Path) -> int:
    from . import checker, report
    from .history import read_history
    from .scenario import load_scenario

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
