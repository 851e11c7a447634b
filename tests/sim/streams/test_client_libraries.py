"""Client libraries other than kubectl: kubernetes-asyncio's WebSocket exec and port-forward
(kubelet's v4 channel protocol, which kube-apiserver passes through), and raw v4 channels."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.stream import WsApiClient

from tests.sim.streams.kube import MiniApiServer, Tls, pod_manifest

BASE = "/api/v1/namespaces/default/pods"


@pytest.fixture
async def core(apiserver: MiniApiServer, tmp_path: Path) -> AsyncIterator[client.CoreV1Api]:
    ca = tmp_path / "client-ca.crt"
    ca.write_bytes(apiserver.tls.ca_pem)
    configuration = client.Configuration(host=apiserver.url)
    configuration.ssl_ca_cert = str(ca)
    configuration.api_key = {"authorization": "sim-stream-test-token"}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    async with WsApiClient(configuration=configuration) as api:
        yield client.CoreV1Api(api_client=api)


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with_greeting = b"ready\n"
        writer.write(with_greeting)
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_kubernetes_asyncio_exec(apiserver: MiniApiServer, core: client.CoreV1Api) -> None:
    apiserver.add_pod(pod_manifest("lib-exec"))
    out = await core.connect_get_namespaced_pod_exec(
        "lib-exec",
        "default",
        command=["sh", "-c", "echo from-exec; echo to-stderr >&2"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert sorted(out.splitlines()) == ["from-exec", "to-stderr"]
    sessions = apiserver.runtime.metrics.sessions.labels("exec", "websocket")
    assert sessions._value.get() == 1


async def _messages(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[bytes]:
    got = []
    while len(got) < count:
        msg = await asyncio.wait_for(ws.receive(), 30)
        assert msg.type == aiohttp.WSMsgType.BINARY, msg
        got.append(msg.data)
    return got


async def test_kubernetes_asyncio_port_forward(
    apiserver: MiniApiServer, core: client.CoreV1Api, echo_port: int
) -> None:
    annotations = {"sim.kubegate.io/port-forward": f"8080=127.0.0.1:{echo_port}"}
    apiserver.add_pod(pod_manifest("lib-pf", annotations=annotations))
    connection = await core.connect_get_namespaced_pod_portforward(
        "lib-pf", "default", ports="8080", _preload_content=False
    )
    async with connection as ws:
        prefixes = await _messages(ws, 2)
        assert sorted(prefixes) == [
            b"\x00" + struct.pack("<H", 8080),
            b"\x01" + struct.pack("<H", 8080),
        ]
        payload = os.urandom(200_000)
        await ws.send_bytes(b"\x00" + payload)
        received = b""
        while len(received) < len(b"ready\n") + len(payload):
            (message,) = await _messages(ws, 1)
            assert message[0] == 0
            received += message[1:]
        assert received == b"ready\n" + payload
    metric = apiserver.runtime.metrics.sessions.labels("portforward", "websocket-channels")
    assert metric._value.get() == 1


async def test_base64_channels_and_two_ports(
    apiserver: MiniApiServer, tls: Tls, echo_port: int
) -> None:
    closed = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    closed_port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    mapping = f"8080=127.0.0.1:{echo_port},9090=127.0.0.1:{closed_port}"
    apiserver.add_pod(pod_manifest("b64", annotations={"sim.kubegate.io/port-forward": mapping}))
    connector = aiohttp.TCPConnector(ssl=tls.client_context())
    async with aiohttp.ClientSession(apiserver.url, connector=connector) as http:
        ws = await http.ws_connect(
            f"{BASE}/b64/portforward?ports=8080,9090", protocols=("v4.base64.channel.k8s.io",)
        )
        by_channel: dict[int, bytes] = {}
        while b"ready\n" not in by_channel.get(0, b"")[2:] or b"connect" not in by_channel.get(
            3, b""
        ):
            msg = await asyncio.wait_for(ws.receive(), 30)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            stream = int(msg.data[0])
            by_channel[stream] = by_channel.get(stream, b"") + base64.b64decode(msg.data[1:])
        assert by_channel[0][:2] == struct.pack("<H", 8080)
        assert by_channel[2][:2] == struct.pack("<H", 9090)
        assert by_channel[3][:2] == struct.pack("<H", 9090)
        assert b"error forwarding port 9090" in by_channel[3]
        assert b"connection refused" in by_channel[3]
        await ws.close()
