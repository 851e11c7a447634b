"""The wire protocols driven directly (no kubectl): refusals, exact Status bytes, bad input."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from ops.sim.streams import spdy
from tests.sim.streams.kube import MiniApiServer, Tls, eventually, pod_manifest

BASE = "/api/v1/namespaces/default/pods"


@pytest.fixture
async def http(apiserver: MiniApiServer, tls: Tls) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=tls.client_context())
    async with aiohttp.ClientSession(apiserver.url, connector=connector) as session:
        yield session


async def _status(response: aiohttp.ClientResponse) -> dict[str, Any]:
    assert response.content_type == "application/json"
    return json.loads(await response.read())


@pytest.mark.parametrize(
    ("pod", "query", "code", "message"),
    [
        (pod_manifest("p"), "command=true&stdout=1", 400, "Upgrade request required"),
        (pod_manifest("p"), "stdout=1", 400, "at least one command"),
        (pod_manifest("p"), "command=true", 400, "at least 1 of stdin, stdout, stderr"),
        (
            pod_manifest("p"),
            "command=true&stdout=1&container=nope",
            400,
            "container nope is not valid for pod p",
        ),
        (
            pod_manifest("p", containers=[{"name": "a"}, {"name": "b"}]),
            "command=true&stdout=1",
            400,
            "a container name must be specified for pod p, choose one of: [a b]",
        ),
        (
            pod_manifest("p", phase="Pending", node=None),
            "command=true&stdout=1",
            400,
            "pod p does not have a host assigned",
        ),
    ],
)
async def test_exec_refusals_are_statuses(
    apiserver: MiniApiServer,
    http: aiohttp.ClientSession,
    pod: dict[str, Any],
    query: str,
    code: int,
    message: str,
) -> None:
    apiserver.add_pod(pod)
    headers = {"Connection": "Upgrade", "Upgrade": "websocket"} if "Upgrade" not in message else {}
    async with http.post(f"{BASE}/p/exec?{query}", headers=headers) as response:
        assert response.status == code
        body = await _status(response)
    assert body["kind"] == "Status" and body["code"] == code
    assert body["reason"] == "BadRequest"
    assert message in body["message"]


async def test_websocket_with_an_unknown_subprotocol_is_forbidden(
    apiserver: MiniApiServer, http: aiohttp.ClientSession
) -> None:
    apiserver.add_pod(pod_manifest("p"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(f"{BASE}/p/exec?command=true&stdout=1", protocols=("nope.k8s.io",))
    assert caught.value.status == 403


async def _ws_exec(
    http: aiohttp.ClientSession, query: str, protocol: str = "v5.channel.k8s.io"
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{BASE}/p/exec?{query}", protocols=(protocol,))
    assert ws.protocol == protocol
    return ws


async def _collect(ws: aiohttp.ClientWebSocketResponse) -> dict[int, bytes]:
    """Every channel's bytes until the server closes (base64 protocols decoded)."""
    got: dict[int, bytes] = {}
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            got[msg.data[0]] = got.get(msg.data[0], b"") + msg.data[1:]
        elif msg.type == aiohttp.WSMsgType.TEXT:
            stream = int(msg.data[0])
            got[stream] = got.get(stream, b"") + base64.b64decode(msg.data[1:])
    return got


async def test_v5_exit_codes_and_the_exact_status_bytes(
    apiserver: MiniApiServer, http: aiohttp.ClientSession
) -> None:
    apiserver.add_pod(pod_manifest("p"))
    ws = await _ws_exec(http, "command=sh&command=-c&command=echo+out;exit+7&stdout=1&stderr=1")
    got = await _collect(ws)
    assert got[1] == b"out\n"
    assert got[3] == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit '
        b'code: command terminated with exit code 7","reason":"NonZeroExitCode","details":'
        b'{"causes":[{"reason":"ExitCode","message":"7"}]}}'
    )
    ws = await _ws_exec(http, "command=true&stdout=1")
    assert (await _collect(ws))[3] == b'{"metadata":{},"status":"Success"}'


async def test_v5_close_signal_ends_stdin(
    apiserver: MiniApiServer, http: aiohttp.ClientSession
) -> None:
    apiserver.add_pod(pod_manifest("p"))
    ws = await _ws_exec(http, "command=cat&stdin=1&stdout=1")
    await ws.send_bytes(b"\x00hello ")
    await ws.send_bytes(b"\x00world")
    await ws.send_bytes(b"\xff\x00")
    got = await _collect(ws)
    assert got[1] == b"hello world"
    assert json.loads(got[3])["status"] == "Success"


async def test_v4_base64_protocol(apiserver: MiniApiServer, http: aiohttp.ClientSession) -> None:
    apiserver.add_pod(pod_manifest("p"))
    ws = await _ws_exec(
        http, "command=sh&command=-c&command=exit+2&stdout=1", "v4.base64.channel.k8s.io"
    )
    got = await _collect(ws)
    assert json.loads(got[3])["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]


async def test_v1_error_channel_is_plain_text(
    apiserver: MiniApiServer, http: aiohttp.ClientSession
) -> None:
    apiserver.add_pod(pod_manifest("p"))
    ws = await _ws_exec(http, "command=sh&command=-c&command=exit+4&stdout=1", "channel.k8s.io")
    got = await _collect(ws)
    assert (
        got[3] == b"command terminated with non-zero exit code: command terminated with exit code 4"
    )


async def test_a_malformed_close_signal_ends_the_session_and_the_process(
    apiserver: MiniApiServer, http: aiohttp.ClientSession
) -> None:
    apiserver.add_pod(pod_manifest("p"))
    ws = await _ws_exec(http, "command=sleep&command=600&stdin=1&stdout=1")
    container = apiserver.runtime.pods()[0].containers["main"]
    await eventually(lambda: len(container.execs) == 1, "the exec'd process")
    await ws.send_bytes(b"\xff\x00\x01")
    await _collect(ws)
    assert ws.close_code == 1002
    await eventually(lambda: not container.execs, "the process to be killed")


async def test_exec_into_a_waiting_container(
    apiserver: MiniApiServer, http: aiohttp.ClientSession
) -> None:
    pod = pod_manifest("p", phase="Pending")
    pod["status"]["containerStatuses"] = [{"name": "main", "state": {"waiting": {}}}]
    apiserver.add_pod(pod)
    ws = await _ws_exec(http, "command=true&stdout=1")
    status = json.loads((await _collect(ws))[3])
    assert status["reason"] == "InternalError" and status["code"] == 500
    assert (
        status["message"]
        == 'Internal error occurred: unable to upgrade connection: container not found ("main")'
    )

    reader, writer, head = await _spdy_upgrade(
        apiserver, "exec?command=true&stdout=1", "v4.channel.k8s.io"
    )
    assert head.startswith(b"HTTP/1.1 500")
    assert await _body(reader, head) == b'container not found ("main")\n'
    writer.close()


async def _spdy_upgrade(
    apiserver: MiniApiServer, path: str, *protocols: str
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", apiserver.port, ssl=apiserver.tls.client_context(), server_hostname="127.0.0.1"
    )
    lines = [
        f"POST {BASE}/p/{path} HTTP/1.1",
        f"Host: 127.0.0.1:{apiserver.port}",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        "Content-Length: 0",
        *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
    ]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    return reader, writer, head


async def _body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await asyncio.wait_for(reader.readexactly(length), 10)


async def test_spdy_protocol_negotiation_failures(apiserver: MiniApiServer) -> None:
    apiserver.add_pod(pod_manifest("p"))
    reader, writer, head = await _spdy_upgrade(
        apiserver, "exec?command=true&stdout=1", "v9.channel.k8s.io"
    )
    assert head.startswith(b"HTTP/1.1 403")
    assert b"X-Accepted-Stream-Protocol-Versions: v4.channel.k8s.io" in head
    writer.close()
    reader, writer, head = await _spdy_upgrade(apiserver, "portforward")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"X-Stream-Protocol-Version does not exist" in await _body(reader, head)
    writer.close()


async def test_garbage_after_a_spdy_upgrade_gets_a_goaway(apiserver: MiniApiServer) -> None:
    apiserver.add_pod(pod_manifest("p"))
    reader, writer, head = await _spdy_upgrade(apiserver, "portforward", "portforward.k8s.io")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"X-Stream-Protocol-Version: portforward.k8s.io" in head
    writer.write(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")  # a SPDY/2 PING
    frames = spdy.FrameDecoder().feed(await asyncio.wait_for(reader.read(), 10))
    assert frames == [spdy.GoAwayFrame(0, spdy.GoAwayStatus.PROTOCOL_ERROR)]
    writer.close()


async def test_port_forward_refusals(apiserver: MiniApiServer, http: aiohttp.ClientSession) -> None:
    apiserver.add_pod(pod_manifest("p", phase="Pending"))
    async with http.post(f"{BASE}/p/portforward") as response:
        assert response.status == 400
        assert (await _status(response))["message"] == "Upgrade request required"
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(f"{BASE}/p/portforward", protocols=("SPDY/3.1+portforward.k8s.io",))
    assert caught.value.status == 404  # kubelet: "pod does not exist" while the pod is pending
    apiserver.add_pod(pod_manifest("p"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(f"{BASE}/p/portforward?ports=80", protocols=("nope.k8s.io",))
    assert caught.value.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await http.ws_connect(f"{BASE}/p/portforward", protocols=("v4.channel.k8s.io",))
    assert caught.value.status == 400  # kubelet: query parameter "ports" is required


@pytest.mark.parametrize(
    ("query", "code", "reason", "message"),
    [
        (
            "tailLines=-1",
            422,
            "Invalid",
            "tailLines: Invalid value: -1: must be greater than or equal to 0",
        ),
        ("limitBytes=0", 422, "Invalid", "limitBytes: Invalid value: 0: must be greater than 0"),
        (
            "sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z",
            422,
            "Invalid",
            '"p" is invalid: : Forbidden: at most one of `sinceTime` or `sinceSeconds`',
        ),
        ("tailLines=abc", 400, "BadRequest", 'parsing "abc": invalid syntax'),
        ("sinceTime=yesterday", 400, "BadRequest", 'parsing time "yesterday"'),
        (
            "previous=true",
            400,
            "BadRequest",
            'previous terminated container "main" in pod "p" not found',
        ),
    ],
)
async def test_log_refusals(
    apiserver: MiniApiServer,
    http: aiohttp.ClientSession,
    query: str,
    code: int,
    reason: str,
    message: str,
) -> None:
    apiserver.add_pod(pod_manifest("p"))
    async with http.get(f"{BASE}/p/log?{query}") as response:
        assert response.status == code
        body = await _status(response)
    assert (body["reason"], body["code"]) == (reason, code)
    assert message in body["message"]


async def test_logs_of_an_unscheduled_pod_are_empty(
    apiserver: MiniApiServer, http: aiohttp.ClientSession
) -> None:
    apiserver.add_pod(pod_manifest("p", phase="Pending", node=None))
    async with http.get(f"{BASE}/p/log") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert await response.read() == b""
