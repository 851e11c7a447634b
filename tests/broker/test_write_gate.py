"""WriteGate: the flow control every kubegate protocol's writers wait on."""

from __future__ import annotations

import asyncio

import pytest

from broker.write_gate import WriteGate


async def test_writers_pass_an_open_gate_and_wait_at_a_paused_one_until_it_resumes() -> None:
    gate = WriteGate()
    await asyncio.wait_for(gate.wait(), 1)  # open: no wait at all
    gate.pause()
    waiting = [asyncio.create_task(gate.wait()) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert gate.paused and not any(w.done() for w in waiting)
    gate.resume()
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert not gate.paused


async def test_the_end_of_the_connection_fails_whoever_waits_and_holds_nobody_after() -> None:
    gate = WriteGate()
    gate.pause()
    waiting = asyncio.create_task(gate.wait())
    await asyncio.sleep(0.05)
    gate.fail(ConnectionResetError("connection lost"))
    with pytest.raises(ConnectionResetError, match="connection lost"):
        await asyncio.wait_for(waiting, 1)
    await asyncio.wait_for(gate.wait(), 1)  # the writer's next write finds the connection gone
