"""Shared fixtures: a real nats-server per test session (per xdist worker) on free ports, and a
3-node JetStream cluster for fault tests."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from broker.server import EmbeddedNats, start_cluster


def pytest_configure(config: pytest.Config) -> None:
    """Keystroke signals as at an interactive terminal, in every test process (xdist workers
    included). A runner that starts the suite as a background job (`bash script &`) has SIGINT
    and SIGQUIT ignored, and every process the tests start inherits that: a browser-shell test's
    ^C then reached a kubectl that had not yet installed its own handler and was lost. (A
    `kubegate` server installs SIGINT and SIGTERM handlers, so its shells' commands start with
    the default action.)"""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGQUIT) == signal.SIG_IGN:
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedNats]:
    """One JetStream-enabled nats-server for the whole session (file store in a temp dir)."""
    server = EmbeddedNats(data_dir=Path(tmp_path_factory.mktemp("nats")))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def nats_url(nats_server: EmbeddedNats) -> str:
    return nats_server.url


def jetstream_healthy(node: EmbeddedNats) -> bool:
    """The node's monitoring endpoint says JetStream is up (meta leader known, streams current)."""
    url = f"http://{node.host}:{node.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_healthy(nodes: list[EmbeddedNats], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(n.running and jetstream_healthy(n) for n in nodes):
        if time.monotonic() > deadline:
            states = {n.server_name: jetstream_healthy(n) for n in nodes}
            raise AssertionError(f"JetStream cluster not healthy in {timeout}s: {states}")
        time.sleep(0.2)


@dataclass
class NatsCluster:
    """Three routed nats-servers forming one JetStream cluster (R3 streams possible)."""

    nodes: list[EmbeddedNats]

    @property
    def url(self) -> str:
        """Every node's client URL, comma-separated (what `broker.connection.connect` takes)."""
        return ",".join(n.url for n in self.nodes)

    def node(self, server_name: str) -> EmbeddedNats:
        return next(n for n in self.nodes if n.server_name == server_name)

    def restart(self, node: EmbeddedNats) -> None:
        """Bring a killed or stopped node back (same ports and store) and wait for health."""
        if not node.running:
            node.start()
        wait_healthy(self.nodes)


@pytest.fixture(scope="session")
def nats_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsCluster]:
    """A 3-node JetStream cluster for fault tests (`@pytest.mark.cluster`).

    A test that kills a node restarts it (`cluster.restart(node)`) before it ends.
    """
    nodes = start_cluster(Path(tmp_path_factory.mktemp("cluster")), size=3)
    try:
        wait_healthy(nodes)
        yield NatsCluster(nodes)
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture(autouse=True)
def _dump_tasks_before_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shortly before pytest-timeout fails a test, print every running loop's asyncio tasks:
    a hung await then shows where it waits, not just an idle selector."""
    import asyncio
    import gc
    import sys
    import threading

    limit = request.config.getini("timeout")
    seconds = max(float(limit or 0) - 10.0, 1.0)

    def dump() -> None:
        for obj in gc.get_objects():
            if isinstance(obj, asyncio.AbstractEventLoop) and obj.is_running():

                def show(loop: asyncio.AbstractEventLoop = obj) -> None:
                    for task in asyncio.all_tasks(loop):
                        print(f"--- task {task.get_name()}", file=sys.stderr)
                        task.print_stack(file=sys.stderr)

                obj.call_soon_threadsafe(show)

    timer = threading.Timer(seconds, dump)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()
