"""TLS objects with OpenSSL's read and write bound directly, under both event loops."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from pathlib import Path

import pytest
import uvloop

from broker.tls_objects import FastSSLObject
from edge.ca import CertificateAuthority


def _contexts(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = CertificateAuthority.load_or_create(tmp)
    issued = ca.issue_server(["127.0.0.1"])
    (tmp / "s.crt").write_bytes(issued.cert_pem)
    (tmp / "s.key").write_bytes(issued.key_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "s.crt", tmp / "s.key")
    client = ssl.create_default_context(cafile=str(tmp / "ca.crt"))
    for ctx in (server, client):
        ctx.sslobject_class = FastSSLObject
    return server, client


async def _echo_digest(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> None:
    seen: list[object] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("ssl_object"))
        while data := await reader.read(1 << 20):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
    payload = os.urandom(3 * 1024 * 1024 + 17)  # many TLS records, odd tail
    got = hashlib.sha256()
    received = 0

    async def read_back() -> None:
        nonlocal received
        while received < len(payload):
            data = await reader.read(1 << 20)
            assert data, "connection ended early"
            got.update(data)
            received += len(data)

    reading = asyncio.create_task(read_back())
    for at in range(0, len(payload), 100_000):
        writer.write(payload[at : at + 100_000])
        await writer.drain()
    await asyncio.wait_for(reading, 60)
    assert got.digest() == hashlib.sha256(payload).digest()
    client_obj = writer.get_extra_info("ssl_object")
    for obj in (client_obj, seen[0]):
        assert isinstance(obj, FastSSLObject)
        # the C object's methods, bound on the instance, not ssl.SSLObject's wrappers
        assert obj.read.__self__ is obj._sslobj  # type: ignore[attr-defined]
        assert obj.write.__self__ is obj._sslobj  # type: ignore[attr-defined]
    writer.close()
    server.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_bytes_cross_tls_intact_with_the_bound_methods(tmp_path: Path, loop: str) -> None:
    server_ctx, client_ctx = _contexts(tmp_path)
    if loop == "uvloop":
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_echo_digest(server_ctx, client_ctx))
    else:
        asyncio.run(_echo_digest(server_ctx, client_ctx))
