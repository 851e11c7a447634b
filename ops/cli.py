"""The `kubegate` command line."""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from ops import cli_admin, cli_bench, cli_relay, cli_up, runtime
from ops.sim import cli as sim_cli


def package_version() -> str:
    try:
        return version("kubegate")
    except PackageNotFoundError:
        return "0.0.0+local"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubegate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"kubegate {package_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    cli_up.add_parser(subparsers)
    cli_admin.add_parsers(subparsers)
    cli_bench.add_parser(subparsers)
    cli_relay.add_parser(subparsers)
    sim_cli.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    runtime.setup_process()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
