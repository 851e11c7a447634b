"""PolicyProjection tells its listeners when access may have shrunk: at once for a batch of
events, at the deadline for a grant that expires on its own."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from domain import codec
from domain import events as ev
from projections.policy import PolicyProjection
from projections.records import LogRecord
from tests.projections.helpers import T0, eventually, publish

Heard = list[frozenset[str] | None]


def _record(seq: int, event: ev.Event) -> LogRecord:
    return LogRecord("control", seq, "kg.evt.test", 0, event, codec.encode(event))


def _projection(evlog, heard: Heard) -> PolicyProjection:
    projection = PolicyProjection(evlog.nc, name="policy-test", registry=CollectorRegistry())
    projection.on_change(heard.append)
    return projection


def _grant(grant_id: str, user: str, expires_at: datetime | None = None) -> ev.GrantIssued:
    return ev.GrantIssued(
        id=f"e-{grant_id}",
        time=T0,
        actor="admin",
        grant_id=grant_id,
        subject_kind="user",
        subject=user,
        role="view",
        clusters=("*",),
        expires_at=expires_at,
    )


async def test_a_shrinking_batch_is_told_before_apply_batch_returns(evlog) -> None:
    """No task hop between applying a revocation and the listeners: on a host with many relays,
    every hop waits behind every other relay's work, and the cut is the urgent part."""
    heard: Heard = []
    projection = _projection(evlog, heard)
    registered = ev.UserRegistered(id="e1", time=T0, actor="admin", user="alice")
    projection.apply_batch([_record(1, registered), _record(2, _grant("g1", "alice"))])
    assert heard == [], "granting access shrinks no one's"

    revoked = ev.UserAccessRevoked(id="e3", time=T0, actor="admin", user="alice", reason="r")
    disabled = ev.UserDisabled(id="e4", time=T0, actor="admin", user="bob")
    projection.apply_batch([_record(3, revoked), _record(4, disabled)])
    assert heard == [frozenset({"alice", "bob"})]

    removed = ev.GrantRevoked(id="e5", time=T0, actor="admin", grant_id="g1")
    projection.apply_batch([_record(5, removed)])
    assert heard[-1] is None, "a grant's removal may touch anyone: everyone is re-judged"


async def test_log_events_reach_listeners_and_a_grant_expires_on_its_own(evlog) -> None:
    heard: Heard = []
    projection = _projection(evlog, heard)
    await projection.start()
    try:
        await publish(
            evlog.js,
            [
                ev.UserRegistered(id="e1", time=T0, actor="admin", user="alice"),
                ev.UserAccessRevoked(id="e2", time=T0, actor="admin", user="alice", reason="r"),
            ],
        )
        await eventually(lambda: frozenset({"alice"}) in heard, lambda: f"heard {heard}")

        heard.clear()
        soon = datetime.now(UTC) + timedelta(seconds=2)  # room for a stalled machine
        bob = ev.UserRegistered(id="e3", time=T0, actor="admin", user="bob")
        await publish(evlog.js, [bob, _grant("g2", "bob", expires_at=soon)])
        await asyncio.sleep(0.2)
        assert heard == [], "nothing shrank yet"
        await eventually(lambda: None in heard, lambda: f"heard {heard} after the expiry")
    finally:
        await projection.stop()
