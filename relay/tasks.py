"""Stopping the relay's background tasks for sure.

On Python 3.11 a cancellation can be swallowed: `asyncio.wait_for` (inside nats-py, e.g. a
JetStream publish) returns normally when its inner future completes at the moment the task is
cancelled. A task that then loops on (the revocation watcher, the idle sweeper) would never
end, and `stop()` awaiting it would hang. So: cancel until it is done.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any], *, every_s: float = 0.2) -> None:
    """Cancel `task` (again every `every_s` while it runs on) and wait until it has ended."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=every_s)
    if not task.cancelled():
        task.exception()  # retrieved: the task is gone either way
