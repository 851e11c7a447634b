"""Console sessions after a password login: activity logged (throttled), idle and absolute
expiry with an injected clock, logout, revocation, and the sweeper that logs the ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from broker.server import EmbeddedNats
from domain import events
from edge.identity_settings import IdentitySettings
from tests.edge.conftest import Pki
from tests.edge.identity_harness import Rig, eventually, start_rig

SETTINGS = IdentitySettings(
    session_idle=timedelta(minutes=30),
    session_absolute=timedelta(hours=1),
    touch_every=timedelta(minutes=1),
)


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server of this test's own: sweeps and lockouts see only this test's events."""
    server = EmbeddedNats(data_dir=tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
async def rig(nats_url: str, pki: Pki) -> AsyncIterator[Rig]:
    made = await start_rig(nats_url, pki, SETTINGS)
    yield made
    await made.close()


async def session_of(rig: Rig, password: str = "pw-session") -> tuple[str, str, str]:
    user = await rig.local_user(password)
    answer = await rig.login(user, password)
    assert answer.status == 200, answer
    return user, answer.body["token"], answer.body["session_id"]


async def whoami(rig: Rig, token: str) -> int:
    return (await rig.call("GET", "/v1/whoami", token=token)).status


async def kinds(rig: Rig, session_id: str) -> list[str]:
    return [type(e).__name__ for e in await rig.logged("session", session_id)]


async def touched_at(rig: Rig, session_id: str, expected: int) -> None:
    """Until the session book holds `expected` touches (each one's time is the clock's)."""

    async def count() -> bool:
        return (await kinds(rig, session_id)).count("ConsoleSessionTouched") == expected

    await eventually(count, f"{expected} touches of {session_id}")
    book = rig.identity.book.get(session_id)
    await eventually(lambda: book is not None and book.last_active == rig.clock.now, "book")
    await eventually(lambda: session_id not in rig.identity.sessions.touching, "touch done")


async def test_activity_is_logged_at_most_once_a_minute(rig: Rig) -> None:
    _, token, session_id = await session_of(rig)
    for _ in range(3):
        assert await whoami(rig, token) == 200
    rig.clock.advance(seconds=59)
    assert await whoami(rig, token) == 200
    await asyncio.sleep(0.2)
    assert await kinds(rig, session_id) == ["ConsoleSessionStarted"]
    rig.clock.advance(seconds=1)
    assert await whoami(rig, token) == 200
    await touched_at(rig, session_id, 1)
    assert await whoami(rig, token) == 200
    await asyncio.sleep(0.2)
    assert (await kinds(rig, session_id)).count("ConsoleSessionTouched") == 1


async def test_idle_session_is_refused_then_ended_as_idle(rig: Rig) -> None:
    _, token, session_id = await session_of(rig)
    rig.clock.advance(minutes=29)
    assert await whoami(rig, token) == 200
    await touched_at(rig, session_id, 1)
    rig.clock.advance(minutes=29, seconds=59)  # 58:59 after login, 29:59 after the touch
    assert await rig.identity.sessions.sweep() == []
    rig.clock.advance(seconds=1)  # 30 minutes idle, before the absolute expiry
    assert await whoami(rig, token) == 401
    assert await rig.identity.sessions.sweep() == [(session_id, "idle")]
    logged = await rig.logged("session", session_id)
    assert isinstance(logged[-1], events.ConsoleSessionEnded) and logged[-1].reason == "idle"
    assert await rig.identity.sessions.sweep() == []
    assert rig.identity.book.get(session_id) is None


async def test_session_ends_at_its_absolute_expiry_however_active(rig: Rig) -> None:
    _, token, session_id = await session_of(rig)
    for touches in (1, 2):
        rig.clock.advance(minutes=25)
        assert await whoami(rig, token) == 200
        await touched_at(rig, session_id, touches)
    rig.clock.advance(minutes=9, seconds=59)  # 59:59 after login
    assert await whoami(rig, token) == 200
    await touched_at(rig, session_id, 3)
    rig.clock.advance(seconds=1)
    assert await whoami(rig, token) == 401
    assert await rig.identity.sessions.sweep() == [(session_id, "expired")]


async def test_sweeper_does_not_end_a_live_session(rig: Rig) -> None:
    _, token, session_id = await session_of(rig)
    rig.clock.advance(minutes=29, seconds=59)
    assert await rig.identity.sessions.sweep() == []
    assert await whoami(rig, token) == 200
    await touched_at(rig, session_id, 1)


async def test_logout_ends_the_session(rig: Rig) -> None:
    user, token, session_id = await session_of(rig)
    other_token = (await rig.login(user, "pw-session")).body["token"]
    out = await rig.call("POST", "/v1/logout", token=token)
    assert out.status == 200 and out.body["session_id"] == session_id
    ended = (await rig.logged("session", session_id))[-1]
    assert isinstance(ended, events.ConsoleSessionEnded) and ended.reason == "logout"
    assert ended.actor == user
    assert rig.identity.book.get(session_id) is None, "the end is in the book"
    assert await whoami(rig, token) == 401
    again = await rig.call("POST", "/v1/logout", token=token)
    assert again.status == 401
    assert await whoami(rig, other_token) == 200, "other sessions of the user stay"


async def test_a_token_is_refused_as_soon_as_its_logout_returns(rig: Rig) -> None:
    _, token, session_id = await session_of(rig)
    for _ in range(10):
        await rig.identity.sessions.logout(token)
        assert rig.identity.sessions.find(token) is None, "the end is in the session book"
        record = rig.replicas[0].policy.state.sessions.get(session_id)
        assert record is None or not record.live_at(rig.clock.now, None), "and in the policy"
        _, token, session_id = await session_of(rig)


async def test_logout_without_a_session_token(rig: Rig) -> None:
    answer = await rig.call("POST", "/v1/logout", token=rig.admin_token)
    assert answer.status == 401 and answer.body["code"] == "unauthenticated"


async def test_revoked_and_disabled_users_lose_their_sessions(rig: Rig) -> None:
    revoked, token_r, session_r = await session_of(rig)
    disabled, token_d, session_d = await session_of(rig)
    await rig.admin("POST", f"/v1/users/{revoked}/revoke", {"reason": "test"})
    await rig.admin("POST", f"/v1/users/{disabled}/disable", {})
    policy = rig.replicas[0].policy
    await eventually(lambda: not policy.state.users[disabled].enabled, "the disable")
    await eventually(lambda: policy.state.users[revoked].revoked_at is not None, "the revoke")
    assert await whoami(rig, token_r) == 401
    assert await whoami(rig, token_d) == 401
    ended = sorted(await rig.identity.sessions.sweep())
    assert ended == sorted([(session_r, "revoked"), (session_d, "revoked")])
    await rig.admin("POST", f"/v1/users/{disabled}/enable", {})
    await eventually(lambda: policy.state.users[disabled].enabled, "the enable")
    assert await whoami(rig, token_d) == 401, "an ended session stays ended"


async def test_background_sweeper_ends_sessions(rig: Rig) -> None:
    _, _, session_id = await session_of(rig)
    sessions = rig.identity.sessions
    task = asyncio.create_task(sessions.run_sweeper(at_least=0.05, at_most=0.2))
    try:
        rig.clock.advance(hours=1)

        async def ended() -> bool:
            return (await kinds(rig, session_id))[-1] == "ConsoleSessionEnded"

        await eventually(ended, "the sweeper's end")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert (await rig.logged("session", session_id))[-1].reason == "expired"
