"""The `chronik-trio` command: `node` runs a broker, `bench` measures one."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from chronik_trio import bench
    from chronik_trio.node import main as node_main

    parser = argparse.ArgumentParser(prog="chronik-trio")
    sub = parser.add_subparsers(dest="command", required=True)
    node_main.add_parser(sub)
    bench.add_parser(sub)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runners = {"node": node_main.run, "bench": bench.run}
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
