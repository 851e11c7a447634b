"""A persistence module for `eventsourcing` 9.5 that stores events in JetStream.

Select it with `PERSISTENCE_MODULE=broker.es_persistence`. Configuration (environment, or the
application's env, optionally prefixed with the application name as eventsourcing does):

  KUBEGATE_NATS_URL           NATS server(s), comma-separated     (nats://127.0.0.1:4222)
  KUBEGATE_NATS_CREDS         NATS credentials file               (none)
  KUBEGATE_ES_STREAM          JetStream stream                    (KG_CONTROL)
  KUBEGATE_ES_SUBJECT_PREFIX  subject prefix inside that stream   (kg.evt)
  KUBEGATE_ES_REPLICAS        replicas if the stream is created   (1)
  KUBEGATE_ES_TIMEOUT         seconds per NATS request            (5)
  KUBEGATE_ES_CREATE_STREAM   create the stream if missing        (y; CREATE_TABLE also read)

Layout (see `broker.subjects`): one subject per aggregate, so an aggregate id `user:alice`
under `kg.evt` is stored on `kg.evt.user.alice`, the catalog's own subject. Each message holds
the event's state bytes as its data and eventsourcing's metadata in headers (`Kg-Es-Id`,
`Kg-Es-Version`, `Kg-Es-Topic`; `Kg-Es-Id-Type: uuid` for UUID ids). A notification id is the
message's stream sequence, so ids are increasing but may have gaps (tracking records, other
writers' messages, which notifications skip).

Concurrency: an insert reads each aggregate's head (last sequence of its subject and last
recorded version; cached per recorder, refreshed after a conflict), refuses a version not
above the head (`IntegrityError`), and appends every event of the insert, plus the tracking
record for a process recorder, in one JetStream atomic batch. The first message per subject
carries `Nats-Expected-Last-Subject-Sequence` = the head, so a concurrent writer makes the whole
batch fail and nothing is stored; the insert then re-reads the heads and tries again (another
writer's version is then an `IntegrityError`; a foreign message on the subject is not).

Message ids: a stored event may carry `msg_id` (kubegate's catalog mapper sets the catalog
event id, derived from the command id); otherwise each insert makes unique ids, so a retried
insert is stored once but two writers of identical bytes still conflict.

The library is synchronous; every recorder call runs on a `broker.bridge.Bridge` shared by the
factory's recorders.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from eventsourcing import persistence as es
from eventsourcing.utils import Environment, resolve_topic, strtobool
from nats.js import api as jsapi
from nats.js.errors import NotFoundError as JsNotFoundError

from broker import streams, subjects
from broker.bridge import Bridge
from broker.errors import (
    AtomicBatchDisabledError,
    BrokerError,
    BrokerTimeoutError,
    ConcurrencyError,
    EventConflictError,
    EventLogDataError,
    EventLogUnavailableError,
    InvalidBatchError,
    NatsUnavailableError,
)
from broker.log import MAX_BATCH, Log, Outgoing, StoredMessage, subject_matches

log = logging.getLogger("kubegate.broker.es_persistence")

T = TypeVar("T")

NATS_URL = "KUBEGATE_NATS_URL"
NATS_CREDS = "KUBEGATE_NATS_CREDS"
ES_STREAM = "KUBEGATE_ES_STREAM"
ES_SUBJECT_PREFIX = "KUBEGATE_ES_SUBJECT_PREFIX"
ES_REPLICAS = "KUBEGATE_ES_REPLICAS"
ES_TIMEOUT = "KUBEGATE_ES_TIMEOUT"
ES_CREATE_STREAM = "KUBEGATE_ES_CREATE_STREAM"

H_ID = "Kg-Es-Id"
H_ID_TYPE = "Kg-Es-Id-Type"
H_VERSION = "Kg-Es-Version"
H_TOPIC = "Kg-Es-Topic"
H_APPLICATION = "Kg-Es-Application"
H_TRACKING = "Kg-Es-Tracking"

INSERT_ATTEMPTS = 8
"""How often an insert re-reads heads after losing a race before it reports a conflict."""

HEAD_CACHE_SIZE = 10_000
INITIAL_VERSIONS = (0, 1)

_SAFE = " :@/+!$&'()*,;=~"


@dataclass(frozen=True)
class Settings:
    url: str = "nats://127.0.0.1:4222"
    creds: str | None = None
    stream: str = subjects.CONTROL_STREAM
    prefix: str = subjects.CONTROL_PREFIX
    replicas: int = 1
    timeout: float = 5.0
    create_stream: bool = True

    @classmethod
    def from_env(cls, env: Environment) -> Settings:
        create = env.get(ES_CREATE_STREAM) or env.get("CREATE_TABLE") or "y"
        return cls(
            url=env.get(NATS_URL) or cls.url,
            creds=env.get(NATS_CREDS) or None,
            stream=env.get(ES_STREAM) or cls.stream,
            prefix=(env.get(ES_SUBJECT_PREFIX) or cls.prefix).rstrip("."),
            replicas=int(env.get(ES_REPLICAS) or cls.replicas),
            timeout=float(env.get(ES_TIMEOUT) or cls.timeout),
            create_stream=strtobool(create),
        )


@dataclass(frozen=True, slots=True)
class Head:
    """Where an aggregate's subject ends: last sequence (any message) and last version."""

    seq: int
    version: int | None


class JetStreamConnection:
    """What a factory's recorders share: the bridge, the log and the stream settings."""

    def __init__(self, settings: Settings, *, name: str) -> None:
        self.settings = settings
        try:
            self.bridge = Bridge(
                settings.url,
                name=name,
                creds=settings.creds,
                call_timeout=settings.timeout * 6,
            ).start()
        except NatsUnavailableError as exc:
            raise EventLogUnavailableError(str(exc)) from exc
        self.log = Log(self.bridge.nc, settings.stream, timeout=settings.timeout)
        self._stream_checked = False
        self._lock = threading.Lock()

    def call(self, coro_fn: Callable[..., Any], *args: Any) -> Any:
        """Run a coroutine on the bridge, turning broker failures into eventsourcing's."""
        try:
            return self.bridge.call(coro_fn, *args)
        except es.PersistenceError:
            raise
        except (BrokerTimeoutError, NatsUnavailableError) as exc:
            raise EventLogUnavailableError(str(exc)) from exc
        except (InvalidBatchError, AtomicBatchDisabledError) as exc:
            raise EventLogDataError(str(exc)) from exc
        except BrokerError as exc:
            raise EventLogUnavailableError(str(exc)) from exc

    def ensure_stream(self) -> None:
        """Create the stream if allowed and missing; check it takes the prefix and batches."""
        with self._lock:
            if self._stream_checked:
                return
            self.call(self._ensure_stream)
            self._stream_checked = True

    async def _ensure_stream(self) -> None:
        s = self.settings
        js = self.bridge.nc.jetstream()
        try:
            info = await js.stream_info(s.stream)
        except JsNotFoundError:
            if not s.create_stream:
                raise EventLogUnavailableError(
                    f"stream {s.stream} does not exist (and stream creation is off)"
                ) from None
            if s.stream == subjects.CONTROL_STREAM:
                await streams.ensure_streams(js, replicas=s.replicas)
            else:
                spec = streams.StreamSpec(s.stream, (f"{s.prefix}.>",), "eventsourcing events")
                await streams.ensure_stream(js, spec, replicas=s.replicas)
            info = await js.stream_info(s.stream)
        config: jsapi.StreamConfig = info.config
        probe = subjects.es_tracking_subject(s.prefix, "probe")
        if not any(subject_matches(p, probe) for p in config.subjects or []):
            raise EventLogDataError(f"stream {s.stream} does not take subjects {s.prefix}.>")
        if not config.allow_atomic:
            raise EventLogDataError(f"stream {s.stream} does not allow atomic batches")

    def close(self) -> None:
        self.bridge.close()


# --- headers ----------------------------------------------------------------------------------


def _event_headers(stored: es.StoredEvent) -> dict[str, str]:
    headers = {
        H_ID: quote(str(stored.originator_id), safe=_SAFE),
        H_VERSION: str(stored.originator_version),
        H_TOPIC: quote(stored.topic, safe=_SAFE),
    }
    if isinstance(stored.originator_id, uuid.UUID):
        headers[H_ID_TYPE] = "uuid"
    return headers


def _is_event(message: StoredMessage) -> bool:
    return H_VERSION in message.headers and H_TOPIC in message.headers and H_ID in message.headers


def _originator_id(headers: Mapping[str, str]) -> uuid.UUID | str:
    value = unquote(headers[H_ID])
    return uuid.UUID(value) if headers.get(H_ID_TYPE) == "uuid" else value


def _stored_event(message: StoredMessage) -> es.StoredEvent:
    h = message.headers
    return es.StoredEvent(
        originator_id=_originator_id(h),
        originator_version=int(h[H_VERSION]),
        topic=unquote(h[H_TOPIC]),
        state=message.data,
    )


def _notification(message: StoredMessage) -> es.Notification:
    h = message.headers
    return es.Notification(
        id=message.seq,
        originator_id=_originator_id(h),
        originator_version=int(h[H_VERSION]),
        topic=unquote(h[H_TOPIC]),
        state=message.data,
    )


# --- recorders --------------------------------------------------------------------------------


class JetStreamRecorder:
    """Common ground: the shared connection, subjects under the prefix, cached heads."""

    def __init__(self, connection: JetStreamConnection, *, purpose: str = "events") -> None:
        self.connection = connection
        self.purpose = purpose
        self.prefix = connection.settings.prefix
        self._log = connection.log
        self._heads: OrderedDict[uuid.UUID | str, Head] = OrderedDict()  # loop thread only

    def _subject(self, originator_id: uuid.UUID | str) -> str:
        if self.purpose == "events":
            return subjects.es_event_subject(self.prefix, originator_id)
        return subjects.es_purpose_subject(self.prefix, self.purpose, originator_id)

    def _tracking_subject(self, application_name: str) -> str:
        return subjects.es_tracking_subject(self.prefix, application_name)

    def _remember(self, originator_id: uuid.UUID | str, head: Head) -> None:
        self._heads[originator_id] = head
        self._heads.move_to_end(originator_id)
        while len(self._heads) > HEAD_CACHE_SIZE:
            self._heads.popitem(last=False)

    async def _head(
        self, originator_id: uuid.UUID | str, *, fresh: bool, creating: int | None = None
    ) -> Head:
        """The aggregate's head, from the cache unless `fresh`. An insert starting at an initial
        version (`creating` 0 or 1) of an aggregate not in the cache assumes an empty subject
        without asking: if that is wrong the append conflicts and the insert asks afresh."""
        if not fresh and originator_id in self._heads:
            self._heads.move_to_end(originator_id)
            return self._heads[originator_id]
        if not fresh and creating in INITIAL_VERSIONS:
            return Head(0, None)
        subject = self._subject(originator_id)
        last = await self._log.last_message(subject)
        if last is None:
            head = Head(0, None)
        elif _is_event(last):
            head = Head(last.seq, int(last.headers[H_VERSION]))
        else:  # another writer's message ends the subject: find our last version
            ours = [m for m in await self._log.read_subject(subject) if _is_event(m)]
            head = Head(last.seq, int(ours[-1].headers[H_VERSION]) if ours else None)
        self._remember(originator_id, head)
        return head

    async def _tracking_head(self, application_name: str) -> tuple[int, int | None]:
        last = await self._log.last_message(self._tracking_subject(application_name))
        if last is None or H_TRACKING not in last.headers:
            return (last.seq if last else 0), None
        return last.seq, int(last.headers[H_TRACKING])

    async def _insert(
        self, stored_events: Sequence[es.StoredEvent], tracking: es.Tracking | None
    ) -> list[int]:
        groups = _grouped(stored_events)
        size = len(stored_events) + (1 if tracking else 0)
        if size > MAX_BATCH:
            raise EventLogDataError(
                f"{size} records in one insert; one atomic batch holds at most {MAX_BATCH}"
            )
        call_id = uuid.uuid4().hex
        for attempt in range(INSERT_ATTEMPTS):
            fresh = attempt > 0
            heads = {
                oid: await self._head(oid, fresh=fresh, creating=events[0].originator_version)
                for oid, events in groups.items()
            }
            for oid, events in groups.items():
                head = heads[oid]
                if head.version is not None and events[0].originator_version <= head.version:
                    raise EventConflictError(
                        f"version {events[0].originator_version} of {oid} is not above the "
                        f"recorded version {head.version}"
                    )
            messages: list[Outgoing] = []
            expected: set[uuid.UUID | str] = set()
            for number, stored in enumerate(stored_events):
                oid = stored.originator_id
                expect = None if oid in expected else heads[oid].seq
                expected.add(oid)
                msg_id = getattr(stored, "msg_id", "") or f"{call_id}-{number}"
                messages.append(
                    Outgoing(
                        self._subject(oid),
                        stored.state,
                        msg_id=msg_id,
                        expect_last_seq=expect,
                        headers=_event_headers(stored),
                    )
                )
            if tracking is not None:
                seq, position = await self._tracking_head(tracking.application_name)
                if position is not None and tracking.notification_id <= position:
                    raise EventConflictError(
                        f"tracking {tracking.notification_id} of {tracking.application_name!r} "
                        f"is not above the recorded position {position}"
                    )
                messages.append(
                    Outgoing(
                        self._tracking_subject(tracking.application_name),
                        b"",
                        msg_id=f"{call_id}-tracking",
                        expect_last_seq=seq,
                        headers={
                            H_APPLICATION: quote(tracking.application_name, safe=_SAFE),
                            H_TRACKING: str(tracking.notification_id),
                        },
                    )
                )
            try:
                appended = await self._log.append_batch(messages)
            except ConcurrencyError as conflict:
                log.debug(
                    "insert lost a race; re-reading heads",
                    extra={"subject": conflict.subject, "attempt": attempt + 1},
                )
                continue
            seqs = [a.seq for a in appended]
            for oid, events in groups.items():
                last_index = max(i for i, s in enumerate(stored_events) if s.originator_id == oid)
                self._remember(oid, Head(seqs[last_index], events[-1].originator_version))
            return seqs[: len(stored_events)]
        raise EventConflictError(
            f"insert lost {INSERT_ATTEMPTS} races in a row on {list(groups)[:3]}; giving up"
        )

    async def _select(
        self,
        originator_id: uuid.UUID | str,
        gt: int | None,
        lte: int | None,
        desc: bool,
        limit: int | None,
    ) -> list[es.StoredEvent]:
        subject = self._subject(originator_id)
        if desc and limit == 1 and lte is None:
            last = await self._log.last_message(subject)
            if last is not None and _is_event(last):
                version = int(last.headers[H_VERSION])
                self._remember(originator_id, Head(last.seq, version))
                return [_stored_event(last)] if gt is None or version > gt else []
        messages = await self._log.read_subject(subject)
        events = [_stored_event(m) for m in messages if _is_event(m)]
        if messages:
            last_version = events[-1].originator_version if events else None
            self._remember(originator_id, Head(messages[-1].seq, last_version))
        selected = [
            e
            for e in events
            if (gt is None or e.originator_version > gt)
            and (lte is None or e.originator_version <= lte)
        ]
        if desc:
            selected.reverse()
        return selected[:limit] if limit is not None else selected


def _grouped(
    stored_events: Sequence[es.StoredEvent],
) -> dict[uuid.UUID | str, list[es.StoredEvent]]:
    """Events per aggregate, in order; versions must rise within an aggregate."""
    groups: dict[uuid.UUID | str, list[es.StoredEvent]] = {}
    for stored in stored_events:
        events = groups.setdefault(stored.originator_id, [])
        if events and stored.originator_version <= events[-1].originator_version:
            raise EventConflictError(
                f"versions of {stored.originator_id} do not rise within one insert "
                f"({events[-1].originator_version}, then {stored.originator_version})"
            )
        events.append(stored)
    return groups


class JetStreamAggregateRecorder(JetStreamRecorder, es.AggregateRecorder):
    def insert_events(
        self, stored_events: Sequence[es.StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if stored_events:
            self.connection.call(self._insert, stored_events, None)
        return None

    def select_events(
        self,
        originator_id: uuid.UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[es.StoredEvent]:
        return self.connection.call(self._select, originator_id, gt, lte, desc, limit)


class JetStreamApplicationRecorder(JetStreamAggregateRecorder, es.ApplicationRecorder):
    """Aggregate sequences plus the application sequence: the stream's own order."""

    def insert_events(
        self, stored_events: Sequence[es.StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        if not stored_events:
            return []
        return self.connection.call(self._insert, stored_events, None)

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[es.Notification]:
        if start is None:
            first = 1
        else:
            first = start if inclusive_of_start else start + 1
        return self.connection.call(self._notifications, max(first, 1), limit, stop, topics)

    async def _notifications(
        self, first: int, limit: int, stop: int | None, topics: Sequence[str]
    ) -> list[es.Notification]:
        out: list[es.Notification] = []
        wanted = set(topics)
        seq = first
        event_subjects = subjects.es_events_filter(self.prefix)
        while len(out) < limit and (stop is None or seq <= stop):
            page, pending = await self._log.page(
                seq, subject=event_subjects, limit=min(max(limit - len(out), 1), 512)
            )
            for message in page:
                if stop is not None and message.seq > stop:
                    return out
                if not _is_event(message):
                    continue
                notification = _notification(message)
                if wanted and notification.topic not in wanted:
                    continue
                out.append(notification)
                if len(out) == limit:
                    return out
            if not page or pending == 0:
                break
            seq = page[-1].seq + 1
        return out

    def max_notification_id(self) -> int | None:
        last = self.connection.call(self._log.last_message, subjects.es_events_filter(self.prefix))
        return last.seq if last is not None else None

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> es.Subscription[es.ApplicationRecorder]:
        return JetStreamSubscription(self, gt=gt, topics=topics)


class JetStreamSubscription(es.ListenNotifySubscription[JetStreamApplicationRecorder]):
    """Pulls notifications from the log; an ordered headers-only consumer on the event subjects
    wakes the puller when something new is stored (it fires only after a message is stored, so
    a wake-up never comes too early)."""

    def __init__(
        self,
        recorder: JetStreamApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        self._bridge = recorder.connection.bridge
        self._notifier: Any = recorder.connection.call(self._watch, recorder)
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._has_been_notified.set()  # covers anything stored before the puller started

    async def _watch(self, recorder: JetStreamApplicationRecorder) -> Any:
        async def wake(_msg: Any) -> None:
            event = getattr(self, "_has_been_notified", None)
            if event is not None:
                event.set()

        return await self._bridge.nc.jetstream().subscribe(
            subjects.es_events_filter(recorder.prefix),
            stream=recorder.connection.settings.stream,
            cb=wake,
            ordered_consumer=True,
            headers_only=True,
            deliver_policy=jsapi.DeliverPolicy.NEW,
        )

    def stop(self) -> None:
        super().stop()
        notifier, self._notifier = self._notifier, None
        if notifier is not None:
            try:
                self._bridge.call(notifier.unsubscribe, timeout=5.0)
            except Exception as exc:  # the bridge may already be closed
                log.debug("notifier unsubscribe failed", extra={"error": repr(exc)})


class JetStreamTrackingRecorder(JetStreamRecorder, es.TrackingRecorder):
    """Tracking positions per upstream application, each on its own subject: a position is
    appended only above the last one (conflict-checked), so it can never go back."""

    def insert_tracking(self, tracking: es.Tracking) -> None:
        self.connection.call(self._insert, (), tracking)

    def max_tracking_id(self, application_name: str) -> int | None:
        _, position = self.connection.call(self._tracking_head, application_name)
        return position


class JetStreamProcessRecorder(
    JetStreamTrackingRecorder, JetStreamApplicationRecorder, es.ProcessRecorder
):
    """New events and the tracking position they result from, in one atomic batch."""

    def insert_events(
        self, stored_events: Sequence[es.StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: es.Tracking | None = kwargs.get("tracking")
        if not stored_events and tracking is None:
            return []
        return self.connection.call(self._insert, stored_events, tracking)


class JetStreamFactory(es.InfrastructureFactory[JetStreamTrackingRecorder]):
    """Makes JetStream recorders sharing one connection; `close()` closes it."""

    def __init__(self, env: Environment | Mapping[str, str] | None) -> None:
        super().__init__(env)  # type: ignore[arg-type]
        self.settings = Settings.from_env(self.env)
        name = f"kubegate-es-{self.env.name or 'app'}".lower()
        self.connection = JetStreamConnection(self.settings, name=name)

    def _ready(self) -> JetStreamConnection:
        self.connection.ensure_stream()
        return self.connection

    def aggregate_recorder(self, purpose: str = "events") -> es.AggregateRecorder:
        return JetStreamAggregateRecorder(self._ready(), purpose=purpose)

    def application_recorder(self) -> es.ApplicationRecorder:
        return JetStreamApplicationRecorder(self._ready())

    def tracking_recorder(
        self, tracking_recorder_class: type[JetStreamTrackingRecorder] | None = None
    ) -> JetStreamTrackingRecorder:
        if tracking_recorder_class is None:
            topic = self.env.get(self.TRACKING_RECORDER_TOPIC)
            tracking_recorder_class = resolve_topic(topic) if topic else JetStreamTrackingRecorder
        if not (
            isinstance(tracking_recorder_class, type)
            and issubclass(tracking_recorder_class, JetStreamTrackingRecorder)
        ):
            raise es.ProgrammingError(
                f"{tracking_recorder_class!r} is not a JetStreamTrackingRecorder"
            )
        return tracking_recorder_class(self._ready())

    def process_recorder(self) -> es.ProcessRecorder:
        return JetStreamProcessRecorder(self._ready())

    def close(self) -> None:
        self.connection.close()
