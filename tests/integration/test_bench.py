"""`chronik-trio bench` measures correctly (counts and report shape); speed is never asserted."""

import json
import shutil
import subprocess

import pytest

from tests.brokers import CHRONIK_TRIO

BRIEF = ["--records", "3000", "--record-bytes", "50", "--rate", "100", "--warmup-s", "0.5",
         "--duration-s", "1", "--raft-entries", "500"]
PERCENTILES = {"count", "p50", "p90", "p99", "p99_9", "max"}


def _bench(tmp_path, *args, timeout_s=150):
    out = tmp_path / "bench.json"
    proc = subprocess.run([CHRONIK_TRIO, "bench", *BRIEF, *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text()), proc.stdout


def _check_throughput(report, runs, records=3000, mode="throughput"):
    assert len(report["results"][mode]) == runs
    for run in report["results"][mode]:
        assert run["produce"]["acked"] == records and run["produce"]["errors"] == 0
        assert run["consume"]["records"] == records + run["warmup_records"]
        assert run["produce"]["records_per_s"] > 0
    assert report["summary"]["produce_mb_per_s"] is not None


def _check_latency(report, runs, mode="latency"):
    assert len(report["results"][mode]) == runs
    for run in report["results"][mode]:
        assert run["errors"] == 0 and run["acked"] == run["sent"]
        assert run["measured"] == 100  # --rate 100 for --duration-s 1; warm-up records not counted
        assert set(run["produce_latency_ms"]) == PERCENTILES
        assert run["produce_latency_ms"]["count"] == run["measured"]
        assert set(run["end_to_end_latency_ms"]) == PERCENTILES
        assert run["end_to_end_latency_ms"]["count"] > 0
        assert "series" not in run  # the series go to the plot, not the JSON
    for key in ("produce_latency_p99_9_ms", "end_to_end_latency_p50_ms"):
        assert key in report["summary"]


@pytest.mark.timeout(180)
def test_bench_against_a_running_broker(broker, tmp_path):
    report, stdout = _bench(tmp_path, "--bootstrap", broker.bootstrap, "--repeat", "2",
                            "--warmup-s", "0")
    _check_throughput(report, 2)
    _check_latency(report, 2)
    assert "median: produce" in stdout and "end-to-end" in stdout
    assert "acks=all" in report["method"]["throughput"] and broker.bootstrap in report["target"]
    assert "open loop" in report["method"]["latency"].lower()
    assert len(report["load_average"]["before"]) == 3
    assert "node" not in report["results"]  # no --metrics: nothing to scrape


@pytest.mark.timeout(180)
def test_bench_starts_its_own_node_and_reads_its_ready_pass_and_fsync_timings(tmp_path):
    plot = tmp_path / "latency.png"
    report, stdout = _bench(tmp_path, "--cluster", "1", "--repeat", "1", "--modes",
                            "throughput,latency,raft", "--plot", str(plot))
    _check_throughput(report, 1)
    _check_latency(report, 1)
    assert "started by the tool" in report["target"]
    [node] = report["results"]["node"]
    assert "error" not in node, node
    for key in ("ready_pass", "fsync_round"):
        assert node[key]["count"] > 0 and node[key]["mean_ms"] is not None
    assert node["cpu_percent_of_a_core"] >= 0 and node["rss_mb_after"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report["results"]["raft"]["50B"]["runs"][0]["entries"] >= 500
    assert "raft core" in stdout


@pytest.mark.timeout(180)
def test_bench_over_sasl_ssl_measures_both_listeners_of_the_same_node(tmp_path):
    report, stdout = _bench(tmp_path, "--cluster", "1", "--repeat", "1", "--modes", "throughput,latency",
                            "--security-protocol", "SASL_SSL", "--warmup-s", "0")
    for suffix in ("", "_secured"):
        _check_throughput(report, 1, mode="throughput" + suffix)
        _check_latency(report, 1, mode="latency" + suffix)
    summary = report["summary"]
    assert summary["secured_produce_fraction_of_plaintext"] > 0
    assert "secured_extra_produce_latency_p50_ms" in summary
    assert "SASL_SSL listener (SASL SCRAM-SHA-512)" in report["target"]
    assert "over the secured listener:" in stdout


@pytest.mark.timeout(240)
def test_bench_on_a_three_node_cluster_replicates_the_topic(tmp_path):
    report, _ = _bench(tmp_path, "--cluster", "3", "--repeat", "1", "--producers", "2",
                       "--warmup-s", "0", timeout_s=220)
    _check_throughput(report, 1)
    _check_latency(report, 1)
    assert "replication factor 3" in report["method"]["throughput"]
    assert "2 producer process(es)" in report["method"]["throughput"]
    nodes = report["results"]["node"]
    assert len(nodes) == 3 and all("error" not in n for n in nodes), nodes
    assert sum(n["fsync_round"]["count"] for n in nodes) > 0
    # Each node replicated the records to its peers: Raft messages, at most one per batch.
    assert all(0 < n["sent_batches"] <= n["sent_messages"] for n in nodes), nodes


@pytest.mark.timeout(120)
def test_bench_raft_core_alone_needs_no_broker(tmp_path):
    report, stdout = _bench(tmp_path, "--modes", "raft", "--repeat", "2", "--record-bytes", "1000")
    assert report["target"].startswith("none")
    assert set(report["results"]["raft"]) == {"100B", "1000B"}
    for r in report["results"]["raft"].values():
        assert len(r["runs"]) == 2 and all(run["entries"] >= 500 for run in r["runs"])
        assert r["median_entries_per_s"] > 0
    assert "throughput" not in report["results"]


@pytest.mark.timeout(60)
def test_bench_refuses_an_unknown_mode(tmp_path):
    proc = subprocess.run([CHRONIK_TRIO, "bench", "--modes", "warp", "--json", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "unknown mode" in proc.stderr


@pytest.mark.timeout(240)
def test_bench_failover_kills_a_leader_and_times_the_first_write_on_its_successor(tmp_path):
    report, stdout = _bench(tmp_path, "--cluster", "3", "--modes", "failover", "--failover-trials", "1",
                            "--failover-rate", "200", timeout_s=220)
    f = report["results"]["failover"]
    [trial] = f["trials"]
    assert trial["errors"] == 0 and trial["unflushed"] == 0 and trial["killed_node"] in (1, 2, 3)
    assert f["failed_over"] == 1 and f["median_s"] == trial["failover_s"] > 0
    assert "SIGKILL" in report["method"]["failover"] and "failover:" in stdout


@pytest.mark.timeout(240)
def test_bench_partitions_creates_idles_and_fails_over_every_partition_of_a_node(tmp_path):
    report, stdout = _bench(tmp_path, "--cluster", "3", "--modes", "partitions", "--partitions", "20",
                            "--idle-settle-s", "0.5", "--idle-s", "1", timeout_s=220)
    r = report["results"]["partitions"]
    assert r["create_error_code"] == 0 and r["not_writable"] == 0 and r["all_writable_s"] > 0
    assert r["quiet_s"] is not None and r["quiet_s"] >= 0  # every group quiesced before the idle window
    assert [n["node"] for n in r["idle"]] == [1, 2, 3]
    assert all(n["rss_mb"] > 0 and n["open_fds"] > 0 and n["data_files"] >= 20 * 3 for n in r["idle"])
    f = r["failover"]
    assert f["not_written"] == 0 and f["written_after_kill"] == f["partitions_led"] == f["count"] > 0
    assert f["max_s"] >= f["p99_s"] >= f["p90_s"] >= f["median_s"] > 0 and sum(r["leaders_per_node"].values()) == 20
    assert f["slowest_s"][0] == f["max_s"] and f["slowest_s"] == sorted(f["slowest_s"], reverse=True)
    assert len(f["slowest_s"]) == min(10, f["count"]) and f["longest_request_s"] > 0
    assert "SIGKILL" in report["method"]["partitions"] and "failover: killed node" in stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["failover", "partitions"])
def test_bench_failover_needs_its_own_three_node_cluster(tmp_path, mode):
    proc = subprocess.run([CHRONIK_TRIO, "bench", "--cluster", "1", "--modes", mode],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "--cluster 3" in proc.stderr


@pytest.mark.timeout(180)
def test_bench_consume_fills_a_topic_once_and_reads_it_all_each_run(broker, tmp_path):
    report, stdout = _bench(tmp_path, "--bootstrap", broker.bootstrap, "--modes", "consume", "--repeat", "2",
                            "--consumer-config", "fetch.queue.backoff.ms=1000", "--count-fetch-backoffs")
    consume = report["results"]["consume"]
    assert consume["records"] == 3000 and len(consume["runs"]) == 2
    assert all(run["records"] == 3000 and run["mb_per_s"] > 0 for run in consume["runs"])
    assert report["summary"]["consume_only_mb_per_s"] == consume["median_mb_per_s"]
    assert "consume (3,000 records, confluent-kafka): median" in stdout and "offset 0" in report["method"]["consume"]
    # the consumer's settings are stated, --consumer-config over the tool's own
    assert "fetch.queue.backoff.ms 1000" in report["method"]["consume"]
    # counted from librdkafka's own log: 3,000 small records never fill its 64 MiB queue
    assert all(run["queue_full_backoffs"] == 0 == run["queue_full_backoff_ms"] for run in consume["runs"])
    assert "0 queue-full backoffs" in stdout


@pytest.mark.timeout(300)
def test_bench_consume_alternates_confluent_kafka_and_franz_go(broker, tmp_path):
    """--consume-clients: each client reads the whole topic every run, the first one's median
    is the headline, every client's runs are in the report."""
    if shutil.which("go") is None:
        pytest.skip("the franz-go consumer needs go on PATH")
    report, stdout = _bench(tmp_path, "--bootstrap", broker.bootstrap, "--modes", "consume", "--repeat", "2",
                            "--consume-clients", "franz-go,confluent-kafka")
    consume = report["results"]["consume"]
    assert consume["client"] == "franz-go" and sorted(consume["clients"]) == ["confluent-kafka", "franz-go"]
    for client, runs in consume["clients"].items():
        assert len(runs["runs"]) == 2 and all(r["client"] == client and r["records"] >= 3000 for r in runs["runs"])
    assert consume["runs"] == consume["clients"]["franz-go"]["runs"]
    assert "consume (3,000 records, franz-go): median" in stdout
    assert "consume (3,000 records, confluent-kafka): median" in stdout


@pytest.mark.timeout(180)
def test_bench_transactional_runs_beside_the_plain_throughput(broker, tmp_path):
    """--transactional: as many transactional producers as plain ones (--producers 2: two
    processes, each its own transactional.id) after each plain run, their records committed
    in transactions of --txn-records and read back by a read_committed consumer, with each
    transaction's first-ack, flush and commit times, and the coordinator's timings of each
    commit from the node's /metrics (EndTxn -> answer, -> markers durable, -> Complete record)."""
    report, stdout = _bench(tmp_path, "--bootstrap", broker.bootstrap, "--modes", "throughput,node",
                            "--metrics", broker.process.health_address, "--repeat", "1", "--producers", "2",
                            "--warmup-s", "0", "--records", "300", "--transactional", "--txn-records", "100")
    _check_throughput(report, 1, records=300)
    (run,) = report["results"]["throughput_txn"]
    produced = run["produce"]
    # 150 records per producer: a transaction of 100 and one of 50 each
    assert (produced["records"], produced["producers"], produced["transactions"], produced["errors"]) == (300, 2, 4, 0)
    assert produced["commit_latency_ms"]["count"] == 4 and produced["commit_latency_ms"]["p50"] > 0
    assert produced["first_ack_latency_ms"]["count"] == 4
    assert produced["first_ack_latency_ms"]["p50"] <= produced["flush_latency_ms"]["max"]
    assert run["consume"]["records"] == 300  # read_committed: every committed record
    assert report["summary"]["txn_produce_fraction_of_plain"] > 0
    assert "transactional median" in stdout and "transactional.id" in report["method"]["throughput"]
    [node] = report["results"]["node"]
    assert node["txn_end_txn"]["count"] == 4 and node["txn_end_txn"]["mean_ms"] > 0, node
    # The last transaction's completion may still be observing when the bench scrapes (its
    # records are readable once its markers are committed, a moment before the coordinator
    # hears so), the last one of each producer too.
    assert node["txn_markers"]["count"] >= 2 and node["txn_completion"]["count"] >= 2, node
    assert "txn_markers n=" in stdout
