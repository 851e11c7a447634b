"""`broker.tasks.cancel_and_wait` ends a task even when it swallows a cancellation."""

from __future__ import annotations

import asyncio

from broker.tasks import cancel_and_wait


async def test_a_task_that_swallows_one_cancellation_is_still_stopped() -> None:
    rounds: list[str] = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if "swallowed" in rounds:
                    raise
                rounds.append("swallowed")  # as asyncio.wait_for can on Python 3.11
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_and_wait(task, every_s=0.05), 10)
    assert task.cancelled()
    assert rounds == ["swallowed"]


async def test_a_finished_or_failed_task_needs_nothing_more() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task)  # the exception is retrieved, not raised
    assert task.done() and isinstance(task.exception(), RuntimeError)
