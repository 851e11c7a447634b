"""The sessions fold (pure) and its runner wiring."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from domain import events as ev
from domain.codec import UnknownEvent
from projections.records import LogRecord, Malformed
from projections.sessions import SessionsProjection, SessionsState, sessions_runner
from tests.projections.helpers import T0, publish, publish_many

MIN = timedelta(minutes=1)


def started(sid: str, user: str = "alice", at=T0, idle_s: int = 600, hours: int = 8):
    return ev.ConsoleSessionStarted(
        id=f"{sid}-start", time=at, actor=user, session_id=sid, user=user,
        expires_at=at + timedelta(hours=hours), idle_timeout_s=idle_s,
    )  # fmt: skip


def touched(sid: str, at, user: str = "alice"):
    return ev.ConsoleSessionTouched(
        id=f"{sid}-t{at.timestamp()}", time=at, actor=user, session_id=sid, user=user
    )


def requested(rid: str, decision: str = "allow", user: str = "alice", cluster: str = "prod"):
    return ev.KubectlRequested(
        id=f"q-{rid}", time=T0, actor=user, request_id=rid, user=user, cluster=cluster,
        verb="watch", resource="pods", decision=decision,
    )  # fmt: skip


def completed(rid: str, user: str = "alice", cluster: str = "prod"):
    return ev.KubectlCompleted(
        id=f"c-{rid}", time=T0 + MIN, actor=user, request_id=rid, user=user, cluster=cluster,
        status=200,
    )  # fmt: skip


def test_console_session_is_live_until_idle_expired_or_ended() -> None:
    state = SessionsState().apply_all([started("s1", idle_s=600), touched("s1", T0 + 8 * MIN)])
    session = state.sessions["s1"]
    assert not session.live_at(T0 - MIN)
    assert session.live_at(T0 + 17 * MIN)
    assert not session.live_at(T0 + 18 * MIN)  # idle 10 minutes after the last touch
    assert state.has_live_session("alice", T0 + 10 * MIN)
    assert not state.has_live_session("bob", T0 + 10 * MIN)

    state.apply(touched("s1", T0 + 30 * MIN))
    assert session.live_at(T0 + 35 * MIN)
    assert not session.live_at(T0 + 8 * 60 * MIN)  # past expires_at, however active
    state.apply(
        ev.ConsoleSessionEnded(
            id="e", time=T0 + 36 * MIN, actor="alice", session_id="s1", user="alice"
        )
    )
    assert session.live_at(T0 + 35 * MIN)
    assert not session.live_at(T0 + 36 * MIN)
    assert session.end_reason == "logout"
    assert state.live_sessions(T0 + 35 * MIN) == [session]
    assert state.live_sessions(T0 + 37 * MIN, user="alice") == []


def test_certificates_valid_in_window_until_revoked() -> None:
    cert = ev.CertificateIssued(
        id="c1", time=T0, actor="alice", serial="01ab", user="alice",
        not_before=T0, not_after=T0 + timedelta(days=1), clusters=("prod",),
    )  # fmt: skip
    state = SessionsState().apply_all([cert])
    assert state.certificate_valid("01ab", T0 + MIN)
    assert not state.certificate_valid("01ab", T0 + timedelta(days=2))
    assert not state.certificate_valid("ffff", T0 + MIN)
    state.apply(
        ev.CertificateRevoked(
            id="r1", time=T0 + 5 * MIN, actor="admin", serial="01ab", user="alice", reason="lost"
        )
    )
    assert state.certificate_valid("01ab", T0 + 4 * MIN)
    assert not state.certificate_valid("01ab", T0 + 5 * MIN)
    assert state.certificates_of("alice")[0].revoke_reason == "lost"


def test_user_access_revoked_ends_sessions_and_revokes_certificates() -> None:
    cert = ev.CertificateIssued(
        id="c1", time=T0, actor="alice", serial="02", user="alice",
        not_before=T0, not_after=T0 + timedelta(days=1),
    )  # fmt: skip
    cut = ev.UserAccessRevoked(id="x", time=T0 + 2 * MIN, actor="admin", user="alice")
    later = ev.CertificateIssued(
        id="c2", time=T0 + 3 * MIN, actor="alice", serial="03", user="alice",
        not_before=T0 + 3 * MIN, not_after=T0 + timedelta(days=1),
    )  # fmt: skip
    state = SessionsState().apply_all([started("s1"), started("s2", user="bob"), cert, cut, later])
    assert state.sessions["s1"].end_reason == "revoked"
    assert not state.has_live_session("alice", T0 + 3 * MIN)
    assert state.has_live_session("bob", T0 + 3 * MIN)
    assert not state.certificate_valid("02", T0 + 3 * MIN)
    assert state.certificate_valid("03", T0 + 4 * MIN)


def test_service_accounts_per_cluster() -> None:
    def sa(kind, cluster, user, at):
        cls = ev.ServiceAccountProvisioned if kind == "+" else ev.ServiceAccountRemoved
        return cls(
            id=f"{kind}{cluster}{user}{at}", time=T0 + at * MIN, actor="relay", cluster=cluster,
            user=user, namespace="kubegate", name=f"kg-{user}",
        )  # fmt: skip

    state = SessionsState().apply_all(
        [sa("+", "prod", "alice", 1), sa("+", "prod", "bob", 2), sa("+", "stage", "alice", 3)]
    )
    assert [s.user for s in state.service_accounts_in("prod")] == ["alice", "bob"]
    state.apply(sa("-", "prod", "alice", 4))
    assert [s.user for s in state.service_accounts_in("prod")] == ["bob"]
    assert [s.user for s in state.service_accounts_in("stage")] == ["alice"]


def test_open_kubectl_requests_are_requested_minus_completed() -> None:
    state = SessionsState().apply_all(
        [requested("r1"), requested("r2", user="bob"), requested("r3", decision="deny")]
    )
    assert {s.request_id for s in state.active_streams()} == {"r1", "r2"}
    assert [s.request_id for s in state.active_streams(user="bob")] == ["r2"]
    state.apply(completed("r1"))
    assert [s.request_id for s in state.active_streams(cluster="prod")] == ["r2"]


@given(
    st.lists(
        st.tuples(st.sampled_from(["req", "deny", "done"]), st.integers(min_value=0, max_value=5))
    )
)
def test_open_requests_match_a_simple_model(ops) -> None:
    state, expected = SessionsState(), set()
    for op, n in ops:
        rid = f"r{n}"
        if op == "req":
            state.apply(requested(rid))
            expected.add(rid)
        elif op == "deny":
            state.apply(requested(rid, decision="deny"))
        else:
            state.apply(completed(rid))
            expected.discard(rid)
    assert {s.request_id for s in state.active_streams()} == expected


def test_prune_forgets_what_ended_before_the_horizon() -> None:
    state = SessionsState().apply_all([started("old", idle_s=60), started("new", at=T0 + 60 * MIN)])
    assert state.prune(T0 + 30 * MIN) == 1
    assert list(state.sessions) == ["new"]
    assert state.live_sessions(T0 + 61 * MIN, user="alice")[0].session_id == "new"


def test_projection_ignores_unknown_and_malformed_records() -> None:
    projection = SessionsProjection()
    projection.apply(LogRecord("control", 1, "s", 0, Malformed(error="x"), b"x"))
    projection.apply(
        LogRecord("control", 2, "s", 0, UnknownEvent(type="X", id="1", schema=1, raw=b"{}"), b"{}")
    )
    projection.apply(LogRecord("control", 3, "s", 0, started("s9"), b"{}"))
    assert list(projection.state.sessions) == ["s9"]


async def test_runner_builds_sessions_from_the_log(evlog) -> None:
    await publish(evlog.js, [started("s1"), started("s2", user="bob")])
    await publish_many(evlog.js, [requested("r1"), requested("r2"), completed("r1")])
    projection = SessionsProjection()
    async with sessions_runner(evlog.nc, projection, registry=CollectorRegistry()) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        state = projection.state
        assert sorted(state.sessions) == ["s1", "s2"]
        assert [s.request_id for s in state.active_streams()] == ["r2"]
        assert runner.positions() == {"control": 2, "activity": 3}
