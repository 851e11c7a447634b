"""The processes a benchmark starts: each in its own session with its output in a log, waited
for by a file it writes once serving, and stopped as a group (kubegate's own commands, the
floor path's pipes)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def spawn(module: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    """`python -m module args...` in a session of its own (stopped with its children by
    `stop`), its stdout and stderr appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def wait_file(
    path: Path,
    proc: subprocess.Popen[bytes],
    what: str,
    *,
    start_within: float = 120.0,
    log: Path | None = None,
) -> None:
    """Wait until `proc` has written `path`. If it exits first, the error names its exit code
    and, given its `log`, the log's last line."""
    deadline = time.monotonic() + start_within
    while not await asyncio.to_thread(path.exists):
        if proc.poll() is not None:
            said = ""
            if log is not None:
                text = await asyncio.to_thread(log.read_text, errors="replace")
                said = ": " + (text.strip().splitlines()[-1:] or ["(no output)"])[0]
            raise RuntimeError(f"{what} exited with {proc.returncode}{said}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start in {start_within:g} s")
        await asyncio.sleep(0.05)


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM to each process group, the last started first; SIGKILL to a group whose leader
    has not exited within `timeout` seconds."""
    for proc in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
