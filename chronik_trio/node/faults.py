"""The fault-injection endpoint: `POST /faults` on the node's HTTP server, for the chaos harness.

Only a node started with `--fault-injection` has it: main.py then runs a FaultInjectingNode,
whose Disk is a FaultyDisk and whose transport's ASGI app is wrapped so `/faults` reaches
the disk's DiskFaults. Everything else goes to the wrapped app unchanged.

  GET  /faults   200, the current faults as JSON.
  POST /faults   JSON body, every key optional; an absent key leaves that fault as it is:
      latency_ms        added before every write and fsync (sets both below)
      write_latency_ms  added before every write
      fsync_latency_ms  added before every fsync (of files and directories)
      error             "EIO" | "ENOSPC" | null: writes and fsyncs fail with it
      error_on          "write" | "fsync" | "both" (default): which operations fail
      path              only files under this path (relative: to the data dir) | null: all
      power_loss        true: every byte not yet fsynced is dropped and the process exits
                        at once with POWER_LOSS_EXIT_CODE (a power cut; nothing is flushed)
    200 with the faults now in force; 400 naming the bad key.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import pathlib
import sys
from collections.abc import Callable

from chronik_trio.storage.disk import FaultyDisk
from chronik_trio.transport.transport import Transport

from .config import NodeConfig
from .node import Node
from .peers import tcp_transport

log = logging.getLogger(__name__)

FAULTS_PATH = "/faults"
# What a killed process reports (128 + SIGKILL): the harness treats it like a SIGKILL.
POWER_LOSS_EXIT_CODE = 137
# A fault request is a small JSON object; anything bigger is refused.
FAULT_REQUEST_BYTES_MAX = 4096
ERRNOS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC}
KEYS = {"latency_ms", "write_latency_ms", "fsync_latency_ms", "error", "error_on", "path",
        "power_loss"}


class FaultRequestError(ValueError):
    """A /faults request the endpoint refuses; the message names the key."""


class FaultEndpoint:
    """Applies /faults requests to a FaultyDisk.

    Args:
        disk: the node's FaultyDisk.
        data_dir: what a relative `path` is relative to.
        exit_process: how power loss ends the process (os._exit; a test passes a recorder).
    """

    def __init__(self, disk: FaultyDisk, data_dir: pathlib.Path,
                 exit_process: Callable[[int], None] = os._exit) -> None:
        self.disk = disk
        self.data_dir = pathlib.Path(data_dir)
        self._exit_process = exit_process

    def state(self) -> dict:
        f = self.disk.faults
        names = {v: k for k, v in ERRNOS.items()}
        return {"write_latency_ms": f.write_latency_s * 1000, "fsync_latency_ms": f.fsync_latency_s * 1000,
                "write_error": names.get(f.write_errno), "fsync_error": names.get(f.fsync_errno),
                "path": str(f.path_prefix) if f.path_prefix is not None else None}

    def apply(self, request: dict) -> dict:
        """Applies one request (already decoded JSON); returns the new state.

        Raises:
            FaultRequestError: a bad key or value; nothing was changed.
        """
        if not isinstance(request, dict):
            raise FaultRequestError("expected a JSON object")
        unknown = set(request) - KEYS
        if unknown:
            raise FaultRequestError(f"unknown key(s) {sorted(unknown)}; known: {sorted(KEYS)}")
        changes = self._changes(request)
        for name, value in changes.items():
            setattr(self.disk.faults, name, value)
        if changes:
            log.warning("fault injection: %s", self.state())
        if request.get("power_loss") is True:
            self._power_loss()
        return self.state()

    def _changes(self, request: dict) -> dict:
        changes: dict = {}
        for key, fields in (("latency_ms", ("write_latency_s", "fsync_latency_s")),
                            ("write_latency_ms", ("write_latency_s",)),
                            ("fsync_latency_ms", ("fsync_latency_s",))):
            if key in request:
                value = request[key]
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 60_000:
                    raise FaultRequestError(f"{key} must be a number of ms in [0, 60000], got {value!r}")
                for field in fields:
                    changes[field] = value / 1000
        error_on = request.get("error_on", "both")
        if error_on not in ("write", "fsync", "both"):
            raise FaultRequestError(f"error_on must be write, fsync or both, got {error_on!r}")
        if "error" in request:
            error = request["error"]
            if error is not None and error not in ERRNOS:
                raise FaultRequestError(f"error must be one of {sorted(ERRNOS)} or null, got {error!r}")
            number = ERRNOS.get(error) if error is not None else None
            changes["write_errno"] = number if error_on in ("write", "both") else None
            changes["fsync_errno"] = number if error_on in ("fsync", "both") else None
        if "path" in request:
            path = request["path"]
            if path is not None and not isinstance(path, str):
                raise FaultRequestError(f"path must be a string or null, got {path!r}")
            changes["path_prefix"] = None if path is None else self.data_dir / path
        if "power_loss" in request and not isinstance(request["power_loss"], bool):
            raise FaultRequestError(f"power_loss must be true or false, got {request['power_loss']!r}")
        return changes

    def _power_loss(self) -> None:
        # Writes racing with the drop fail instead of landing after it.
        self.disk.faults.write_errno = self.disk.faults.fsync_errno = errno.EIO
        self.disk.faults.path_prefix = None
        self.disk.drop_unsynced()
        log.critical("fault injection: power loss: unsynced bytes dropped, exiting with %d",
                     POWER_LOSS_EXIT_CODE)
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        self._exit_process(POWER_LOSS_EXIT_CODE)

    def wrap(self, app):
        """An ASGI app serving /faults and passing everything else to `app`."""
        async def faults_app(scope: dict, receive: Callable, send: Callable) -> None:
            if scope["type"] == "http" and scope["path"] == FAULTS_PATH:
                await self._serve(scope, receive, send)
            else:
                await app(scope, receive, send)
        return faults_app

    async def _serve(self, scope: dict, receive: Callable, send: Callable) -> None:
        body = b""
        # Read the request to its end before answering (hypercorn must not see body after
        # the response ended), keeping at most one byte more than the limit.
        while True:
            event = await receive()
            if event["type"] != "http.request":
                return
            body = (body + event.get("body", b""))[:FAULT_REQUEST_BYTES_MAX + 1]
            if not event.get("more_body", False):
                break
        if scope["method"] == "GET":
            status, answer = 200, self.state()
        elif scope["method"] != "POST":
            status, answer = 405, {"error": "GET or POST only"}
        elif len(body) > FAULT_REQUEST_BYTES_MAX:
            status, answer = 413, {"error": f"request above {FAULT_REQUEST_BYTES_MAX} bytes"}
        else:
            try:
                status, answer = 200, self.apply(json.loads(body or b"{}"))
            except (ValueError, FaultRequestError) as exc:  # JSONDecodeError is a ValueError
                status, answer = 400, {"error": str(exc)}
        payload = json.dumps(answer).encode() + b"\n"
        await send({"type": "http.response.start", "status": status,
                     "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": payload})


class FaultInjectingNode(Node):
    """A Node on a FaultyDisk whose HTTP server also answers /faults."""

    def __init__(self, config: NodeConfig, **kwargs) -> None:
        disk = FaultyDisk()
        endpoint = FaultEndpoint(disk, pathlib.Path(config.data_dir))

        def make_transport(*args, **options) -> Transport:
            transport = tcp_transport(*args, **options)
            transport.app = endpoint.wrap(transport.app)
            return transport

        super().__init__(config, disk=disk, make_transport=make_transport, **kwargs)
