"""report.md, timeline.png, the one-line verdict, and the scenario as run."""

from __future__ import annotations

import pathlib
import shlex
from collections import Counter

import attrs
import yaml

from .checker import CheckResult, unavailability_windows, _History


def _plain(value):
    """attrs instances as plain data, None fields left out (absent keys take defaults)."""
    if attrs.has(type(value)):
        return {f.name: _plain(getattr(value, f.name)) for f in attrs.fields(type(value))
                if f.name != "path" and getattr(value, f.name) is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def write_scenario(run_dir: pathlib.Path, scenario) -> None:
    """scenario.yaml: the scenario exactly as run (seed and overrides applied)."""
    data = _plain(scenario)
    data["checks"] = {c.pop("name"): c for c in data["checks"]}
    for topic in data["topics"]:
        topic["configs"] = dict(topic.get("configs", ()))  # a mapping, as scenario files give it
    (run_dir / "scenario.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def rerun_command(scenario, run_dir: pathlib.Path) -> str:
    """The run's scenario.yaml is the scenario exactly as run (seed and overrides applied)."""
    return f"python -m chaos run {shlex.quote(str(run_dir / 'scenario.yaml'))}"


def verdict_line(scenario, results: list[CheckResult], passed: bool, run_dir: pathlib.Path) -> str:
    failed = [r.name for r in results if not r.passed and not r.report_only]
    noted = [f"{r.name}={r.count}" for r in results if not r.passed and r.report_only]
    unavail = next((r for r in results if r.name == "unavailability"), None)
    longest = unavail.summary.split(": ", 1)[1].split(" (")[0] if unavail else "?"
    head = "PASS" if passed else "FAIL"
    extra = f" failed: {', '.join(failed)};" if failed else ""
    extra += f" report-only: {', '.join(noted)};" if noted else ""
    broker = f" ({scenario.cluster.broker})" if scenario.cluster.broker != "chronik-trio" else ""
    return (f"chaos {head}: {scenario.name}{broker} seed {scenario.seed};{extra} longest unavailability "
            f"{longest}; {run_dir}")


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_report(run_dir: pathlib.Path, scenario, events: list[dict], results: list[CheckResult],
                 passed: bool, notes: list[str], argv: list[str] | None) -> None:
    counts = Counter(e["type"] for e in events)
    outcomes = Counter(e["outcome"] for e in events if e["type"] == "send")
    faults = {e["id"]: e for e in events if e["type"] == "fault-start"}
    ends = {e["id"]: e for e in events if e["type"] == "fault-end"}
    details = {e["id"]: e["detail"] for e in events if e["type"] == "fault-detail"}
    lines = [f"# chaos run: {scenario.name}", "",
             f"**Verdict: {'PASS' if passed else 'FAIL'}**", "",
             f"- scenario: `{scenario.path}` ({scenario.description.strip() or 'no description'})",
             f"- seed: {scenario.seed}; duration {scenario.duration_s:g} s; "
             f"{scenario.cluster.nodes} nodes of {scenario.cluster.broker}; network: {scenario.cluster.network}",
             f"- workload: {scenario.workload.client}, {scenario.workload.producers} producer(s) at "
             f"{scenario.workload.rate_per_s:g}/s, {scenario.workload.consumers} consumer(s), "
             f"acks={scenario.workload.acks}, idempotence={scenario.workload.idempotence}",
             f"- re-run: `{rerun_command(scenario, run_dir)}`",
             f"- sends: {outcomes.get('ok', 0)} acknowledged, {outcomes.get('fail', 0)} failed, "
             f"{outcomes.get('info', 0)} indeterminate; polls: {counts.get('poll', 0)}; "
             f"faults: {len(faults)}", ""]
    if argv:
        lines += [f"- command: `{shlex.join(argv)}`", ""]
    lines += ["## Checks", "", "| check | verdict | count | summary |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.name} | {r.verdict} | {r.count} | {_cell(r.summary)} |")
    lines.append("")
    for r in results:
        if r.examples and (not r.passed or r.name == "unavailability"):
            lines += [f"### {r.name}", ""] + [f"- {x}" for x in r.examples] + [""]
    unavail = next((r for r in results if r.name == "unavailability"), None)
    lines += ["## Faults", "", "| # | fault | start (s) | end (s) | longest unavailability overlapping (s) | note |",
              "|---|---|---|---|---|---|"]
    per_fault = dict(unavail.details) if unavail else {}
    for fid, f in sorted(faults.items()):
        end = ends.get(fid, {})
        key = next((k for k in per_fault if k.startswith(f"#{fid} ")), None)
        desc = f"{f['desc']}: {details[fid]}" if fid in details else f["desc"]
        lines.append(f"| {fid} | {_cell(desc)} | {f['t']:.1f} | {end.get('t', float('nan')):.1f} | "
                     f"{per_fault.get(key, 0.0):.2f} | {_cell(end.get('note', ''))} |")
    skipped = [e for e in events if e["type"] == "fault-skipped"]
    if skipped:
        lines += ["", "Skipped faults: " + "; ".join(f"{e['desc']} at {e['t']:.1f} s ({e['why']})"
                                                   for e in skipped)]
    exits = [e for e in events if e["type"] == "node" and e["what"] == "exited"]
    lines += ["", "## Node processes", ""]
    lines += [f"- t={e['t']:.1f} s node {e['node']} exited ({e['detail']})" for e in exits] or ["- no exits"]
    if any(e["detail"] not in ("code -9", "code 0", "code 137") for e in exits):
        lines += ["", "A node that meets an injected disk error stops (exit code 1) and recovers "
                  "from its files when restarted; any other exit is a `node_crashes` finding."]
    stalls = [e for e in events if e["type"] == "client-stall"]
    if stalls:
        lines += ["", "Client stalls (the harness's producer loop did not run; windows in them are "
                  "not the broker's): " + ", ".join(f"{e['process']} t={e['since']:.2f}-{e['t']:.2f}"
                                                     for e in stalls)]
    failed_reads = [e for e in events if e["type"] in ("final-read-failed", "replica-log-failed")]
    if failed_reads or notes:
        lines += ["", "## Notes", ""] + [f"- {e['type']}: {e.get('topic')}-{e.get('partition')} "
                                         f"{e.get('node', '')} {e['error']}" for e in failed_reads]
        lines += [f"- {n}" for n in notes]
    lines += ["", "Files: history.jsonl (every operation), nodes/node*.log, clients.log, timeline.png.", ""]
    (run_dir / "report.md").write_text("\n".join(lines))


def write_timeline(run_dir: pathlib.Path, events: list[dict]) -> pathlib.Path | None:
    """timeline.png: acknowledged writes per second and send latency over time, fault windows
    shaded, as Jepsen draws them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = _History(events)
    sends = [e for e in events if e["type"] == "send"]
    if not sends:
        return None
    end = max(e["t_end"] for e in sends)
    fig, (ax_rate, ax_lat) = plt.subplots(2, 1, figsize=(12, 6), sharex=True)
    buckets = int(end) + 1
    for outcome, color in (("ok", "tab:blue"), ("fail", "tab:red"), ("info", "tab:orange")):
        per_s = [0] * buckets
        for e in sends:
            if e["outcome"] == outcome:
                per_s[int(e["t_end"])] += 1
        if any(per_s):
            ax_rate.step(range(buckets), per_s, where="post", color=color, label=outcome)
    ax_rate.set_ylabel("sends/s by outcome")
    ax_rate.legend(loc="upper right")
    for outcome, color in (("ok", "tab:blue"), ("fail", "tab:red"), ("info", "tab:orange")):
        xs = [e["t_end"] for e in sends if e["outcome"] == outcome]
        ys = [max(1e-4, e["t_end"] - e["t_start"]) * 1000 for e in sends if e["outcome"] == outcome]
        if xs:
            ax_lat.scatter(xs, ys, s=2, color=color, label=outcome)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("send latency (ms)")
    ax_lat.set_xlabel("time since start (s)")
    colors = {"kill": "tab:red", "pause": "tab:purple", "partition": "tab:orange", "link": "tab:orange",
              "disk": "tab:brown", "power-loss": "tab:red", "restart": "tab:green",
              "rolling-restart": "tab:green"}
    for fid, f in h.faults.items():
        stop = f["end"] if f["end"] is not None else end
        for ax in (ax_rate, ax_lat):
            ax.axvspan(f["start"], stop, color=colors.get(f["kind"], "grey"), alpha=0.15)
        ax_rate.text(f["start"], ax_rate.get_ylim()[1] * 0.95, f"#{fid} {f['kind']}", fontsize=7,
                     va="top")
    for a, b, _ in unavailability_windows(h)[:5]:
        ax_rate.axvspan(a, b, ymax=0.05, color="black", alpha=0.6)
    fig.suptitle(f"{run_dir.name}: writes and latency; shaded: faults; black: no successful write")
    fig.tight_layout()
    path = run_dir / "timeline.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
