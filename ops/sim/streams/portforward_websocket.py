"""pods/portforward over kubelet's WebSocket channel protocol (no SPDY inside).

This is what client libraries speak when they ask for `v4.channel.k8s.io` (kubernetes-asyncio,
the Python client) instead of kubectl's SPDY tunnel; kube-apiserver hands such requests to
kubelet, which serves them like this: every port of the `ports` query gets two channels, 2i for
data both ways and 2i+1 for errors, each opened by the server with the port number (two bytes,
little endian). One TCP connection per port; the session ends when every forward has ended or
the client leaves (or the pod is deleted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from ops.sim.streams import channel, upgrade
from ops.sim.streams.errors import ChannelProtocolError, SessionClosedError, UpgradeRefusedError

if TYPE_CHECKING:
    from ops.sim.runtime import StreamMetrics
    from ops.sim.streams.pods import RuntimePod

log = logging.getLogger("kubegate.ops.sim.streams.portforward_websocket")

PROTOCOLS = {
    "": channel.V4,  # no subprotocol: binary framing
    channel.V4.name: channel.V4,
    channel.V4_BASE64.name: channel.V4_BASE64,
}
CONNECT_TIMEOUT = 10.0
COPY_CHUNK = 32 * 1024
WS_HEARTBEAT = 30.0
QUEUE = 64


def parse_ports(request: web.BaseRequest) -> list[int]:
    """kubelet's NewV4Options: `ports` is required, comma lists allowed, each 1..65535."""
    values = request.rel_url.query.getall("ports", [])
    if not values:
        raise UpgradeRefusedError(400, 'query parameter "ports" is required')
    ports = []
    for value in values:
        if not value:
            raise UpgradeRefusedError(400, 'query parameter "ports" cannot be empty')
        for item in value.split(","):
            try:
                port = int(item)
            except ValueError:
                raise UpgradeRefusedError(400, f'unable to parse "{value}" as a port') from None
            if not 0 < port < 65536:
                raise UpgradeRefusedError(400, f'port "{value}" must be > 0')
            ports.append(port)
    return ports


def negotiate(request: web.BaseRequest) -> tuple[str, channel.ChannelProtocol]:
    requested = upgrade.websocket_protocols(request) or [""]
    for name in requested:
        if name in PROTOCOLS:
            return name, PROTOCOLS[name]
    raise upgrade.websocket_refused(requested, [p for p in PROTOCOLS if p])


class ChannelForwarder:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        protocol: channel.ChannelProtocol,
        ports: list[int],
        pod: RuntimePod,
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.ports = ports
        self.pod = pod
        self.inbound: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(QUEUE) for _ in ports]

    async def send(self, stream: int, data: bytes) -> None:
        message = channel.encode(self.protocol, stream, data)
        try:
            if isinstance(message, str):
                await self.ws.send_str(message)
            else:
                await self.ws.send_bytes(message)
        except ConnectionError as exc:
            raise SessionClosedError(f"websocket write failed: {exc}") from exc

    async def read_client(self) -> None:
        """Route the client's data channels to their ports; the rest is ignored, as in kube."""
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                decoded = channel.decode(self.protocol, msg.data)
                if isinstance(decoded, channel.Data) and decoded.data:
                    index, kind = divmod(decoded.channel, 2)
                    if kind == 0 and index < len(self.ports):
                        await self.inbound[index].put(decoded.data)
        except ChannelProtocolError as exc:
            log.info("bad port-forward message", extra={"error": str(exc)})
        finally:
            for queue in self.inbound:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(None)

    async def forward(self, index: int) -> None:
        port = self.ports[index]
        data_channel, error_channel = 2 * index, 2 * index + 1
        prefix = struct.pack("<H", port)
        await self.send(data_channel, prefix)
        await self.send(error_channel, prefix)
        host, target_port = self.pod.port_target(port)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, target_port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            errno = exc.errno if isinstance(exc, OSError) else None
            reason = os.strerror(errno).lower() if errno else "i/o timeout"
            await self.send(
                error_channel,
                f"error forwarding port {port} to pod {self.pod.uid or self.pod.name}, uid : "
                f"failed to connect to {host}:{target_port}: connect: {reason}".encode(),
            )
            return
        try:
            await asyncio.gather(self._to_target(index, writer), self._from_target(reader, index))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _to_target(self, index: int, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while (data := await self.inbound[index].get()) is not None:
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()

    async def _from_target(self, reader: asyncio.StreamReader, index: int) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(COPY_CHUNK):
                await self.send(2 * index, data)


async def serve(
    request: web.Request, pod: RuntimePod, metrics: StreamMetrics
) -> web.StreamResponse:
    ports = parse_ports(request)
    name, protocol = negotiate(request)
    ws = web.WebSocketResponse(
        protocols=(name,) if name else (), heartbeat=WS_HEARTBEAT, max_msg_size=16 << 20
    )
    await ws.prepare(request)
    metrics.sessions.labels("portforward", "websocket-channels").inc()
    metrics.active.labels("portforward").inc()
    forwarder = ChannelForwarder(ws, protocol, ports, pod)
    reading = asyncio.ensure_future(forwarder.read_client())
    forwards = asyncio.ensure_future(
        asyncio.gather(*(forwarder.forward(i) for i in range(len(ports))))
    )
    deleted = asyncio.ensure_future(pod.removed.wait())
    try:
        await asyncio.wait({reading, forwards, deleted}, return_when=asyncio.FIRST_COMPLETED)
    except Exception:  # a bug here must not leave the client hanging
        log.exception("port-forward session failed", extra={"pod": pod.key})
    finally:
        for task in (forwards, deleted):
            task.cancel()
        await asyncio.gather(forwards, deleted, return_exceptions=True)
        with contextlib.suppress(ConnectionError):
            await ws.close()
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        metrics.active.labels("portforward").dec()
    return ws
