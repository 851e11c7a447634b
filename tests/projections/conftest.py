"""A clean nats-server per test where the log must start empty (the streams have fixed names)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from broker import streams
from broker.server import EmbeddedNats


@dataclass
class Log:
    server: EmbeddedNats
    nc: Client
    js: JetStreamContext


@pytest.fixture
async def evlog(tmp_path) -> AsyncIterator[Log]:
    server = EmbeddedNats(data_dir=tmp_path / "nats").start()
    nc = await nats.connect(
        server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, connect_timeout=2
    )
    js = nc.jetstream()
    await streams.ensure_streams(js)
    try:
        yield Log(server, nc, js)
    finally:
        await nc.close()
        server.stop()
