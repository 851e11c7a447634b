"""Terse constructors for catalog events in policy tests: ids are generated, times are
minutes after T0 unless given."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from domain import events as ev

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _env(t: float | datetime, actor: str = "admin") -> dict[str, Any]:
    when = t if isinstance(t, datetime) else at(t)
    return {"id": f"e{next(_ids)}", "time": when, "actor": actor}


def user(name: str, t: float = 0, **kw: Any) -> ev.UserRegistered:
    return ev.UserRegistered(**_env(t), user=name, **kw)


def disabled(name: str, t: float = 0, reason: str = "") -> ev.UserDisabled:
    return ev.UserDisabled(**_env(t), user=name, reason=reason)


def enabled(name: str, t: float = 0) -> ev.UserEnabled:
    return ev.UserEnabled(**_env(t), user=name)


def revoked(name: str, t: float = 0, reason: str = "") -> ev.UserAccessRevoked:
    return ev.UserAccessRevoked(**_env(t), user=name, reason=reason)


def idp(name: str, *groups: str, t: float = 0) -> ev.IdpGroupsSynced:
    return ev.IdpGroupsSynced(**_env(t), user=name, issuer="https://idp", groups=groups)


def group(name: str, t: float = 0) -> ev.GroupCreated:
    return ev.GroupCreated(**_env(t), group=name)


def group_deleted(name: str, t: float = 0) -> ev.GroupDeleted:
    return ev.GroupDeleted(**_env(t), group=name)


def member(g: str, u: str, t: float = 0) -> ev.MemberAdded:
    return ev.MemberAdded(**_env(t), group=g, user=u)


def unmember(g: str, u: str, t: float = 0) -> ev.MemberRemoved:
    return ev.MemberRemoved(**_env(t), group=g, user=u)


def cluster(name: str, t: float = 0, **labels: str) -> ev.ClusterRegistered:
    return ev.ClusterRegistered(**_env(t), cluster=name, labels=labels)


def labels(name: str, t: float = 0, **lbls: str) -> ev.ClusterLabelsSet:
    return ev.ClusterLabelsSet(**_env(t), cluster=name, labels=lbls)


def cluster_removed(name: str, t: float = 0) -> ev.ClusterRemoved:
    return ev.ClusterRemoved(**_env(t), cluster=name)


def grant(
    grant_id: str,
    subject: str,
    role: str = "view",
    *,
    kind: str = "user",
    clusters: tuple[str, ...] = ("*",),
    t: float = 0,
    nb: float | None = None,
    exp: float | None = None,
    **kw: Any,
) -> ev.GrantIssued:
    return ev.GrantIssued(
        **_env(t),
        grant_id=grant_id,
        subject_kind=kind,
        subject=subject,
        role=role,
        clusters=clusters,
        not_before=None if nb is None else at(nb),
        expires_at=None if exp is None else at(exp),
        **kw,
    )


def grant_revoked(grant_id: str, t: float = 0) -> ev.GrantRevoked:
    return ev.GrantRevoked(**_env(t), grant_id=grant_id)


def grant_expired(grant_id: str, when: float, t: float = 0) -> ev.GrantExpired:
    return ev.GrantExpired(**_env(t), grant_id=grant_id, expired_at=at(when))


def kubectl_off(scope: str, target: str = "", t: float = 0) -> ev.KubectlDisabled:
    return ev.KubectlDisabled(**_env(t), scope=scope, target=target)


def kubectl_on(scope: str, target: str = "", t: float = 0) -> ev.KubectlEnabled:
    return ev.KubectlEnabled(**_env(t), scope=scope, target=target)


def browser_only(scope: str, target: str = "", on: bool = True, t: float = 0) -> ev.BrowserOnlySet:
    return ev.BrowserOnlySet(**_env(t), scope=scope, target=target, enabled=on)


def console_required(
    scope: str, target: str = "", on: bool = True, t: float = 0
) -> ev.ConsoleSessionRequiredSet:
    return ev.ConsoleSessionRequiredSet(**_env(t), scope=scope, target=target, enabled=on)


def setting(t: float = 0, **values: Any) -> ev.SettingsChanged:
    return ev.SettingsChanged(
        **_env(t), settings={k.replace("__", "."): v for k, v in values.items()}
    )


def session(
    sid: str, u: str, t: float = 0, expires: float = 480, idle_s: int = 900
) -> ev.ConsoleSessionStarted:
    return ev.ConsoleSessionStarted(
        **_env(t, u), session_id=sid, user=u, expires_at=at(expires), idle_timeout_s=idle_s
    )


def touched(sid: str, u: str, t: float) -> ev.ConsoleSessionTouched:
    return ev.ConsoleSessionTouched(**_env(t, u), session_id=sid, user=u)


def session_ended(sid: str, u: str, t: float, reason: str = "logout") -> ev.ConsoleSessionEnded:
    return ev.ConsoleSessionEnded(**_env(t, u), session_id=sid, user=u, reason=reason)


def cert(
    serial: str, u: str, t: float | datetime = 0, nb: float | None = None, na: float = 60 * 24 * 30
) -> ev.CertificateIssued:
    """Issued (recorded) at `t`; valid from `nb` (default: `t`)."""
    start = at(nb) if nb is not None else (t if isinstance(t, datetime) else at(t))
    return ev.CertificateIssued(
        **_env(t), serial=serial, user=u, not_before=start, not_after=at(na)
    )


def cert_revoked(serial: str, u: str, t: float = 0) -> ev.CertificateRevoked:
    return ev.CertificateRevoked(**_env(t), serial=serial, user=u)


def bg_requested(
    rid: str, u: str, c: str, t: float = 0, duration_s: int = 1800, role: str = "cluster-admin",
    namespaces: tuple[str, ...] = (), reason: str = "incident 7",
) -> ev.BreakGlassRequested:  # fmt: skip
    return ev.BreakGlassRequested(
        **_env(t, u), request_id=rid, user=u, cluster=c, reason=reason, duration_s=duration_s,
        role=role, namespaces=namespaces,
    )  # fmt: skip


def bg_approved(rid: str, approver: str, grant_id: str, t: float = 0) -> ev.BreakGlassApproved:
    return ev.BreakGlassApproved(**_env(t, approver), request_id=rid, approver=approver,
                                 grant_id=grant_id)  # fmt: skip


def bg_denied(rid: str, approver: str, t: float = 0) -> ev.BreakGlassDenied:
    return ev.BreakGlassDenied(**_env(t, approver), request_id=rid, approver=approver)
