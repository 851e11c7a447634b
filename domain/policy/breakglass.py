"""Break-glass: emergency access to a (usually `sensitive=true`) cluster, approved by someone.

The rules, checked against a `PolicyState` at `now`; each failure raises
`BreakGlassRejectedError` with a `code`:

- request: the user is known and enabled, the cluster registered, the role a built-in one
  (`view`, `edit`, `admin`, `cluster-admin`; custom rules never come through break-glass), a
  reason is given, and the duration lies within `breakglass.min_duration_s` ..
  `breakglass.max_duration_s` (defaults 60 .. 3600 s);
- approval: the request is pending; the approver is known, enabled and a member (local or IdP)
  of `breakglass.approver_group` (default `approvers`); the approver is not the requester,
  unless `breakglass.allow_self_approval` is true and the approval carries a reason - and even
  then the requester must be in the approver group: self-approval lets an approver act alone
  in an emergency, it does not let anyone grant themselves access; the requester is still
  enabled, the cluster still registered and the duration still within bounds (settings may have
  tightened since the request);
- denial: the request is pending; an approver (as above) or the requester (withdrawing it).

An approval produces two events to append together (one atomic batch): `BreakGlassApproved`
and the `GrantIssued` it creates - a user grant for the requester on the one cluster, with the
requested role and namespaces, valid from the approval for the requested duration, carrying
`breakglass_id`. `decide` honours a break-glass grant only when the request it names was
approved with that grant id, for that user and cluster.

Functions take event ids as arguments, so they stay pure and replays are deterministic.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from domain import events as ev
from domain.policy import roles
from domain.policy.errors import BreakGlassRejectedError
from domain.policy.state import BreakGlassRecord, PolicyState, require_aware


def _reject(code: str, message: str) -> BreakGlassRejectedError:
    return BreakGlassRejectedError(code, message)


def _check_duration(state: PolicyState, duration_s: int) -> None:
    low, high = state.settings.min_duration_s, state.settings.max_duration_s
    if not low <= duration_s <= high:
        raise _reject(
            "duration-out-of-bounds",
            f"break-glass duration must be between {low} and {high} seconds, not {duration_s}",
        )


def _check_user(state: PolicyState, user: str, code_disabled: str = "user-disabled") -> None:
    record = state.users.get(user)
    if record is None:
        raise _reject("unknown-user", f"user {user} is not known")
    if not record.enabled:
        raise _reject(code_disabled, f"user {user} is disabled")


def is_approver(state: PolicyState, user: str) -> bool:
    """A known, enabled member of the approver group."""
    record = state.users.get(user)
    return (
        record is not None
        and record.enabled
        and state.settings.approver_group in state.groups_of(user)
    )


def approver_candidates(state: PolicyState, request_id: str) -> frozenset[str]:
    """Who could approve this pending request right now (for notifications)."""
    request = state.breakglass.get(request_id)
    if request is None or request.status != "pending":
        return frozenset()
    group = state.settings.approver_group
    candidates = {u for u in state.users if group in state.groups_of(u) and is_approver(state, u)}
    if not state.settings.allow_self_approval:
        candidates.discard(request.user)
    return frozenset(candidates)


def request(
    state: PolicyState,
    *,
    event_id: str,
    request_id: str,
    user: str,
    cluster: str,
    reason: str,
    duration_s: int,
    now: datetime,
    role: str = "cluster-admin",
    namespaces: tuple[str, ...] = (),
    cause: str = "",
) -> ev.BreakGlassRequested:
    """Validate a break-glass request and return the event recording it."""
    require_aware(now, "now")
    if request_id in state.breakglass:
        raise _reject("duplicate-request", f"break-glass request {request_id} already exists")
    _check_user(state, user)
    if cluster not in state.clusters:
        raise _reject("unknown-cluster", f"cluster {cluster} is not registered")
    if role not in roles.BUILTIN_ROLES:
        raise _reject("invalid-role", f"break-glass needs a built-in role, not {role!r}")
    if not reason.strip():
        raise _reject("reason-required", "a break-glass request needs a reason")
    _check_duration(state, duration_s)
    return ev.BreakGlassRequested(
        id=event_id,
        time=now,
        actor=user,
        cause=cause,
        request_id=request_id,
        user=user,
        cluster=cluster,
        reason=reason,
        duration_s=duration_s,
        role=role,
        namespaces=tuple(namespaces),
    )


def _pending(state: PolicyState, request_id: str) -> BreakGlassRecord:
    record = state.breakglass.get(request_id)
    if record is None:
        raise _reject("unknown-request", f"no break-glass request {request_id}")
    if record.status != "pending":
        raise _reject("not-pending", f"break-glass request {request_id} is {record.status}")
    return record


def approve(
    state: PolicyState,
    *,
    request_id: str,
    approver: str,
    now: datetime,
    event_id: str,
    grant_event_id: str,
    grant_id: str,
    reason: str = "",
    cause: str = "",
) -> tuple[ev.BreakGlassApproved, ev.GrantIssued]:
    """Validate an approval; return the approval and the grant it creates (append both)."""
    require_aware(now, "now")
    record = _pending(state, request_id)
    _check_user(state, approver, "approver-disabled")
    if not is_approver(state, approver):
        raise _reject(
            "not-approver",
            f"{approver} is not in the approver group {state.settings.approver_group}",
        )
    self_approved = approver == record.user
    if self_approved:
        if not state.settings.allow_self_approval:
            raise _reject("self-approval-disabled", "break-glass requests cannot be self-approved")
        if not reason.strip():
            raise _reject("reason-required", "a self-approval needs a reason")
    _check_user(state, record.user)
    if record.cluster not in state.clusters:
        raise _reject("unknown-cluster", f"cluster {record.cluster} is not registered")
    _check_duration(state, record.duration_s)
    approval = ev.BreakGlassApproved(
        id=event_id,
        time=now,
        actor=approver,
        cause=cause,
        request_id=request_id,
        approver=approver,
        grant_id=grant_id,
        self_approved=self_approved,
        reason=reason,
    )
    return approval, grant_for(record, approval, grant_event_id)


def grant_for(
    record: BreakGlassRecord, approval: ev.BreakGlassApproved, grant_event_id: str
) -> ev.GrantIssued:
    """The grant an approval creates: the requester, one cluster, the requested window."""
    start = approval.time
    note = f"break-glass {record.request_id}: {record.reason}"
    return ev.GrantIssued(
        id=grant_event_id,
        time=start,
        actor=approval.approver,
        cause=approval.id,
        grant_id=approval.grant_id,
        subject_kind="user",
        subject=record.user,
        role=record.role,
        clusters=(record.cluster,),
        namespaces=record.namespaces,
        not_before=start,
        expires_at=start + timedelta(seconds=record.duration_s),
        mode="both",
        reason=note,
        breakglass_id=record.request_id,
    )


def deny(
    state: PolicyState,
    *,
    request_id: str,
    approver: str,
    now: datetime,
    event_id: str,
    reason: str = "",
    cause: str = "",
) -> ev.BreakGlassDenied:
    """Validate a denial (by an approver, or the requester withdrawing) and return it."""
    require_aware(now, "now")
    record = _pending(state, request_id)
    if approver != record.user and not is_approver(state, approver):
        raise _reject(
            "not-approver",
            f"{approver} is not in the approver group {state.settings.approver_group}",
        )
    return ev.BreakGlassDenied(
        id=event_id,
        time=now,
        actor=approver,
        cause=cause,
        request_id=request_id,
        approver=approver,
        reason=reason,
    )
