"""The runtime state of one simulated pod: its containers' roots, logs and processes.

A running container has a main process (its spec's command and args when they can run here,
else `/bin/sh` reading its stdin) whose output goes to the container log and to every attached
client; `kubectl attach` writes to its stdin. `exec` starts further processes in the same root.
Deleting the pod kills all of them, ends log followers and closes streaming sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ops.sim.streams import podspec
from ops.sim.streams.containers import DEFAULT_PATH, ContainerProcess, ProcessSpec, Sandbox
from ops.sim.streams.errors import RuntimeConfigError
from ops.sim.streams.podlog import ContainerLog

if TYPE_CHECKING:
    from datetime import datetime

log = logging.getLogger("kubegate.ops.sim.streams.pods")

ATTACH_BUFFER = 4 << 20  # bytes an attached client may lag behind before it is cut off


class Owner:
    """Who runs the pod's background tasks (the runtime): owned, cancelled on shutdown."""

    sandbox: Sandbox
    clock: Callable[[], datetime]

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        raise NotImplementedError


class CommandNotFoundError(RuntimeConfigError):
    """The program of an exec is not in the container (kube answers with an InternalError)."""

    def __init__(self, message: str, program: str) -> None:
        super().__init__(message)
        self.program = program


class OutputSubscription:
    """One attached client's view of the main process output, bounded in bytes."""

    def __init__(self, limit: int = ATTACH_BUFFER) -> None:
        self._items: deque[tuple[str, bytes]] = deque()
        self._bytes = 0
        self._limit = limit
        self._event = asyncio.Event()
        self.ended = False
        self.overflowed = False

    def push(self, stream: str, data: bytes) -> None:
        if self.ended:
            return
        if self._bytes + len(data) > self._limit:
            self.overflowed = True
            self.end()
            return
        self._items.append((stream, data))
        self._bytes += len(data)
        self._event.set()

    def end(self) -> None:
        self.ended = True
        self._event.set()

    async def next(self) -> tuple[str, bytes] | None:
        """The next output chunk, or None once the process ended (or this client lagged)."""
        while not self._items:
            if self.ended:
                return None
            self._event.clear()
            await self._event.wait()
        stream, data = self._items.popleft()
        self._bytes -= len(data)
        return stream, data


@dataclass(frozen=True, slots=True)
class ExecRequest:
    argv: tuple[str, ...]
    tty: bool = False
    stdin: bool = False
    width: int = 0
    height: int = 0


class RuntimeContainer:
    def __init__(self, pod: RuntimePod, spec: podspec.ContainerSpec) -> None:
        self.pod = pod
        self.spec = spec
        self.root = pod.dir / "containers" / spec.name / "root"
        self.log = ContainerLog(pod.dir / "logs" / f"{spec.name}.log", pod.owner.clock)
        self.main: ContainerProcess | None = None
        self.restarts = 0
        self.execs: set[ContainerProcess] = set()
        self._subscribers: set[OutputSubscription] = set()
        self._main_lock = asyncio.Lock()
        self._prepared = False
        self._stopped = False

    @property
    def name(self) -> str:
        return self.spec.name

    def prepare(self) -> None:
        if not self._prepared:
            self.pod.owner.sandbox.prepare_root(self.root)
            self._prepared = True

    def environment(self, tty: bool) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "HOSTNAME": self.pod.name, "HOME": "/root"}
        if tty:
            env["TERM"] = "xterm"
        env.update(dict(self.spec.env))
        return env

    def workdir(self) -> str:
        workdir = self.spec.working_dir or "/"
        if workdir != "/":
            self.pod.owner.sandbox.host_path(self.root, workdir).mkdir(parents=True, exist_ok=True)
        return workdir

    async def exec(self, request: ExecRequest) -> ContainerProcess:
        """Start a command in this container (kubectl exec)."""
        self.prepare()
        sandbox = self.pod.owner.sandbox
        env = self.environment(request.tty)
        program = request.argv[0]
        if sandbox.resolve(self.root, program, env.get("PATH", DEFAULT_PATH)) is None:
            exec_id = uuid.uuid4().hex
            raise CommandNotFoundError(
                f'failed to exec in container: failed to start exec "{exec_id}": OCI runtime '
                f"exec failed: exec failed: unable to start container process: exec: "
                f'"{program}": executable file not found in $PATH: unknown',
                program,
            )
        spec = ProcessSpec(
            argv=request.argv,
            env=env,
            workdir=self.workdir(),
            tty=request.tty,
            stdin=request.stdin,
            width=request.width,
            height=request.height,
        )
        process = await ContainerProcess.start(sandbox, self.root, self.pod.name, spec)
        self.execs.add(process)
        return process

    def exec_done(self, process: ContainerProcess) -> None:
        self.execs.discard(process)

    # The main process: what logs and what attach talks to.

    def _main_argv(self) -> tuple[str, ...]:
        argv = self.spec.command + self.spec.args if self.spec.command else self.spec.args
        if argv and self.pod.owner.sandbox.resolve(self.root, argv[0], DEFAULT_PATH):
            return argv
        if argv:
            self.log.append(
                "stderr", f"sim: cannot run {argv[0]!r} here; running /bin/sh\n".encode()
            )
        return ("/bin/sh",)

    async def ensure_main(self) -> ContainerProcess | None:
        """Start the main process unless it runs; None when the container is stopped."""
        async with self._main_lock:
            if self._stopped:
                return None
            if self.main is not None:
                return self.main
            self.prepare()
            spec = ProcessSpec(
                argv=self._main_argv(),
                env=self.environment(self.spec.tty),
                workdir=self.workdir(),
                tty=self.spec.tty,
                stdin=True,
            )
            process = await ContainerProcess.start(
                self.pod.owner.sandbox, self.root, self.pod.name, spec
            )
            self.main = process
            self.pod.owner.spawn(self._watch_main(process), f"main {self.pod.key} {self.name}")
            return process

    async def _watch_main(self, process: ContainerProcess) -> None:
        async def pump(read: Callable[[], Coroutine[Any, Any, bytes]], stream: str) -> None:
            while data := await read():
                self.log.append(stream, data)
                for subscriber in list(self._subscribers):
                    subscriber.push(stream, data)

        try:
            await asyncio.gather(
                pump(process.read_stdout, "stdout"), pump(process.read_stderr, "stderr")
            )
            code = await process.wait()
        finally:
            process.close()
            if self.main is process:
                self.main = None
            for subscriber in list(self._subscribers):
                subscriber.end()
        if not self._stopped:
            self.restarts += 1
            log.info(
                "main process exited",
                extra={"pod": self.pod.key, "container": self.name, "exit_code": code},
            )

    def subscribe(self) -> OutputSubscription:
        subscription = OutputSubscription()
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: OutputSubscription) -> None:
        self._subscribers.discard(subscription)

    def heartbeat(self, count: int) -> None:
        if not self._stopped:
            self.log.append(
                "stdout", f"sim: {self.pod.name}/{self.name} running ({count})\n".encode()
            )

    async def stop(self) -> None:
        """Kill every process of the container and end its log."""
        self._stopped = True
        processes = list(self.execs) + ([self.main] if self.main is not None else [])
        for process in processes:
            process.kill()
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                await process.wait()
        self.execs.clear()
        for subscriber in list(self._subscribers):
            subscriber.end()
        self.log.close()


class RuntimePod:
    def __init__(self, owner: Owner, base_dir: Path, pod: podspec.Pod) -> None:
        self.owner = owner
        self.namespace = podspec.namespace(pod)
        self.name = podspec.name(pod)
        self.uid = podspec.uid(pod)
        # The uid keeps a re-created pod of the same name clear of its predecessor's cleanup.
        folder = f"{self.name}-{self.uid[:8]}" if self.uid else self.name
        self.dir = base_dir / self.namespace / folder
        self.removed = asyncio.Event()
        self.running = False
        self.ports: dict[int, tuple[str, int]] = {}
        self.containers: dict[str, RuntimeContainer] = {}
        self.update(pod)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def update(self, pod: podspec.Pod) -> None:
        """Take in a newer version of the pod object (phase, annotations, new containers)."""
        self.running = podspec.is_running(pod)
        try:
            self.ports = podspec.port_map(pod)
        except RuntimeConfigError as exc:
            log.warning(
                "ignoring port-forward annotation", extra={"pod": self.key, "error": str(exc)}
            )
            self.ports = {}
        for spec in podspec.containers(pod):
            if spec.name not in self.containers:
                container = RuntimeContainer(self, spec)
                self.containers[spec.name] = container
                if self.running:
                    container.log.append("stdout", f"sim: container {spec.name} started\n".encode())

    async def start(self) -> None:
        """Start the main processes of a running pod (idempotent)."""
        if not self.running or self.removed.is_set():
            return
        for container in self.containers.values():
            try:
                await container.ensure_main()
            except (OSError, RuntimeConfigError) as exc:
                log.warning(
                    "main process did not start",
                    extra={"pod": self.key, "container": container.name, "error": str(exc)},
                )

    def port_target(self, port: int) -> tuple[str, int]:
        return self.ports.get(port, ("127.0.0.1", port))

    async def stop(self, remove_files: bool = True) -> None:
        self.removed.set()
        for container in self.containers.values():
            await container.stop()
        if remove_files:
            await asyncio.to_thread(shutil.rmtree, self.dir, True)
