"""A sync-to-async bridge: synchronous code calling the asyncio NATS client.

The `eventsourcing` library is synchronous (no async API), while kubegate talks to NATS with
the asyncio client. A `Bridge` runs one asyncio loop on a thread of its own; that loop owns one
NATS connection, and any other thread runs a coroutine on it with `call()`, which blocks until
the result (or the error) comes back, via `asyncio.run_coroutine_threadsafe`.

Rules:
- `call()` from the bridge's own loop thread would wait on itself forever; it raises
  `BridgeError` instead. Async code should use the connection directly.
- Every call has a timeout; on expiry the coroutine is cancelled and `BrokerTimeoutError` raised.
- `close()` closes the connection, cancels whatever still runs on the loop, stops the loop and
  joins the thread. The thread is a daemon, so a forgotten bridge cannot keep a process alive.

Control-plane writes are low-volume, so the hop between threads (tens of microseconds) does not
matter next to the round trip to NATS.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nats.aio.client import Client

from broker.connection import connect
from broker.errors import BridgeError, BrokerTimeoutError

log = logging.getLogger("kubegate.broker.bridge")

T = TypeVar("T")


class Bridge:
    """An asyncio loop on its own thread owning one NATS connection. Thread-safe."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        creds: str | None = None,
        call_timeout: float = 30.0,
        start_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.name = name
        self.call_timeout = call_timeout
        self._creds = creds
        self._start_timeout = start_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, name=f"kubegate-bridge-{name}", daemon=True
        )
        self._nc: Client | None = None
        self._closed = False
        self._lock = threading.Lock()

    def start(self) -> Bridge:
        """Start the loop thread and connect; raises `NatsUnavailableError` if NATS is not
        reachable (the thread is then stopped again)."""
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            connect(self.url, name=self.name, creds=self._creds, start_timeout=self._start_timeout),
            self._loop,
        )
        try:
            self._nc = future.result()
        except BaseException:
            self._stop_loop()
            self._closed = True
            raise
        return self

    @property
    def nc(self) -> Client:
        """The connection; use it only from coroutines run on this bridge."""
        if self._nc is None:
            raise BridgeError(f"bridge {self.name} is not started")
        return self._nc

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def call(
        self,
        coro_fn: Callable[..., Awaitable[T]],
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> T:
        """Run `coro_fn(*args, **kwargs)` on the bridge's loop and return its result.

        Exceptions raised by the coroutine propagate unchanged.
        """
        if self._closed:
            raise BridgeError(f"bridge {self.name} is closed")
        if threading.current_thread() is self._thread:
            raise BridgeError("Bridge.call() from the bridge's own loop would deadlock")
        limit = self.call_timeout if timeout is None else timeout

        async def run() -> T:
            return await coro_fn(*args, **kwargs)

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result(limit)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            name = getattr(coro_fn, "__qualname__", repr(coro_fn))
            raise BrokerTimeoutError(name, limit) from exc

    def close(self, timeout: float = 5.0) -> None:
        """Close the connection and stop the loop thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._nc is not None:
            future = asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop)
            try:
                future.result(timeout)
            except Exception as exc:  # closing anyway
                log.warning("closing the bridge connection failed", extra={"error": repr(exc)})
        self._stop_loop(timeout)

    def __enter__(self) -> Bridge:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._cancel_leftovers()
            self._loop.close()

    def _cancel_leftovers(self) -> None:
        tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            self._loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())

    def _stop_loop(self, timeout: float = 5.0) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
