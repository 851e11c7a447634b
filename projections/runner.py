"""The projection runner: follows KG_CONTROL and/or KG_ACTIVITY and feeds one read model.

How it consumes: per stream, an ephemeral pull consumer (ack policy none, memory storage) that
the runner creates at the sequence after the last one it accepted, and recreates from there
whenever it is lost: a server restart or reconnect (pull heartbeats stop), the consumer deleted
(409), a gap in the consumer sequence (a message dropped on the way). Records arrive in stream
order and a sequence guard drops anything at or below the last accepted one, so a reset never
loses or repeats a record. Deliveries reach the runner through a direct subscription
(`broker.nats_client.subscribe_direct`), without a task switch per message.

Why not durable consumers: the position belongs to the model (memory for policy, the DuckDB file
for audit); a durable keeps a second position on the server that can disagree with it, needs a
unique name per replica, cleanup, and an ack per message. Why not nats-py's ordered push
consumer: push delivers as fast as the server can with no backpressure from a slow model (audit
writing DuckDB), and its reset point is not ours. Pull gives both: the next batch is requested
only when there is room for it, from the sequence we choose.

Freshness: a record delivered with nothing pending after it, or a pull heartbeat while nothing is
pending, is a *head mark*: "at time t the log held nothing after seq s". Once the model has
applied s, t becomes `last_contact`; the edge compares `staleness()` with its bound to fail closed
when it has lost the log.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError
from nats.js import api as jsapi
from nats.nuid import NUID
from prometheus_client import CollectorRegistry

from broker import subjects
from broker.nats_client import subscribe_direct
from broker.tasks import Chores, cancel_and_wait
from domain import codec
from domain.errors import MalformedEventError
from projections.errors import LogPositionError, ModelFailedError
from projections.metrics import metrics_for
from projections.records import LogRecord, Malformed

log = logging.getLogger("kubegate.projections.runner")

STREAMS: Mapping[str, str] = {
    "control": subjects.CONTROL_STREAM,
    "activity": subjects.ACTIVITY_STREAM,
}
"""Stream key (an event's `STREAM`) -> JetStream stream name."""


@runtime_checkable
class Model(Protocol):
    """A read model applying one record at a time, in stream order."""

    def apply(self, record: LogRecord) -> None: ...


@runtime_checkable
class BatchModel(Protocol):
    """A read model applying records in batches (one stream per batch, in order).

    May return an awaitable (audit runs DuckDB in a worker thread meanwhile).
    """

    def apply_batch(self, records: Sequence[LogRecord]) -> Awaitable[None] | None: ...


@runtime_checkable
class SettlingModel(BatchModel, Protocol):
    """A batch model that may hold applied batches back (audit gathers them into one large
    DuckDB commit while catching up) until `settle`, which the runner calls once nothing more
    is right behind them, after every batch once caught up (live batches already gather
    `linger_s` of records), when no batch came for `linger_s`, and when it stops."""

    def settle(self) -> Awaitable[None] | None: ...


class StreamCounts(msgspec.Struct, kw_only=True):
    applied: int = 0
    malformed: int = 0
    unknown: int = 0
    resets: int = 0


_Raw = tuple[int, str, int, bytes, int]
"""(stream seq, subject, stored at ns, data, pending after it) of one delivered message."""


_TRANSIENT_409 = ("Leadership Change", "Server Shutdown", "Exceeded MaxWaiting")
"""409 descriptions that end one pull request but leave the consumer usable."""


class _Follower:
    """One stream's consumer: receives in order, queues batches, resets itself when lost."""

    def __init__(self, runner: ProjectionRunner, stream: str, start_after: int) -> None:
        self.runner = runner
        self.stream = stream
        self.stream_name = STREAMS[stream]
        self.accepted = start_after
        self.applied = start_after
        self.unapplied = 0
        self.target: int | None = None
        self.caught_up = False
        self.contact: float | None = None
        self.head_mark: tuple[float, int] | None = None
        self.server_pending = 0
        self.partial: list[_Raw] = []
        self.ready: deque[list[_Raw]] = deque()
        self.counts = StreamCounts()
        self.sub: Subscription | None = None
        self.consumer: str | None = None
        self.broken = False
        self.expected_cseq = 1
        self.pull_open = False
        self.pull_remaining = 0
        self.pull_deferred = False
        self.last_heard = 0.0
        self.trouble = asyncio.Event()
        self.trouble_reason = ""
        self.trouble_detail = ""
        self.pull_subject = ""

    # --- freshness ------------------------------------------------------------------------

    @property
    def lag(self) -> int:
        return self.server_pending + self.unapplied

    def mark_head(self, at: float, seq: int) -> None:
        """At time `at` the server had nothing after `seq` for us."""
        self.server_pending = 0
        if self.applied >= seq:
            self.touch(at)
        else:
            self.head_mark = (at, seq)

    def touch(self, at: float) -> None:
        if self.contact is None or at > self.contact:
            self.contact = at
        self.set_caught_up()

    def set_caught_up(self) -> None:
        if not self.caught_up:
            self.caught_up = True
            log.info(
                "projection stream caught up",
                extra={"projection": self.runner.name, "stream": self.stream, "seq": self.applied},
            )
            self.runner._check_caught_up()

    def after_apply(self, seq: int, count: int) -> None:
        self.applied = seq
        self.unapplied -= count
        if self.head_mark is not None and self.head_mark[1] <= seq:
            at, _ = self.head_mark
            self.head_mark = None
            self.touch(at)
        if self.target is not None and seq >= self.target:
            self.set_caught_up()

    # --- receiving --------------------------------------------------------------------------

    def room(self) -> bool:
        return self.unapplied < 2 * self.runner.batch_size

    def flush(self) -> None:
        if self.partial:
            raws, self.partial = self.partial, []
            runner = self.runner
            if not self.ready and runner._applies_inline():
                runner._apply_inline(self, raws)
                return
            self.ready.append(raws)
            runner._wake.set()

    def fail(self, reason: str, detail: str) -> None:
        if not self.broken:
            self.broken = True
            self.trouble_reason, self.trouble_detail = reason, detail
            self.trouble.set()

    async def pull(self) -> None:
        sub = self.sub
        if sub is None or self.broken:
            return
        self.pull_open, self.pull_deferred = True, False
        self.pull_remaining = self.runner.batch_size
        self.last_heard = self.runner.clock()
        try:
            await self.runner.nc.publish(
                self.pull_subject, self.runner._pull_request, reply=sub.subject
            )
        except NatsError as exc:
            self.fail("error", f"pull request not sent: {exc!r}")

    async def pull_ended(self) -> None:
        self.pull_open = False
        self.flush()
        if self.room():
            await self.pull()
        else:
            self.pull_deferred = True

    def on_msg(self, msg: Msg) -> None:
        """The subscription's direct handler (`broker.nats_client.subscribe_direct`): queues,
        or applies at once for a model that asks for it (`ProjectionRunner`); a new pull
        request, which must wait for the connection, runs as a task."""
        if self.broken:
            return
        runner = self.runner
        self.last_heard = runner.clock()
        headers = msg.headers
        status = headers.get("Status") if headers else None
        if status:
            self.on_status(status, headers.get("Description", "") if headers else "")
            return
        reply = msg.reply
        tokens = reply.split(".")
        try:
            if len(tokens) == 9:
                consumer, sseq, cseq, ts, pending = tokens[3], *map(int, tokens[5:9])
            elif len(tokens) >= 11:
                consumer, sseq, cseq, ts, pending = tokens[5], *map(int, tokens[7:11])
            else:
                raise ValueError(reply)
        except ValueError:
            self.fail("status", f"message without JetStream metadata: {reply!r}")
            return
        if consumer != self.consumer:
            return
        if cseq != self.expected_cseq:
            self.fail("gap", f"consumer sequence {cseq}, expected {self.expected_cseq}")
            return
        self.expected_cseq = cseq + 1
        self.pull_remaining -= 1
        if sseq > self.accepted:
            self.partial.append((sseq, msg.subject, ts, msg.data, pending))
            self.accepted = sseq
            self.unapplied += 1
        if pending == 0:
            self.flush()
            self.mark_head(self.last_heard, sseq)
        else:
            self.server_pending = pending
            if len(self.partial) >= runner.batch_size:
                self.flush()
        if self.pull_remaining <= 0:
            runner._chores.start(self.pull_ended())

    def on_status(self, status: str, description: str) -> None:
        if status == "100":
            # pull heartbeats come only while the server has nothing for this pull
            self.flush()
            self.mark_head(self.runner.clock(), self.accepted)
            return
        if status in ("404", "408"):
            # the pull ended (expired) with everything available delivered
            self.flush()
            self.mark_head(self.runner.clock(), self.accepted)
            self.runner._chores.start(self.pull_ended())
            return
        if status == "409" and "Consumer Deleted" in description:
            self.fail("consumer-deleted", description)
            return
        if status == "409" and any(t in description for t in _TRANSIENT_409):
            # this pull is over for a passing reason: ask again
            log.debug(
                "pull ended by server",
                extra={"projection": self.runner.name, "stream": self.stream, "why": description},
            )
            self.runner._chores.start(self.pull_ended())
            return
        self.fail("status", f"{status} {description}".strip())

    # --- consumer lifecycle -----------------------------------------------------------------

    async def open(self) -> None:
        runner = self.runner
        js = runner.js
        state = (await js.stream_info(self.stream_name)).state
        ahead = self.accepted > state.last_seq
        lost = state.messages > 0 and self.accepted < state.first_seq - 1
        if ahead or lost:
            raise LogPositionError(
                runner.name, self.stream, self.accepted, state.first_seq, state.last_seq
            )
        if self.target is None:
            self.target = state.last_seq
            self.server_pending = max(0, self.target - self.accepted)
            if self.target <= self.applied:
                self.mark_head(runner.clock(), self.accepted)
        self.broken = False
        self.trouble.clear()
        self.expected_cseq = 1
        name = runner._nuid.next().decode()
        self.sub = await subscribe_direct(runner.nc, runner.nc.new_inbox(), self.on_msg)
        start = self.accepted + 1
        config = jsapi.ConsumerConfig(
            name=name,
            deliver_policy=jsapi.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=start,
            ack_policy=jsapi.AckPolicy.NONE,
            mem_storage=True,
            inactive_threshold=runner.inactive_threshold_s,
            num_replicas=1,
        )
        filters = runner.filter_subjects.get(self.stream)
        if filters:
            config.filter_subjects = list(filters)
        await js.add_consumer(self.stream_name, config)
        self.consumer = name
        self.pull_subject = f"{runner.api_prefix}.CONSUMER.MSG.NEXT.{self.stream_name}.{name}"
        log.debug(
            "consumer created",
            extra={"projection": runner.name, "stream": self.stream, "start_seq": start},
        )
        if self.room():
            await self.pull()
        else:
            self.pull_deferred = True

    async def close(self) -> None:
        self.broken = True
        self.pull_open = self.pull_deferred = False
        self.flush()
        sub, self.sub = self.sub, None
        name, self.consumer = self.consumer, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except NatsError:
                pass
        if name is not None and self.runner.nc.is_connected:
            try:
                async with asyncio.timeout(1.0):
                    await self.runner.js.delete_consumer(self.stream_name, name)
            except (NatsError, TimeoutError):
                pass  # ephemeral: the server drops it after inactive_threshold anyway

    async def watch(self) -> tuple[str, str]:
        """Wait until the consumer is in trouble or has gone silent; say why."""
        runner = self.runner
        window = 3 * runner.heartbeat_s
        while not runner._stopping:
            try:
                async with asyncio.timeout(runner.heartbeat_s):
                    await self.trouble.wait()
                return self.trouble_reason, self.trouble_detail
            except TimeoutError:
                pass
            if self.pull_open and runner.clock() - self.last_heard > window:
                return "heartbeat", f"no message or heartbeat for {window:g}s"
        return "stopping", ""

    async def supervise(self) -> None:
        """Keep a consumer open for this stream until cancelled.

        A consumer that fails soon after it was opened is retried with a growing pause, so a
        persistent problem (server down, stream missing) does not spin.
        """
        runner = self.runner
        backoff = 0.0
        while not runner._stopping:
            opened_at = runner.clock()
            try:
                await self.open()
                reason, detail = await self.watch()
            except (NatsError, TimeoutError, OSError) as exc:
                reason, detail = "error", repr(exc)
            await self.close()
            if runner._stopping:
                return
            lived = runner.clock() - opened_at
            backoff = (
                0.0
                if lived > 2 * runner.max_backoff_s
                else min(max(2 * backoff, 0.05), runner.max_backoff_s)
            )
            log.warning(
                "consumer lost, resuming",
                extra={
                    "projection": runner.name,
                    "stream": self.stream,
                    "reason": reason,
                    "detail": detail,
                    "resume_after_seq": self.accepted,
                    "retry_in_s": backoff,
                },
            )
            self.counts.resets += 1
            runner.metrics.resets.labels(runner.name, self.stream, reason).inc()
            if backoff:
                await asyncio.sleep(backoff)


class ProjectionRunner:
    """Follows one or both log streams and hands every record, in order, to `model`.

    `model` implements `apply(record)` or `apply_batch(records)` (preferred when present).
    `start_after` maps a stream to the last sequence the model already holds (from its own
    persisted position); records at or below it are never handed over again.
    `linger_s` (once caught up) waits that long after records arrive before applying them, so a
    model with a high fixed cost per batch writes a trickle as few batches, not one per record.

    A model whose `apply_batch` is synchronous and quick may say so with a true
    `applies_inline` attribute: each batch then goes to it from the subscription's handler, as
    the batch arrives, instead of through the apply loop's task (one task switch less between
    an event reaching the process and the model holding it; the policy projection's listeners
    cut streams there). Batches queued behind a slower one still wait their turn in order.
    """

    def __init__(
        self,
        nc: NatsClient,
        model: Model | BatchModel,
        *,
        name: str,
        registry: CollectorRegistry,
        streams: Sequence[str] = ("control",),
        start_after: Mapping[str, int] | None = None,
        filter_subjects: Mapping[str, Sequence[str]] | None = None,
        batch_size: int = 1000,
        linger_s: float = 0.0,
        heartbeat_s: float = 1.0,
        pull_expires_s: float = 30.0,
        inactive_threshold_s: float = 60.0,
        max_backoff_s: float = 2.0,
        domain: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = [s for s in streams if s not in STREAMS]
        if unknown or not streams:
            raise ValueError(f"streams must be among {sorted(STREAMS)}, got {list(streams)}")
        if not hasattr(model, "apply_batch") and not hasattr(model, "apply"):
            raise TypeError("model needs apply(record) or apply_batch(records)")
        if pull_expires_s <= 2 * heartbeat_s:
            raise ValueError("pull_expires_s must exceed twice heartbeat_s")
        self.nc = nc
        self.js = nc.jetstream(domain=domain)
        self.api_prefix = f"$JS.{domain}.API" if domain else "$JS.API"
        self.model = model
        self.name = name
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.heartbeat_s = heartbeat_s
        self.inactive_threshold_s = inactive_threshold_s
        self.max_backoff_s = max_backoff_s
        self.filter_subjects = dict(filter_subjects or {})
        self.clock = clock
        self.metrics = metrics_for(registry)
        self._pull_request = msgspec.json.encode(
            {
                "batch": batch_size,
                "expires": int(pull_expires_s * 1e9),
                "idle_heartbeat": int(heartbeat_s * 1e9),
            }
        )
        self._nuid = NUID()
        start = dict(start_after or {})
        self._followers = {s: _Follower(self, s, int(start.get(s, 0))) for s in streams}
        self._wake = asyncio.Event()
        self.caught_up_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failed: BaseException | None = None
        self._apply_batch = getattr(model, "apply_batch", None)
        self._apply = getattr(model, "apply", None)
        self._applied_counters = {  # per batch on the hot path: children looked up once
            stream: self.metrics.applied.labels(name, stream) for stream in self._followers
        }
        self._settle = getattr(model, "settle", None) if self._apply_batch else None
        self._inline = (
            bool(getattr(model, "applies_inline", False))
            and self._apply_batch is not None
            and self._settle is None
            and linger_s <= 0
        )
        self._inline_failure: ModelFailedError | None = None
        self._chores = Chores(f"projection {name}")
        """Pull requests started by the subscription's handler."""
        self._unsettled = False
        """Whether the model holds batches it was not told to settle."""
        self._last_handed = 0.0
        for stream, follower in self._followers.items():
            self.metrics.lag.labels(name, stream).set_function(lambda f=follower: f.lag)
            self.metrics.position.labels(name, stream).set_function(lambda f=follower: f.applied)
        self.metrics.caught_up.labels(name).set_function(lambda: 1.0 if self.caught_up else 0.0)
        self.metrics.contact_age.labels(name).set_function(self.staleness)

    # --- state --------------------------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        """True once every followed stream was applied up to where it stood at start; stays
        true while the runner runs (staleness tells whether it still hears the log)."""
        return self.caught_up_event.is_set()

    @property
    def failed(self) -> BaseException | None:
        """Why the runner stopped on its own (a model error), if it did."""
        return self._failed

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def positions(self) -> dict[str, int]:
        """Last applied sequence per stream."""
        return {s: f.applied for s, f in self._followers.items()}

    def lags(self) -> dict[str, int]:
        """Messages per stream not yet applied (stream last seq - applied, when unfiltered)."""
        return {s: f.lag for s, f in self._followers.items()}

    def counts(self) -> dict[str, StreamCounts]:
        return {s: msgspec.structs.replace(f.counts) for s, f in self._followers.items()}

    @property
    def last_contact(self) -> float | None:
        """`clock()` time at which the model last held everything in the log (the oldest over
        the followed streams); None before the first time."""
        contacts = [f.contact for f in self._followers.values()]
        if any(c is None for c in contacts):
            return None
        return min(c for c in contacts if c is not None)

    def staleness(self) -> float:
        """Seconds since `last_contact` (infinite before it, and after the runner stopped)."""
        contact = self.last_contact
        if contact is None or not self.running:
            return math.inf
        return max(0.0, self.clock() - contact)

    def _check_caught_up(self) -> None:
        if self.running and all(f.caught_up for f in self._followers.values()):
            self.caught_up_event.set()

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("runner already started")
        self._task = asyncio.create_task(self._run(), name=f"projection-{self.name}")
        await asyncio.sleep(0)

    async def stop(self) -> None:
        task = self._task
        if task is None:
            return
        self._stopping = True
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            if not task.cancelled():
                raise
        except Exception:  # kept in `failed` and logged by _run
            pass
        if self._unsettled and self._failed is None:
            try:
                await self._settle_model()
            except ModelFailedError as exc:
                log.error(
                    "model not settled at stop", extra={"projection": self.name, "error": str(exc)}
                )

    async def wait(self) -> None:
        """Until the runner stops; raises `ModelFailedError` or `LogPositionError` if that is
        what stopped it."""
        if self._task is not None:
            await self._task

    async def wait_caught_up(self) -> None:
        """Until caught up; raises what stopped the runner if it dies first (bound the wait
        with `asyncio.timeout`)."""
        waiter = asyncio.ensure_future(self.caught_up_event.wait())
        tasks: set[asyncio.Future[Any]] = {waiter}
        if self._task is not None:
            tasks.add(self._task)
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self.caught_up and self._failed is not None:
            raise self._failed

    async def __aenter__(self) -> ProjectionRunner:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        tasks = [
            asyncio.create_task(f.supervise(), name=f"projection-{self.name}-{s}")
            for s, f in self._followers.items()
        ]
        tasks.append(asyncio.create_task(self._apply_loop(), name=f"projection-{self.name}-apply"))
        try:
            self._check_caught_up()
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    self._failed = exc
                    log.error(
                        "projection stopped", extra={"projection": self.name, "error": str(exc)}
                    )
                    raise exc
        finally:
            self.caught_up_event.clear()
            self._stopping = True
            # the stopping flag ends the loops; a task that swallowed its cancellation is
            # cancelled again (exceptions: reported above or irrelevant once stopping)
            await cancel_and_wait(*tasks, *self._chores, every_s=1.0)
            for follower in self._followers.values():
                await follower.close()

    # --- applying -------------------------------------------------------------------------------

    async def _apply_loop(self) -> None:
        followers = list(self._followers.values())
        while True:
            if not self._unsettled:
                await self._wake.wait()
                if self._inline_failure is not None:  # set by `_apply_inline`, which woke us
                    raise self._inline_failure
            else:
                idle = self._last_handed + self.linger_s - self.clock()
                try:
                    async with asyncio.timeout(max(idle, 0.0)):
                        await self._wake.wait()
                except TimeoutError:
                    await self._settle_model()  # nothing came for a linger: make it visible
                    continue
            if self._lingering(followers):
                await asyncio.sleep(self.linger_s)  # let a trickle gather into one batch
            self._wake.clear()
            progress = True
            while progress:
                progress = False
                for follower in followers:
                    if not follower.ready:
                        continue
                    raws = follower.ready.popleft()
                    while follower.ready and len(raws) + len(follower.ready[0]) <= self.batch_size:
                        raws.extend(follower.ready.popleft())
                    await self._apply_raws(follower, raws)
                    progress = True
                    if follower.pull_deferred and follower.room():
                        await follower.pull()
                if progress and self._lingering(followers):
                    if any(f.ready for f in followers):
                        self._wake.set()  # what came in meanwhile: after the next linger
                    break

    def _lingering(self, followers: list[_Follower]) -> bool:
        """Whether to wait `linger_s` before the next batch (a trickle, once caught up)."""
        if self.linger_s <= 0 or not self.caught_up:
            return False
        return all(sum(map(len, f.ready)) < self.batch_size for f in followers)

    def _applies_inline(self) -> bool:
        """Whether a batch may go to the model right where it arrived (`applies_inline`): only
        while running, with nothing queued before it that the apply loop has yet to hand over.
        """
        return (
            self._inline
            and not self._stopping
            and self._inline_failure is None
            and self.running
            and not any(f.ready for f in self._followers.values())
        )

    def _apply_inline(self, follower: _Follower, raws: list[_Raw]) -> None:
        """Hand `raws` over now, from the subscription's handler; a model failure stops the
        runner through the apply loop, as one there would."""
        records, malformed, unknown = self._decode(follower, raws)
        if records:
            try:
                pending = self._hand_over_now(follower.stream, records)
            except ModelFailedError as exc:
                self._inline_failure = exc
                self._wake.set()
                return
            if pending is not None:  # the model promised to be synchronous
                if inspect.iscoroutine(pending):
                    pending.close()
                first, last = records[0].seq, records[-1].seq
                self._inline_failure = ModelFailedError(
                    self.name, follower.stream, first, f"batch {first}..{last}: not synchronous"
                )
                self._wake.set()
                return
        self._count_applied(follower, raws, len(records), malformed, unknown)
        if follower.pull_deferred and follower.room():
            self._chores.start(follower.pull())

    async def _apply_raws(self, follower: _Follower, raws: list[_Raw]) -> None:
        records, malformed, unknown = self._decode(follower, raws)
        if records:
            await self._hand_over(follower.stream, records)
            if self._settle is not None:
                await self._settle_if_due()
        self._count_applied(follower, raws, len(records), malformed, unknown)

    def _decode(self, follower: _Follower, raws: list[_Raw]) -> tuple[list[LogRecord], int, int]:
        """The records in `raws` past what the model holds, and how many were malformed or of
        unknown types (kept, as `Malformed` / raw)."""
        stream = follower.stream
        decode = codec.decode
        unknown_type = codec.UnknownEvent
        records: list[LogRecord] = []
        append = records.append
        malformed = unknown = 0
        floor = follower.applied
        for seq, subject, ts, data, _ in raws:
            if seq <= floor:
                continue
            floor = seq
            try:
                event = decode(data)
            except MalformedEventError as exc:
                malformed += 1
                log.warning(
                    "malformed event skipped",
                    extra={
                        "projection": self.name,
                        "stream": stream,
                        "seq": seq,
                        "subject": subject,
                        "error": str(exc),
                    },
                )
                append(LogRecord(stream, seq, subject, ts, Malformed(error=str(exc)), data))
                continue
            if type(event) is unknown_type:
                unknown += 1
                log.debug(
                    "unknown event kept raw",
                    extra={"projection": self.name, "stream": stream, "seq": seq},
                )
            append(LogRecord(stream, seq, subject, ts, event, data))
        return records, malformed, unknown

    def _count_applied(
        self, follower: _Follower, raws: list[_Raw], applied: int, malformed: int, unknown: int
    ) -> None:
        stream = follower.stream
        counts = follower.counts
        counts.applied += applied
        counts.malformed += malformed
        counts.unknown += unknown
        labels = (self.name, stream)
        self._applied_counters[stream].inc(applied)
        if malformed:
            self.metrics.malformed.labels(*labels).inc(malformed)
        if unknown:
            self.metrics.unknown.labels(*labels).inc(unknown)
        follower.after_apply(max(raws[-1][0], follower.applied), len(raws))

    async def _settle_if_due(self) -> None:
        """Settle once caught up, or when no record is known to be right behind (queued here
        or pending on the server)."""
        self._last_handed = self.clock()
        self._unsettled = True
        if self.caught_up or not any(f.ready or f.server_pending for f in self._followers.values()):
            await self._settle_model()

    async def _settle_model(self) -> None:
        assert self._settle is not None
        self._unsettled = False
        try:
            result = self._settle()
            if inspect.isawaitable(result):
                await result
        except Exception as exc:
            follower = next(iter(self._followers.values()))
            raise ModelFailedError(
                self.name, follower.stream, follower.applied, f"settle: {exc!r}"
            ) from exc

    async def _hand_over(self, stream: str, records: list[LogRecord]) -> None:
        pending = self._hand_over_now(stream, records)
        if pending is not None:
            try:
                await pending
            except Exception as exc:
                first, last = records[0].seq, records[-1].seq
                raise ModelFailedError(
                    self.name, stream, first, f"batch {first}..{last}: {exc!r}"
                ) from exc

    def _hand_over_now(self, stream: str, records: list[LogRecord]) -> Awaitable[None] | None:
        """Give the model `records`; what a batch model returned to await, if anything."""
        if self._apply_batch is not None:
            try:
                result = self._apply_batch(records)
            except Exception as exc:
                first, last = records[0].seq, records[-1].seq
                raise ModelFailedError(
                    self.name, stream, first, f"batch {first}..{last}: {exc!r}"
                ) from exc
            return result if inspect.isawaitable(result) else None
        apply = self._apply
        assert apply is not None
        for record in records:
            try:
                apply(record)
            except Exception as exc:
                raise ModelFailedError(self.name, stream, record.seq, repr(exc)) from exc
        return None
