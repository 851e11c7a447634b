"""exec/attach over SPDY/3.1: one stream per kind (error, stdin, stdout, stderr, resize)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from ops.sim.streams import channel, status
from ops.sim.streams.errors import ChannelProtocolError, SessionClosedError
from ops.sim.streams.remote import EVENT_QUEUE, Event, Gone, Options, Resize, Stdin, StdinClosed
from ops.sim.streams.spdy_session import SpdySession, SpdyStream

log = logging.getLogger("kubegate.ops.sim.streams.remote_spdy")

PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
STREAM_CREATION_TIMEOUT = 30.0  # kubelet's DefaultStreamCreationTimeout
FINISH_TIMEOUT = 60.0  # how long we wait for the client to close after the status


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
                if self.version == PROTOCOLS[0]:
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


async def accept_streams(
    session: SpdySession, version: str, options: Options
) -> dict[str, SpdyStream] | None:
    """Accept the streams the client opens, replying to each; None on timeout or hang-up."""
    expected = 1 + options.stdin + options.stdout + options.stderr
    if options.tty and version != PROTOCOLS[2] and version != PROTOCOLS[3]:
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
