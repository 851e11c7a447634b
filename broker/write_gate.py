"""A transport's write flow control as something a writer can await.

asyncio tells a protocol `pause_writing()` when the transport's buffer passes its high-water
mark and `resume_writing()` once it drained; a writer that must not pile bytes up waits in
between. The edge's HTTP connections, its NATS connection and the relay's API server tunnels
all need the same: `paused` for a writer that would rather not write at all (`write_nowait`),
`wait()` for one that waits, and `fail(exc)` for the connection's end.
"""

from __future__ import annotations

import asyncio


class WriteGate:
    """Open unless the transport asked to pause; `wait()` returns once it is open again."""

    def __init__(self) -> None:
        self.paused = False
        self._waiters: list[asyncio.Future[None]] = []

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._wake(None)

    def fail(self, exc: BaseException) -> None:
        """The connection ended: writers waiting now get `exc`; later ones are not held."""
        self.paused = False
        self._wake(exc)

    async def wait(self) -> None:
        if not self.paused:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await waiter

    def _wake(self, exc: BaseException | None) -> None:
        for waiter in self._waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)
        self._waiters.clear()
