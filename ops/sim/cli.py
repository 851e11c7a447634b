"""`kubegate sim --dir D`: serve a simulator until stopped, printing its admin kubeconfig path."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sim", help="run the Kubernetes API simulator", description=__doc__
    )
    parser.add_argument("--dir", required=True, type=Path, help="state directory (CA, kubeconfig)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", default=0, type=int, help="port (0 picks a free one)")
    parser.add_argument("--name", default="sim", help="cluster name in the kubeconfig")
    parser.set_defaults(run=run)


async def _serve(args: argparse.Namespace) -> None:
    from ops.sim import Simulator

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Simulator(args.dir, host=args.host, port=args.port, name=args.name) as sim:
        sys.stdout.write(f"{sim.kubeconfig_path}\n")
        sys.stdout.flush()
        await stop.wait()


def run(args: argparse.Namespace) -> int:
    from ops.sim.errors import SimError

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(_serve(args))
    except SimError as exc:
        sys.stderr.write(f"kubegate sim: {exc}\n")
        return 1
    return 0
