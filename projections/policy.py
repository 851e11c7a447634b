"""The policy projection: `domain.policy.PolicyState` kept current from KG_CONTROL.

Edges and relays each hold one, in memory. Besides answering `decide`, it tells its owner when
access may have shrunk, so live streams are re-judged: after every batch of applied events that
can remove access, and at every `next_deadline` (a grant's expiry, a session's idle timeout),
when no event is published at all. It also says when it must not be trusted: before it has
caught up with the log at start, and when it has lost the log for longer than the bound (the
edge then fails closed with 503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry

from domain import events
from domain.policy.attributes import RequestAttributes
from domain.policy.decide import Caller, Decision, decide
from domain.policy.state import PolicyState
from projections.records import LogRecord
from projections.runner import ProjectionRunner

log = logging.getLogger("kubegate.projections.policy")

ChangeListener = Callable[[frozenset[str] | None], None]
"""Called with the users whose access may have shrunk, or None for everyone."""

_USER_SCOPED = (
    events.UserDisabled,
    events.UserAccessRevoked,
    events.IdpGroupsSynced,
    events.CertificateRevoked,
    events.ConsoleSessionEnded,
    events.MemberRemoved,
)
_GROW_ONLY = (
    events.UserRegistered,
    events.UserEnabled,
    events.GroupCreated,
    events.MemberAdded,
    events.ClusterRegistered,
    events.GrantIssued,
    events.KubectlEnabled,
    events.LoginSucceeded,
    events.LoginFailed,
    events.ConsoleSessionStarted,
    events.ConsoleSessionTouched,
    events.CertificateIssued,
    events.ServiceAccountProvisioned,
    events.ServiceAccountRemoved,
    events.BreakGlassRequested,
    events.BreakGlassApproved,
    events.BreakGlassDenied,
    events.BreakGlassUsed,
    events.RelayConnected,
    events.RelayDisconnected,
    events.GrantExpired,
    events.PasswordSet,
)


_SCOPE_BY_TYPE: dict[type, str] = {}
"""Event type -> "grow", "user" or "any" (filled on first sight; isinstance over the tuples
above was a measurable share of a rebuild)."""


def _scope(kind: type) -> str:
    if issubclass(kind, _GROW_ONLY):
        return "grow"
    if issubclass(kind, _USER_SCOPED):
        return "user"
    if issubclass(kind, events.Event):
        return "any"
    return "grow"


def shrinks_access_of(event: object) -> frozenset[str] | bool | None:
    """Whose access `event` may reduce: a set of users, None for anyone, False for no one."""
    kind = type(event)
    scope = _SCOPE_BY_TYPE.get(kind)
    if scope is None:
        scope = _SCOPE_BY_TYPE[kind] = _scope(kind)
    if scope == "grow":
        return False
    if scope == "user":
        return frozenset({event.user})  # type: ignore[attr-defined]
    return None


def utcnow() -> datetime:
    return datetime.now(UTC)


class PolicyProjection:
    """Follows the control stream into a `PolicyState`; see the module docstring."""

    applies_inline = True
    """`apply_batch` is synchronous and quick: the runner calls it as events arrive (see
    `ProjectionRunner`), so a revocation reaches the listeners without waiting for a task."""

    def __init__(
        self,
        nc: NatsClient,
        *,
        name: str,
        registry: CollectorRegistry,
        staleness_bound_s: float = 30.0,
        filter_subjects: Sequence[str] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.state = PolicyState()
        self.clock = clock
        self.staleness_bound_s = staleness_bound_s
        self.version = 0
        self._listeners: list[ChangeListener] = []
        self._wake = asyncio.Event()
        self._timed_version = -1
        """The deadlines' version (`PolicyState.timeline_version`) the deadline task timed."""
        self._deadline_task: asyncio.Task[None] | None = None
        self.runner = ProjectionRunner(
            nc,
            self,
            name=name,
            registry=registry,
            streams=("control",),
            filter_subjects={"control": list(filter_subjects)} if filter_subjects else None,
        )

    # -- the model side (called by the runner) -------------------------------------------

    def apply_batch(self, records: Sequence[LogRecord]) -> None:
        shrunk: set[str] | None = set()
        for record in records:
            event = record.event
            if not isinstance(event, events.Event):
                continue
            self.state.apply(event)
            self.version += 1
            who = shrinks_access_of(event)
            if who is False or shrunk is None:
                continue
            if who is None:
                shrunk = None
            else:
                shrunk |= who
        if shrunk is None or shrunk:
            # Told here, not from the deadline task: a cut is the urgent part of a
            # revocation, and on a host running many relays each task hop in between waits
            # behind every other relay's work.
            self._notify(shrunk)
        if self.state.timeline_version != self._timed_version:
            self._wake.set()  # the deadline task: the next deadline may have moved

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self.runner.start()
        self._deadline_task = asyncio.create_task(self._watch(), name="policy-deadlines")

    async def wait_ready(self) -> None:
        """Until the projection has caught up with the log (callers bound it themselves)."""
        await self.runner.wait_caught_up()

    async def stop(self) -> None:
        if self._deadline_task is not None:
            self._deadline_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._deadline_task
            self._deadline_task = None
        await self.runner.stop()

    def on_change(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def _watch(self) -> None:
        """Notify listeners at each time-based deadline (recomputed when the deadlines change)."""
        while True:
            self._timed_version = self.state.timeline_version
            deadline = self.state.next_deadline(self.clock())
            timeout = None
            if deadline is not None:
                timeout = max(0.0, (deadline - self.clock()).total_seconds()) + 0.001
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
                # that lands as the event fires, and this loop would then never stop.
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
                self._wake.clear()
            except TimeoutError:
                self._notify(None)  # a deadline passed: anyone may be affected

    def _notify(self, users: set[str] | None) -> None:
        who = None if users is None else frozenset(users)
        for listener in list(self._listeners):
            try:
                listener(who)
            except Exception:
                log.exception("policy change listener failed")

    # -- the questions the edge and relay ask ---------------------------------------------

    def not_ready_reason(self) -> str | None:
        if self.runner.failed is not None:
            return f"policy projection failed: {self.runner.failed}"
        if not self.runner.caught_up:
            return "policy is still loading from the event log"
        stale = self.runner.staleness()
        if stale > self.staleness_bound_s:
            return f"cut off from the event log for {stale:.0f}s"
        return None

    def decide(
        self, caller: Caller, cluster: str, attrs: RequestAttributes, now: datetime
    ) -> Decision:
        return decide(self.state, caller, cluster, attrs, now)

    def groups_of(self, user: str) -> list[str]:
        return sorted(self.state.groups_of(user))

    def clusters_for(self, user: str) -> list[str]:
        """Clusters where `user` holds a grant active now (for kubeconfig contexts)."""
        now = self.clock()
        subjects = self.state.subjects_of(user)
        found = []
        for name, cluster in sorted(self.state.clusters.items()):
            if any(
                grant.active_at(now)
                for subject in subjects
                for grant in self.state.grants_on(subject, cluster)
            ):
                found.append(name)
        return found
