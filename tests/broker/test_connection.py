"""Connecting: a clear error when NATS is not there at start, reconnection once it was."""

from __future__ import annotations

import asyncio

import pytest

from broker.connection import connect
from broker.errors import NatsUnavailableError
from broker.server import EmbeddedNats, free_port


async def test_unreachable_at_start_is_a_clear_error() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(NatsUnavailableError) as err:
        await asyncio.wait_for(connect(url, name="t"), timeout=30)
    assert err.value.url == url
    assert url in str(err.value)
    assert err.value.detail == "connection refused"


async def test_one_live_server_in_a_list_is_enough(nats_url: str) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    nc = await connect(f"{dead}, {nats_url}", name="t")
    try:
        assert nc.is_connected
        assert nc.connected_url is not None and nc.connected_url.port != int(dead.rsplit(":", 1)[1])
    finally:
        await nc.close()


async def test_reconnects_after_the_server_comes_back(tmp_path) -> None:
    server = EmbeddedNats(data_dir=tmp_path / "n").start()
    nc = await connect(server.url, name="t")
    try:
        assert nc.options["max_reconnect_attempts"] == -1
        server.stop()
        server.start()  # same ports, same data dir
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await nc.flush(timeout=1)
                if nc.is_connected:
                    break
            except Exception:
                pass
            assert asyncio.get_running_loop().time() < deadline, "client never reconnected"
            await asyncio.sleep(0.2)
        assert not nc.is_closed
        sub = await nc.subscribe("ping")
        await nc.publish("ping", b"after restart")
        assert (await sub.next_msg(timeout=5)).data == b"after restart"
    finally:
        await nc.close()
        server.stop()
