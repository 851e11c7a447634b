"""The typed event store: catalog events in, catalog events out, over the two log streams.

An event's place follows from the event itself: its stream (`event.STREAM`: control or
activity), its subject (`subjects.event_subject(event.STREAM, *event.key())`, one per
aggregate) and its JetStream message id (`event.id`, so a retried append stores it once). The
data is the catalog JSON (`domain.codec`), readable by any NATS tool.

For the hot path (kubectl activity) use `ActivityPublisher`, which does not wait for acks.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client

from broker import subjects
from broker.activity import ActivityPublisher
from broker.errors import BrokerError, InvalidBatchError
from broker.log import Log, Outgoing, StoredMessage
from domain import codec, events
from domain.errors import MalformedEventError

log = logging.getLogger("kubegate.broker.store")

STREAMS: dict[str, str] = {
    "control": subjects.CONTROL_STREAM,
    "activity": subjects.ACTIVITY_STREAM,
}
"""Logical stream name (`Event.STREAM`) -> JetStream stream name."""

STREAM_OF_FAMILY: dict[str, str] = {cls.FAMILY: cls.STREAM for cls in events.CATALOG.values()}
"""Event family -> logical stream it lives in."""


class UndecodableMessageError(BrokerError):
    """A message in a log stream that is not a catalog event (it stays in the log)."""

    def __init__(self, stream: str, seq: int, subject: str, reason: str) -> None:
        super().__init__(f"{stream} #{seq} on {subject} is not an event: {reason}")
        self.stream = stream
        self.seq = seq
        self.subject = subject


class UnknownFamilyError(BrokerError):
    """An event family the catalog does not know, so no stream to look in."""

    def __init__(self, family: str) -> None:
        super().__init__(f"unknown event family {family!r}")
        self.family = family


@dataclass(frozen=True, slots=True)
class Recorded:
    """One event as the log holds it: where (stream, sequence, subject), when, and what."""

    stream: str
    seq: int
    subject: str
    time: datetime
    event: events.Event | codec.UnknownEvent


class EventStore:
    """Appends and reads catalog events. Takes a connected client; both streams must exist
    (`broker.streams.ensure_streams`)."""

    def __init__(self, nc: Client, *, timeout: float = 5.0, retry_window: float = 15.0) -> None:
        self._logs = {
            logical: Log(nc, name, timeout=timeout, retry_window=retry_window)
            for logical, name in STREAMS.items()
        }

    def log(self, stream: str) -> Log:
        """The bytes-level log of `stream` (`control`/`activity` or the JetStream name)."""
        for logical, name in STREAMS.items():
            if stream in (logical, name):
                return self._logs[logical]
        raise BrokerError(f"unknown stream {stream!r}; one of {sorted(STREAMS.items())}")

    async def append(self, event: events.Event, expect_last_seq: int | None = None) -> int:
        """Store `event` on its aggregate's subject; returns its stream sequence.

        `expect_last_seq`: the aggregate's last sequence must be this (0: none yet), else
        `ConcurrencyError`. Appending the same event (same id) again returns the first
        sequence and stores nothing.
        """
        appended = await self.log(event.STREAM).append_message(_outgoing(event, expect_last_seq))
        return appended.seq

    async def append_many(self, items: Sequence[tuple[events.Event, int | None]]) -> list[int]:
        """Store several events atomically (all or none), in order; one stream only.

        Each pair is (event, expected last sequence of its aggregate or None). Only the first
        event of an aggregate may carry an expectation (it covers the later ones).
        """
        if not items:
            return []
        stream_names = {event.STREAM for event, _ in items}
        if len(stream_names) > 1:
            raise InvalidBatchError(f"one atomic append cannot span streams {sorted(stream_names)}")
        messages = [_outgoing(event, expect) for event, expect in items]
        appended = await self.log(items[0][0].STREAM).append_batch(messages)
        return [a.seq for a in appended]

    async def load(self, family: str, aggregate_id: str) -> list[Recorded]:
        """Every event of one aggregate, in order."""
        stream = _stream_of(family)
        subject = subjects.event_subject(stream, family, aggregate_id)
        messages = await self.log(stream).read_subject(subject)
        return [_recorded(m) for m in messages]

    async def last_seq(self, family: str, aggregate_id: str) -> int:
        """The aggregate's last sequence (0 if it has no events): the expectation for the
        next append."""
        stream = _stream_of(family)
        subject = subjects.event_subject(stream, family, aggregate_id)
        return await self.log(stream).last_subject_seq(subject)

    async def read(
        self, stream_name: str, from_seq: int = 1, *, follow: bool = False
    ) -> AsyncIterator[Recorded]:
        """The events of a stream from `from_seq` on, in order; to the current end, or on
        and on with `follow`.

        Records of the eventsourcing library's own (tracking, snapshots under `%es`) are
        skipped; a message that is not an event raises `UndecodableMessageError` naming its
        sequence (resume from the next one to go past it).
        """
        async for message in self.log(stream_name).read(from_seq, follow=follow):
            if _is_es_meta(message.subject):
                continue
            yield _recorded(message)

    async def latest_seq(self, stream_name: str) -> int:
        """The stream's last sequence (0 if empty)."""
        return await self.log(stream_name).last_seq()


def _stream_of(family: str) -> str:
    try:
        return STREAM_OF_FAMILY[family]
    except KeyError:
        raise UnknownFamilyError(family) from None


def _outgoing(event: events.Event, expect_last_seq: int | None) -> Outgoing:
    return Outgoing(
        subject=subjects.event_subject(event.STREAM, *event.key()),
        data=codec.encode(event),
        msg_id=event.id,
        expect_last_seq=expect_last_seq,
    )


def _recorded(message: StoredMessage) -> Recorded:
    try:
        event = codec.decode(message.data)
    except MalformedEventError as exc:
        raise UndecodableMessageError(
            message.stream, message.seq, message.subject, str(exc)
        ) from exc
    return Recorded(message.stream, message.seq, message.subject, message.time, event)


def _is_es_meta(subject: str) -> bool:
    parts = subject.split(".", 3)
    return len(parts) > 2 and parts[2] == subjects.ES_META


__all__ = [
    "STREAMS",
    "STREAM_OF_FAMILY",
    "ActivityPublisher",
    "EventStore",
    "Recorded",
    "UndecodableMessageError",
    "UnknownFamilyError",
]
