"""kubectl port-forward: real bytes both ways, concurrent connections, clean endings."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from tests.sim.streams.kube import Kubectl, MiniApiServer, eventually, pod_manifest, read_until

pytestmark = pytest.mark.e2e

TRANSPORTS = {
    "websocket": {},
    "spdy": {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"},
}


@dataclass
class EchoServer:
    """Greets each connection, then echoes; records connections that ended."""

    port: int = 0
    opened: int = 0
    ended: int = 0
    server: asyncio.Server | None = None
    handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.opened += 1
        try:
            writer.write(b"hello\n")
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.ended += 1
            writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[EchoServer]:
    target = EchoServer()
    target.server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
    target.port = target.server.sockets[0].getsockname()[1]
    yield target
    target.server.close()
    await target.server.wait_closed()


async def _forward(
    kubectl: Kubectl, pod: str, env: dict[str, str]
) -> tuple[asyncio.subprocess.Process, int]:
    proc = await kubectl.start("port-forward", f"pod/{pod}", ":8080", **env)
    assert proc.stdout is not None
    seen = await read_until(proc.stdout, b"-> 8080")
    match = re.search(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 8080", seen)
    assert match, seen
    return proc, int(match.group(1))


async def _round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert await reader.readexactly(6) == b"hello\n"
        writer.write(payload)
        await writer.drain()
        return await reader.readexactly(len(payload))
    finally:
        writer.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_port_forward_carries_bytes_both_ways_and_ends_with_kubectl(
    apiserver: MiniApiServer, kubectl: Kubectl, echo: EchoServer, transport: str
) -> None:
    annotations = {"sim.kubegate.io/port-forward": f"8080=127.0.0.1:{echo.port}"}
    apiserver.add_pod(pod_manifest("pf-bytes", annotations=annotations))
    proc, local = await _forward(kubectl, "pf-bytes", TRANSPORTS[transport])
    payloads = [os.urandom(size) for size in (1, 1000, 300_000, 2_000_000)]
    echoed = await asyncio.gather(*(_round_trip(local, p) for p in payloads))
    assert echoed == payloads
    await eventually(lambda: echo.ended == len(payloads), "target connections to close")

    held = await asyncio.open_connection("127.0.0.1", local)
    assert await held[0].readexactly(6) == b"hello\n"
    proc.send_signal(signal.SIGINT)
    await proc.wait()
    await eventually(lambda: echo.ended == echo.opened, "the held connection to be closed")
    held[1].close()
    sessions = apiserver.runtime.metrics.sessions.labels("portforward", transport)
    assert sessions._value.get() == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_port_forward_ends_when_the_pod_is_deleted(
    apiserver: MiniApiServer, kubectl: Kubectl, echo: EchoServer, transport: str
) -> None:
    annotations = {"sim.kubegate.io/port-forward": f"8080=127.0.0.1:{echo.port}"}
    apiserver.add_pod(pod_manifest("pf-delete", annotations=annotations))
    proc, local = await _forward(kubectl, "pf-delete", TRANSPORTS[transport])
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    assert await reader.readexactly(6) == b"hello\n"
    apiserver.delete_pod("default", "pf-delete")
    assert await asyncio.wait_for(reader.read(), 30) == b""  # the forwarded connection ends
    await eventually(lambda: echo.ended == 1, "the target connection to close")
    code = await asyncio.wait_for(proc.wait(), 30)  # kubectl notices and exits by itself
    assert code != 0
    writer.close()


async def test_port_forward_to_a_closed_port_reports_the_error(
    apiserver: MiniApiServer, kubectl: Kubectl
) -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    closed_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    annotations = {"sim.kubegate.io/port-forward": f"8080=127.0.0.1:{closed_port}"}
    apiserver.add_pod(pod_manifest("pf-refused", annotations=annotations))
    proc, local = await _forward(kubectl, "pf-refused", {})
    reader, writer = await asyncio.open_connection("127.0.0.1", local)
    assert await asyncio.wait_for(reader.read(), 30) == b""
    writer.close()
    await asyncio.wait_for(proc.wait(), 30)
    assert proc.stderr is not None
    err = await proc.stderr.read()
    assert b"error forwarding port 8080" in err
    assert b"connect: connection refused" in err
