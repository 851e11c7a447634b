"""The control plane's command layer, on eventsourcing's in-memory store and on JetStream.

Rule checks run on both persistence modules (the same commands, the same outcomes); what only
the log can show (catalog JSON on the catalog's subjects, atomic multi-aggregate appends,
idempotency and races between writers) runs on the real nats-server.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from broker.store import EventStore
from domain import codec, events
from domain.aggregates import BreakGlass, Credential, Grant, Group, Switch, User
from domain.control import CommandResult, ControlPlane
from domain.errors import (
    AlreadyExistsError,
    CommandRejectedError,
    ConcurrentUpdateError,
    InvalidCommandError,
    NotFoundError,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def cmd() -> dict[str, str]:
    return {"actor": "admin", "command_id": uid("cmd")}


def jetstream_env(nats_url: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "broker.es_persistence", "KUBEGATE_NATS_URL": nats_url}


@pytest.fixture(params=["memory", "jetstream"])
def plane(request: pytest.FixtureRequest, nats_url: str) -> Iterator[ControlPlane]:
    env = (
        {"PERSISTENCE_MODULE": "eventsourcing.popo"}
        if request.param == "memory"
        else jetstream_env(nats_url)
    )
    made = ControlPlane(env, clock=Clock())
    yield made
    made.close()


@pytest.fixture
def js_plane(nats_url: str) -> Iterator[ControlPlane]:
    made = ControlPlane(jetstream_env(nats_url), clock=Clock())
    yield made
    made.close()


def logged(plane: ControlPlane, family: str, key: str) -> list[Any]:
    """What KG_CONTROL holds for one aggregate, read as catalog events by the broker."""
    bridge = plane.factory.connection.bridge  # type: ignore[attr-defined]
    return bridge.call(EventStore(bridge.nc).load, family, key)


# --- rules, on both persistence modules ---------------------------------------------------


def test_register_user_with_groups(plane: ControlPlane) -> None:
    user, devs, ops = uid("alice"), uid("devs"), uid("ops")
    plane.create_group(devs, **cmd())
    plane.create_group(ops, **cmd())
    result = plane.register_user(user, email="a@x", groups=[devs, ops, devs], **cmd())
    assert [type(e) for e in result.events] == [
        events.UserRegistered,
        events.MemberAdded,
        events.MemberAdded,
    ]
    assert all(e.cause == result.command_id and e.actor == "admin" for e in result.events)
    assert all(e.time == T0 for e in result.events)
    assert plane.find(User, user).email == "a@x"
    assert user in plane.find(Group, devs).members and user in plane.find(Group, ops).members


def test_register_user_rejections_store_nothing(plane: ControlPlane) -> None:
    user = uid("bob")
    with pytest.raises(NotFoundError):
        plane.register_user(user, groups=[uid("nogroup")], **cmd())
    assert plane.find(User, user) is None
    plane.register_user(user, **cmd())
    with pytest.raises(AlreadyExistsError):
        plane.register_user(user, **cmd())
    with pytest.raises(InvalidCommandError):
        plane.register_user("has space", **cmd())
    with pytest.raises(InvalidCommandError):
        plane.register_user(uid("o"), source="oidc", **cmd())
    assert issubclass(AlreadyExistsError, CommandRejectedError)


def test_user_lifecycle(plane: ControlPlane) -> None:
    user = uid("carol")
    with pytest.raises(NotFoundError):
        plane.disable_user(user, **cmd())
    plane.register_user(user, **cmd())
    assert plane.disable_user(user, reason="left", **cmd()).changed
    assert not plane.disable_user(user, **cmd()).changed  # already disabled: nothing stored
    assert plane.enable_user(user, **cmd()).changed
    assert plane.revoke_user_access(user, **cmd()).changed
    assert plane.revoke_user_access(user, **cmd()).changed  # each revocation is recorded
    found = plane.find(User, user)
    assert found.revoked and found.revoked_at == T0 and found.enabled
    assert plane.enable_user(user, **cmd()).changed  # enabling lifts the revocation
    assert not plane.find(User, user).revoked
    assert plane.set_password_hash(user, HASH, **cmd()).changed
    assert not plane.set_password_hash(user, HASH, **cmd()).changed
    assert plane.find(Credential, user).password_hash == HASH
    with pytest.raises(InvalidCommandError):
        plane.set_password_hash(user, "plaintext", **cmd())
    oidc = uid("dora")
    plane.register_user(oidc, source="oidc", issuer="https://idp", oidc_subject="s1", **cmd())
    with pytest.raises(InvalidCommandError):
        plane.set_password_hash(oidc, HASH, **cmd())
    assert plane.sync_idp_groups(oidc, "https://idp", ["b", "a"], **cmd()).changed
    assert not plane.sync_idp_groups(oidc, "https://idp", ["a", "b"], **cmd()).changed
    assert plane.find(User, oidc).idp_groups == {"https://idp": ("a", "b")}


def test_groups_and_members(plane: ControlPlane) -> None:
    group, user = uid("g"), uid("erin")
    with pytest.raises(NotFoundError):
        plane.add_member(group, user, **cmd())
    plane.create_group(group, **cmd())
    with pytest.raises(NotFoundError):
        plane.add_member(group, user, **cmd())  # no such user
    plane.register_user(user, **cmd())
    assert plane.add_member(group, user, **cmd()).changed
    assert not plane.add_member(group, user, **cmd()).changed
    assert plane.remove_member(group, user, **cmd()).changed
    assert not plane.remove_member(group, user, **cmd()).changed
    with pytest.raises(AlreadyExistsError):
        plane.create_group(group, **cmd())
    plane.delete_group(group, **cmd())
    with pytest.raises(NotFoundError):
        plane.add_member(group, user, **cmd())
    assert plane.create_group(group, description="again", **cmd()).changed  # re-created


def test_clusters(plane: ControlPlane) -> None:
    cluster = uid("prod")
    plane.register_cluster(cluster, labels={"env": "prod", "sensitive": "true"}, **cmd())
    with pytest.raises(AlreadyExistsError):
        plane.register_cluster(cluster, **cmd())
    assert not plane.set_cluster_labels(
        cluster, {"sensitive": "true", "env": "prod"}, **cmd()
    ).changed
    assert plane.set_cluster_labels(cluster, {"env": "prod"}, **cmd()).changed
    with pytest.raises(InvalidCommandError):
        plane.set_cluster_labels(cluster, {"bad key": "x"}, **cmd())
    plane.remove_cluster(cluster, **cmd())
    with pytest.raises(NotFoundError):
        plane.set_cluster_labels(cluster, {}, **cmd())


def test_grants(plane: ControlPlane) -> None:
    user, cluster, grant = uid("frank"), uid("c"), uid("grant")
    base: dict[str, Any] = {"subject_kind": "user", "subject": user, "role": "view"}
    with pytest.raises(NotFoundError):
        plane.issue_grant(grant, clusters=["*"], **base, **cmd())
    plane.register_user(user, **cmd())
    with pytest.raises(NotFoundError):
        plane.issue_grant(grant, clusters=[cluster], **base, **cmd())
    plane.register_cluster(cluster, **cmd())
    with pytest.raises(InvalidCommandError):
        plane.issue_grant(grant, **base, **cmd())  # no clusters at all
    with pytest.raises(InvalidCommandError):
        plane.issue_grant(grant, clusters=["*"], **{**base, "role": "custom"}, **cmd())
    with pytest.raises(InvalidCommandError):
        plane.issue_grant(grant, clusters=["*"], expires_at=T0 - timedelta(1), **base, **cmd())
    with pytest.raises(InvalidCommandError):
        plane.issue_grant(grant, clusters=["*"], not_before=T0, expires_at=T0, **base, **cmd())
    rule = events.Rule(verbs=("get",), resources=("pods",))
    result = plane.issue_grant(
        grant,
        clusters=[cluster],
        namespaces=["team-a"],
        expires_at=T0 + timedelta(hours=8),
        **{**base, "role": "custom"},
        rules=[rule],
        **cmd(),
    )
    (issued,) = result.events
    assert isinstance(issued, events.GrantIssued)
    assert issued.clusters == (cluster,) and issued.rules == (rule,)
    assert plane.find(Grant, grant).issued == issued
    with pytest.raises(AlreadyExistsError):
        plane.issue_grant(grant, clusters=["*"], **base, **cmd())
    assert plane.revoke_grant(grant, **cmd()).changed
    assert not plane.revoke_grant(grant, **cmd()).changed


def test_grant_expiry_is_recorded_once_and_only_after_the_fact(plane: ControlPlane) -> None:
    user, cluster = uid("hal"), uid("c")
    plane.register_user(user, **cmd())
    plane.register_cluster(cluster, **cmd())
    base: dict[str, Any] = {"subject_kind": "user", "subject": user, "role": "view"}
    timed, forever, revoked = uid("timed"), uid("forever"), uid("revoked")
    ends = T0 + timedelta(minutes=5)
    plane.issue_grant(timed, clusters=[cluster], expires_at=ends, **base, **cmd())
    plane.issue_grant(forever, clusters=[cluster], **base, **cmd())
    plane.issue_grant(revoked, clusters=[cluster], expires_at=ends, **base, **cmd())
    plane.revoke_grant(revoked, **cmd())
    with pytest.raises(InvalidCommandError, match="has not expired yet"):
        plane.record_grant_expiry(timed, **cmd())
    with pytest.raises(NotFoundError):
        plane.record_grant_expiry(uid("nope"), **cmd())
    clock = plane.clock
    assert isinstance(clock, Clock)
    clock.now = ends
    (expired,) = plane.record_grant_expiry(timed, **cmd()).events
    assert isinstance(expired, events.GrantExpired) and expired.expired_at == ends
    assert plane.find(Grant, timed).expired
    assert not plane.record_grant_expiry(timed, **cmd()).changed
    assert not plane.record_grant_expiry(forever, **cmd()).changed
    assert not plane.record_grant_expiry(revoked, **cmd()).changed


def test_switches(plane: ControlPlane) -> None:
    user = uid("gina")
    with pytest.raises(InvalidCommandError):
        plane.disable_kubectl("global", "x", **cmd())
    with pytest.raises(InvalidCommandError):
        plane.disable_kubectl("planet", "x", **cmd())
    with pytest.raises(NotFoundError):
        plane.disable_kubectl("user", user, **cmd())
    plane.register_user(user, **cmd())
    assert plane.disable_kubectl("user", user, **cmd()).changed
    assert not plane.disable_kubectl("user", user, **cmd()).changed
    assert plane.set_browser_only("user", user, enabled=True, **cmd()).changed
    switch = plane.find(Switch, f"user:{user}")
    assert switch.kubectl_disabled and switch.browser_only
    assert plane.enable_kubectl("user", user, **cmd()).changed


def test_breakglass_approval_issues_its_grant(plane: ControlPlane) -> None:
    user, cluster, request, grant = uid("hank"), uid("c"), uid("bg"), uid("grant")
    plane.register_user(user, **cmd())
    plane.register_cluster(cluster, labels={"sensitive": "true"}, **cmd())
    plane.request_breakglass(
        request,
        user=user,
        cluster=cluster,
        reason="outage",
        duration_s=3600,
        actor=user,
        command_id=uid("cmd"),
    )
    with pytest.raises(InvalidCommandError):  # the requester, without saying so
        plane.approve_breakglass(request, grant_id=grant, actor=user, command_id=uid("cmd"))
    result = plane.approve_breakglass(request, grant_id=grant, actor="boss", command_id=uid("c"))
    approved, issued = result.events
    assert isinstance(approved, events.BreakGlassApproved) and approved.approver == "boss"
    assert isinstance(issued, events.GrantIssued)
    assert (issued.subject, issued.breakglass_id) == (user, request)
    assert issued.expires_at == T0 + timedelta(hours=1)
    assert plane.find(BreakGlass, request).status == "approved"
    with pytest.raises(InvalidCommandError):
        plane.deny_breakglass(request, **cmd())


def test_sessions_and_certificates(plane: ControlPlane) -> None:
    user, session, serial = uid("ivy"), uid("s"), uid("serial")
    plane.register_user(user, **cmd())
    started = plane.start_console_session(
        session, user=user, expires_at=T0 + timedelta(hours=1), idle_timeout_s=900, **cmd()
    )
    assert started.changed
    assert plane.end_console_session(session, **cmd()).changed
    assert not plane.end_console_session(session, **cmd()).changed
    plane.issue_certificate(
        serial, user=user, not_before=T0, not_after=T0 + timedelta(days=1), **cmd()
    )
    assert plane.revoke_certificate(serial, **cmd()).changed
    plane.disable_user(user, **cmd())
    with pytest.raises(InvalidCommandError):
        plane.issue_certificate(
            uid("serial"), user=user, not_before=T0, not_after=T0 + timedelta(1), **cmd()
        )


def test_same_command_id_twice_stores_once(plane: ControlPlane) -> None:
    user = uid("jack")
    register = {"actor": "admin", "command_id": uid("cmd")}
    first = plane.register_user(user, **register)
    again = plane.register_user(user, **register)
    assert first.changed and again.duplicate and not again.changed
    disable = {"actor": "admin", "command_id": uid("cmd")}
    plane.disable_user(user, **disable)
    plane.enable_user(user, **cmd())
    assert plane.disable_user(user, **disable).duplicate  # a late retry changes nothing
    assert plane.find(User, user).enabled


def test_commands_need_an_id_an_actor_and_an_aware_clock(nats_url: str) -> None:
    naive = ControlPlane({"PERSISTENCE_MODULE": "eventsourcing.popo"}, clock=datetime.now)
    with pytest.raises(InvalidCommandError):
        naive.create_group(uid("g"), **cmd())
    with pytest.raises(InvalidCommandError):
        naive.create_group(uid("g"), actor="admin", command_id="")
    with pytest.raises(InvalidCommandError):
        naive.create_group(uid("g"), actor="", command_id="c")


# --- what only the log shows ---------------------------------------------------------------


def test_the_log_holds_catalog_json_on_catalog_subjects(js_plane: ControlPlane) -> None:
    user, group = uid("kate"), uid("devs")
    created = js_plane.create_group(group, **cmd())
    result = js_plane.register_user(user, groups=[group], **cmd())
    (user_record,) = logged(js_plane, "user", user)
    group_records = logged(js_plane, "group", group)
    assert user_record.subject == f"kg.evt.user.{user}"
    assert user_record.event == result.events[0]
    assert [r.event for r in group_records] == [created.events[0], result.events[1]]
    # one atomic append: contiguous stream sequences, the notification ids
    assert [user_record.seq, group_records[1].seq] == list(result.positions)
    assert group_records[1].seq == user_record.seq + 1
    bridge = js_plane.factory.connection.bridge  # type: ignore[attr-defined]
    raw = bridge.call(EventStore(bridge.nc).log("control").get, user_record.seq)
    assert codec.decode(raw.data) == result.events[0]
    assert raw.msg_id == result.events[0].id
    assert raw.headers["Kg-Es-Version"] == "1"


def test_a_retried_command_stores_one_event_in_the_log(js_plane: ControlPlane) -> None:
    user = uid("leo")
    command = {"actor": "admin", "command_id": uid("cmd")}
    js_plane.register_user(user, **command)
    js_plane.disable_user(user, **cmd())
    assert js_plane.register_user(user, **command).duplicate
    assert [type(r.event) for r in logged(js_plane, "user", user)] == [
        events.UserRegistered,
        events.UserDisabled,
    ]


class PausingPlane(ControlPlane):
    """A control plane that waits at a barrier before saving, so two of them decide on the
    same state and then race to store."""

    barrier: threading.Barrier

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        if getattr(self, "barrier", None) is not None:
            barrier, self.barrier = self.barrier, None  # type: ignore[assignment]
            barrier.wait(timeout=30)
        return super().save(*objs, **kwargs)


def race(nats_url: str, first: Any, second: Any) -> list[CommandResult]:
    """Run two commands on two control planes (two connections) that both read before
    either writes."""
    barrier = threading.Barrier(2)
    planes = [PausingPlane(jetstream_env(nats_url), clock=Clock()) for _ in range(2)]
    results: list[Any] = [None, None]

    def run(i: int, command: Any) -> None:
        planes[i].barrier = barrier
        try:
            results[i] = command(planes[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for made in planes:
        made.close()
    assert not any(isinstance(r, Exception) for r in results), results
    return results


def test_a_lost_race_is_retried_and_nothing_is_lost(js_plane: ControlPlane, nats_url: str) -> None:
    user = uid("mia")
    js_plane.register_user(user, **cmd())
    race(
        nats_url,
        lambda p: p.revoke_user_access(user, **cmd()),
        lambda p: p.disable_user(user, **cmd()),
    )
    found = js_plane.find(User, user)
    assert found.revoked and not found.enabled and found.version == 3
    assert len(logged(js_plane, "user", user)) == 3


def test_the_same_command_racing_itself_stores_once(js_plane: ControlPlane, nats_url: str) -> None:
    user, group = uid("ned"), uid("g")
    js_plane.create_group(group, **cmd())
    command = {"actor": "admin", "command_id": uid("cmd")}
    results = race(
        nats_url,
        lambda p: p.register_user(user, groups=[group], **command),
        lambda p: p.register_user(user, groups=[group], **command),
    )
    assert len(logged(js_plane, "user", user)) == 1
    assert len(logged(js_plane, "group", group)) == 2
    stored = {r.events[0].id for r in results if r.changed}
    assert stored == {logged(js_plane, "user", user)[0].event.id}


def test_endless_interference_is_reported(js_plane: ControlPlane, nats_url: str) -> None:
    user = uid("olga")
    js_plane.register_user(user, **cmd())

    class Interfered(ControlPlane):
        def save(self, *objs: Any, **kwargs: Any) -> Any:
            js_plane.revoke_user_access(user, **cmd())  # someone else writes first, every time
            return super().save(*objs, **kwargs)

    victim = Interfered(jetstream_env(nats_url), clock=Clock(), max_attempts=3)
    try:
        with pytest.raises(ConcurrentUpdateError) as gave_up:
            victim.disable_user(user, actor="admin", command_id="doomed")
    finally:
        victim.close()
    assert gave_up.value.attempts == 3
    recorded = logged(js_plane, "user", user)
    assert [type(r.event) for r in recorded].count(events.UserAccessRevoked) == 3
    assert not any(isinstance(r.event, events.UserDisabled) for r in recorded)


def test_settings_change_only_known_keys_and_only_when_different(plane: ControlPlane) -> None:
    first = plane.change_settings({"breakglass.allow_self_approval": True}, **cmd())
    assert [type(e).__name__ for e in first.events] == ["SettingsChanged"]
    assert not plane.change_settings({"breakglass.allow_self_approval": True}, **cmd()).changed
    with pytest.raises(InvalidCommandError, match="unknown setting 'nope'"):
        plane.change_settings({"nope": 1}, **cmd())
