"""Benchmarks of the frame transport: small-request round trips and streaming throughput.

    python -m ops.bench.frames                 # embedded nats-server, edge and relay in-process
    python -m ops.bench.frames --split         # relay in a second process (closer to production)
    python -m ops.bench.frames --nats URL      # against an existing NATS

Prints one JSON object. A round trip is a whole stream: Open/Accept, a small request body, the
response head and body, End both ways. Throughput moves one large body edge -> relay (`up`) and
relay -> edge (`down`) through the credit windows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from broker.connection import connect
from broker.server import EmbeddedNats
from broker.transport import EdgeClient, RelayServer, ServerStream, TransportConfig
from ops import runtime

MiB = 1024 * 1024
_BLOCK = os.urandom(MiB)


async def bench_handler(stream: ServerStream) -> None:
    """`/rt`: echo; `/down`: send `bytes=N` bytes; `/up`: count the request body."""
    path = stream.open.path
    if path == "/down":
        size = int(stream.open.query.removeprefix("bytes="))
        await stream.send_head(200, [("Content-Length", str(size))])
        while size > 0:
            n = min(size, MiB)
            await stream.send(_BLOCK[:n])
            size -= n
        await stream.end()
        return
    received = bytearray() if path == "/rt" else None
    total = 0
    async for chunk in stream.request_body():
        total += len(chunk)
        if received is not None:
            received += chunk
    await stream.send_head(200, [("X-Received", str(total))])
    if received:
        await stream.send(received)
    await stream.end()


async def serve_relay(url: str, cluster: str, config: TransportConfig | None = None) -> None:
    """Run a benchmark relay until cancelled."""
    nc = await connect(url, name="kubegate-bench-relay")
    relay = RelayServer(
        nc, cluster, f"bench-relay-{uuid.uuid4().hex[:6]}", bench_handler, config=config
    )
    await relay.start()
    try:
        await asyncio.Event().wait()
    finally:
        await relay.close()
        await nc.close()


async def round_trips(
    edge: EdgeClient, cluster: str, count: int = 2000, size: int = 256, concurrency: int = 1
) -> dict[str, Any]:
    """Latency of `count` small request/response streams, `concurrency` at a time."""
    body = os.urandom(size)
    latencies: list[float] = []

    async def one() -> None:
        start = time.perf_counter()
        stream = await edge.open(cluster, method="POST", path="/rt", user="bench")
        await stream.send(body)
        await stream.end_send()
        await stream.response_head()
        got = b"".join([c async for c in stream])
        latencies.append(time.perf_counter() - start)
        if got != body:
            raise RuntimeError("round trip corrupted the body")

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    for _ in range(50):  # warm up
        await one()
    latencies.clear()
    began = time.perf_counter()
    per_worker = count // concurrency
    await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    ms = sorted(x * 1000 for x in latencies)
    return {
        "count": len(ms),
        "concurrency": concurrency,
        "body_bytes": size,
        "p50_ms": round(statistics.median(ms), 3),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
        "streams_per_s": round(len(ms) / elapsed, 1),
    }


async def throughput(edge: EdgeClient, cluster: str, megabytes: int = 200) -> dict[str, Any]:
    """MB/s of one stream carrying `megabytes` down (relay -> edge) and then up."""
    size = megabytes * MiB
    start = time.perf_counter()
    stream = await edge.open(cluster, method="GET", path="/down", query=f"bytes={size}", user="b")
    await stream.end_send()
    await stream.response_head()
    got = 0
    async for chunk in stream:
        got += len(chunk)
    down = time.perf_counter() - start
    if got != size:
        raise RuntimeError(f"downstream lost bytes: {got} of {size}")

    start = time.perf_counter()
    stream = await edge.open(cluster, method="PUT", path="/up", user="bench")
    sent = 0
    while sent < size:
        await stream.send(_BLOCK)
        sent += len(_BLOCK)
    await stream.end_send()
    head = await stream.response_head()
    async for _ in stream:
        pass
    up = time.perf_counter() - start
    if dict(head.headers).get("X-Received") != str(size):
        raise RuntimeError("upstream lost bytes")
    return {
        "megabytes": megabytes,
        "down_mb_per_s": round(megabytes / down, 1),
        "up_mb_per_s": round(megabytes / up, 1),
    }


async def run(
    url: str | None = None, split: bool = False, count: int = 2000, megabytes: int = 200
) -> dict[str, Any]:
    """All figures as one dict; starts an embedded nats-server when `url` is None."""
    config = TransportConfig()
    cluster = f"bench-{uuid.uuid4().hex[:6]}"
    async with AsyncExitStack() as stack:
        if url is None:
            server = EmbeddedNats(data_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())))
            stack.enter_context(server)
            url = server.url
        if split:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ops.bench.frames", "relay", url, cluster
            )

            async def stop_proc() -> None:
                proc.terminate()
                await proc.wait()

            stack.push_async_callback(stop_proc)
        else:
            relay_task = asyncio.create_task(serve_relay(url, cluster, config))

            async def stop_relay() -> None:
                relay_task.cancel()
                await asyncio.gather(relay_task, return_exceptions=True)

            stack.push_async_callback(stop_relay)
        nc = await connect(url, name="kubegate-bench-edge")
        stack.push_async_callback(nc.close)
        edge = EdgeClient(nc, f"bench-edge-{uuid.uuid4().hex[:6]}", config=config)
        await edge.start()
        stack.push_async_callback(edge.close)
        await _wait_for_relay(edge, cluster)
        return {
            "bench": "frames",
            "relay_in_separate_process": split,
            "chunk_bytes": config.chunk_size,
            "window_bytes": config.window,
            "round_trip": await round_trips(edge, cluster, count=count),
            "round_trip_concurrent": await round_trips(edge, cluster, count=count, concurrency=16),
            "streaming": await throughput(edge, cluster, megabytes=megabytes),
        }
    raise AssertionError("unreachable")


async def _wait_for_relay(edge: EdgeClient, cluster: str) -> None:
    from broker.errors import NoRelayError

    for _ in range(200):
        try:
            stream = await edge.open(cluster, method="POST", path="/rt", user="bench")
        except NoRelayError:
            await asyncio.sleep(0.05)
            continue
        await stream.end_send()
        async for _ in stream:
            pass
        return
    raise RuntimeError(f"no benchmark relay for {cluster} came up")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.bench.frames", description=__doc__)
    parser.add_argument("--nats", default=None, help="NATS URL (default: embedded server)")
    parser.add_argument("--split", action="store_true", help="run the relay in its own process")
    parser.add_argument("--count", type=int, default=2000, help="round trips to time")
    parser.add_argument("--megabytes", type=int, default=200, help="bytes per throughput run")
    args, rest = parser.parse_known_args(argv)
    runtime.setup_process()  # both halves run as kubegate processes do (and connect as they do)
    if rest[:1] == ["relay"]:  # internal: the relay half of --split
        try:
            asyncio.run(serve_relay(rest[1], rest[2]))
        except KeyboardInterrupt:
            pass
        return 0
    result = asyncio.run(run(args.nats, args.split, args.count, args.megabytes))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
