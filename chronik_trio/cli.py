"""The `chronik-trio` command: `node` runs a broker, `dev-cluster` runs a local cluster of
nodes, `admin` inspects and changes a cluster, `bench` measures one."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from chronik_trio.tools import admin, bench, dev_cluster
    from chronik_trio.node import main as node_main

    parser = argparse.ArgumentParser(prog="chronik-trio")
    sub = parser.add_subparsers(dest="command", required=True)
    node_main.add_parser(sub)
    bench.add_parser(sub)
    dev_cluster.add_parser(sub)
    admin.add_parser(sub)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    runners = {"node": node_main.run, "bench": bench.run,
               "dev-cluster": dev_cluster.run, "admin": admin.run}
    return runners[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
