"""What a read model receives from the log: one `LogRecord` per stream sequence, in order.

A record carries the decoded event, or `UnknownEvent` (a type or schema this build does not
know) or `Malformed` (bytes that are no event at all). Models ignore what they do not handle;
handing every sequence over keeps a model's own position gap-free.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import msgspec

from domain import events
from domain.codec import UnknownEvent


class Malformed(msgspec.Struct, frozen=True, kw_only=True):
    """Bytes at a log position that do not decode as an event; `error` says why."""

    error: str


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Payload = events.Event | UnknownEvent | Malformed


class LogRecord(NamedTuple):
    """One message of the log. `time_ns` is when the server stored it (not the event's time)."""

    stream: str
    """`control` or `activity` (an event's `STREAM`)."""
    seq: int
    subject: str
    time_ns: int
    event: Payload
    raw: bytes

    @property
    def time(self) -> datetime:
        """When the server stored the message, as an aware UTC datetime (microseconds)."""
        return _EPOCH + timedelta(microseconds=self.time_ns // 1000)
