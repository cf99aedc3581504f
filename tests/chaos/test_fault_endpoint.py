"""The node's fault-injection endpoint (chronik_trio/node/faults.py): POST /faults changes the
FaultyDisk's faults; power loss drops unsynced bytes and exits; only with --fault-injection."""

from __future__ import annotations

import errno
import json
import pathlib
import urllib.error
import urllib.request

import pytest

from nodeharness import NodeGroup, NodeProcess, chronik_trio_command, free_ports, node_args
from chronik_trio.node.faults import POWER_LOSS_EXIT_CODE, FaultEndpoint, FaultRequestError
from chronik_trio.storage.disk import FaultyDisk
from chronik_trio.storage.errors import DiskError

pytestmark = pytest.mark.timeout(60)


def endpoint(tmp_path: pathlib.Path, exits: list[int] | None = None) -> FaultEndpoint:
    return FaultEndpoint(FaultyDisk(sleep=lambda s: None), tmp_path,
                         exit_process=(exits.append if exits is not None else None))


def test_latency_error_and_path_reach_the_disk(tmp_path):
    ep = endpoint(tmp_path)
    state = ep.apply({"latency_ms": 300, "error": "EIO", "error_on": "fsync", "path": "partitions"})
    faults = ep.disk.faults
    assert (faults.write_latency_s, faults.fsync_latency_s) == (0.3, 0.3)
    assert (faults.write_errno, faults.fsync_errno) == (None, errno.EIO)
    assert faults.path_prefix == tmp_path / "partitions"
    assert state["fsync_error"] == "EIO" and state["path"] == str(tmp_path / "partitions")
    ep.apply({"latency_ms": 0, "error": None, "path": None})
    assert ep.state() == {"write_latency_ms": 0.0, "fsync_latency_ms": 0.0, "write_error": None,
                          "fsync_error": None, "path": None}


def test_an_injected_enospc_fails_a_write(tmp_path):
    ep = endpoint(tmp_path)
    ep.apply({"error": "ENOSPC", "error_on": "write"})
    f = ep.disk.open(tmp_path / "x")
    with pytest.raises(DiskError) as info:
        ep.disk.pwritev(f, [b"data"], 0)
    assert info.value.errno == errno.ENOSPC
    ep.disk.fsync(f)  # fsync is not affected
    ep.disk.close(f)


@pytest.mark.parametrize("request_, key", [
    ({"latency": 3}, "unknown key"), ({"latency_ms": -1}, "latency_ms"),
    ({"latency_ms": True}, "latency_ms"), ({"error": "EPERM"}, "error"),
    ({"error": "EIO", "error_on": "read"}, "error_on"), ({"path": 3}, "path"),
    ({"power_loss": "yes"}, "power_loss"), ([], "JSON object")])
def test_a_bad_request_names_the_key_and_changes_nothing(tmp_path, request_, key):
    ep = endpoint(tmp_path)
    before = ep.state()
    with pytest.raises(FaultRequestError, match=key):
        ep.apply(request_)
    assert ep.state() == before


def test_power_loss_drops_unsynced_bytes_then_exits(tmp_path):
    exits: list[int] = []
    ep = endpoint(tmp_path, exits)
    f = ep.disk.open(tmp_path / "seg")
    ep.disk.pwritev(f, [b"synced"], 0)
    ep.disk.fsync(f)
    ep.disk.fsync_dir(tmp_path)
    ep.disk.pwritev(f, [b"-lost"], 6)
    ep.apply({"power_loss": True})
    assert exits == [POWER_LOSS_EXIT_CODE]
    assert (tmp_path / "seg").read_bytes() == b"synced"
    with pytest.raises(DiskError):  # a write racing the power cut fails instead of landing
        ep.disk.pwritev(f, [b"late"], 6)


async def asgi(app, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0)

    async def send(message):
        sent.append(message)

    await app({"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def test_the_wrapped_app_serves_faults_and_passes_the_rest_on(tmp_path):
    passed: list[str] = []

    async def inner(scope, receive, send):
        passed.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    app = endpoint(tmp_path).wrap(inner)
    status, body = await asgi(app, "POST", "/faults", b'{"fsync_latency_ms": 250}')
    assert status == 200 and json.loads(body)["fsync_latency_ms"] == 250
    status, body = await asgi(app, "POST", "/faults", b'{"bogus": 1}')
    assert status == 400 and "bogus" in json.loads(body)["error"]
    status, body = await asgi(app, "POST", "/faults", b"not json")
    assert status == 400
    status, body = await asgi(app, "GET", "/faults")
    assert status == 200 and json.loads(body)["fsync_latency_ms"] == 250
    await asgi(app, "GET", "/health")
    assert passed == ["/health"]


def start_node(group: NodeGroup, tmp_path: pathlib.Path, *flags: str) -> tuple[NodeProcess, int]:
    """One single node with /faults on its --admin-listen port, ready; (process, that port)."""
    kafka, admin = free_ports(2)
    args = node_args(1, listen=f"127.0.0.1:{kafka}", data_dir=tmp_path / "data",
                     admin_listen=f"127.0.0.1:{admin}", extra=flags)
    node = group.add(NodeProcess(1, [*chronik_trio_command(), *args], tmp_path / "node.log",
                                 f"127.0.0.1:{admin}"))
    return node.start().wait_ready(30), admin


@pytest.fixture
def nodes():
    """Nodes of one test: stopped by PID at teardown; an exit nobody caused fails the test."""
    group = NodeGroup()
    yield group
    group.close()


def post(port: int, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/faults", data=json.dumps(body).encode(),
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def test_a_node_started_with_fault_injection_serves_faults_and_dies_on_power_loss(nodes, tmp_path):
    node, admin = start_node(nodes, tmp_path, "--fault-injection")
    status, state = post(admin, {"fsync_latency_ms": 5})
    assert status == 200 and state["fsync_latency_ms"] == 5
    assert post(admin, {"nope": 1})[0] == 400
    node.expect_exit()  # the power loss ends it
    try:
        post(admin, {"power_loss": True})
    except (OSError, urllib.error.URLError):
        pass  # the process may die before it answers
    assert node.proc.wait(timeout=10) == POWER_LOSS_EXIT_CODE
    assert "power loss" in node.log_text()


def test_a_node_without_fault_injection_has_no_faults_route(nodes, tmp_path):
    node, admin = start_node(nodes, tmp_path)
    assert post(admin, {"power_loss": True})[0] == 404
    assert node.running
