"""PolicyState folding and next_deadline."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from domain import codec
from domain import events as ev
from domain.policy.errors import NaiveTimeError
from domain.policy.state import PolicyState
from tests.domain import builders as b
from tests.domain.builders import T0, at


def test_unknown_and_irrelevant_events_are_ignored() -> None:
    state = PolicyState()
    unknown = codec.decode(b'{"type":"FromTheFuture","id":"x","schema":1}')
    assert state.apply(unknown) is False
    assert state.apply(object()) is False
    assert state.apply(b.user("alice")) is True
    assert state.events_applied == 1


def test_events_about_unknown_things_do_not_raise() -> None:
    state = PolicyState().apply_all(
        [
            b.disabled("ghost"),
            b.enabled("ghost"),
            b.revoked("ghost"),
            b.idp("ghost", "g"),
            b.labels("nowhere", env="x"),
            b.grant_revoked("g-404"),
            b.grant_expired("g-404", 1),
            b.touched("s-404", "ghost", 1),
            b.session_ended("s-404", "ghost", 1),
            b.cert_revoked("c-404", "ghost"),
            b.bg_approved("bg-404", "bob", "g"),
            b.bg_denied("bg-404", "bob"),
            b.unmember("none", "ghost"),
            b.group_deleted("none"),
        ]
    )
    assert state.users == {} and state.grants == {} and state.breakglass == {}


def test_users_and_revocation() -> None:
    state = PolicyState().apply_all(
        [b.user("alice", display_name="Alice"), b.revoked("alice", t=5, reason="x")]
    )
    record = state.users["alice"]
    assert (record.enabled, record.disabled_by, record.revoked_at) == (False, "revoked", at(5))
    state.apply(b.enabled("alice", t=6))
    assert (record.enabled, record.disabled_by, record.revoked_at) == (True, "", at(5))
    state.apply(b.user("alice", t=7, display_name="A."))  # re-registration keeps flags
    assert (state.users["alice"].display_name, state.users["alice"].revoked_at) == ("A.", at(5))


def test_groups_local_and_idp() -> None:
    state = PolicyState().apply_all(
        [
            b.user("alice"),
            b.group("devs"),
            b.member("devs", "alice"),
            b.member("ops", "alice"),  # group never created: membership still counts
            b.idp("alice", "sre", "devs"),
        ]
    )
    assert state.groups_of("alice") == {"devs", "ops", "sre"}
    assert state.local_groups_of("alice") == {"devs", "ops"}
    state.apply(b.group_deleted("devs"))
    assert state.groups_of("alice") == {"ops", "sre", "devs"}  # devs still asserted by the IdP
    state.apply(b.idp("alice"))
    assert state.groups_of("alice") == {"ops"}
    assert state.subjects_of("alice") == [("user", "alice"), ("group", "ops")]


def test_settings_are_partial_updates() -> None:
    state = PolicyState().apply_all(
        [
            b.setting(breakglass__approver_group="oncall", breakglass__max_duration_s=600),
            b.setting(breakglass__max_duration_s=900),
        ]
    )
    assert state.settings.approver_group == "oncall"
    assert state.settings.max_duration_s == 900
    assert state.settings.standing_access == "read-only"


def test_breakglass_transitions_only_from_pending() -> None:
    state = PolicyState().apply_all(
        [
            b.bg_requested("r1", "alice", "prod", t=1),
            b.bg_approved("r1", "bob", "g1", t=2),
            b.bg_denied("r1", "carol", t=3),
            b.bg_requested("r1", "mallory", "prod", t=4),
        ]
    )
    record = state.breakglass["r1"]
    assert (record.status, record.approver, record.grant_id, record.user) == (
        "approved",
        "bob",
        "g1",
        "alice",
    )


def test_naive_event_times_are_utc() -> None:
    naive = b.grant("g1", "alice", exp=None)
    naive = type(naive)(**{**{f: getattr(naive, f) for f in naive.__struct_fields__},
                           "expires_at": datetime(2026, 3, 1, 13)})  # fmt: skip
    state = PolicyState().apply_all([naive])
    assert state.grants["g1"].expires_at == at(60)


# --- next_deadline ------------------------------------------------------------------------


def test_next_deadline_empty() -> None:
    assert PolicyState().next_deadline(T0) is None


def test_next_deadline_walks_every_instant() -> None:
    state = PolicyState().apply_all(
        [
            b.grant("g1", "alice", nb=10, exp=50),
            b.session("s1", "alice", t=5, expires=40, idle_s=20 * 60),  # idle at 25
            b.cert("c1", "alice", t=0, nb=0, na=70),
        ]
    )
    seen = []
    now = at(-1)
    while (nxt := state.next_deadline(now)) is not None:
        assert nxt > now
        seen.append(nxt)
        now = nxt
    assert seen == [at(0), at(5), at(10), at(25), at(40), at(50), at(70)]


def test_next_deadline_is_strictly_after_now() -> None:
    state = PolicyState().apply_all([b.grant("g1", "alice", exp=50)])
    assert state.next_deadline(at(50)) is None
    assert state.next_deadline(at(50) - timedelta(microseconds=1)) == at(50)


def test_next_deadline_follows_changes() -> None:
    state = PolicyState().apply_all(
        [
            b.grant("g1", "alice", exp=50),
            b.session("s1", "alice", t=0, expires=100, idle_s=600),
            b.cert("c1", "alice", t=0, na=200),
        ]
    )
    assert state.next_deadline(at(1)) == at(10)  # idle
    state.apply(b.touched("s1", "alice", t=30))
    assert state.next_deadline(at(31)) == at(40)
    state.apply(b.session_ended("s1", "alice", t=31))
    assert state.next_deadline(at(31)) == at(50)
    state.apply(b.grant_expired("g1", when=45, t=45))
    assert state.next_deadline(at(31)) == at(45)
    state.apply(b.grant_revoked("g1", t=46))
    assert state.next_deadline(at(31)) == at(200)
    state.apply(b.cert_revoked("c1", "alice", t=47))
    assert state.next_deadline(at(31)) is None


def test_the_timeline_version_moves_exactly_when_the_deadlines_change() -> None:
    """The projection re-arms its deadline timer only when this version moved, so every event
    that changes a deadline must move it, and events that change none need not."""
    state = PolicyState()
    probes = [at(m) for m in (0, 5, 20, 44, 46, 99, 150)]

    def deadlines() -> list[datetime | None]:
        return [state.next_deadline(p) for p in probes]

    steps: list[tuple[ev.Event, bool]] = [
        (b.user("alice"), False),
        (b.group("ops"), False),
        (b.member("ops", "alice"), False),
        (b.grant("g0", "alice"), False),  # no time window
        (b.grant("g1", "alice", exp=50), True),
        (b.session("s1", "alice", t=0, expires=100, idle_s=600), True),
        (b.revoked("alice", t=1), False),
        (b.touched("s1", "alice", t=30), True),
        (b.cert("c1", "alice", t=0, na=200), True),
        (b.grant_expired("g1", when=45, t=45), True),
        (b.session_ended("s1", "alice", t=46), True),
        (b.grant_revoked("g1", t=47), True),
        (b.cert_revoked("c1", "alice", t=48), True),
    ]
    for event, moves in steps:
        version, before = state.timeline_version, deadlines()
        state.apply(event)
        if deadlines() != before:
            assert state.timeline_version != version, event
        assert (state.timeline_version != version) is moves, event


def test_next_deadline_refuses_naive_now() -> None:
    with pytest.raises(NaiveTimeError):
        PolicyState().next_deadline(datetime(2026, 1, 1))


def test_shrinks_access_of_is_decided_per_event_type() -> None:
    from datetime import UTC, datetime

    from projections.policy import shrinks_access_of

    now = datetime(2026, 1, 1, tzinfo=UTC)
    common = {"time": now, "actor": "admin"}
    revoked = ev.UserAccessRevoked(id="a", user="alice", reason="r", **common)
    again = ev.UserAccessRevoked(id="b", user="bob", reason="r", **common)
    assert shrinks_access_of(revoked) == frozenset({"alice"})
    assert shrinks_access_of(again) == frozenset({"bob"})
    assert shrinks_access_of(ev.GroupCreated(id="c", group="g", **common)) is False
    assert shrinks_access_of(ev.GrantRevoked(id="d", grant_id="x", **common)) is None
    assert shrinks_access_of(object()) is False
