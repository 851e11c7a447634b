"""`kubegate relay`: run one relay replica of a cluster until interrupted.

Runs next to the cluster's API server (usually as a Deployment in the cluster, with in-cluster
credentials) and only dials out, to NATS. Start-up problems - NATS or the API server
unreachable, credentials unreadable, policy not loading - are one line on stderr and exit 3.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from typing import Any

from domain.errors import KubegateError
from ops import logs
from ops.cli_admin import parse_duration

MIN_IDLE_S = 60


def parse_idle(text: str) -> timedelta:
    seconds = parse_duration(text)
    if seconds < MIN_IDLE_S:
        raise argparse.ArgumentTypeError(f"idle period {text!r} is shorter than 1m")
    return timedelta(seconds=seconds)


def parse_ttl(text: str) -> timedelta:
    seconds = parse_duration(text)
    if seconds < 600:
        raise argparse.ArgumentTypeError(f"token lifetime {text!r} is shorter than 10m")
    return timedelta(seconds=seconds)


def run_relay(args: argparse.Namespace) -> int:
    from ops.cli_up import serve_until_stopped
    from relay.service import RelayService, RelaySettings

    logs.setup(args.log_level)
    try:
        service = RelayService(
            RelaySettings(
                cluster=args.cluster,
                nats_url=args.nats,
                nats_creds=args.creds,
                kubeconfig=args.kubeconfig,
                context=args.context,
                namespace=args.namespace,
                idle=args.idle,
                token_ttl=args.token_ttl,
                metrics_host=args.metrics_host,
                metrics_port=args.metrics_port,
            )
        )
        banner = "kubegate relay {s.relay_id} serving cluster {s.cluster}"
        asyncio.run(serve_until_stopped(service, banner))
    except KubegateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "relay",
        help="run a cluster's relay (next to its API server; dials out to NATS only)",
        description=__doc__,
    )
    p.add_argument("--cluster", required=True, help="the cluster's name in kubegate")
    p.add_argument("--nats", required=True, help="NATS URL(s), comma-separated")
    p.add_argument("--creds", help="NATS credentials file (`kubegate cluster creds`)")
    p.add_argument(
        "--kubeconfig", help="the relay's own credentials (default: in-cluster service account)"
    )
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument(
        "--namespace", default="kubegate-system", help="namespace for just-in-time accounts"
    )
    p.add_argument(
        "--idle",
        type=parse_idle,
        default=timedelta(hours=8),
        metavar="DURATION",
        help="remove a user's account after this long unused (default 8h; at least 1m)",
    )
    p.add_argument(
        "--token-ttl",
        type=parse_ttl,
        default=timedelta(hours=1),
        metavar="DURATION",
        help="lifetime of the short-lived tokens the relay requests (default 1h)",
    )
    p.add_argument("--metrics-host", default="0.0.0.0", help="address for /metrics and /healthz")
    p.add_argument(
        "--metrics-port", type=int, default=0, help="serve /metrics and /healthz (0: off)"
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(run=run_relay)
