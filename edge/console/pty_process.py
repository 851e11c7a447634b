"""One shell command under a pseudo-terminal, driven from asyncio.

A pty, so kubectl sees a terminal: `exec -it` switches it to raw mode, prompts and colours
work, the window size is the browser's. The child is started in a new session (its own
process group) without taking the pty as its controlling terminal: that would need
`preexec_fn`, which is unsafe with the worker threads the admin API runs. So the two things a
controlling terminal gives are done here instead:

- signals from keys: while the pty is in cooked mode with ISIG (kubectl's normal state), the
  interrupt key (^C) sends SIGINT to the child's process group and the quit/suspend keys are
  dropped; in raw mode (`exec -it`) every byte goes through to the remote side, as it would;
- SIGWINCH after a resize, so kubectl forwards the new size to the container.

Output is read with a bounded queue: reading the pty pauses while the WebSocket is slower
than the command. The child's file size is limited (RLIMIT_FSIZE) so `kubectl cp` cannot fill
the server's disk with one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import pty
import resource
import signal
import struct
import termios
from collections import deque
from pathlib import Path

log = logging.getLogger("kubegate.edge.console.pty_process")

READ_CHUNK = 64 * 1024
QUEUE_CHUNKS = 32
MAX_PENDING_INPUT = 1024 * 1024


def _winsize(cols: int, rows: int) -> bytes:
    return struct.pack("HHHH", max(1, min(rows, 1000)), max(1, min(cols, 1000)), 0, 0)


class PtyProcess:
    """A running command on a pty; create with `spawn`."""

    def __init__(self, proc: asyncio.subprocess.Process, master: int) -> None:
        self.proc = proc
        self.master = master
        self._loop = asyncio.get_running_loop()
        self._out: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_CHUNKS)
        self._eof = False
        self._reading = False
        self._pending = deque[bytes]()
        self._pending_bytes = 0
        self._writing = False
        self._closed = False
        self.interrupts = 0
        self._resume_reading()

    @classmethod
    async def spawn(
        cls,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: Path,
        cols: int = 80,
        rows: int = 24,
        max_file_bytes: int | None = None,
    ) -> PtyProcess:
        master, slave = pty.openpty()
        try:
            fcntl.ioctl(master, termios.TIOCSWINSZ, _winsize(cols, rows))
            os.set_blocking(master, False)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=env,
                cwd=str(cwd),
                start_new_session=True,
                close_fds=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        if max_file_bytes is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (max_file_bytes,) * 2)
        return cls(proc, master)

    # -- output -----------------------------------------------------------------------------

    def _resume_reading(self) -> None:
        if not self._reading and not self._eof and not self._closed:
            self._loop.add_reader(self.master, self._on_readable)
            self._reading = True

    def _pause_reading(self) -> None:
        if self._reading:
            self._loop.remove_reader(self.master)
            self._reading = False

    def _on_readable(self) -> None:
        try:
            data = os.read(self.master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: every slave end is closed
                log.warning("pty read failed", extra={"errno": exc.errno})
            data = b""
        if not data:
            self._eof = True
            self._pause_reading()
            self._out.put_nowait(b"")  # room is kept for the end marker (see below)
            return
        self._out.put_nowait(data)
        if self._out.qsize() >= QUEUE_CHUNKS - 1:
            self._pause_reading()

    async def read(self) -> bytes:
        """The next output chunk; b"" once the command and everything it started closed the
        terminal."""
        if self._eof and self._out.empty():
            return b""
        data = await self._out.get()
        if self._out.qsize() < QUEUE_CHUNKS // 2:
            self._resume_reading()
        return data

    # -- input ------------------------------------------------------------------------------

    def _lflag_cc(self) -> tuple[int, list]:
        try:
            attrs = termios.tcgetattr(self.master)
        except termios.error:
            return 0, []
        return attrs[3], attrs[6]

    def write(self, data: bytes) -> bool:
        """Send keystrokes; returns True when they held an interrupt that became SIGINT."""
        lflag, cc = self._lflag_cc()
        interrupted = False
        if lflag & termios.ISIG and cc:
            intr, quit_, susp = (cc[termios.VINTR], cc[termios.VQUIT], cc[termios.VSUSP])
            kept = bytearray()
            for byte in data:
                key = bytes([byte])
                if key == intr:
                    self._pending.clear()
                    self._pending_bytes = 0
                    kept.clear()  # the line discipline flushes pending input on INTR
                    self.signal(signal.SIGINT)
                    interrupted = True
                elif key in (quit_, susp):
                    continue
                else:
                    kept.append(byte)
            data = bytes(kept)
        if data:
            self._queue_input(data)
        return interrupted

    def _queue_input(self, data: bytes) -> None:
        if self._closed:
            return
        if self._pending_bytes + len(data) > MAX_PENDING_INPUT:
            log.warning("dropping shell input: the command is not reading it")
            return
        self._pending.append(data)
        self._pending_bytes += len(data)
        self._flush_input()

    def _flush_input(self) -> None:
        while self._pending:
            chunk = self._pending[0]
            try:
                n = os.write(self.master, chunk)
            except BlockingIOError:
                n = 0
            except OSError:
                self._pending.clear()
                self._pending_bytes = 0
                break
            self._pending_bytes -= n
            if n < len(chunk):
                self._pending[0] = chunk[n:]
                if not self._writing:
                    self._loop.add_writer(self.master, self._flush_input)
                    self._writing = True
                return
            self._pending.popleft()
        if self._writing:
            self._loop.remove_writer(self.master)
            self._writing = False

    def resize(self, cols: int, rows: int) -> None:
        with contextlib.suppress(OSError):
            fcntl.ioctl(self.master, termios.TIOCSWINSZ, _winsize(cols, rows))
        self.signal(signal.SIGWINCH)

    # -- lifetime ---------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        """Signal the command's process group (it leads its own session)."""
        if sig == signal.SIGINT:
            self.interrupts += 1
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def wait(self) -> int:
        return await self.proc.wait()

    async def terminate(self, grace_s: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after `grace_s`, to the whole process group."""
        if self.proc.returncode is None:
            self.signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                self.signal(signal.SIGKILL)
                await self.proc.wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pause_reading()
        if self._writing:
            self._loop.remove_writer(self.master)
            self._writing = False
        os.close(self.master)
