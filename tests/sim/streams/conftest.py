"""Fixtures: a PodRuntime in a temp dir behind a minimal TLS API server, and real kubectl."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ops.sim.runtime import PodRuntime
from tests import tools
from tests.sim.streams.kube import Kubectl, MiniApiServer, Tls


@pytest.fixture(scope="session")
def tls() -> Tls:
    return Tls.generate()


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[PodRuntime]:
    pod_runtime = PodRuntime(tmp_path / "pods", log_interval=0.2)
    yield pod_runtime
    await pod_runtime.close()


@pytest.fixture
async def apiserver(runtime: PodRuntime, tls: Tls, tmp_path: Path) -> AsyncIterator[MiniApiServer]:
    workdir = tmp_path / "apiserver"
    workdir.mkdir()
    server = MiniApiServer(runtime=runtime, tls=tls, workdir=workdir)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(params=["1.32", "1.33"])
def kubectl(request: pytest.FixtureRequest, apiserver: MiniApiServer, tmp_path: Path) -> Kubectl:
    """Real kubectl, both versions kubegate supports (1.33 comes from tests/tools.py)."""
    try:
        binary = tools.kubectl_133() if request.param == "1.33" else tools.kubectl_132()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))
    home = tmp_path / "home"
    home.mkdir()
    return Kubectl(kubeconfig=apiserver.kubeconfig(), home=home, binary=str(binary))
