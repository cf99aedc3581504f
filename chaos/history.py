"""history.jsonl: every operation of a run, one JSON object a line, in the order recorded.

Times (`t`, `t_start`, `t_end`) are seconds since the run's clock started (time.monotonic()
at the start of the run), so a history can be lined up with the timeline and node logs.

Event types and their fields (checker.py reads them):
  run           scenario, seed, path, idempotence, client
  workload-start / workload-end   t
  send          process, seq, topic, partition, key, value, t_start, t_end, outcome
                ("ok" | "fail" | "info"), offset (ok only), error (otherwise)
  poll          process, topic, partition, t, records [[offset, value], ...]
  seek          process, topic, partition, t, offset (a deliberate position change)
  consumer-error  process, t, error
  fault-start   id, t, kind, desc, nodes;   fault-end  id, t, note
  node          t, node, what ("started" | "ready" | "exited" ...), detail
  final-read    topic, partition, high_watermark, records;   final-read-failed  topic, partition, error
  replica-log   node, topic, partition, records (those below the high watermark)
"""

from __future__ import annotations

import json
import pathlib
import threading
import time
from collections.abc import Iterator


class History:
    """Appends events to history.jsonl; safe to call from trio tasks and worker threads."""

    def __init__(self, path: pathlib.Path, clock=time.monotonic) -> None:
        self.path = path
        self._clock = clock
        self.t0 = clock()
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8")
        self.counts: dict[str, int] = {}
        self.acked = 0
        self.failed = 0

    def now(self) -> float:
        return self._clock() - self.t0

    def record(self, event: dict) -> None:
        if "t" not in event and "t_end" not in event:
            event = {**event, "t": round(self.now(), 6)}
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            self._file.write(line + "\n")
            kind = event["type"]
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if kind == "send":
                if event["outcome"] == "ok":
                    self.acked += 1
                else:
                    self.failed += 1

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_history(path: pathlib.Path) -> Iterator[dict]:
    """The events of a history.jsonl file (a torn last line, from a killed harness, is skipped)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
