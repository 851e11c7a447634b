"""The embedded nats-server starts with JetStream and answers a real client."""

from __future__ import annotations

import nats

from broker.server import EmbeddedNats


async def test_session_server_has_jetstream(nats_server: EmbeddedNats) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        info = await nc.jetstream().account_info()
        assert info.limits is not None
    finally:
        await nc.close()


def test_start_stop_in_own_dir(tmp_path) -> None:
    server = EmbeddedNats(data_dir=tmp_path / "n")
    with server:
        assert server.running
        assert "jetstream" in server.config_path.read_text()
    assert not server.running
