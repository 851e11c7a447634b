"""pods/portforward: SPDY/3.1 over a WebSocket tunnel or a plain upgrade, bytes to TCP targets.

kubectl opens two streams per local connection, an error stream and a data stream, both with
headers `streamType`, `port` and `requestID`; kubelet pairs them by request id, dials the port,
copies bytes both ways, and writes a one-line error on the error stream when it cannot. Here the
container port is dialled on the host (see `podspec.PORT_FORWARD_ANNOTATION`).

The session ends when the client closes it or the pod is deleted; then every forwarded TCP
connection is closed too (Teleport#54814 is the bug of not doing so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ops.sim.streams import podspec, portforward_websocket, spdy, status, upgrade
from ops.sim.streams.errors import SessionClosedError, UpgradeRefusedError
from ops.sim.streams.spdy_session import ByteChannel, SpdySession, SpdyStream
from ops.sim.streams.transports import WebSocketBytes

if TYPE_CHECKING:
    from ops.sim.runtime import PodRuntime
    from ops.sim.streams.pods import RuntimePod

log = logging.getLogger("kubegate.ops.sim.streams.portforward")

PROTOCOL = "portforward.k8s.io"
TUNNEL_PREFIX = "SPDY/3.1+"
STREAM_CREATION_TIMEOUT = 30.0
CONNECT_TIMEOUT = 10.0
COPY_CHUNK = 32 * 1024
WS_HEARTBEAT = 30.0


@dataclass
class _Pair:
    request_id: str
    error: SpdyStream | None = None
    data: SpdyStream | None = None
    timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)


def _stream_problem(stream: SpdyStream) -> str | None:
    """kubelet's httpStreamReceived checks; a problem means the stream is refused."""
    port_text = stream.header("port")
    if not port_text:
        return '"port" header is required'
    try:
        port = int(port_text)
    except ValueError:
        return f'unable to parse "{port_text}" as a port'
    if not 0 < port < 65536:
        return f'port "{port_text}" must be > 0'
    kind = stream.header("streamType")
    if not kind:
        return '"streamType" header is required'
    if kind not in ("error", "data"):
        return f'invalid stream type "{kind}"'
    return None


class Forwarder:
    """Serves one SPDY session: pairs streams, dials targets, copies bytes."""

    def __init__(self, session: SpdySession, runtime_pod: RuntimePod) -> None:
        self.session = session
        self.pod = runtime_pod
        self._pairs: dict[str, _Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> None:
        while (stream := await self.session.accept()) is not None:
            problem = _stream_problem(stream)
            if problem is not None:
                log.info("refusing port-forward stream", extra={"problem": problem})
                await stream.reply(fin=True)
                continue
            await stream.reply()
            request_id = stream.header("requestID")
            if not request_id:  # kubelet's fallback for clients without request ids
                offset = 0 if stream.header("streamType") == "error" else 2
                request_id = str(stream.id - offset)
            pair = self._pairs.get(request_id)
            if pair is None:
                pair = self._pairs[request_id] = _Pair(request_id)
                pair.timer = asyncio.get_running_loop().call_later(
                    STREAM_CREATION_TIMEOUT, self._expire, pair
                )
            kind = stream.header("streamType")
            if getattr(pair, kind) is not None:
                await self._print_error(pair, f"{kind} stream already assigned")
                continue
            setattr(pair, kind, stream)
            if pair.error is not None and pair.data is not None:
                if pair.timer is not None:
                    pair.timer.cancel()
                del self._pairs[request_id]
                self._spawn(self._forward(pair), f"forward {request_id}")

    def _expire(self, pair: _Pair) -> None:
        if self._pairs.pop(pair.request_id, None) is not None:
            message = f"timed out waiting for streams of request {pair.request_id}"
            self._spawn(self._print_error(pair, message), "expire")

    async def _print_error(self, pair: _Pair, message: str) -> None:
        if pair.error is not None:
            with contextlib.suppress(SessionClosedError):
                await pair.error.write(message.encode())

    async def _forward(self, pair: _Pair) -> None:
        assert pair.error is not None and pair.data is not None
        port = int(pair.data.header("port"))
        host, target_port = self.pod.port_target(port)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, target_port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            errno = exc.errno if isinstance(exc, OSError) else None
            reason = os.strerror(errno) if errno else "i/o timeout"
            message = (
                f"error forwarding port {port} to pod {self.pod.uid or self.pod.name}, uid : "
                f'failed to connect to {host}:{target_port} inside namespace "{self.pod.name}", '
                f"IPv4: dial tcp4 {host}:{target_port}: connect: {reason.lower()} "
            )
            log.info("port-forward target refused", extra={"port": port, "error": str(exc)})
            with contextlib.suppress(SessionClosedError):
                await pair.error.write(message.encode())
                await pair.data.reset()
                await pair.error.reset()
            return
        self._writers.add(writer)
        try:
            await asyncio.gather(
                self._to_target(pair.data, writer), self._from_target(reader, pair.data)
            )
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            with contextlib.suppress(SessionClosedError):
                await pair.data.close()
                await pair.error.close()

    async def _to_target(self, stream: SpdyStream, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await stream.read():
                writer.write(data)
                await writer.drain()
            if stream.reset_status is None and writer.can_write_eof():
                writer.write_eof()  # the client finished sending: half-close like io.Copy
            else:
                writer.close()
        except ConnectionError:
            await stream.reset()

    async def _from_target(self, reader: asyncio.StreamReader, stream: SpdyStream) -> None:
        try:
            while data := await reader.read(COPY_CHUNK):
                await stream.write(data)
        except (ConnectionError, SessionClosedError):
            await stream.reset()
            return
        with contextlib.suppress(SessionClosedError):
            await stream.close()

    async def shutdown(self) -> None:
        for pair in self._pairs.values():
            if pair.timer is not None:
                pair.timer.cancel()
        self._pairs.clear()
        for writer in list(self._writers):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _tunnel_protocols(request: web.BaseRequest) -> list[str]:
    return [
        p.removeprefix(TUNNEL_PREFIX)
        for p in upgrade.websocket_protocols(request)
        if p.startswith(TUNNEL_PREFIX) and p.endswith(".k8s.io")
    ]


async def serve(request: web.Request, pod: podspec.Pod, runtime: PodRuntime) -> web.StreamResponse:
    if not upgrade.is_upgrade(request):
        raise status.bad_request("Upgrade request required")
    podspec.require_host(pod)
    runtime_pod = runtime.get(pod)
    if not podspec.is_running(pod):
        raise UpgradeRefusedError(404, "pod does not exist")  # kubelet's answer

    channel: ByteChannel
    if upgrade.is_websocket(request):
        tunnels = _tunnel_protocols(request) if runtime.websockets else []
        if not tunnels:  # kube-apiserver hands these to kubelet's channel protocol
            return await portforward_websocket.serve(request, runtime_pod, runtime.metrics)
        if PROTOCOL not in tunnels:
            raise UpgradeRefusedError(
                403,
                f"unable to upgrade: unable to negotiate protocol: client supports "
                f"[{' '.join(tunnels)}], server accepts [{PROTOCOL}]",
            )
        ws = web.WebSocketResponse(
            protocols=(TUNNEL_PREFIX + PROTOCOL,), heartbeat=WS_HEARTBEAT, max_msg_size=16 << 20
        )
        await ws.prepare(request)
        channel, response, transport = WebSocketBytes(ws), ws, "websocket"
    elif upgrade.is_spdy(request):
        upgrade.spdy_handshake(request, [PROTOCOL])
        raw = await upgrade.accept_spdy(request, PROTOCOL)
        channel, response, transport = raw, raw.response, "spdy"
    else:
        raise status.bad_request("Upgrade request required")

    runtime.metrics.sessions.labels("portforward", transport).inc()
    runtime.metrics.active.labels("portforward").inc()
    session = SpdySession(channel)
    forwarder = Forwarder(session, runtime_pod)
    serving = asyncio.ensure_future(session.serve())
    forwarding = asyncio.ensure_future(forwarder.run())
    deleted = asyncio.ensure_future(runtime_pod.removed.wait())
    try:
        await asyncio.wait({serving, deleted}, return_when=asyncio.FIRST_COMPLETED)
        if deleted.done():
            log.info("pod deleted; closing port-forward", extra={"pod": runtime_pod.key})
            with contextlib.suppress(SessionClosedError):
                await session.goaway(spdy.GoAwayStatus.OK)
    except Exception:  # a bug here must not leave kubectl hanging on an open tunnel
        log.exception("port-forward session failed", extra={"pod": runtime_pod.key})
    finally:
        await forwarder.shutdown()
        await session.close()
        for task in (serving, forwarding, deleted):
            task.cancel()
        await asyncio.gather(serving, forwarding, deleted, return_exceptions=True)
        runtime.metrics.active.labels("portforward").dec()
    return response
