"""Container log files: CRI records, and reads with the PodLogOptions applied."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ops.sim.streams.podlog import ContainerLog, LogOptions, format_time, parse_time

T0 = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def _log(tmp_path: Path) -> ContainerLog:
    log = ContainerLog(tmp_path / "c.log")
    for i in range(5):
        log.append("stdout", f"line {i}\n".encode(), T0 + timedelta(seconds=i))
    return log


async def _read(log: ContainerLog, options: LogOptions) -> bytes:
    return b"".join([chunk async for chunk in log.read(options)])


def test_records_in_cri_format(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path / "c.log")
    log.append("stdout", b"one\ntwo\npart", T0)
    log.append("stderr", b"oops\n", T0)
    assert (tmp_path / "c.log").read_bytes().splitlines()[0] == (
        b"2026-01-02T03:04:05.123456000Z stdout F one"
    )
    records = log.records()
    assert [(r.stream, r.partial, r.text) for r in records] == [
        ("stdout", False, b"one"),
        ("stdout", False, b"two"),
        ("stdout", True, b"part"),
        ("stderr", False, b"oops"),
    ]


def test_time_format_round_trip() -> None:
    assert format_time(T0) == "2026-01-02T03:04:05.123456000Z"
    assert parse_time("2026-01-02T03:04:05.123456789Z") == T0
    assert parse_time("2026-01-02T04:04:05.123456+01:00") == T0
    assert parse_time("2026-01-02T03:04:05Z") == T0.replace(microsecond=0)


async def test_plain_tail_since_limit_and_timestamps(tmp_path: Path) -> None:
    log = _log(tmp_path)
    assert await _read(log, LogOptions()) == b"".join(b"line %d\n" % i for i in range(5))
    assert await _read(log, LogOptions(tail_lines=2)) == b"line 3\nline 4\n"
    assert await _read(log, LogOptions(tail_lines=0)) == b""
    since = T0 + timedelta(seconds=3)
    assert await _read(log, LogOptions(since=since)) == b"line 3\nline 4\n"
    assert await _read(log, LogOptions(since=since, tail_lines=1)) == b"line 4\n"
    assert await _read(log, LogOptions(limit_bytes=9)) == b"line 0\nli"
    stamped = await _read(log, LogOptions(tail_lines=1, timestamps=True))
    assert stamped == b"2026-01-02T03:04:09.123456000Z line 4\n"


async def test_partial_lines_render_without_newline(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path / "c.log")
    log.append("stdout", b"prompt$ ", T0)
    log.append("stdout", b"typed\n", T0)
    assert await _read(log, LogOptions()) == b"prompt$ typed\n"


async def test_follow_sees_new_records_and_ends_when_closed(tmp_path: Path) -> None:
    log = _log(tmp_path)
    got: list[bytes] = []

    async def follow() -> None:
        async for chunk in log.read(LogOptions(follow=True, tail_lines=1)):
            if chunk:
                got.append(chunk)

    task = asyncio.ensure_future(follow())
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0)
    assert got == [b"line 4\n"]
    log.append("stdout", b"later\n")
    log.append("stdout", b"last\n")
    log.close()
    await asyncio.wait_for(task, 10)
    assert got == [b"line 4\n", b"later\n", b"last\n"]
    log.append("stdout", b"after close\n")  # ignored: the container is gone
    assert b"after close" not in (tmp_path / "c.log").read_bytes()


async def test_follow_respects_the_byte_limit(tmp_path: Path) -> None:
    log = _log(tmp_path)
    reader = log.read(LogOptions(follow=True, tail_lines=0, limit_bytes=4))
    pending = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0)
    log.append("stdout", b"abcdef\n")
    assert await asyncio.wait_for(pending, 10) == b"abcd"
    assert [chunk async for chunk in reader] == []


async def test_a_removed_file_ends_a_follow(tmp_path: Path) -> None:
    log = _log(tmp_path)
    reader = log.read(LogOptions(follow=True, tail_lines=0))
    pending = asyncio.ensure_future(anext(reader, None))
    await asyncio.sleep(0)
    log.close()
    log.path.unlink()
    assert await asyncio.wait_for(pending, 10) is None


async def test_rotation_keeps_one_old_file_and_followers_cross_it(tmp_path: Path) -> None:
    log = ContainerLog(tmp_path / "c.log", max_bytes=200)
    reader = log.read(LogOptions(follow=True))
    got: list[bytes] = []

    async def follow() -> None:
        async for chunk in reader:
            if chunk:
                got.append(chunk)

    task = asyncio.ensure_future(follow())
    await asyncio.sleep(0)
    lines = [b"record %02d\n" % i for i in range(12)]  # ~50 bytes each on disk
    for line in lines:
        seen = len(got)
        log.append("stdout", line, T0)
        for _ in range(100):  # let the follower keep up (one lagging two rotations loses lines)
            if len(got) > seen:
                break
            await asyncio.sleep(0)
    log.close()
    await asyncio.wait_for(task, 10)
    assert got == lines  # the follower saw everything, across two rotations
    assert log.generation == 3
    kept = await _read(log, LogOptions())
    assert kept.endswith(b"record 11\n") and not kept.startswith(b"record 00")  # oldest dropped
    assert (tmp_path / "c.log.1").exists()
