"""pods/exec and pods/attach: the checks, the two transports, and the wiring to a process.

WebSocket (subprotocols v5..v1 of channel.k8s.io, what kubectl >= 1.30 uses) and SPDY/3.1
(v4..v1, the fallback) both become a `Remote`: a bounded queue of client events (stdin bytes,
stdin closed, terminal resize, client gone) plus writers for stdout/stderr and the final
`Status` (`remote_websocket`, `remote_spdy`). The session logic (`sessions`) does not know
which one it has.

Ending a session follows kube-apiserver: write the remaining output, then the status on the
error channel, then close our side and wait for the client to close (so nothing in flight is
cut off; kubernetes' StreamTranslator `finish`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ops.sim.streams import (
    channel,
    podspec,
    remote_spdy,
    remote_websocket,
    sessions,
    status,
    upgrade,
)
from ops.sim.streams.errors import SessionClosedError, UpgradeRefusedError
from ops.sim.streams.pods import CommandNotFoundError, ExecRequest, RuntimeContainer
from ops.sim.streams.remote import Options, Remote, parse_options
from ops.sim.streams.spdy_session import SpdySession

if TYPE_CHECKING:
    from ops.sim.runtime import PodRuntime

log = logging.getLogger("kubegate.ops.sim.streams.remotecommand")

WS_HEARTBEAT = 30.0


def _check(request: web.BaseRequest, pod: podspec.Pod, options: Options) -> str:
    """The API server's checks before proxying; returns the container name."""
    if not upgrade.is_upgrade(request):
        raise status.bad_request("Upgrade request required")
    container = podspec.choose_container(pod, options.container)
    podspec.require_host(pod)
    return container


async def _open_websocket(
    request: web.Request, options: Options, runtime: PodRuntime
) -> tuple[remote_websocket.WebSocketRemote, web.StreamResponse]:
    requested = upgrade.websocket_protocols(request)
    allowed = channel.SUPPORTED if runtime.websockets else channel.PRE_V5
    protocol = channel.negotiate(requested, allowed)
    if protocol is None:
        raise upgrade.websocket_refused(requested, [p.name for p in allowed])
    ws = web.WebSocketResponse(
        protocols=(protocol.name,) if requested else (),
        heartbeat=WS_HEARTBEAT,
        max_msg_size=16 << 20,
    )
    await ws.prepare(request)
    remote = remote_websocket.WebSocketRemote(ws, protocol, options)
    await remote.start()
    return remote, ws


async def _open_spdy(
    request: web.Request, options: Options, runtime: PodRuntime, name: str
) -> tuple[remote_spdy.SpdyRemote | None, web.StreamResponse]:
    """Upgrade and collect the client's streams; no Remote if the client never opened them."""
    version = upgrade.spdy_handshake(request, remote_spdy.PROTOCOLS)
    raw = await upgrade.accept_spdy(request, version)
    session = SpdySession(raw)
    serving = runtime.spawn(session.serve(), f"spdy session {name}")
    streams = await remote_spdy.accept_streams(session, version, options)
    if streams is None:
        await session.close()
        await asyncio.gather(serving, return_exceptions=True)
        return None, raw.response
    remote = remote_spdy.SpdyRemote(session, version, streams)
    await remote.start()
    return remote, raw.response


async def serve(
    request: web.Request, kind: str, pod: podspec.Pod, runtime: PodRuntime
) -> web.StreamResponse:
    options = parse_options(request, kind)
    name = _check(request, pod, options)
    runtime_pod = runtime.get(pod)
    container = runtime_pod.containers.get(name)
    problem = None
    if podspec.container_state(pod, name).state != "running" or container is None:
        problem = f'container not found ("{name}")'

    remote: Remote | None
    if upgrade.is_websocket(request):
        remote, response = await _open_websocket(request, options, runtime)
        transport = "websocket"
    elif upgrade.is_spdy(request):
        if problem is not None:  # kubelet refuses before upgrading
            raise UpgradeRefusedError(500, problem)
        remote, response = await _open_spdy(request, options, runtime, runtime_pod.key)
        if remote is None:
            return response
        transport = "spdy"
    else:
        raise status.bad_request("Upgrade request required")

    runtime.metrics.sessions.labels(kind, transport).inc()
    runtime.metrics.active.labels(kind).inc()
    try:
        if problem is not None:
            await remote.finish(status.internal(f"unable to upgrade connection: {problem}"))
            return response
        assert container is not None
        final = await _session(remote, kind, container, options, runtime_pod.removed, runtime)
        if final is None:
            await remote.abort()
        else:
            await remote.finish(final)
    except (SessionClosedError, ConnectionError) as exc:
        log.debug("remote command client went away", extra={"error": str(exc)})
        await remote.abort()
    except Exception:  # a bug here must not leave the client hanging on an open upgrade
        log.exception("remote command session failed", extra={"pod": runtime_pod.key})
        await remote.abort()
    finally:
        runtime.metrics.active.labels(kind).dec()
    return response


async def _session(
    remote: Remote,
    kind: str,
    container: RuntimeContainer,
    options: Options,
    removed: asyncio.Event,
    runtime: PodRuntime,
) -> dict[str, Any] | None:
    if kind == "attach":
        return await sessions.run_attach(remote, container, options, removed)
    request = ExecRequest(argv=options.command, tty=options.tty, stdin=options.stdin)
    try:
        process = await container.exec(request)
    except CommandNotFoundError as exc:
        return status.internal(f"error executing command in container: {exc}")
    except OSError as exc:
        return status.internal(f"error executing command in container: {exc}")
    runtime.metrics.processes.labels("exec").inc()
    try:
        return await sessions.run_exec(remote, process, options, removed)
    finally:
        container.exec_done(process)
