"""Fixtures for the simulator tests: one simulator per session (per xdist worker), running on its
own event-loop thread so synchronous kubectl/helm tests and async client tests can share it.
Each test works in namespaces of its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from ops.sim import Simulator
from tests import tools
from tests.support import Kubectl

BOOKMARK_INTERVAL = 0.2


class SimThread:
    """A running Simulator and the loop thread that owns it."""

    def __init__(self, directory: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="sim-loop", daemon=True)
        self.thread.start()
        self.sim = Simulator(directory, bookmark_interval=BOOKMARK_INTERVAL)
        self.run(self.sim.start())

    def run(self, coro: Any, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        future: Future[Any] = Future()

        def invoke() -> None:
            try:
                future.set_result(fn(*args))
            except Exception as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(invoke)
        return future.result(30)

    def close(self) -> None:
        self.run(self.sim.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="session")
def sim_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimThread]:
    running = SimThread(tmp_path_factory.mktemp("sim"))
    yield running
    running.close()


@pytest.fixture
def sim(sim_thread: SimThread) -> Simulator:
    return sim_thread.sim


@pytest.fixture
def ns_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def wait_for(
    check: Callable[[], Any], what: str, deadline: float = 30.0, every: float = 0.1
) -> Any:
    """Poll until `check()` is truthy; fail with `what` when the deadline passes."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out waiting for {what} (last: {last!r})")


def _kubectl_binary(version: str) -> Path:
    try:
        return tools.kubectl_133() if version == "1.33" else tools.kubectl_132()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(params=["1.33"])
def kubectl(request: pytest.FixtureRequest, sim: Simulator, tmp_path: Path) -> Kubectl:
    return Kubectl(_kubectl_binary(request.param), sim.kubeconfig_path, tmp_path / "kube-cache")


@pytest.fixture(params=["1.32", "1.33"])
def any_kubectl(request: pytest.FixtureRequest, sim: Simulator, tmp_path: Path) -> Kubectl:
    return Kubectl(_kubectl_binary(request.param), sim.kubeconfig_path, tmp_path / "kube-cache")
