"""Commands under a pty: output, exit status, ^C as SIGINT in cooked mode and as a byte in raw
mode, resizes, the file size limit, and output backpressure. Real child processes."""

from __future__ import annotations

import asyncio
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from edge.console.pty_process import PtyProcess


async def spawn(tmp_path: Path, script: str, **kw) -> PtyProcess:
    return await PtyProcess.spawn(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={"PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
        **kw,
    )


async def read_until(proc: PtyProcess, marker: bytes, limit: float = 30) -> bytes:
    got = b""
    async with asyncio.timeout(limit):
        while marker not in got:
            chunk = await proc.read()
            if not chunk:
                raise AssertionError(f"EOF before {marker!r}; got {got!r}")
            got += chunk
    return got


async def read_all(proc: PtyProcess) -> bytes:
    got = b""
    async with asyncio.timeout(30):
        while chunk := await proc.read():
            got += chunk
    return got


async def test_output_and_exit_status(tmp_path: Path) -> None:
    proc = await spawn(
        tmp_path,
        """
        import os, sys
        print("on a tty:", os.isatty(0), os.isatty(1), os.getcwd())
        sys.exit(3)
        """,
    )
    try:
        out = await read_all(proc)
        assert await proc.wait() == 3
    finally:
        proc.close()
    assert f"on a tty: True True {tmp_path}".encode() in out
    assert b"\r\n" in out  # the pty's ONLCR


async def test_ctrl_c_in_cooked_mode_is_sigint(tmp_path: Path) -> None:
    proc = await spawn(
        tmp_path,
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        print("waiting", flush=True)
        time.sleep(60)
        """,
    )
    try:
        await read_until(proc, b"waiting")
        assert proc.write(b"\x03") is True
        async with asyncio.timeout(30):
            assert await proc.wait() == -signal.SIGINT
    finally:
        proc.close()


async def test_ctrl_c_in_raw_mode_reaches_the_program(tmp_path: Path) -> None:
    proc = await spawn(
        tmp_path,
        """
        import os, sys, tty
        tty.setraw(0)
        os.write(1, b"raw\\r\\n")
        byte = os.read(0, 1)
        os.write(1, b"got %d\\r\\n" % byte[0])
        """,
    )
    try:
        await read_until(proc, b"raw")
        assert proc.write(b"\x03") is False
        out = await read_until(proc, b"\r\n", 30)
        assert b"got 3" in out
        assert await proc.wait() == 0
    finally:
        proc.close()


async def test_cooked_input_line_and_eof(tmp_path: Path) -> None:
    proc = await spawn(
        tmp_path,
        """
        import sys
        data = sys.stdin.read()
        print("read %d lines" % len(data.splitlines()))
        """,
    )
    try:
        proc.write(b"a: 1\rb: 2\r\x04")
        out = await read_all(proc)
        assert b"read 2 lines" in out
        assert b"a: 1" in out  # echoed by the line discipline
    finally:
        proc.close()


async def test_resize_sets_the_size_and_sends_sigwinch(tmp_path: Path) -> None:
    proc = await spawn(
        tmp_path,
        """
        import os, signal, time
        print("size", os.get_terminal_size(0), flush=True)
        def changed(*_):
            s = os.get_terminal_size(0)
            os.write(1, b"resized %d %d\\n" % (s.columns, s.lines))  # no print in a handler
            os._exit(0)
        signal.signal(signal.SIGWINCH, changed)
        print("ready", flush=True)
        time.sleep(60)
        """,
        cols=100,
        rows=30,
    )
    try:
        first = await read_until(proc, b"ready")
        assert b"columns=100, lines=30" in first
        proc.resize(132, 43)
        assert b"resized 132 43" in await read_until(proc, b"resized")
    finally:
        await proc.terminate()
        proc.close()


async def test_file_size_is_limited(tmp_path: Path) -> None:
    proc = await spawn(
        tmp_path,
        """
        try:
            with open("big", "wb") as f:
                f.write(b"x" * 3_000_000)
            print("wrote it")
        except OSError as exc:
            print("refused", exc.errno)
        """,
        max_file_bytes=1_000_000,
    )
    try:
        out = await read_all(proc)
    finally:
        proc.close()
    assert b"refused 27" in out  # EFBIG (Python ignores SIGXFSZ)
    assert (tmp_path / "big").stat().st_size <= 1_000_000


async def test_slow_reader_gets_every_byte(tmp_path: Path) -> None:
    proc = await spawn(
        tmp_path,
        """
        import sys
        for i in range(20000):
            sys.stdout.write("%06d\\n" % i)
        """,
    )
    try:
        got = b""
        async with asyncio.timeout(60):
            while chunk := await proc.read():
                got += chunk
                await asyncio.sleep(0)  # let the pty fill up behind us
        assert await proc.wait() == 0
    finally:
        proc.close()
    numbers = got.split(b"\r\n")[:-1]
    assert numbers == [b"%06d" % i for i in range(20000)]


async def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    proc = await spawn(
        tmp_path,
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("stubborn", flush=True)
        time.sleep(60)
        """,
    )
    try:
        await read_until(proc, b"stubborn")
        await proc.terminate(grace_s=0.2)
        assert proc.returncode == -signal.SIGKILL
    finally:
        proc.close()


@pytest.mark.parametrize("key", [b"\x1a", b"\x1c"], ids=["ctrl-z", "ctrl-backslash"])
async def test_suspend_and_quit_keys_are_dropped(tmp_path: Path, key: bytes) -> None:
    proc = await spawn(
        tmp_path,
        """
        import sys
        print("line:", repr(sys.stdin.readline()))
        """,
    )
    try:
        assert proc.write(key + b"ok\r") is False
        out = await read_all(proc)
        assert b"line: 'ok\\n'" in out
        assert await proc.wait() == 0
    finally:
        proc.close()
