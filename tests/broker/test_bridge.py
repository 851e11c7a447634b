"""The sync-to-async bridge: blocking calls into a loop thread that owns a NATS connection."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from broker.bridge import Bridge
from broker.errors import BridgeError, BrokerTimeoutError, NatsUnavailableError
from broker.server import free_port


@pytest.fixture
def bridge(nats_url: str):  # type: ignore[no-untyped-def]
    with Bridge(nats_url, name="test-bridge") as b:
        yield b


def test_calls_from_many_threads(bridge: Bridge) -> None:
    sub = bridge.call(bridge.nc.subscribe, "bridge.echo.*")

    async def roundtrip(n: int) -> tuple[int, str]:
        await bridge.nc.publish(f"bridge.echo.{n}", b"%d" % n)
        return n, threading.current_thread().name

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda n: bridge.call(roundtrip, n), range(40)))
    assert [n for n, _ in results] == list(range(40))
    assert {thread for _, thread in results} == {"kubegate-bridge-test-bridge"}

    async def drain() -> list[bytes]:
        return [(await sub.next_msg(timeout=5)).data for _ in range(40)]

    assert sorted(bridge.call(drain)) == sorted(b"%d" % n for n in range(40))


def test_errors_propagate_unchanged(bridge: Bridge) -> None:
    async def fail() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        bridge.call(fail)


def test_a_call_that_takes_too_long_is_cancelled(bridge: Bridge) -> None:
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(BrokerTimeoutError) as err:
        bridge.call(slow, timeout=0.2)
    assert isinstance(err.value, TimeoutError)
    assert cancelled.wait(10), "the coroutine was left running"


def test_calling_from_the_loop_itself_is_refused(bridge: Bridge) -> None:
    async def noop() -> int:
        return 1

    async def reentrant() -> int:
        return bridge.call(noop)

    with pytest.raises(BridgeError, match="deadlock"):
        bridge.call(reentrant)


def test_close_stops_the_thread_and_refuses_calls(nats_url: str) -> None:
    bridge = Bridge(nats_url, name="closing").start()
    thread = bridge._thread
    assert bridge.nc.is_connected
    bridge.close()
    bridge.close()
    assert not thread.is_alive()
    assert bridge.nc.is_closed

    async def noop() -> None:
        return None

    with pytest.raises(BridgeError, match="closed"):
        bridge.call(noop)


def test_unreachable_nats_at_start() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    bridge = Bridge(url, name="nowhere")
    with pytest.raises(NatsUnavailableError) as err:
        bridge.start()
    assert err.value.url == url
    assert not bridge._thread.is_alive()
