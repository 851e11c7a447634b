"""`kubegate bench ...`: benchmarks that start what they need and print one JSON object.

Timing goals live here, never in tests. Progress goes to stderr so stdout stays pure JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from broker.server import EmbeddedNats
from broker.streams import ensure_streams


def progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


async def _log_bench(args: argparse.Namespace) -> dict[str, Any]:
    import nats

    from ops.bench import audit_ingest, log_store, policy_rebuild

    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="kubegate-bench-") as tmp:
        server = await asyncio.to_thread(EmbeddedNats(data_dir=Path(tmp) / "nats").start)
        try:
            nc = await nats.connect(server.url)
            await ensure_streams(nc.jetstream())
            await nc.close()
            progress("control appends (optimistic concurrency, 8 writers)")
            result["control_appends_per_s"] = round(
                await log_store.control_appends_per_s(server.url, appends=args.appends)
            )
            progress("activity events (async publish)")
            result["activity_events_per_s"] = round(
                await log_store.activity_events_per_s(server.url, count=args.activity)
            )
        finally:
            await asyncio.to_thread(server.stop)
        progress(f"audit ingest of {args.audit_events} events into DuckDB")
        result["audit_ingest_events_per_s"] = round(
            await audit_ingest.measure_audit_ingest(args.audit_events, Path(tmp))
        )
        rebuild_dir = Path(tmp) / "rebuild"
        server = await asyncio.to_thread(EmbeddedNats(data_dir=rebuild_dir).start)
        try:
            nc = await nats.connect(server.url)
            await ensure_streams(nc.jetstream())
            await nc.close()
            progress(f"publishing {args.events} control events for the rebuild")
            await policy_rebuild.publish_history(server.url, args.events)
            progress("rebuilding the policy projection")
            took, applied = await policy_rebuild.rebuild_seconds(server.url)
        finally:
            await asyncio.to_thread(server.stop)
        result["rebuild_s"] = round(took, 3)
        result["rebuild_events"] = applied
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    return result


def run_bench(args: argparse.Namespace) -> int:
    runners = {"log": _log_bench}
    from ops import bench_data_plane

    runners.update(bench_data_plane.RUNNERS)
    result = asyncio.run(runners[args.which](args))
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmarks (print JSON)")
    sub = p.add_subparsers(dest="which", metavar="WHICH", required=True)
    log = sub.add_parser("log", help="event log: appends, activity, audit ingest, rebuild")
    log.add_argument("--events", type=int, default=100_000, help="events for the rebuild")
    log.add_argument("--appends", type=int, default=4000)
    log.add_argument("--activity", type=int, default=50_000)
    log.add_argument("--audit-events", type=int, default=200_000)
    from ops import bench_data_plane

    bench_data_plane.add_parsers(sub)
    for child in sub.choices.values():
        child.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(run=run_bench)
