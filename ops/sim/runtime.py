"""The simulator's stand-in for kubelet and the container runtime: processes, logs, ports.

The simulator core tells it about pods (`pod_added` for every create or update, `pod_removed`
on delete); the streaming subresources (`ops.sim.streams.handle`) use it to run commands, read
logs and reach forwarded ports. Everything lives under `base_dir/<namespace>/<pod>-<uid8>/`:
`containers/<name>/root` (what the container sees as /) and `logs/<name>.log` (CRI format).

A running container's log gets a line every `log_interval` seconds besides its main process
output, so `kubectl logs -f` always has something to stream. `websockets=False` answers the
WebSocket protocols kube-apiserver gained in 1.30/1.31 (exec v5, the SPDY port-forward tunnel)
with 403, as a v1.29 API server does (its kubelet still serves v4 and older), so tests can drive
kubectl's fallback to SPDY.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ops.sim.streams import podspec
from ops.sim.streams.containers import Isolation, Sandbox
from ops.sim.streams.errors import RuntimeConfigError
from ops.sim.streams.pods import Owner, RuntimePod

log = logging.getLogger("kubegate.ops.sim.runtime")

DEFAULT_LOG_INTERVAL = 10.0


class StreamMetrics:
    """Streaming sessions by subresource and transport (websocket, spdy, http)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.sessions = Counter(
            "sim_stream_sessions",
            "Streaming subresource sessions started",
            ["subresource", "transport"],
            registry=registry,
        )
        self.active = Gauge(
            "sim_stream_sessions_active",
            "Streaming subresource sessions open now",
            ["subresource"],
            registry=registry,
        )
        self.processes = Counter(
            "sim_stream_processes", "Container processes started", ["kind"], registry=registry
        )


class PodRuntime(Owner):
    def __init__(
        self,
        base_dir: Path | str,
        *,
        log_interval: float = DEFAULT_LOG_INTERVAL,
        isolation: Isolation | str | None = None,
        websockets: bool = True,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if log_interval <= 0:
            raise RuntimeConfigError(f"log_interval must be positive, got {log_interval}")
        self.base_dir = Path(base_dir)
        try:
            self.base_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RuntimeConfigError(f"cannot use {self.base_dir}: {exc}") from exc
        self.log_interval = log_interval
        self.websockets = websockets
        self.clock = clock or (lambda: datetime.now(UTC))
        self.metrics = StreamMetrics(registry or CollectorRegistry())
        self._isolation = Isolation(isolation) if isolation is not None else None
        self._sandbox: Sandbox | None = None
        self._pods: dict[tuple[str, str], RuntimePod] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def sandbox(self) -> Sandbox:
        """How processes are isolated here; detected on first use (a few ms of probing)."""
        if self._sandbox is None:
            self._sandbox = Sandbox.detect(self._isolation)
            log.info("container sandbox", extra={"isolation": self._sandbox.isolation.value})
        return self._sandbox

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "runtime task failed", exc_info=task.exception(), extra={"task": task.get_name()}
            )

    def pod_added(self, pod: dict[str, Any]) -> None:
        """A pod was created or changed: track it and, if it runs, start its processes."""
        self.get(pod)

    def pod_removed(self, namespace: str, name: str) -> None:
        """A pod was deleted: kill its processes, end its log streams and sessions."""
        runtime_pod = self._pods.pop((namespace, name), None)
        if runtime_pod is None:
            return
        runtime_pod.removed.set()
        task = self._in_loop(runtime_pod.stop(), f"stop {runtime_pod.key}")
        if task is not None:
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def get(self, pod: dict[str, Any]) -> RuntimePod:
        """The runtime state of `pod`, created on first sight (or anew for a new uid)."""
        if self._closed:
            raise RuntimeConfigError("pod runtime is closed")
        key = (podspec.namespace(pod), podspec.name(pod))
        if not key[1]:
            raise RuntimeConfigError("pod without a name")
        current = self._pods.get(key)
        if current is not None and current.uid != podspec.uid(pod):
            self.pod_removed(*key)
            current = None
        if current is None:
            current = RuntimePod(self, self.base_dir, pod)
            self._pods[key] = current
        else:
            current.update(pod)
        self._in_loop(current.start(), f"start {current.key}")
        self._ensure_ticker()
        return current

    def pods(self) -> list[RuntimePod]:
        return list(self._pods.values())

    def _in_loop(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any] | None:
        try:
            return self.spawn(coro, name)
        except RuntimeError:  # no running loop (a sync caller): run it later on first use
            coro.close()
            return None

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            with contextlib.suppress(RuntimeError):
                self._ticker = self.spawn(self._tick(), "log ticker")

    async def _tick(self) -> None:
        count = 0
        while True:
            await asyncio.sleep(self.log_interval)
            count += 1
            for runtime_pod in list(self._pods.values()):
                if runtime_pod.running:
                    for container in runtime_pod.containers.values():
                        container.heartbeat(count)

    async def close(self) -> None:
        """Stop every pod's processes and cancel the runtime's tasks."""
        self._closed = True
        await asyncio.gather(*list(self._stopping), return_exceptions=True)
        pods, self._pods = list(self._pods.values()), {}
        for runtime_pod in pods:
            await runtime_pod.stop(remove_files=False)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
