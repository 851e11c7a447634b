"""Stopping background tasks for sure.

On Python 3.11 a cancellation can be swallowed: `asyncio.wait_for` (inside nats-py, e.g. a
JetStream publish or a fetch) returns normally when its inner future completes at the moment the
task is cancelled. A task that then loops on (a projection's follower, the relay's revocation
watcher or idle sweeper) would never end, and `stop()` awaiting it would hang. So: cancel until
it is done.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any

log = logging.getLogger("kubegate.broker.tasks")


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


class Chores:
    """Tasks started by code that cannot wait for them (a direct NATS handler sending a pull
    request or a refusal): each is kept referenced until it ends, and a failure is logged, not
    left to the garbage collector's warning. Iterate to cancel what still runs."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "background task failed", exc_info=task.exception(), extra={"owner": self.owner}
            )

    def __iter__(self) -> Iterator[asyncio.Task[None]]:
        return iter(list(self._tasks))
