"""touch_console_session and expire_console_session: the control plane judges a session's
liveness on its own history (in-memory persistence; the log side runs in tests/edge)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from domain import events
from domain.aggregates import ConsoleSession
from domain.control import ControlPlane
from domain.errors import InvalidCommandError

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def cmd() -> dict[str, str]:
    return {"actor": "tester", "command_id": uuid.uuid4().hex}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def plane(clock: Clock) -> Iterator[ControlPlane]:
    made = ControlPlane({"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=clock)
    made.register_user("ann", **cmd())
    made.start_console_session(
        "s1", **cmd(), user="ann", expires_at=T0 + timedelta(hours=1), idle_timeout_s=600
    )
    yield made
    made.close()


def test_touch_moves_last_activity(plane: ControlPlane, clock: Clock) -> None:
    clock.now = T0 + timedelta(minutes=9)
    result = plane.touch_console_session("s1", **cmd())
    assert [type(e) for e in result.events] == [events.ConsoleSessionTouched]
    found = plane.find(ConsoleSession, "s1")
    assert found is not None and found.last_active == clock.now


def test_touch_refuses_an_idle_session(plane: ControlPlane, clock: Clock) -> None:
    clock.now = T0 + timedelta(minutes=10)
    with pytest.raises(InvalidCommandError, match="idle"):
        plane.touch_console_session("s1", **cmd())


def test_expire_does_nothing_to_a_live_session(plane: ControlPlane, clock: Clock) -> None:
    clock.now = T0 + timedelta(minutes=9)
    assert not plane.expire_console_session("s1", **cmd()).events


def test_expire_ends_idle_then_is_idempotent(plane: ControlPlane, clock: Clock) -> None:
    clock.now = T0 + timedelta(minutes=5)
    plane.touch_console_session("s1", **cmd())
    clock.now = T0 + timedelta(minutes=14)  # 9 minutes after the touch: still live
    assert not plane.expire_console_session("s1", **cmd()).events
    clock.now = T0 + timedelta(minutes=15)
    ended = plane.expire_console_session("s1", actor="sweeper", command_id="over:s1")
    assert [(type(e), e.reason) for e in ended.events] == [(events.ConsoleSessionEnded, "idle")]
    again = plane.expire_console_session("s1", actor="sweeper", command_id="over:s1")
    assert again.duplicate and not again.events
    assert not plane.expire_console_session("s1", **cmd()).events
    with pytest.raises(InvalidCommandError, match="ended"):
        plane.touch_console_session("s1", **cmd())


def test_expire_ends_past_absolute_expiry(plane: ControlPlane, clock: Clock) -> None:
    for minutes in range(5, 60, 5):
        clock.now = T0 + timedelta(minutes=minutes)
        plane.touch_console_session("s1", **cmd())
    clock.now = T0 + timedelta(hours=1)
    ended = plane.expire_console_session("s1", **cmd())
    assert [e.reason for e in ended.events] == ["expired"]
