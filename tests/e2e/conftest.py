"""The demo topology for end-to-end tests: control plane + edge, clusters dev and prod with a
relay each, seeded users; running on its own loop thread while tests drive real binaries."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.demo import Demo
from tests import tools
from tests.support import Kubectl, LoopThread

KUBECTL_VERSIONS = ("1.32", "1.33")


class RunningDemo:
    def __init__(self, directory: Path) -> None:
        self.thread = LoopThread("e2e-demo")
        self.demo = Demo(directory)
        self.thread.run(self.demo.start(), timeout=180)
        self.dir = directory

    def kubeconfig(self, user: str) -> Path:
        return self.demo.kubeconfigs[user]

    def sim_kubeconfig(self, cluster: str) -> Path:
        return Path(self.demo.sims[cluster].kubeconfig_path)

    def audit(self, sql: str, params: list | None = None) -> list[tuple]:
        store = self.demo.control.audit
        return store.query(sql, params)[1]

    def close(self) -> None:
        self.thread.run(self.demo.stop(), timeout=120)
        self.thread.close()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDemo]:
    running = RunningDemo(tmp_path_factory.mktemp("demo"))
    yield running
    running.close()


def kubectl_binary(version: str) -> Path:
    try:
        return tools.kubectl_133() if version == "1.33" else tools.kubectl_132()
    except tools.ToolUnavailableError as exc:
        pytest.skip(str(exc))


def as_user(demo: RunningDemo, user: str, tmp_path: Path, version: str = "1.33") -> Kubectl:
    return Kubectl(kubectl_binary(version), demo.kubeconfig(user), tmp_path / f"cache-{user}")


def cluster_admin(demo: RunningDemo, cluster: str, tmp_path: Path) -> Kubectl:
    """The cluster's own administrator, straight to its API server (not through kubegate)."""
    return Kubectl(kubectl_binary("1.33"), demo.sim_kubeconfig(cluster), tmp_path / "cache-sim")


@pytest.fixture
def namespace(demo: RunningDemo, tmp_path: Path) -> str:
    """A fresh namespace in dev (made by the cluster admin) that alice may edit (group devs)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster_admin(demo, "dev", tmp_path)("create", "namespace", name)
    return name


def popen(kubectl: Kubectl, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(kubectl.binary), *args],
        env=kubectl.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pod_manifest(name: str, namespace: str, annotations: dict | None = None) -> str:
    """A busybox pod (the simulator runs it) as JSON for `kubectl apply -f -`."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations or {}},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
    )
