"""Password logins through the real admin API (HTTPS) on the real nats-server: events, tokens
that authenticate, one answer for unknown users and wrong passwords, disabled users, bad
requests, and lockout (its threshold, window and expiry, and agreement between replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from broker.server import EmbeddedNats
from domain import events
from edge.identity_settings import IdentitySettings
from edge.login import REFUSED
from edge.sessions import token_hash
from tests.edge.conftest import Pki
from tests.edge.identity_harness import Rig, start_rig, uid


@pytest.fixture
def nats_url(tmp_path: Path) -> Iterator[str]:
    """A nats-server of this test's own: sweeps and lockouts see only this test's events."""
    server = EmbeddedNats(data_dir=tmp_path / "nats").start()
    yield server.url
    server.stop()


@pytest.fixture
async def rig(nats_url: str, pki: Pki) -> AsyncIterator[Rig]:
    made = await start_rig(nats_url, pki)
    yield made
    await made.close()


async def test_login_returns_a_token_that_authenticates(rig: Rig) -> None:
    user = await rig.local_user("s3cret-pass")
    answer = await rig.login(user, "s3cret-pass")
    assert answer.status == 200, answer
    token = answer.body["token"]
    assert answer.body["user"] == user and answer.body["admin"] is False
    assert answer.body["idle_timeout_s"] == 1800

    me = await rig.call("GET", "/v1/whoami", token=token)
    assert me.status == 200
    assert me.body == {"name": user, "admin": False, "session_id": answer.body["session_id"]}
    refused = await rig.call("POST", "/v1/groups", {"name": uid("g")}, token=token)
    assert refused.status == 403 and "not an administrator" in refused.body["error"]

    logins = await rig.logged("login", user)
    assert [type(e) for e in logins] == [events.LoginSucceeded]
    assert logins[0].session_id == answer.body["session_id"] and logins[0].method == "password"
    assert logins[0].source_ip == "127.0.0.1"
    started = await rig.logged("session", answer.body["session_id"])
    assert isinstance(started[0], events.ConsoleSessionStarted)
    assert started[0].token_hash == token_hash(token) and started[0].user == user
    assert started[0].expires_at == rig.clock.now + timedelta(hours=12)
    raw = await rig.nc.jetstream().get_last_msg(
        "KG_CONTROL", f"kg.evt.session.{started[0].session_id}"
    )
    assert token.split(".")[-1].encode() not in raw.data


async def test_members_of_the_admin_group_are_administrators(rig: Rig) -> None:
    user = await rig.local_user("pw-of-an-admin", groups=("kubegate-admins",))
    answer = await rig.login(user, "pw-of-an-admin")
    assert answer.body["admin"] is True and "kubegate-admins" in answer.body["groups"]
    group = uid("g")
    made = await rig.call("POST", "/v1/groups", {"name": group}, token=answer.body["token"])
    assert made.status == 201, made
    created = await rig.logged("group", group)
    assert created[0].actor == user


async def test_unknown_user_and_wrong_password_get_one_answer(rig: Rig) -> None:
    user = await rig.local_user("the-right-one")
    stranger = uid("nobody")
    wrong = await rig.login(user, "the-wrong-one")
    unknown = await rig.login(stranger, "the-wrong-one")
    assert (wrong.status, wrong.body) == (unknown.status, unknown.body)
    assert wrong.status == 401 and wrong.body["error"] == REFUSED
    assert [(type(e), e.reason) for e in await rig.logged("login", user)] == [
        (events.LoginFailed, "bad-password")
    ]
    assert [(type(e), e.reason) for e in await rig.logged("login", stranger)] == [
        (events.LoginFailed, "unknown-user")
    ]


async def test_user_without_password_gets_the_same_answer(rig: Rig) -> None:
    user = uid("u")
    await rig.admin("POST", "/v1/users", {"name": user})
    answer = await rig.login(user, "anything-at-all")
    assert (answer.status, answer.body["error"]) == (401, REFUSED)
    assert [e.reason for e in await rig.logged("login", user)] == ["no-password"]


async def test_disabled_user_is_told_only_with_the_right_password(rig: Rig) -> None:
    user = await rig.local_user("pw-disabled")
    await rig.admin("POST", f"/v1/users/{user}/disable", {"reason": "left"})
    wrong = await rig.login(user, "not-it")
    right = await rig.login(user, "pw-disabled")
    assert (wrong.status, wrong.body["error"]) == (401, REFUSED)
    assert right.status == 403 and right.body["code"] == "disabled"
    assert [e.reason for e in await rig.logged("login", user)] == ["bad-password", "disabled"]


@pytest.mark.parametrize(
    "raw",
    [b"not json", b'{"user": "x"}', b'{"user": "a b", "password": "p"}', b'{"user": ""}'],
)
async def test_malformed_logins_are_bad_requests(rig: Rig, raw: bytes) -> None:
    answer = await rig.call("POST", "/v1/login", raw=raw)
    assert answer.status == 400 and answer.body["code"] == "invalid", answer


async def test_forged_and_malformed_tokens_are_refused(rig: Rig) -> None:
    user = await rig.local_user("pw-forge")
    token = (await rig.login(user, "pw-forge")).body["token"]
    prefix, session_id, secret = token.split(".")
    forged = f"{prefix}.{session_id}.{'A' * len(secret)}"
    for bad in (forged, f"{prefix}.{session_id}", "kgs.cs-0.x", token + "x"):
        answer = await rig.call("GET", "/v1/whoami", token=bad)
        assert answer.status == 401, bad
    assert (await rig.call("GET", "/v1/whoami", token=token)).status == 200


# --- lockout ------------------------------------------------------------------------------


async def test_lockout_after_five_failures_and_its_expiry(rig: Rig) -> None:
    user = await rig.local_user("pw-lock")
    for _ in range(4):
        assert (await rig.login(user, "guess")).status == 401
    fifth = await rig.login(user, "guess")
    assert fifth.status == 429 and fifth.body["code"] == "locked"
    locked = await rig.login(user, "pw-lock")
    assert locked.status == 429, "the right password does not open a locked name"

    logged = await rig.logged("login", user)
    assert [type(e).__name__ for e in logged] == [
        *["LoginFailed"] * 5,
        "UserLockedOut",
        "LoginFailed",
    ]
    lockout = logged[5]
    assert lockout.until == rig.clock.now + timedelta(minutes=15) and lockout.failures == 5
    assert logged[6].reason == "locked"

    rig.clock.advance(minutes=14, seconds=59)
    assert (await rig.login(user, "pw-lock")).status == 429
    rig.clock.advance(seconds=1)
    assert (await rig.login(user, "pw-lock")).status == 200
    assert (await rig.login(user, "guess")).status == 401, "the count starts afresh"


async def test_unknown_names_lock_out_too(rig: Rig) -> None:
    stranger = uid("nobody")
    answers = [await rig.login(stranger, "guess") for _ in range(6)]
    assert [a.status for a in answers] == [401, 401, 401, 401, 429, 429]


async def test_failures_outside_the_window_do_not_count(rig: Rig) -> None:
    user = await rig.local_user("pw-window")
    for _ in range(4):
        assert (await rig.login(user, "guess")).status == 401
    rig.clock.advance(minutes=15)
    assert (await rig.login(user, "guess")).status == 401
    assert not any(isinstance(e, events.UserLockedOut) for e in await rig.logged("login", user))


async def test_a_success_resets_the_count(rig: Rig) -> None:
    user = await rig.local_user("pw-reset")
    for _ in range(4):
        await rig.login(user, "guess")
    assert (await rig.login(user, "pw-reset")).status == 200
    for _ in range(4):
        assert (await rig.login(user, "guess")).status == 401


async def test_replicas_racing_agree_on_one_lockout(nats_url: str, pki: Pki) -> None:
    rig = await start_rig(nats_url, pki, IdentitySettings(lockout_failures=5), replicas=2)
    try:
        user = await rig.local_user("pw-race")
        answers = await asyncio.gather(
            *(rig.login(user, "guess", replica=i % 2) for i in range(12))
        )
        assert sorted(a.status for a in answers) == [401] * 4 + [429] * 8
        logged = await rig.logged("login", user)
        kinds = [type(e).__name__ for e in logged]
        assert kinds.count("UserLockedOut") == 1
        first_lock = kinds.index("UserLockedOut")
        before = logged[:first_lock]
        assert [e.reason for e in before] == ["bad-password"] * 5
        assert all(e.reason == "locked" for e in logged[first_lock + 1 :])
        # both replicas now refuse the right password
        for replica in (0, 1):
            assert (await rig.login(user, "pw-race", replica=replica)).status == 429
    finally:
        await rig.close()
