"""Break-glass rules: requests, approvals (and self-approval), denials, the grant created."""

from __future__ import annotations

from datetime import timedelta

import pytest

from domain.policy import breakglass
from domain.policy.attributes import attributes_from_http
from domain.policy.decide import Caller, decide
from domain.policy.errors import BreakGlassRejectedError
from domain.policy.state import PolicyState
from tests.domain import builders as b
from tests.domain.builders import at

BASE = [
    b.user("alice"),
    b.user("bob"),
    b.user("carol"),
    b.user("ann"),
    b.group("approvers"),
    b.member("approvers", "bob"),
    b.member("approvers", "ann"),
    b.idp("carol", "approvers"),
    b.cluster("prod", sensitive="true"),
]


def world(*events: object) -> PolicyState:
    return PolicyState().apply_all([*BASE, *events])


def ask(state: PolicyState, **kw: object) -> object:
    base = {
        "event_id": "e-req",
        "request_id": "bg-1",
        "user": "alice",
        "cluster": "prod",
        "reason": "incident 42",
        "duration_s": 1800,
        "now": at(10),
    }
    return breakglass.request(state, **{**base, **kw})  # type: ignore[arg-type]


def approve(state: PolicyState, approver: str = "bob", reason: str = "", t: float = 12):
    return breakglass.approve(
        state,
        request_id="bg-1",
        approver=approver,
        now=at(t),
        event_id="e-ok",
        grant_event_id="e-grant",
        grant_id="g-bg-1",
        reason=reason,
    )


def rejected(code: str, fn, *args, **kw) -> None:
    with pytest.raises(BreakGlassRejectedError) as err:
        fn(*args, **kw)
    assert err.value.code == code


# --- requests -----------------------------------------------------------------------------


def test_request_event() -> None:
    event = ask(world(), role="admin", namespaces=("shop",))
    assert (event.request_id, event.user, event.cluster, event.role, event.namespaces) == (
        "bg-1",
        "alice",
        "prod",
        "admin",
        ("shop",),
    )
    assert (event.id, event.time, event.actor, event.duration_s) == ("e-req", at(10), "alice", 1800)


@pytest.mark.parametrize(
    ("kw", "extra", "code"),
    [
        ({"user": "zed"}, [], "unknown-user"),
        ({}, [b.disabled("alice")], "user-disabled"),
        ({"cluster": "nowhere"}, [], "unknown-cluster"),
        ({"role": "custom"}, [], "invalid-role"),
        ({"role": "root"}, [], "invalid-role"),
        ({"reason": "  "}, [], "reason-required"),
        ({"duration_s": 59}, [], "duration-out-of-bounds"),
        ({"duration_s": 3601}, [], "duration-out-of-bounds"),
        (
            {"duration_s": 601},
            [b.setting(breakglass__max_duration_s=600)],
            "duration-out-of-bounds",
        ),
        ({}, [b.bg_requested("bg-1", "bob", "prod")], "duplicate-request"),
    ],
)
def test_request_rejections(kw: dict, extra: list, code: str) -> None:
    rejected(code, ask, world(*extra), **kw)


@pytest.mark.parametrize("duration", [60, 3600])
def test_duration_bounds_are_inclusive(duration: int) -> None:
    assert ask(world(), duration_s=duration).duration_s == duration


# --- approvals ----------------------------------------------------------------------------


def test_approval_creates_the_grant() -> None:
    state = world(b.bg_requested("bg-1", "alice", "prod", t=10, duration_s=1800, role="edit",
                                 namespaces=("shop",)))  # fmt: skip
    approval, grant = approve(state)
    assert (approval.approver, approval.grant_id, approval.self_approved) == (
        "bob",
        "g-bg-1",
        False,
    )
    assert (grant.grant_id, grant.subject_kind, grant.subject) == ("g-bg-1", "user", "alice")
    assert (grant.role, grant.clusters, grant.namespaces) == ("edit", ("prod",), ("shop",))
    assert (grant.not_before, grant.expires_at) == (at(12), at(12) + timedelta(seconds=1800))
    assert (grant.breakglass_id, grant.cause, grant.mode) == ("bg-1", "e-ok", "both")


def test_approved_breakglass_through_decide() -> None:
    state = world(
        b.bg_requested("bg-1", "alice", "prod", t=10, duration_s=600), b.cert("c1", "alice")
    )
    caller = Caller(user="alice", cert_serial="c1", cert_not_before=at(0))
    delete = attributes_from_http("DELETE", "/api/v1/namespaces/shop/pods/web-1")
    assert not decide(state, caller, "prod", delete, at(11)).allowed
    state.apply_all(approve(state))
    d = decide(state, caller, "prod", delete, at(12))
    assert (d.allowed, d.grant_id, d.breakglass_id) == (True, "g-bg-1", "bg-1")
    assert decide(state, caller, "prod", delete, at(22) - timedelta(microseconds=1)).allowed
    assert not decide(state, caller, "prod", delete, at(22)).allowed
    assert state.next_deadline(at(12)) == at(22)


@pytest.mark.parametrize("approver", ["bob", "carol"])  # local member, IdP member
def test_approvers(approver: str) -> None:
    state = world(b.bg_requested("bg-1", "alice", "prod"))
    assert approve(state, approver)[0].approver == approver


@pytest.mark.parametrize(
    ("approver", "extra", "code"),
    [
        ("zed", [], "unknown-user"),
        ("alice", [b.member("approvers", "alice")], "self-approval-disabled"),
        ("ann", [b.disabled("ann")], "approver-disabled"),
        ("bob", [b.unmember("approvers", "bob")], "not-approver"),
        ("bob", [b.setting(breakglass__approver_group="oncall")], "not-approver"),
        ("bob", [b.disabled("alice")], "user-disabled"),
        ("bob", [b.cluster_removed("prod")], "unknown-cluster"),
        ("bob", [b.setting(breakglass__max_duration_s=600)], "duration-out-of-bounds"),
        ("bob", [b.bg_denied("bg-1", "ann")], "not-pending"),
        ("bob", [b.bg_approved("bg-1", "ann", "g-x")], "not-pending"),
    ],
)
def test_approval_rejections(approver: str, extra: list, code: str) -> None:
    state = world(b.bg_requested("bg-1", "alice", "prod", duration_s=1800), *extra)
    rejected(code, approve, state, approver)


def test_unknown_request() -> None:
    rejected("unknown-request", approve, world())


def test_self_approval() -> None:
    events = [
        b.bg_requested("bg-1", "bob", "prod"),
        b.setting(breakglass__allow_self_approval=True),
    ]
    rejected("reason-required", approve, world(*events), "bob", "  ")
    approval, grant = approve(world(*events), "bob", "nobody else on call")
    assert (approval.self_approved, grant.subject) == (True, "bob")
    # the setting does not make a non-approver able to approve their own request
    events = [
        b.bg_requested("bg-1", "alice", "prod"),
        b.setting(breakglass__allow_self_approval=True),
    ]
    rejected("not-approver", approve, world(*events), "alice", "urgent")
    # a non-boolean setting value is not "true"
    events = [
        b.bg_requested("bg-1", "bob", "prod"),
        b.setting(breakglass__allow_self_approval="yes"),
    ]
    rejected("self-approval-disabled", approve, world(*events), "bob", "urgent")


# --- denials and candidates ---------------------------------------------------------------


def test_deny_by_approver_or_withdraw_by_requester() -> None:
    state = world(b.bg_requested("bg-1", "alice", "prod"))
    kw = {"request_id": "bg-1", "now": at(5), "event_id": "e-no"}
    assert breakglass.deny(state, approver="bob", reason="not needed", **kw).approver == "bob"
    assert breakglass.deny(state, approver="alice", **kw).approver == "alice"
    rejected("not-approver", breakglass.deny, state, approver="dave", **kw)
    state.apply(b.bg_denied("bg-1", "bob"))
    rejected("not-pending", breakglass.deny, state, approver="bob", **kw)


def test_approver_candidates() -> None:
    state = world(b.bg_requested("bg-1", "bob", "prod"), b.disabled("ann"))
    assert breakglass.approver_candidates(state, "bg-1") == {"carol"}
    state.apply(b.setting(breakglass__allow_self_approval=True))
    assert breakglass.approver_candidates(state, "bg-1") == {"bob", "carol"}
    assert breakglass.approver_candidates(state, "nope") == frozenset()
