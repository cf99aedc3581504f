"""The side-by-side bench's case selection and table (tests/interop/bench_side_by_side.py),
without running a broker: the reports are written as `chronik-trio bench --json` writes them."""

from __future__ import annotations

import json

import pytest

from tests.interop import bench_side_by_side as sbs

pytestmark = pytest.mark.timeout(30)


def _args(*argv: str):
    return sbs.parser().parse_args(["--dir", "unused", *argv])


def test_transactional_case_is_added_and_only_selects_cases():
    plain = sbs._cases(_args())
    assert set(plain) == {"100b", "1kb"}
    txn = sbs._cases(_args("--transactional", "16", "--records-txn", "5000", "--only", "txn"))
    assert set(txn) == {"txn"}
    case = txn["txn"]
    assert case[case.index("--producers") + 1] == "16"
    assert case[case.index("--records") + 1] == "5000"
    assert case[case.index("--txn-records") + 1] == "100"
    assert "--transactional" in case and "--acks" in case


@pytest.mark.parametrize("argv", [["--only", "txn"], ["--only", "latency"]])
def test_only_refuses_a_selection_that_runs_nothing(tmp_path, argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        sbs.main(["--dir", str(tmp_path), "--nodes", "3", *argv])
    assert exit_.value.code == 2 and "--only" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing was measured


def _report(path, date, plain, txn, fraction, load=(0.5, 0.5, 0.5)):
    path.write_text(json.dumps({
        "date": date, "load_average": {"before": list(load), "after": list(load)},
        "summary": {"produce_records_per_s": plain, "txn_produce_records_per_s": txn,
                    "txn_produce_fraction_of_plain": fraction, "txn_commit_p50_ms": 4.2}}))


def test_table_gives_the_transactional_rows_and_leaves_out_cases_not_run(tmp_path):
    for r, (k, c) in enumerate([((200_000, 5_000, 0.025), (300_000, 6_000, 0.02)),
                                ((180_000, 4_000, 0.021), (320_000, 7_000, 0.022))], start=1):
        d = tmp_path / "n3" / f"round{r}"
        d.mkdir(parents=True)
        _report(d / "kafka-txn.json", f"2026-12-04T22:0{r}:00", *k)
        _report(d / "chronik-trio-txn.json", f"2026-12-04T22:1{r}:00", *c)
    text = sbs.table(sbs.read_rounds(tmp_path))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "transactions of 100 records: produce rec/s" in rows
    assert "one record at a time: produce p50 ms" not in rows  # the 100b case did not run
    txn_row = rows["transactions of 100 records: produce rec/s"]
    assert "4,500 (4,000-5,000)" in txn_row and "6,500 (6,000-7,000)" in txn_row
    assert txn_row.rstrip(" |").endswith("1.44")  # 6,500 / 4,500
    fraction = rows["transactions of 100 records: fraction of plain"]
    assert "0.023 (0.021-0.025)" in fraction and "0.021 (0.020-0.022)" in fraction
