"""`kubegate up`: run the control plane (and an edge) until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from domain.errors import KubegateError
from ops import logs
from ops.config import DEFAULT_DATA_DIR


async def serve_until_stopped(service: Any, banner: Any) -> None:
    """Start `service`, print `banner`, and run until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with service:
        print(banner.format(s=service), flush=True)
        await stop.wait()
        print("stopping...", file=sys.stderr, flush=True)


def run_up(args: argparse.Namespace) -> int:
    from ops.controlplane import ControlPlaneService, Settings

    logs.setup(args.log_level)
    settings = Settings(
        data_dir=Path(args.data_dir).expanduser(),
        nats_url=args.nats,
        nats_creds=args.nats_creds,
        host=args.host,
        edge_port=args.edge_port,
        admin_port=args.admin_port,
        public_host=args.public_host or "",
        replicas=args.replicas,
    )
    banner = (
        "kubegate is up\n"
        "  NATS:      {s.nats_url}\n"
        "  edge:      {s.edge_url}   (kubectl, mutual TLS)\n"
        "  admin API: {s.admin_url}\n"
        "  console:   {s.admin_url}/console/   (log in; kubectl and helm in the browser)\n"
        f"  admin CLI: export KUBEGATE_CONFIG={settings.data_dir / 'admin.conf'}"
    )
    try:
        asyncio.run(serve_until_stopped(ControlPlaneService(settings), banner))
    except KubegateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


def run_edge(args: argparse.Namespace) -> int:
    from edge.service import EdgeSettings
    from edge.standalone import StandaloneEdge

    logs.setup(args.log_level)
    pki = Path(args.pki).expanduser()
    settings = EdgeSettings(
        ca_file=pki / "ca.crt",
        cert_file=pki / "edge.crt",
        key_file=pki / "edge.key",
        host=args.host,
        port=args.port,
        public_host=args.public_host or "",
        staleness_bound_s=args.staleness_bound,
    )
    edge = StandaloneEdge(args.nats, settings, creds=args.nats_creds)
    try:
        asyncio.run(serve_until_stopped(edge, "kubegate edge listening on {s.url}"))
    except KubegateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from ops.demo import Demo

    logs.setup(args.log_level)
    demo = Demo(
        Path(args.dir).expanduser().resolve(),
        host=args.host,
        edge_port=args.edge_port,
        admin_port=args.admin_port,
    )

    class _Banner:
        def format(self, s: Any) -> str:
            return s.banner()

    try:
        asyncio.run(serve_until_stopped(demo, _Banner()))  # type: ignore[arg-type]
    except KubegateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("up", help="run the control plane and an edge")
    p.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR))
    p.add_argument("--nats", help="an existing NATS (cluster) URL instead of the embedded one")
    p.add_argument("--nats-creds", help="NATS credentials file for --nats")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--public-host", help="host name clients use (kubeconfigs, certificates)")
    p.add_argument("--edge-port", type=int, default=8443)
    p.add_argument("--admin-port", type=int, default=9443)
    p.add_argument("--replicas", type=int, default=1, help="stream replicas (3 on a cluster)")
    p.add_argument("--log-level", default="info")
    p.set_defaults(run=run_up)

    p = subparsers.add_parser("edge", help="run one more edge (stateless) against NATS")
    p.add_argument("--nats", required=True)
    p.add_argument("--nats-creds")
    p.add_argument("--pki", required=True, help="directory with ca.crt, edge.crt, edge.key")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--public-host")
    p.add_argument("--port", type=int, default=8443)
    p.add_argument("--staleness-bound", type=float, default=30.0, metavar="SECONDS")
    p.add_argument("--log-level", default="info")
    p.set_defaults(run=run_edge)

    p = subparsers.add_parser("demo", help="the whole product on one machine, seeded")
    p.add_argument("--dir", default="kubegate-demo", help="where state and kubeconfigs go")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--edge-port", type=int, default=0)
    p.add_argument("--admin-port", type=int, default=0)
    p.add_argument("--log-level", default="warning")
    p.set_defaults(run=run_demo)
