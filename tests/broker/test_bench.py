"""The log benchmarks run and measure something (their figures are not judged here)."""

from __future__ import annotations

from nats.aio.client import Client

from broker import streams
from broker.store import EventStore
from ops.bench import frames as frames_bench
from ops.bench import log_store


async def test_benchmarks_run_and_store_their_events(nats_url: str, nc: Client) -> None:
    await streams.ensure_streams(nc.jetstream())
    store = EventStore(nc)
    before = await store.latest_seq("control")
    control = await log_store.control_appends_per_s(nats_url, appends=40, writers=4)
    activity = await log_store.activity_events_per_s(nats_url, count=200, window=32)
    commands = await log_store.control_commands_per_s(nats_url, commands=20)
    assert control > 0 and activity > 0 and commands > 0
    assert await store.latest_seq("control") >= before + 40 + 20


async def test_the_frames_benchmark_moves_its_bytes(nats_url: str) -> None:
    result = await frames_bench.run(nats_url, False, 20, 2)
    assert result["round_trip"]["count"] == 20 and result["round_trip"]["p50_ms"] > 0
    assert result["streaming"]["down_mb_per_s"] > 0 and result["streaming"]["up_mb_per_s"] > 0
