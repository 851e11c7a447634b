"""The embedded nats-server starts with JetStream and answers a real client."""

from __future__ import annotations

import os
import socket

import nats
import pytest

from broker.server import DEFAULT_GOGC, EmbeddedNats, NatsServerStartError


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


async def test_the_server_chooses_its_ports_and_keeps_them_across_a_restart(tmp_path) -> None:
    server = EmbeddedNats(data_dir=tmp_path / "n")
    with server:
        port, http_port = server.port, server.http_port
        assert port and http_port and port != http_port
        nc = await nats.connect(server.url)
        assert nc.connected_server_version.major >= 2
        await nc.close()
        server.reload()  # same listen options: nats-server refuses a reload that changes them
    with server:
        assert (server.port, server.http_port) == (port, http_port)
        nc = await nats.connect(server.url)
        await nc.close()


def test_a_port_someone_else_listens_on_is_not_mistaken_for_ours(tmp_path) -> None:
    """A port that answers is not proof: the server must say it listens there itself."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = EmbeddedNats(data_dir=tmp_path / "n", port=taken)
        with pytest.raises(NatsServerStartError) as failed:
            server.start()
        assert "address already in use" in failed.value.log
        assert not server.running


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item]
    return {k.decode(): v.decode() for k, v in pairs}


def test_the_go_runtime_gets_half_the_cores_unless_told(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GOMAXPROCS", raising=False)
    with EmbeddedNats(data_dir=tmp_path / "half") as server:
        assert server.process is not None
        expected = str(max(1, (os.cpu_count() or 2) // 2))
        assert _environ(server.process.pid)["GOMAXPROCS"] == expected
    with EmbeddedNats(data_dir=tmp_path / "told", gomaxprocs=3) as server:
        assert server.process is not None
        assert _environ(server.process.pid)["GOMAXPROCS"] == "3"
    monkeypatch.setenv("GOMAXPROCS", "7")  # an operator's setting wins over the default
    with EmbeddedNats(data_dir=tmp_path / "env") as server:
        assert server.process is not None
        assert _environ(server.process.pid)["GOMAXPROCS"] == "7"


def test_the_go_gc_target_is_raised_unless_told(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    with EmbeddedNats(data_dir=tmp_path / "default") as server:
        assert server.process is not None
        assert _environ(server.process.pid)["GOGC"] == str(DEFAULT_GOGC) != "100"
    with EmbeddedNats(data_dir=tmp_path / "go", gogc=0) as server:
        assert server.process is not None
        assert "GOGC" not in _environ(server.process.pid)  # Go's own default
    monkeypatch.setenv("GOGC", "150")  # an operator's setting wins over ours
    with EmbeddedNats(data_dir=tmp_path / "env", gogc=800) as server:
        assert server.process is not None
        assert _environ(server.process.pid)["GOGC"] == "150"
