"""etcd-style transcript tests: text files of commands with their expected output.

A file is a sequence of blocks separated by blank lines; each block is a command, a line
`----`, and the expected output (never blank lines). Lines starting with `#` between blocks
are comments. Run `python -m tests.raft.transcript --rewrite [files]` to regenerate the
expected outputs after a change you understand (then read the diff), or without --rewrite
to check them. tests/raft/test_transcripts.py runs every file under pytest.

Commands (node ids are integers):
  add-nodes <n> [voters=1,2,3] [learners=4] [pre_vote=true] [check_quorum=true]
            [max_size_per_msg_bytes=N] [max_inflight_msgs=N] [lease_reads=true]
  campaign <id>                    propose <id> <data>
  propose-conf-change <id> <v2 l3 r1 ...> [explicit|implicit]
  tick-election <id>               tick-heartbeat <id>
  process-ready <id>...            deliver-msgs [<id>...]
  stabilize [<id>...]              partition <ids> | <ids> [| ...]     heal
(messages across a partition are dropped silently)
  status <id>                      raft-log <id>
  read-index <id> <ctx>            transfer-leader <from> <to>
  compact <id>                     report-snapshot <leader> <peer> ok|fail
  crash <id>                       restart <id>
"""

from __future__ import annotations

import pathlib
import sys

from chronik_trio.raft import (ConfChangeSingle, ConfChangeTransition, ConfChangeType,
                               ConfChangeV2, RaftError, ReadOnlyOption, StateRole,
                               describe_entry, describe_message, describe_ready)

from .cluster import Cluster

TRANSCRIPTS_DIR = pathlib.Path(__file__).parent / "transcripts"
STABILIZE_ROUNDS_MAX = 100

_CC = {"v": ConfChangeType.ADD_NODE, "l": ConfChangeType.ADD_LEARNER_NODE,
       "r": ConfChangeType.REMOVE_NODE}


def _ids(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.replace("(", "").replace(")", "").split(",") if x)


class Env:
    def __init__(self) -> None:
        self.c: Cluster | None = None
        self.out: list[str] = []

    def emit(self, line: str) -> None:
        self.out.append(line)

    def run(self, cmd: str) -> str:
        self.out = []
        name, *args = cmd.split()
        handler = getattr(self, "cmd_" + name.replace("-", "_"), None)
        assert handler is not None, f"unknown command {name!r}"
        try:
            handler(*args)
        except RaftError as e:
            self.emit(f"error: {type(e).__name__}: {e}")
        return "\n".join(self.out) if self.out else "ok"

    # -- commands ---------------------------------------------------------------------------

    def cmd_add_nodes(self, n: str, *opts: str) -> None:
        kv = dict(o.split("=", 1) for o in opts)
        voters = _ids(kv.pop("voters", ",".join(map(str, range(1, int(n) + 1)))))
        learners = _ids(kv.pop("learners", ""))
        cfg = {"pre_vote": False, "check_quorum": False}
        for k, v in kv.items():
            if k == "lease_reads":
                cfg["read_only_option"] = ReadOnlyOption.LEASE_BASED
            else:
                cfg[k] = v == "true" if v in ("true", "false") else int(v)
        self.c = Cluster(voters, learners, seed=0, **cfg)

    def cmd_campaign(self, node: str) -> None:
        self.c.node(int(node)).campaign()

    def cmd_propose(self, node: str, data: str) -> None:
        self.c.node(int(node)).propose(data.encode())

    def cmd_propose_conf_change(self, node: str, *changes: str) -> None:
        transition = ConfChangeTransition.AUTO
        singles = []
        for ch in changes:
            if ch in ("explicit", "implicit"):
                transition = ConfChangeTransition.JOINT_EXPLICIT if ch == "explicit" \
                    else ConfChangeTransition.JOINT_IMPLICIT
            else:
                singles.append(ConfChangeSingle(_CC[ch[0]], int(ch[1:])))
        self.c.node(int(node)).propose_conf_change(
            ConfChangeV2(changes=tuple(singles), transition=transition))

    def cmd_tick_election(self, node: str) -> None:
        r = self.c.node(int(node)).raft
        for _ in range(max(1, r.randomized_election_timeout_ticks - r.election_elapsed_ticks)):
            self.c.node(int(node)).tick()

    def cmd_tick_heartbeat(self, node: str) -> None:
        r = self.c.node(int(node)).raft
        for _ in range(r.heartbeat_timeout_ticks):
            self.c.node(int(node)).tick()

    def cmd_process_ready(self, *nodes: str) -> None:
        for n in nodes:
            self._process_ready(int(n))

    def _process_ready(self, i: int) -> bool:
        p = self.c.peers[i]
        if p.crashed or not p.node.has_ready():
            return False
        self.emit(f"> {i} handling Ready")
        mark = len(self.out)
        rd = self.c.process_ready(i)
        text = describe_ready(rd)
        self.out[mark:mark] = ["  " + line for line in text.splitlines()]
        return True

    def cmd_deliver_msgs(self, *nodes: str) -> None:
        ids = [int(n) for n in nodes] or sorted(self.c.peers)
        for i in ids:
            self._deliver(i)

    def _deliver(self, i: int) -> bool:
        if not self.c.inbox[i]:
            return False
        self.emit(f"> {i} receiving messages")
        mark = len(self.out)
        msgs = self.c.deliver(i)
        self.out[mark:mark] = ["  " + describe_message(m) for m in msgs]
        return True

    def cmd_stabilize(self, *nodes: str) -> None:
        ids = [int(n) for n in nodes] or sorted(self.c.peers)
        for _ in range(STABILIZE_ROUNDS_MAX):
            busy = False
            for i in ids:
                busy |= self._process_ready(i)
            for i in ids:
                busy |= self._deliver(i)
            if not busy:
                return
        raise AssertionError("stabilize did not converge")

    def cmd_partition(self, *spec: str) -> None:
        groups = [tuple(int(x) for x in g.split()) for g in " ".join(spec).split("|")]
        self.c.partition(*groups)

    def cmd_heal(self) -> None:
        self.c.heal()

    def cmd_status(self, node: str) -> None:
        n = self.c.node(int(node))
        r = n.raft
        self.emit(f"{r.id} {r.state.name} term={r.term} vote={r.vote} lead={r.leader_id} "
                  f"commit={r.log.committed} applied={r.log.applied} "
                  f"last={r.log.last_index()} config={r.trk.config!r}")
        if r.state == StateRole.LEADER:
            for i, pr in r.describe_progress().items():
                self.emit(f"  {i}: {pr}")

    def cmd_raft_log(self, node: str) -> None:
        ents = self.c.log_entries(int(node))
        if not ents:
            self.emit("log is empty")
        for e in ents:
            self.emit(describe_entry(e))

    def cmd_read_index(self, node: str, ctx: str) -> None:
        self.c.node(int(node)).read_index(ctx.encode())

    def cmd_transfer_leader(self, frm: str, to: str) -> None:
        self.c.node(int(frm)).transfer_leader(int(to))

    def cmd_compact(self, node: str) -> None:
        self.c.compact(int(node))
        s = self.c.peers[int(node)].storage
        self.emit(f"first index {s.first_index()}")

    def cmd_report_snapshot(self, leader: str, peer: str, outcome: str) -> None:
        self.c.node(int(leader)).report_snapshot(int(peer), outcome == "ok")

    def cmd_crash(self, node: str) -> None:
        self.c.crash(int(node))

    def cmd_restart(self, node: str) -> None:
        self.c.restart(int(node))


def parse(text: str) -> list[tuple[list[str], str, str]]:
    """Blocks of (leading comment lines, command, expected output)."""
    blocks = []
    comments: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if line.startswith("#"):
            comments.append(line)
            i += 1
            continue
        cmd = line
        assert lines[i + 1] == "----", f"line {i + 2}: expected ---- after {cmd!r}"
        i += 2
        out = []
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        blocks.append((comments, cmd, "\n".join(out)))
        comments = []
    return blocks


def run_file(path: pathlib.Path, rewrite: bool) -> list[str]:
    """Returns the mismatches (empty if all match); with rewrite, updates the file."""
    blocks = parse(path.read_text())
    env = Env()
    failures, parts = [], []
    for comments, cmd, expected in blocks:
        actual = env.run(cmd)
        if actual != expected:
            failures.append(f"{path.name}: {cmd}\n--- expected\n{expected}\n--- actual\n"
                            f"{actual}")
        parts.append("\n".join([*comments, cmd, "----", actual]))
    if rewrite:
        path.write_text("\n\n".join(parts) + "\n")
    return failures


def main(argv: list[str]) -> int:
    rewrite = "--rewrite" in argv
    files = [pathlib.Path(a) for a in argv if a != "--rewrite"] or \
        sorted(TRANSCRIPTS_DIR.glob("*.txt"))
    failures = [f for p in files for f in run_file(p, rewrite)]
    for f in failures:
        print(f, end="\n\n")
    if rewrite:
        print(f"rewrote {len(files)} file(s)")
        return 0
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
