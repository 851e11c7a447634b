"""The bytes-level log: one JetStream stream, appended to and read in order.

Appends are conflict-checked and idempotent:

- `Nats-Msg-Id` makes a retry of the same message store it once (same sequence back, flagged
  `duplicate`). The server checks an expectation before it looks for duplicates, so a retried
  conflict-checked append that had in fact been stored comes back as a conflict; the log then
  looks at the message right after the expected sequence and, if it carries the same id,
  answers with that message's sequence as a duplicate.
- `Nats-Expected-Last-Subject-Sequence` (0 = the subject must be empty) refuses an append that
  lost a race with `ConcurrencyError`; nothing is ever overwritten.
- Several messages go in one atomic batch (ADR-50: `Nats-Batch-Id`, `Nats-Batch-Sequence`,
  `Nats-Batch-Commit`): all are stored, with contiguous sequences, or none. The server checks a
  batch's expectations against the stream as it was before the batch, and refuses (10164) an
  expectation on a subject that an earlier message of the same batch writes, so only the first
  message per subject may carry one (`InvalidBatchError` otherwise; the first one's check covers
  the rest). A retried batch is refused as a whole for its duplicate ids (10201); the log then
  checks whether the stored messages are this batch and answers with their sequences.

Reads use JetStream direct gets in batches (no consumer state on the server); following the
log past its end switches to an ordered push consumer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api as jsapi

from broker.errors import (
    BrokerError,
    BrokerTimeoutError,
    ConcurrencyError,
    DuplicateInBatchError,
    InvalidBatchError,
    JetStreamError,
    NoStreamError,
    StreamNotFoundError,
    from_jetstream,
)

log = logging.getLogger("kubegate.broker.log")

MAX_BATCH = 1000
"""Most messages one atomic batch may hold (server limit)."""

H = jsapi.Header
_EXPECTED_STREAM = H.EXPECTED_STREAM.value
_EXPECTED_SUBJECT_SEQ = H.EXPECTED_LAST_SUBJECT_SEQUENCE.value
_MSG_ID = H.MSG_ID.value
_BATCH_ID = H.BATCH_ID.value
_BATCH_SEQ = H.BATCH_SEQUENCE.value
_BATCH_COMMIT = H.BATCH_COMMIT.value
_CONFLICT = ConcurrencyError.ERR_CODE
_DUPLICATE_IN_BATCH = DuplicateInBatchError.ERR_CODE
_TRAILING_NUMBER = re.compile(r"(\d+)\s*$")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message to append. `expect_last_seq`: the subject's last sequence must be this
    (0: the subject must be empty); None: no check."""

    subject: str
    data: bytes
    msg_id: str | None = None
    expect_last_seq: int | None = None
    headers: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Appended:
    """Where a message was stored; `duplicate` if it had been stored before (a retry)."""

    stream: str
    seq: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class StoredMessage:
    stream: str
    seq: int
    subject: str
    time: datetime
    data: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def msg_id(self) -> str | None:
        return self.headers.get(_MSG_ID)


class Log:
    """One JetStream stream as an append-only log of byte messages.

    Takes a connected client; `timeout` bounds every request (a `BrokerTimeoutError` after it).
    Appends whose messages all carry an id are retried through transient failures (a stream
    leader election answers "no responders" for a few seconds) for up to `retry_window`.
    """

    def __init__(
        self,
        nc: Client,
        stream: str,
        *,
        timeout: float = 5.0,
        retry_window: float = 15.0,
        api_prefix: str = "$JS.API",
    ) -> None:
        self._nc = nc
        self.stream = stream
        self.timeout = timeout
        self.retry_window = retry_window
        self._api = api_prefix
        self._direct_subject = f"{api_prefix}.DIRECT.GET.{stream}"

    # --- appends ------------------------------------------------------------------------------

    async def append(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        expect_last_seq: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Appended:
        """Store one message; see the module doc for ids and expectations."""
        return await self.append_message(Outgoing(subject, data, msg_id, expect_last_seq, headers))

    async def append_message(self, message: Outgoing) -> Appended:
        """Store one message, retrying through a leader election if it has an id."""
        return await self._retrying(
            lambda: self._append_once(message), idempotent=message.msg_id is not None
        )

    async def _append_once(self, message: Outgoing) -> Appended:
        reply = await self._request(message.subject, message.data, self._headers(message))
        ack = _decode_ack(reply, message.subject)
        error = ack.get("error")
        if error is None:
            stream = str(ack.get("stream", self.stream))
            return Appended(stream, int(ack["seq"]), bool(ack.get("duplicate")))
        if int(error.get("err_code") or 0) == _CONFLICT and message.expect_last_seq is not None:
            if message.msg_id is not None:
                stored = await self.next_message(message.subject, message.expect_last_seq + 1)
                if stored is not None and stored.msg_id == message.msg_id:
                    return Appended(self.stream, stored.seq, duplicate=True)
            raise ConcurrencyError(
                message.subject, message.expect_last_seq, _trailing_number(error)
            )
        raise from_jetstream(error)

    async def append_batch(self, messages: Sequence[Outgoing]) -> list[Appended]:
        """Store all `messages` atomically, in order, or none of them.

        Raises `ConcurrencyError` naming the first subject whose expectation failed.
        """
        _check_batch(messages)
        if not messages:
            return []
        if len(messages) == 1:
            return [await self.append_message(messages[0])]
        return await self._retrying(
            lambda: self._append_batch_once(messages),
            idempotent=all(m.msg_id is not None for m in messages),
        )

    async def _append_batch_once(self, messages: Sequence[Outgoing]) -> list[Appended]:
        batch_id = uuid.uuid4().hex
        last = len(messages)
        reply: Msg | None = None
        for number, message in enumerate(messages, start=1):
            headers = self._headers(message)
            headers[_BATCH_ID] = batch_id
            headers[_BATCH_SEQ] = str(number)
            if number == last:
                headers[_BATCH_COMMIT] = "1"
                reply = await self._request(message.subject, message.data, headers)
            elif number == 1:
                # The first message is a request: a stream that refuses batches says so now.
                first = await self._request(message.subject, message.data, headers)
                if first.data:
                    ack = _decode_ack(first, message.subject)
                    if "error" in ack:
                        raise from_jetstream(ack["error"])
            else:
                await self._nc.publish(message.subject, message.data, headers=headers)
        assert reply is not None
        ack = _decode_ack(reply, messages[-1].subject)
        error = ack.get("error")
        if error is None:
            end = int(ack["seq"])
            stream = str(ack.get("stream", self.stream))
            return [Appended(stream, end - last + i + 1) for i in range(last)]
        err_code = int(error.get("err_code") or 0)
        if err_code in (_CONFLICT, _DUPLICATE_IN_BATCH):
            stored = await self._stored_batch(messages)
            if stored is not None:
                return stored
            if err_code == _CONFLICT:
                raise await self._conflict_of(messages, error)
        raise from_jetstream(error)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        """Run `attempt`, retrying transient failures (no answer; no responder while a stream
        elects a leader) for up to `retry_window` seconds when a retry cannot store twice."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_window
        pause = 0.05
        while True:
            try:
                return await attempt()
            except (BrokerTimeoutError, NoStreamError) as exc:
                if not idempotent or loop.time() + pause > deadline:
                    raise
                if isinstance(exc, NoStreamError) and not await self._takes(exc.subject):
                    raise
                log.info(
                    "append retried",
                    extra={"stream": self.stream, "error": type(exc).__name__},
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)

    async def _takes(self, subject: str) -> bool:
        """Whether this stream exists and takes `subject` (so "no responders" is transient);
        True when JetStream cannot tell right now."""
        try:
            info = await self._api_request(f"{self._api}.STREAM.INFO.{self.stream}", b"")
        except StreamNotFoundError:
            return False
        except BrokerError:
            return True
        patterns = info.get("config", {}).get("subjects") or []
        return any(subject_matches(p, subject) for p in patterns)

    # --- reads --------------------------------------------------------------------------------

    async def get(self, seq: int) -> StoredMessage | None:
        """The message at `seq`, or None if there is none."""
        found, _ = await self._direct({"seq": seq}, batch=False)
        return found[0] if found else None

    async def last_message(self, subject: str) -> StoredMessage | None:
        """The last message stored on `subject` (wildcards allowed), or None."""
        found, _ = await self._direct({"last_by_subj": subject}, batch=False)
        return found[0] if found else None

    async def next_message(self, subject: str, from_seq: int) -> StoredMessage | None:
        """The first message on `subject` at or after `from_seq`, or None."""
        found, _ = await self._direct(
            {"seq": max(from_seq, 1), "next_by_subj": subject}, batch=False
        )
        return found[0] if found else None

    async def last_subject_seq(self, subject: str) -> int:
        """The sequence of the last message on `subject`; 0 if it has none."""
        last = await self.last_message(subject)
        return last.seq if last is not None else 0

    async def last_seq(self) -> int:
        """The stream's last sequence; 0 if nothing was ever stored."""
        info = await self._api_request(f"{self._api}.STREAM.INFO.{self.stream}", b"")
        return int(info.get("state", {}).get("last_seq", 0))

    async def page(
        self, from_seq: int, *, subject: str | None = None, limit: int = 256
    ) -> tuple[list[StoredMessage], int]:
        """Up to `limit` messages from `from_seq` on (on `subject` if given), and how many
        more matching messages the stream held after them when it answered."""
        request: dict[str, Any] = {"seq": max(from_seq, 1), "batch": max(limit, 1)}
        if subject is not None:
            request["next_by_subj"] = subject
        return await self._direct(request, batch=True)

    async def read_subject(self, subject: str, *, from_seq: int = 1) -> list[StoredMessage]:
        """Every message on `subject` (from `from_seq`), in order."""
        out: list[StoredMessage] = []
        async for message in self.read(from_seq, subject=subject):
            out.append(message)
        return out

    async def read(
        self,
        from_seq: int = 1,
        *,
        subject: str | None = None,
        follow: bool = False,
        batch: int = 256,
    ) -> AsyncIterator[StoredMessage]:
        """The stream's messages from `from_seq` on, in order (only `subject`'s if given).

        Without `follow` it stops at the end the stream had when each page was read; with
        `follow` it keeps waiting for new messages until the caller stops iterating.
        """
        seq = max(from_seq, 1)
        while True:
            found, pending = await self.page(seq, subject=subject, limit=batch)
            for message in found:
                yield message
            if found:
                seq = found[-1].seq + 1
            if pending == 0 or not found:
                break
        if follow:
            async for message in self._follow(seq, subject):
                yield message

    async def _follow(self, seq: int, subject: str | None) -> AsyncIterator[StoredMessage]:
        filter_subject = subject or await self._single_subject()
        sub = await self._nc.jetstream().subscribe(
            filter_subject,
            stream=self.stream,
            ordered_consumer=True,
            config=jsapi.ConsumerConfig(
                deliver_policy=jsapi.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq
            ),
        )
        try:
            async for msg in sub.messages:
                meta = msg.metadata
                yield StoredMessage(
                    stream=self.stream,
                    seq=meta.sequence.stream,
                    subject=msg.subject,
                    time=meta.timestamp,
                    data=msg.data,
                    headers=dict(msg.headers or {}),
                )
        finally:
            await sub.unsubscribe()

    async def _single_subject(self) -> str:
        info = await self._api_request(f"{self._api}.STREAM.INFO.{self.stream}", b"")
        subjects = info.get("config", {}).get("subjects") or []
        if len(subjects) != 1:
            raise JetStreamError(
                f"stream {self.stream} has {len(subjects)} subject patterns; pass subject="
            )
        return str(subjects[0])

    # --- internals ----------------------------------------------------------------------------

    def _headers(self, message: Outgoing) -> dict[str, str]:
        headers = dict(message.headers or {})
        headers[_EXPECTED_STREAM] = self.stream
        if message.msg_id is not None:
            headers[_MSG_ID] = message.msg_id
        if message.expect_last_seq is not None:
            headers[_EXPECTED_SUBJECT_SEQ] = str(message.expect_last_seq)
        return headers

    async def _request(self, subject: str, data: bytes, headers: dict[str, str]) -> Msg:
        try:
            return await self._nc.request(subject, data, timeout=self.timeout, headers=headers)
        except nats.errors.NoRespondersError as exc:
            raise NoStreamError(subject) from exc
        except nats.errors.TimeoutError as exc:
            raise BrokerTimeoutError(f"append to {subject}", self.timeout) from exc

    async def _api_request(self, subject: str, payload: bytes) -> dict[str, Any]:
        try:
            reply = await self._nc.request(subject, payload, timeout=self.timeout)
        except nats.errors.NoRespondersError as exc:
            raise NoStreamError(subject) from exc
        except nats.errors.TimeoutError as exc:
            raise BrokerTimeoutError(subject, self.timeout) from exc
        body: dict[str, Any] = json.loads(reply.data)
        if "error" in body:
            raise from_jetstream(body["error"])
        return body

    async def _direct(
        self, request: dict[str, Any], *, batch: bool
    ) -> tuple[list[StoredMessage], int]:
        """One direct get. A batch answer ends with an EOB status carrying the number of
        matching messages left; a single get answers one message or 404."""
        payload = json.dumps(request).encode()
        if not batch:
            try:
                reply = await self._nc.request(self._direct_subject, payload, timeout=self.timeout)
            except nats.errors.NoRespondersError as exc:
                raise StreamNotFoundError(f"no stream {self.stream} (or no direct get)") from exc
            except nats.errors.TimeoutError as exc:
                raise BrokerTimeoutError(f"read {self.stream}", self.timeout) from exc
            status = _status(reply)
            if status == "404":
                return [], 0
            if status:
                raise _status_error(reply, status, self.stream)
            return [self._stored(reply)], 0
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        out: list[StoredMessage] = []
        try:
            await self._nc.publish(self._direct_subject, payload, reply=inbox)
            while True:
                try:
                    reply = await sub.next_msg(timeout=self.timeout)
                except nats.errors.TimeoutError as exc:
                    raise BrokerTimeoutError(f"read {self.stream}", self.timeout) from exc
                status = _status(reply)
                if status == "204":
                    return out, int((reply.headers or {}).get("Nats-Num-Pending", 0))
                if status == "404":
                    return out, 0
                if status == "503":
                    raise StreamNotFoundError(f"no stream {self.stream} (or no direct get)")
                if status:
                    raise _status_error(reply, status, self.stream)
                out.append(self._stored(reply))
        finally:
            await sub.unsubscribe()

    def _stored(self, msg: Msg) -> StoredMessage:
        headers = dict(msg.headers or {})
        return StoredMessage(
            stream=headers.get("Nats-Stream", self.stream),
            seq=int(headers["Nats-Sequence"]),
            subject=headers["Nats-Subject"],
            time=parse_time(headers.get("Nats-Time-Stamp", "")),
            data=msg.data,
            headers=headers,
        )

    async def _stored_batch(self, messages: Sequence[Outgoing]) -> list[Appended] | None:
        """If this batch (same message ids) is already in the stream, where it is."""
        first, last = messages[0], messages[-1]
        if first.msg_id is None or last.msg_id is None:
            return None
        size = len(messages)
        if first.expect_last_seq is not None:
            start = await self.next_message(first.subject, first.expect_last_seq + 1)
            end = await self.get(start.seq + size - 1) if start is not None else None
        else:
            # Without an expectation to anchor on, assume the retried batch still holds the
            # last write of its last subject (the usual case for a prompt retry).
            end = await self.last_message(last.subject)
            start = await self.get(end.seq - size + 1) if end is not None else None
        if start is None or end is None or end.seq - start.seq != size - 1:
            return None
        if start.msg_id != first.msg_id or end.msg_id != last.msg_id:
            return None
        found = start
        return [Appended(self.stream, found.seq + i, duplicate=True) for i in range(len(messages))]

    async def _conflict_of(
        self, messages: Sequence[Outgoing], error: Mapping[str, Any]
    ) -> ConcurrencyError:
        """Which expectation of a refused batch failed."""
        expected = [m for m in messages if m.expect_last_seq is not None]
        for message in expected:
            actual = await self.last_subject_seq(message.subject)
            if actual != message.expect_last_seq:
                return ConcurrencyError(message.subject, message.expect_last_seq or 0, actual)
        subject = expected[0].subject if expected else messages[0].subject
        expect = expected[0].expect_last_seq if expected else 0
        return ConcurrencyError(subject, expect or 0, _trailing_number(error))


def _check_batch(messages: Sequence[Outgoing]) -> None:
    if len(messages) > MAX_BATCH:
        raise InvalidBatchError(
            f"{len(messages)} messages in one atomic batch; at most {MAX_BATCH}"
        )
    written: set[str] = set()
    for number, message in enumerate(messages, start=1):
        if message.expect_last_seq is not None and message.subject in written:
            raise InvalidBatchError(
                f"message {number} expects a last sequence on {message.subject}, which an "
                "earlier message of the batch writes; only the first write of a subject "
                "in a batch may carry an expectation"
            )
        written.add(message.subject)


def _decode_ack(reply: Msg, subject: str) -> dict[str, Any]:
    status = _status(reply)
    if status == "503":
        raise NoStreamError(subject)
    try:
        body: dict[str, Any] = json.loads(reply.data)
    except ValueError as exc:
        raise JetStreamError(
            f"unreadable answer to a publish on {subject}: {reply.data[:80]!r}"
        ) from exc
    return body


def _status(msg: Msg) -> str | None:
    if msg.headers and not msg.data:
        return msg.headers.get("Status")
    return None


def _status_error(msg: Msg, status: str, stream: str) -> JetStreamError:
    description = (msg.headers or {}).get("Description", "")
    text = f"direct get on {stream}: {status} {description}".strip()
    return JetStreamError(text, code=int(status))


def _trailing_number(error: Mapping[str, Any]) -> int | None:
    match = _TRAILING_NUMBER.search(str(error.get("description", "")))
    return int(match.group(1)) if match else None


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


def parse_time(text: str) -> datetime:
    """A NATS timestamp (RFC 3339 with nanoseconds) as an aware datetime (microseconds)."""
    if not text:
        return datetime.fromtimestamp(0, UTC)
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        offset = ""
        for sign in ("+", "-"):
            if sign in frac:
                frac, offset = frac.split(sign, 1)
                offset = sign + offset
                break
        text = f"{head}.{frac[:6].ljust(6, '0')}{offset}"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


__all__ = [
    "MAX_BATCH",
    "Appended",
    "Log",
    "Outgoing",
    "StoredMessage",
    "parse_time",
    "subject_matches",
]
