"""The session logic of exec and attach: a client (`Remote`) wired to a process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from ops.sim.streams import channel, status
from ops.sim.streams.containers import ContainerProcess
from ops.sim.streams.errors import SessionClosedError
from ops.sim.streams.pods import RuntimeContainer
from ops.sim.streams.remote import Gone, Options, Remote, Resize, Stdin, StdinClosed

EXIT_DRAIN_GRACE = 2.0  # output still open this long after exit: its holders are killed


async def _first(*aws: Awaitable[Any]) -> set[asyncio.Future[Any]]:
    futures = {asyncio.ensure_future(a) for a in aws}
    done, _ = await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    return done


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_exec(
    remote: Remote, process: ContainerProcess, options: Options, removed: asyncio.Event
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
