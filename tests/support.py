"""Helpers shared by tests: an event loop on its own thread, and polling with a deadline."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    """An asyncio loop running on a daemon thread, so synchronous tests (driving kubectl) can
    keep async services alive beside them."""

    def __init__(self, name: str = "test-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wait_for(check: Callable[[], T], what: str, deadline: float = 30.0, every: float = 0.1) -> T:
    """Poll until `check()` is truthy and return it; fail naming `what` after `deadline`."""
    end = time.monotonic() + deadline
    last: Any = None
    while True:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline}s waiting for {what} (last: {last!r})")
        time.sleep(every)


class Kubectl:
    """Runs a real kubectl binary with its own KUBECONFIG and cache dir."""

    def __init__(self, binary: Path, kubeconfig: Path, cache: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "KUBECACHEDIR": str(cache),
            "HOME": str(cache),
        }

    def run(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.binary), *args],
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
            )
        return result

    def __call__(self, *args: str, **kw: Any) -> str:
        return self.run(*args, **kw).stdout

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [str(self.binary), *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


class CuttableLink:
    """A loopback TCP forwarder to `target` whose link a test can cut and restore: `cut()`
    resets every open connection and refuses new ones (as a network partition would look to
    the client), `restore()` accepts again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.thread = LoopThread("cuttable-link")
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def start(self) -> int:
        self.thread.run(self._listen())
        return self.port

    def cut(self) -> None:
        self.thread.run(self._cut())

    def restore(self) -> None:
        self.thread.run(self._listen())

    def close(self) -> None:
        self.thread.run(self._cut())
        self.thread.close()


async def flushed(nc: Any) -> None:
    """The server has everything `nc` sent, for nats-py's own client too.

    nats-py's `flush()` writes its PING ahead of commands still buffered (kubegate's client
    does not: `broker.nats_client.NatsClient._send_ping`), so one round trip can end before the
    server has a SUB. The second PING leaves after the buffer did."""
    await nc.flush()
    await nc.flush()


async def eventually(
    check: Callable[[], Any], what: str, within: float = 20.0, every: float = 0.05
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy; fail naming `what`."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(every)
