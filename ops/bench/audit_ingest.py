"""Benchmark: events already in JetStream -> rows in a fresh DuckDB audit store, per second.

Publishes a realistic mix (mostly kubectl activity, some control events) into a private
nats-server, then times a fresh audit runner from start until it has stored all of it.
Run: `python -m ops.bench.audit_ingest [--events N]` (prints JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nats
from prometheus_client import CollectorRegistry

from broker import streams, subjects
from broker.connection import connect
from broker.server import EmbeddedNats
from domain import codec
from domain import events as ev
from ops import runtime
from projections.audit import AuditStore, audit_runner

_T0 = datetime(2025, 3, 1, tzinfo=UTC)


def sample_events(n: int) -> list[ev.Event]:
    """`n` events: per 10, 4 requests + 4 completions + 1 login + 1 grant."""
    out: list[ev.Event] = []
    for i in range(n):
        t = _T0 + timedelta(milliseconds=i)
        kind = i % 10
        if kind in (8,):
            out.append(
                ev.LoginSucceeded(
                    id=f"l{i}", time=t, actor=f"user{i % 50}", user=f"user{i % 50}",
                    method="oidc", source_ip="10.0.0.1", session_id=f"s{i}",
                )
            )  # fmt: skip
        elif kind == 9:
            out.append(
                ev.GrantIssued(
                    id=f"g{i}", time=t, actor="admin", grant_id=f"g{i}", subject_kind="group",
                    subject="dev", role="edit", clusters=("prod", "stage"),
                    namespaces=("default",), expires_at=t + timedelta(hours=8),
                    reason="on call",
                )
            )  # fmt: skip
        elif kind % 2 == 0:
            out.append(
                ev.KubectlRequested(
                    id=f"q{i}", time=t, actor=f"user{i % 50}", request_id=f"r{i}",
                    user=f"user{i % 50}", cluster="prod", verb="list", resource="pods",
                    namespace="default", groups=("dev",), method="GET",
                    path="/api/v1/namespaces/default/pods", grant_id="g9", edge_id="edge-1",
                    client_ip="10.1.2.3", user_agent="kubectl/v1.33.0",
                )
            )  # fmt: skip
        else:
            out.append(
                ev.KubectlCompleted(
                    id=f"c{i}", time=t, actor=f"user{i % 50}", request_id=f"r{i - 1}",
                    user=f"user{i % 50}", cluster="prod", verb="list", resource="pods",
                    namespace="default", status=200, bytes_out=18_230, duration_ms=12.5,
                    relay_id="relay-a",
                )
            )  # fmt: skip
    return out


async def _publish(js: nats.js.JetStreamContext, events: list[ev.Event]) -> None:
    for i, event in enumerate(events):
        await js.publish_async(
            subjects.event_subject(event.STREAM, *event.key()),
            codec.encode(event),
            headers={"Nats-Msg-Id": event.id},
        )
        if i % 5000 == 4999:
            await js.publish_async_completed()
    await js.publish_async_completed()


async def measure_audit_ingest(n_events: int = 200_000, workdir: Path | None = None) -> float:
    """audit_ingest_events_per_s: JetStream -> DuckDB for `n_events` already in the log."""
    rate, _ = await _measure(n_events, workdir)
    return rate


async def _measure(n_events: int, workdir: Path | None) -> tuple[float, float]:
    """(events per second, CPU microseconds per event in this process) of one ingest."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        base = Path(tmp)
        server = await asyncio.to_thread(EmbeddedNats(data_dir=base / "nats").start)
        try:
            nc = await connect(server.url, name="kubegate-bench-audit")  # as `kubegate up`
            try:
                js = nc.jetstream()
                await streams.ensure_streams(js)
                await _publish(js, sample_events(n_events))
                store = AuditStore(base / "audit.duckdb")
                try:
                    runner = audit_runner(nc, store, registry=CollectorRegistry())
                    started, cpu = time.perf_counter(), time.process_time()
                    async with runner:
                        await runner.wait_caught_up()
                    elapsed = time.perf_counter() - started
                    cpu = time.process_time() - cpu
                    stored = sum(store.positions().values())
                    if stored != n_events:
                        raise RuntimeError(f"stored up to {stored} of {n_events} events")
                finally:
                    store.close()
            finally:
                await nc.close()
        finally:
            server.stop()
    return n_events / elapsed, cpu / n_events * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args(argv)
    runtime.setup_process()  # as in `kubegate bench log`, which goes through ops.cli.main
    rate, cpu_us = asyncio.run(_measure(args.events, None))
    result = {
        "audit_ingest_events_per_s": round(rate),
        "events": args.events,
        "cpu_us_per_event": round(cpu_us, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
