"""Stopping background tasks for sure.

On Python 3.11 a cancellation can be swallowed: `asyncio.wait_for` (inside nats-py, e.g. a
JetStream publish or a fetch) returns normally when its inner future completes at the moment the
task is cancelled. A task that then loops on (a projection's follower, the relay's revocation
watcher or idle sweeper) would never end, and `stop()` awaiting it would hang. So: cancel until
it is done.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any], every_s: float = 0.2) -> None:
    """Cancel `tasks` (again every `every_s` while any runs on) and wait until all have ended.
    Their exceptions are retrieved, not raised: the tasks are gone either way."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=every_s)
    for task in tasks:
        if not task.cancelled():
            task.exception()
