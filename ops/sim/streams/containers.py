"""Real processes for simulated containers: a chroot-like view per container, pipes or a pty.

Each container has a root directory inside its pod's scratch directory. Where the kernel allows
it (root, or unprivileged user namespaces), every process runs in fresh mount, UTS and PID
namespaces: the host's system directories (/usr, /etc, ...) are bind-mounted read-only into the
container root, /dev and a new /proc are mounted, the hostname is the pod's name, and the command
runs chrooted there. So `kubectl cp file pod:/tmp/x` lands in `<root>/tmp/x`, writes to /etc
fail as on a read-only image, and `ps` shows only the container's processes. The command is not
PID 1 (a small shell is, and waits for it), so Ctrl-C reaches it as in a real `kubectl exec`;
when it exits or is killed, PID 1 ends and the kernel kills whatever it left behind.

Without namespaces (`Isolation.NONE`) commands run on the host with the container root as their
working directory: relative paths stay inside it, absolute paths do not. `Sandbox.detect()`
picks the mode once; the runtime logs which.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import logging
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import termios
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ops.sim.streams.errors import RuntimeConfigError

log = logging.getLogger("kubegate.ops.sim.streams.containers")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_DIRS = ("usr", "etc", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt")
WRITABLE_DIRS = ("tmp", "root", "home", "var/tmp", "var/log", "run", "dev", "proc")
READ_CHUNK = 64 * 1024
PIPE_DRAIN_GRACE = 2.0  # seconds to wait for output pipes after exit (no-namespace mode)

# PID 1 of the container's namespaces: mounts the view, then runs the command as its child.
_SETUP = r"""
set -e
root=$1; host=$2; shift 2
for d in $SIM_RO_DIRS; do mount --bind -o ro "/$d" "$root/$d"; done
mount --rbind /dev "$root/dev"
mount -t proc proc "$root/proc"
hostname "$host" 2>/dev/null || true
set +e
chroot "$root" "$@"
exit $?
"""


class Isolation(enum.StrEnum):
    NAMESPACES = "namespaces"
    NONE = "none"


@dataclass(frozen=True)
class Sandbox:
    """How this machine runs container processes; detect once, share across pods."""

    isolation: Isolation
    user_namespace: bool = False
    read_only_dirs: tuple[str, ...] = ()
    symlinks: Mapping[str, str] = field(default_factory=dict)
    pdeathsig: bool = False

    @classmethod
    def detect(cls, prefer: Isolation | None = None) -> Sandbox:
        read_only, links = _host_layout()
        pdeathsig = _has_pdeathsig()
        if prefer is Isolation.NONE or shutil.which("unshare") is None:
            return cls(Isolation.NONE, pdeathsig=pdeathsig)
        # Root can use plain namespaces; anyone else needs a user namespace around them.
        for userns in (False, True) if os.geteuid() == 0 else (True,):
            candidate = cls(Isolation.NAMESPACES, userns, read_only, links, pdeathsig)
            if candidate._probe():
                return candidate
        if prefer is Isolation.NAMESPACES:
            raise RuntimeConfigError("mount/PID namespaces are not available on this machine")
        log.warning("no mount/pid namespaces here: container commands run unconfined")
        return cls(Isolation.NONE, pdeathsig=pdeathsig)

    def _probe(self) -> bool:
        with tempfile.TemporaryDirectory(prefix="kubegate-sim-probe-") as tmp:
            root = Path(tmp)
            self.prepare_root(root)
            argv = self.command(root, "probe", ["/bin/sh", "-c", "test -d /proc/self"], {}, "/")
            try:
                done = subprocess.run(
                    argv, capture_output=True, timeout=10, check=False, env=self.setup_env()
                )
            except (OSError, subprocess.TimeoutExpired):
                return False
            return done.returncode == 0

    def setup_env(self) -> dict[str, str]:
        return {"PATH": DEFAULT_PATH, "SIM_RO_DIRS": " ".join(self.read_only_dirs)}

    def prepare_root(self, root: Path) -> None:
        """Create the container root's skeleton (mount points, symlinks, writable dirs)."""
        root.mkdir(parents=True, exist_ok=True)
        for name in self.read_only_dirs:
            (root / name).mkdir(exist_ok=True)
        for name, target in self.symlinks.items():
            link = root / name
            if not link.is_symlink() and not link.exists():
                link.symlink_to(target)
        for name in WRITABLE_DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        (root / "var" / "tmp").chmod(0o1777)

    def host_path(self, root: Path, container_path: str) -> Path:
        """Where a container path lives on the host (for checks made from outside)."""
        parts = list(PurePosixPath("/", container_path).parts[1:])
        for _ in range(16):  # bounded symlink hops at the top level
            if not parts:
                return root
            if self.isolation is Isolation.NAMESPACES and parts[0] in self.read_only_dirs:
                return Path("/", *parts)
            if parts[0] in self.symlinks:
                parts = list(PurePosixPath(self.symlinks[parts[0]]).parts) + parts[1:]
                parts = [p for p in parts if p != "/"]
                continue
            break
        if self.isolation is Isolation.NONE and parts and parts[0] in SYSTEM_DIRS:
            return Path("/", *parts)
        return root.joinpath(*parts)

    def resolve(self, root: Path, program: str, path: str) -> str | None:
        """The container path `program` would execute, or None (the "not found in $PATH" case)."""
        candidates = [program] if "/" in program else [f"{d}/{program}" for d in path.split(":")]
        for candidate in candidates:
            if not candidate.startswith("/"):
                candidate = "/" + candidate
            host = self.host_path(root, candidate)
            if host.is_file() and os.access(host, os.X_OK):
                return candidate
        return None

    def command(
        self,
        root: Path,
        hostname: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        workdir: str,
        *,
        tty: bool = False,
    ) -> list[str]:
        """The host argv that runs `argv` inside the container view."""
        pairs = [f"{k}={v}" for k, v in env.items()]
        prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if self.pdeathsig else []
        session = ["setsid", "-c", "-w"] if tty else []
        if self.isolation is Isolation.NONE:
            # No setsid here: it would fork out of our process group, out of reach of kill().
            cwd = str(self.host_path(root, workdir))
            return [*prefix, "env", "-i", "-C", cwd, *pairs, *argv]
        unshare = ["unshare"]
        if self.user_namespace:
            unshare += ["--user", "--map-root-user"]
        unshare += ["--mount", "--propagation", "private", "--uts", "--pid", "--fork"]
        unshare += ["--kill-child"]
        inner = [*session, "/usr/bin/env", "-i", "-C", workdir, *pairs, *argv]
        return [*prefix, *unshare, "--", "/bin/sh", "-c", _SETUP, "sim-init", str(root),
                hostname, *inner]  # fmt: skip


def _host_layout() -> tuple[tuple[str, ...], dict[str, str]]:
    read_only: list[str] = []
    links: dict[str, str] = {}
    for name in SYSTEM_DIRS:
        path = Path("/", name)
        if path.is_symlink():
            links[name] = os.readlink(path)
        elif path.is_dir():
            read_only.append(name)
    return tuple(read_only), links


def _has_pdeathsig() -> bool:
    if shutil.which("setpriv") is None:
        return False
    try:
        done = subprocess.run(
            ["setpriv", "--pdeathsig", "KILL", "--", "true"],
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class _FdReader:
    """Non-blocking reads from a pty master; EIO (the slave side closed) is end of file."""

    def __init__(self, fd: int, limit: int = 1 << 20) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._limit = limit
        self._eof = False
        self._watching = False
        self._readable = asyncio.Event()
        os.set_blocking(fd, False)
        self._watch()

    def _watch(self) -> None:
        if not self._watching and not self._eof:
            self._loop.add_reader(self._fd, self._ready)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self._loop.remove_reader(self._fd)
            self._watching = False

    def _ready(self) -> None:
        try:
            data = os.read(self._fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._eof = True
            self._unwatch()
        else:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered >= self._limit:
                self._unwatch()
        self._readable.set()

    async def read(self) -> bytes:
        while not self._chunks:
            if self._eof:
                return b""
            self._readable.clear()
            await self._readable.wait()
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < self._limit:
            self._watch()
        return chunk

    def close(self) -> None:
        self._unwatch()
        self._eof = True
        self._readable.set()


class _FdWriter:
    """Non-blocking writes to a pty master, waiting for writability when the buffer is full."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self.closed = False

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self.closed:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                ready = self._loop.create_future()
                self._loop.add_writer(self._fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    self._loop.remove_writer(self._fd)
                continue
            except OSError:
                self.closed = True
                return
            view = view[written:]

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """What to run in a container, and how its stdio is wired."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    workdir: str = "/"
    tty: bool = False
    stdin: bool = False
    width: int = 0
    height: int = 0


class ContainerProcess:
    """A running command: its stdin, its output streams, resize, exit code and kill."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int | None) -> None:
        self._proc = proc
        self._master = master
        self._tty = master is not None
        self._pty_reader = _FdReader(master) if master is not None else None
        self._pty_writer = _FdWriter(os.dup(master)) if master is not None else None
        self.exit_code: int | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def tty(self) -> bool:
        return self._tty

    @classmethod
    async def start(
        cls, sandbox: Sandbox, root: Path, hostname: str, spec: ProcessSpec
    ) -> ContainerProcess:
        argv = sandbox.command(root, hostname, spec.argv, spec.env, spec.workdir, tty=spec.tty)
        env = sandbox.setup_env()
        if spec.tty:
            master, slave = os.openpty()
            if spec.width and spec.height:
                _set_size(master, spec.width, spec.height)
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=slave,
                    stdout=slave,
                    stderr=slave,
                    env=env,
                    start_new_session=True,
                )
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            return cls(proc, master)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE if spec.stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        return cls(proc, None)

    async def write_stdin(self, data: bytes) -> None:
        if self._pty_writer is not None:
            await self._pty_writer.write(data)
            return
        stdin = self._proc.stdin
        if stdin is None or stdin.is_closing():
            return
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass

    async def close_stdin(self) -> None:
        """End of input: EOF on the pipe; on a tty, the EOF character (^D) like a terminal."""
        if self._pty_writer is not None:
            await self._pty_writer.write(b"\x04")
            return
        stdin = self._proc.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await stdin.wait_closed()

    async def read_stdout(self) -> bytes:
        if self._pty_reader is not None:
            return await self._pty_reader.read()
        assert self._proc.stdout is not None
        return await self._proc.stdout.read(READ_CHUNK)

    async def read_stderr(self) -> bytes:
        """Empty at once on a tty (stderr shares the terminal)."""
        if self._proc.stderr is None:
            return b""
        return await self._proc.stderr.read(READ_CHUNK)

    def resize(self, width: int, height: int) -> None:
        if self._master is not None and width and height:
            with contextlib.suppress(OSError):
                _set_size(self._master, width, height)

    async def wait(self) -> int:
        """The exit code as kube reports it: 128+N for a process killed by signal N."""
        code = await self._proc.wait()
        self.exit_code = 128 - code if code < 0 else code
        return self.exit_code

    def kill(self) -> None:
        """SIGKILL the process group; in namespace mode that ends the whole container view.

        Only the group signal: Popen.kill() would poll() first and could reap the child under
        asyncio's child watcher, which then reports exit code 255 instead of 137."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signal.SIGKILL)

    async def terminate(self) -> int:
        self.kill()
        code = await self.wait()
        self.close()
        return code

    def close(self) -> None:
        """Release the pty (after the output has been read)."""
        if self._pty_reader is not None:
            self._pty_reader.close()
        if self._pty_writer is not None:
            self._pty_writer.close()
            with contextlib.suppress(OSError):
                os.close(self._pty_writer._fd)
        if self._master is not None:
            with contextlib.suppress(OSError):
                os.close(self._master)
            self._master = None


def _set_size(fd: int, width: int, height: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))
