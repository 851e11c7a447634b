"""A container's log file in the CRI format kubelet reads, and the reads `pods/log` serves.

Each record is one line `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`: F ends a line, P is
a piece of a line still being written (a prompt, a progress bar). Reads apply the PodLogOptions
the way kubelet does: since, tail, then timestamps and the byte limit; `follow` keeps going with
new records until the container's log is closed (the pod was deleted).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

FOLLOW_TICK = 2.0  # seconds a follower waits before yielding a keep-alive b"" to its reader
DEFAULT_MAX_BYTES = 10 << 20  # kubelet's default containerLogMaxSize


def format_time(when: datetime) -> str:
    """RFC3339 with nine fraction digits, kubelet's RFC3339NanoFixed (Python keeps micros)."""
    when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}000Z"


def parse_time(text: str) -> datetime:
    """RFC3339 with any fraction length (Python's parser takes at most six digits)."""
    head, dot, rest = text.partition(".")
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + "." + (rest[:digits] + "000000")[:6] + rest[digits:]
    when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone")
    return when.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Record:
    time: datetime
    stream: str
    partial: bool
    text: bytes

    def render(self, timestamps: bool) -> bytes:
        body = self.text if self.partial else self.text + b"\n"
        if timestamps:
            return format_time(self.time).encode() + b" " + body
        return body


def parse_record(line: bytes) -> Record | None:
    """One CRI log line (without its newline); None for a line that is not a record."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    try:
        when = parse_time(parts[0].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    text = parts[3] if len(parts) == 4 else b""
    return Record(when, parts[1].decode("ascii", "replace"), parts[2] == b"P", text)


@dataclass(frozen=True, slots=True)
class LogOptions:
    follow: bool = False
    tail_lines: int | None = None
    since: datetime | None = None
    timestamps: bool = False
    limit_bytes: int | None = None


class ContainerLog:
    """Append-only log of one container; appends wake every follower.

    Like kubelet, the file is rotated when it reaches `max_bytes` (one rotated file, `.1`, is
    kept), so a chatty container cannot fill the disk; reads span both files."""

    def __init__(
        self,
        path: Path,
        clock: Callable[[], datetime] | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self.path = path
        self.rotated = path.with_name(path.name + ".1")
        self.generation = 0  # bumped by every rotation
        self._clock = clock or (lambda: datetime.now(UTC))
        self._changed = asyncio.Event()
        self._max_bytes = max_bytes
        self.closed = False
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        self._written = path.stat().st_size

    def append(self, stream: str, data: bytes, when: datetime | None = None) -> None:
        """Write output of `stream`; complete lines become F records, a tail a P record."""
        if self.closed or not data:
            return
        stamp = format_time(when or self._clock()).encode()
        tag = stream.encode()
        lines = data.split(b"\n")
        out = bytearray()
        for line in lines[:-1]:
            out += stamp + b" " + tag + b" F " + line + b"\n"
        if lines[-1]:
            out += stamp + b" " + tag + b" P " + lines[-1] + b"\n"
        with self.path.open("ab") as handle:
            handle.write(out)
        self._written += len(out)
        if self._written >= self._max_bytes:
            self.path.replace(self.rotated)
            self.path.touch()
            self.generation += 1
            self._written = 0
        self._wake()

    def close(self) -> None:
        """No more records will come: followers finish what is written, then end."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def records(self) -> list[Record]:
        lines = _read_lines(self.rotated, 0)[0] + _read_lines(self.path, 0)[0]
        return [r for line in lines if (r := parse_record(line)) is not None]

    async def read(self, options: LogOptions) -> AsyncIterator[bytes]:
        """The rendered log; with `follow`, new records as they come, b"" as keep-alive ticks."""
        budget = options.limit_bytes
        changed = self._changed
        generation = self.generation
        lines, offset = _read_lines(self.path, 0)
        lines = _read_lines(self.rotated, 0)[0] + lines
        selected = [r for line in lines if (r := parse_record(line)) is not None]
        if options.since is not None:
            selected = [r for r in selected if r.time >= options.since]
        if options.tail_lines is not None:
            selected = _tail(selected, options.tail_lines)
        for record in selected:
            chunk, budget = _spend(record.render(options.timestamps), budget)
            if chunk:
                yield chunk
            if budget == 0:
                return
        while options.follow:
            if self.closed and generation == self.generation and offset >= self._size():
                return
            try:
                await asyncio.wait_for(changed.wait(), FOLLOW_TICK)
            except TimeoutError:
                yield b""
                continue
            changed = self._changed
            lines = []
            if generation != self.generation:  # rotated: finish the old file first
                if generation + 1 == self.generation:
                    lines = _read_lines(self.rotated, offset)[0]
                generation, offset = self.generation, 0
            more, offset = _read_lines(self.path, offset)
            for line in lines + more:
                record = parse_record(line)
                if record is None or (options.since is not None and record.time < options.since):
                    continue
                chunk, budget = _spend(record.render(options.timestamps), budget)
                yield chunk
                if budget == 0:
                    return


def _read_lines(path: Path, offset: int) -> tuple[list[bytes], int]:
    """Complete lines of `path` from byte `offset`, and the offset after the last one."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:  # not rotated yet, or the pod's directory is gone
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    return data[:end].split(b"\n"), offset + end + 1


def _tail(records: list[Record], count: int) -> list[Record]:
    """The last `count` records: kubelet tails the CRI file line by line, one record a line."""
    return records[-count:] if count else []


def _spend(chunk: bytes, budget: int | None) -> tuple[bytes, int | None]:
    if budget is None:
        return chunk, None
    chunk = chunk[:budget]
    return chunk, budget - len(chunk)
