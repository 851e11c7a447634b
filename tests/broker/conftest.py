"""Broker test fixtures: a client on the session nats-server and throwaway streams."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nats.aio.client import Client

from broker import streams
from broker.connection import connect


@dataclass(frozen=True)
class ScratchStream:
    """A stream of this test's own: `name`, taking subjects under `prefix`."""

    name: str
    prefix: str

    def subject(self, *tokens: str) -> str:
        return ".".join((self.prefix, *tokens))


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect(nats_url, name="kubegate-test")
    yield client
    await client.close()


async def make_stream(nc: Client, *, atomic: bool = True) -> ScratchStream:
    tag = uuid.uuid4().hex[:12]
    scratch = ScratchStream(name=f"T_{tag}", prefix=f"t{tag}")
    spec = streams.StreamSpec(scratch.name, (f"{scratch.prefix}.>",), "test stream")
    config = streams.stream_config(spec)
    config.allow_atomic = atomic
    await nc.jetstream().add_stream(config)
    return scratch


@pytest.fixture
async def scratch(nc: Client) -> AsyncIterator[ScratchStream]:
    """A fresh immutable stream like KG_CONTROL (atomic batches allowed), deleted afterwards."""
    stream = await make_stream(nc)
    yield stream
    await nc.jetstream().delete_stream(stream.name)
