"""pods/exec and pods/attach: the checks, the two transports, and the wiring to a process.

WebSocket (subprotocols v5..v1 of channel.k8s.io, what kubectl >= 1.30 uses) and SPDY/3.1
(v4..v1, the fallback) both become a `Remote`: a bounded queue of client events (stdin bytes,
stdin closed, terminal resize, client gone) plus writers for stdout/stderr and the final
`Status`. The session logic in `run_exec` / `run_attach` does not know which one it has.

Ending a session follows kube-apiserver: write the remaining output, then the status on the
error channel, then close our side and wait for the client to close (so nothing in flight is
cut off; kubernetes' StreamTranslator `finish`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

from ops.sim.streams import channel, podspec, status, upgrade
from ops.sim.streams.errors import ChannelProtocolError, SessionClosedError, UpgradeRefusedError
from ops.sim.streams.pods import CommandNotFoundError, ExecRequest, RuntimeContainer
from ops.sim.streams.spdy_session import SpdySession, SpdyStream

if TYPE_CHECKING:
    from ops.sim.runtime import PodRuntime

log = logging.getLogger("kubegate.ops.sim.streams.remotecommand")

SPDY_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
STREAM_CREATION_TIMEOUT = 30.0  # kubelet's DefaultStreamCreationTimeout
FINISH_TIMEOUT = 60.0  # how long we wait for the client to close after the status
EXIT_DRAIN_GRACE = 2.0  # output still open this long after exit: its holders are killed
EVENT_QUEUE = 64
WS_HEARTBEAT = 30.0


@dataclass(frozen=True, slots=True)
class Options:
    container: str
    command: tuple[str, ...]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


def _flag(query: Mapping[str, str], name: str) -> bool:
    """apimachinery's string-to-bool conversion: absent, "0" and "false" are false."""
    if name not in query:
        return False
    value = query[name]
    return value != "0" and value.lower() != "false"


def parse_options(request: web.BaseRequest, kind: str) -> Options:
    query = request.rel_url.query
    options = Options(
        container=query.get("container", ""),
        command=tuple(query.getall("command", [])),
        stdin=_flag(query, "stdin"),
        stdout=_flag(query, "stdout"),
        stderr=_flag(query, "stderr"),
        tty=_flag(query, "tty"),
    )
    if kind == "exec" and not options.command:
        raise status.bad_request("you must specify at least one command for the container")
    if not (options.stdin or options.stdout or options.stderr):
        raise status.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    if options.tty and options.stderr:  # kubelet: "tty and stderr is not supported"
        options = Options(**{**_fields(options), "stderr": False})
    return options


def _fields(options: Options) -> dict[str, Any]:
    return {f: getattr(options, f) for f in Options.__slots__}


# Client events.
@dataclass(frozen=True, slots=True)
class Stdin:
    data: bytes


@dataclass(frozen=True, slots=True)
class StdinClosed:
    pass


@dataclass(frozen=True, slots=True)
class Resize:
    size: channel.TerminalSize


@dataclass(frozen=True, slots=True)
class Gone:
    pass


Event = Stdin | StdinClosed | Resize | Gone


class Remote(Protocol):
    events: asyncio.Queue[Event]

    async def start(self) -> None: ...

    async def write(self, stream: int, data: bytes) -> None: ...

    async def finish(self, final: dict[str, Any]) -> None: ...

    async def abort(self) -> None: ...


class WebSocketRemote:
    """The channel protocol over an aiohttp WebSocket."""

    def __init__(
        self, ws: web.WebSocketResponse, protocol: channel.ChannelProtocol, options: Options
    ) -> None:
        self.ws = ws
        self.protocol = protocol
        self.options = options
        self.events: asyncio.Queue[Event] = asyncio.Queue(EVENT_QUEUE)
        self._reader: asyncio.Task[None] | None = None
        self._resize = channel.ResizeDecoder()

    async def start(self) -> None:
        # kube tells the client the session is up with an empty message on its first stream.
        first = (
            channel.STDOUT
            if self.options.stdout
            else channel.STDERR
            if self.options.stderr
            else channel.ERROR
        )
        await self._send(first, b"")
        self._reader = asyncio.get_running_loop().create_task(self._read(), name="ws reader")

    async def _read(self) -> None:
        stdin_open = self.options.stdin
        try:
            async for msg in self.ws:
                if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                    continue
                decoded = channel.decode(self.protocol, msg.data)
                match decoded:
                    case channel.Data(channel=channel.STDIN, data=data) if stdin_open and data:
                        await self.events.put(Stdin(data))
                    case channel.Data(channel=channel.RESIZE, data=data):
                        for size in self._resize.feed(data):
                            await self.events.put(Resize(size))
                    case channel.Close(channel=channel.STDIN) if stdin_open:
                        stdin_open = False
                        await self.events.put(StdinClosed())
        except ChannelProtocolError as exc:
            log.info("bad remote-command message; closing", extra={"error": str(exc)})
            await self.ws.close(code=1002, message=str(exc)[:120].encode())
        finally:
            await self.events.put(Gone())

    async def _send(self, stream: int, data: bytes) -> None:
        if self.ws.closed:
            raise SessionClosedError("websocket closed")
        message = channel.encode(self.protocol, stream, data)
        try:
            if isinstance(message, str):
                await self.ws.send_str(message)
            else:
                await self.ws.send_bytes(message)
        except ConnectionError as exc:
            raise SessionClosedError(f"websocket write failed: {exc}") from exc

    async def write(self, stream: int, data: bytes) -> None:
        await self._send(stream, data)

    async def finish(self, final: dict[str, Any]) -> None:
        try:
            if self.protocol.status_json:
                await self._send(channel.ERROR, status.encode(final))
            elif text := status.plain_text(final):
                await self._send(channel.ERROR, text.encode())
        except SessionClosedError:
            pass
        await self.abort()

    async def abort(self) -> None:
        """Send the close frame and wait (bounded by aiohttp's close timeout) for the reply."""
        with contextlib.suppress(ConnectionError):
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


class SpdyRemote:
    """One SPDY stream per kind (error, stdin, stdout, stderr, resize), as client-go opens them."""

    def __init__(self, session: SpdySession, version: str, streams: dict[str, SpdyStream]) -> None:
        self.session = session
        self.version = version
        self.streams = streams
        self.events: asyncio.Queue[Event] = asyncio.Queue(EVENT_QUEUE)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if "stdin" in self.streams:
            self._tasks.append(loop.create_task(self._read_stdin(self.streams["stdin"])))
        if "resize" in self.streams:
            self._tasks.append(loop.create_task(self._read_resize(self.streams["resize"])))
        self._tasks.append(loop.create_task(self._watch()))

    async def _read_stdin(self, stream: SpdyStream) -> None:
        while data := await stream.read():
            await self.events.put(Stdin(data))
        if stream.reset_status is None and not self.session.done.is_set():
            await self.events.put(StdinClosed())

    async def _read_resize(self, stream: SpdyStream) -> None:
        decoder = channel.ResizeDecoder()
        try:
            while data := await stream.read():
                for size in decoder.feed(data):
                    await self.events.put(Resize(size))
        except ChannelProtocolError as exc:
            log.info("bad resize stream", extra={"error": str(exc)})

    async def _watch(self) -> None:
        await self.session.done.wait()
        await self.events.put(Gone())

    async def write(self, stream: int, data: bytes) -> None:
        kind = {channel.STDOUT: "stdout", channel.STDERR: "stderr"}[stream]
        target = self.streams.get(kind)
        if target is not None:
            await target.write(data)

    async def finish(self, final: dict[str, Any]) -> None:
        try:
            for kind in ("stdout", "stderr"):
                if kind in self.streams:
                    await self.streams[kind].close()
            error = self.streams.get("error")
            if error is not None:
                if self.version == SPDY_PROTOCOLS[0]:
                    await error.write(status.encode(final))
                elif text := status.plain_text(final):
                    await error.write(text.encode())
                await error.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.session.done.wait(), FINISH_TIMEOUT)
        except SessionClosedError:
            pass
        await self.abort()

    async def abort(self) -> None:
        await self.session.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _spdy_streams(
    session: SpdySession, version: str, options: Options
) -> dict[str, SpdyStream] | None:
    """Accept the streams the client opens, replying to each; None on timeout or hang-up."""
    expected = 1 + options.stdin + options.stdout + options.stderr
    if options.tty and version != SPDY_PROTOCOLS[2] and version != SPDY_PROTOCOLS[3]:
        expected += 1  # v3 and v4 have a resize stream
    streams: dict[str, SpdyStream] = {}
    received = 0

    async def collect() -> None:
        nonlocal received
        while received < expected:
            stream = await session.accept()
            if stream is None:
                raise SessionClosedError("client went away while opening streams")
            await stream.reply()
            kind = stream.header("streamType")
            if kind in ("error", "stdin", "stdout", "stderr", "resize"):
                streams[kind] = stream
                received += 1
            else:
                log.info("unexpected stream type", extra={"stream_type": kind})

    try:
        await asyncio.wait_for(collect(), STREAM_CREATION_TIMEOUT)
    except (TimeoutError, SessionClosedError) as exc:
        log.info("exec streams not opened", extra={"error": str(exc) or "timeout"})
        return None
    return streams


async def _first(*aws: Awaitable[Any]) -> set[asyncio.Future[Any]]:
    futures = {asyncio.ensure_future(a) for a in aws}
    done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    return done


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_exec(
    remote: Remote, process: Any, options: Options, removed: asyncio.Event
) -> dict[str, Any] | None:
    """Wire a client to a started process; the final Status, or None if the client left."""

    async def feed() -> None:
        while True:
            event = await remote.events.get()
            match event:
                case Stdin(data=data):
                    await process.write_stdin(data)
                case StdinClosed():
                    await process.close_stdin()
                case Resize(size=size):
                    process.resize(size.width, size.height)
                case Gone():
                    return

    async def pump(read: Callable[[], Awaitable[bytes]], stream: int, wanted: bool) -> None:
        while data := await read():
            if wanted:
                await remote.write(stream, data)

    output = asyncio.ensure_future(
        asyncio.gather(
            pump(process.read_stdout, channel.STDOUT, options.stdout),
            pump(process.read_stderr, channel.STDERR, options.stderr),
        )
    )
    exited = asyncio.ensure_future(process.wait())
    feeding = asyncio.ensure_future(feed())
    deleted = asyncio.ensure_future(removed.wait())
    try:
        while not exited.done():
            done = await _first(exited, feeding, output, deleted)
            if feeding in done or (output in done and output.exception() is not None):
                process.kill()  # the client is gone: nobody to report to
                await exited
                return None
            if deleted in done:
                process.kill()
        try:
            await asyncio.wait_for(asyncio.shield(output), EXIT_DRAIN_GRACE)
        except TimeoutError:
            process.kill()  # background children still hold the pipes
            await output
        except SessionClosedError:
            return None
        code = exited.result()
        return status.success() if code == 0 else status.exit_code(code)
    finally:
        await _cancel(output, feeding, deleted, exited)
        process.close()


async def run_attach(
    remote: Remote, container: RuntimeContainer, options: Options, removed: asyncio.Event
) -> dict[str, Any] | None:
    """Wire a client to the container's main process; Success when that process ends."""
    main = await container.ensure_main()
    if main is None:
        return status.internal(f'container not found ("{container.name}")')
    subscription = container.subscribe()

    async def feed() -> None:
        while True:
            event = await remote.events.get()
            match event:
                case Stdin(data=data) if options.stdin:
                    await main.write_stdin(data)
                case StdinClosed() if container.spec.stdin_once:
                    await main.close_stdin()
                case Resize(size=size):
                    main.resize(size.width, size.height)
                case Gone():
                    return

    async def pump() -> None:
        while (item := await subscription.next()) is not None:
            stream, data = item
            target = channel.STDERR if stream == "stderr" and not main.tty else channel.STDOUT
            if (target == channel.STDOUT and options.stdout) or (
                target == channel.STDERR and options.stderr
            ):
                await remote.write(target, data)

    feeding = asyncio.ensure_future(feed())
    output = asyncio.ensure_future(pump())
    deleted = asyncio.ensure_future(removed.wait())
    try:
        done = await _first(feeding, output, deleted)
        if feeding in done or (output in done and output.exception() is not None):
            return None
        if deleted in done:
            await asyncio.shield(output)  # stopping the pod ends the subscription
        return status.success()
    finally:
        container.unsubscribe(subscription)
        await _cancel(feeding, output, deleted)


def _check(request: web.BaseRequest, pod: podspec.Pod, options: Options) -> str:
    """The API server's checks before proxying; returns the container name."""
    if not upgrade.is_upgrade(request):
        raise status.bad_request("Upgrade request required")
    container = podspec.choose_container(pod, options.container)
    podspec.require_host(pod)
    return container


async def _open_websocket(
    request: web.Request, options: Options, runtime: PodRuntime
) -> tuple[WebSocketRemote, web.StreamResponse]:
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
    remote = WebSocketRemote(ws, protocol, options)
    await remote.start()
    return remote, ws


async def _open_spdy(
    request: web.Request, options: Options, runtime: PodRuntime, name: str
) -> tuple[SpdyRemote | None, web.StreamResponse]:
    """Upgrade and collect the client's streams; no Remote if the client never opened them."""
    version = upgrade.spdy_handshake(request, SPDY_PROTOCOLS)
    raw = await upgrade.accept_spdy(request, version)
    session = SpdySession(raw)
    serving = runtime.spawn(session.serve(), f"spdy session {name}")
    streams = await _spdy_streams(session, version, options)
    if streams is None:
        await session.close()
        await asyncio.gather(serving, return_exceptions=True)
        return None, raw.response
    remote = SpdyRemote(session, version, streams)
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
        return await run_attach(remote, container, options, removed)
    request = ExecRequest(argv=options.command, tty=options.tty, stdin=options.stdin)
    try:
        process = await container.exec(request)
    except CommandNotFoundError as exc:
        return status.internal(f"error executing command in container: {exc}")
    except OSError as exc:
        return status.internal(f"error executing command in container: {exc}")
    runtime.metrics.processes.labels("exec").inc()
    try:
        return await run_exec(remote, process, options, removed)
    finally:
        container.exec_done(process)
