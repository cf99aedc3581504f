"""`python -m chaos sim [SCENARIO] (--seed N | --seeds A..B) [--trace] [--jobs J] [--out DIR]`

Runs the scenario (default: chaos/sim/default.yaml) in simulation for each seed and prints
one line per seed: verdict, history hash, simulated, real and CPU seconds (and simulated
seconds per CPU second: the figure that does not depend on the machine's load). Exit code 0 when every
seed passed, 1 otherwise. `--seeds` runs seeds on `--jobs` processes (default: every core).
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import sys

DEFAULT_SCENARIO = pathlib.Path(__file__).with_name("default.yaml")


def parse_seeds(text: str) -> list[int]:
    lo, sep, hi = text.partition("..")
    if not sep:
        return [int(text)]
    return list(range(int(lo), int(hi) + 1))


def _one(args):
    # The driver (the whole node) is imported here, not with this module:
    # `chaos sim` re-executes itself with PYTHONHASHSEED=0 first, and refuses a scenario it
    # cannot simulate, before paying for that import.
    from .driver import run_seed

    scenario, seed, out, trace = args
    return run_seed(scenario, seed, out / f"seed{seed}", trace=trace)


def line(r) -> str:
    """One seed's line: verdict, hash, simulated seconds, real seconds, CPU seconds and
    simulated seconds per CPU second (r: driver.SeedResult)."""
    verdict = "PASS" if r.passed else "FAIL"
    ratio = r.simulated_s / r.real_s if r.real_s else 0.0
    text = (f"seed {r.seed}: {verdict} hash {r.digest} {r.simulated_s:.0f} s simulated in "
            f"{r.real_s:.1f} s ({ratio:.1f}x), {r.cpu_s:.1f} s CPU ({r.per_cpu_s:.1f} per CPU s) {r.history}")
    for f in r.failed:
        text += f"\n    {f}"
    return text


def run(scenario, seeds: list[int], out: pathlib.Path, *, trace: bool, jobs: int) -> int:
    failed = []
    simulated_s = cpu_s = 0.0
    work = [(scenario, s, out, trace) for s in seeds]
    if jobs <= 1 or len(seeds) == 1:
        results = map(_one, work)
    else:
        pool = concurrent.futures.ProcessPoolExecutor(max_workers=jobs)
        results = pool.map(_one, work)
    for r in results:
        print(line(r), flush=True)
        simulated_s += r.simulated_s
        cpu_s += r.cpu_s
        if not r.passed:
            failed.append(r.seed)
    if len(seeds) > 1:
        print(f"{len(seeds) - len(failed)} passed, {len(failed)} failed"
              + (f" (seeds {failed})" if failed else "")
              + f"; {simulated_s:.0f} s simulated in {cpu_s:.0f} s CPU"
              + f" ({simulated_s / cpu_s if cpu_s else 0.0:.1f} per CPU s)")
    return 1 if failed else 0


def ensure_fixed_hash_seed(argv: list[str]) -> None:
    """Set iteration order of str-keyed sets is part of the run: pin PYTHONHASHSEED."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "chaos", *argv], env)


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
