"""What can a user do where, and why: the policy state seen from one user, as data.

For the console and `kubegate explain`: per cluster, every unrevoked grant that reaches the
user (directly, or through a local or IdP group - named), its time status at `now` and what it
is worth there (its whole role, read-only on a sensitive cluster, or nothing), the switches
that apply (kubectl off, browser-only, console session required) and what the user must do
to get access (`requirements`). The same helpers as `decide`, so the explanation cannot drift
from the decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

import msgspec

from domain.events import Rule
from domain.policy import roles
from domain.policy.decide import applicable_switch, scope_words
from domain.policy.rules import read_only
from domain.policy.state import ClusterRecord, GrantRecord, PolicyState, require_aware

GrantStatus = Literal["active", "not-yet-valid", "expired"]
Effect = Literal["full", "read-only", "none"]


class GrantView(msgspec.Struct, frozen=True, kw_only=True):
    grant_id: str
    role: str
    source: str
    """`direct`, `group <name>` (local membership) or `idp-group <name>`."""
    namespaces: tuple[str, ...]
    """Empty means every namespace and cluster-scoped resources."""
    mode: str
    status: GrantStatus
    effect: Effect
    """What it allows at `now` on this cluster: `none` when not active or cut entirely."""
    not_before: datetime | None = None
    expires_at: datetime | None = None
    breakglass_id: str = ""
    rules: tuple[Rule, ...] = ()
    """The rules in force (read-only cut applied); empty when `effect` is `none`."""
    note: str = ""


class SwitchView(msgspec.Struct, frozen=True, kw_only=True):
    kind: Literal["kubectl-disabled", "browser-only", "console-session-required"]
    applies: str
    """The words `decide` uses: `globally`, `for cluster x`, `for group y`, ..."""
    reason: str = ""
    since: datetime | None = None


class ClusterAccess(msgspec.Struct, frozen=True, kw_only=True):
    cluster: str
    registered: bool
    labels: dict[str, str] = {}
    sensitive: bool = False
    grants: tuple[GrantView, ...] = ()
    switches: tuple[SwitchView, ...] = ()
    kubeconfig_usable: bool = False
    """Whether a downloaded kubeconfig can be used here at `now` (given some grant allows)."""
    browser_usable: bool = False
    requirements: tuple[str, ...] = ()
    """What stands between the user and access here, one line each."""


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    user: str
    known: bool
    enabled: bool = False
    status: str = ""
    local_groups: tuple[str, ...] = ()
    idp_groups: tuple[str, ...] = ()
    live_console_session: str = ""
    clusters: tuple[ClusterAccess, ...] = ()
    pending_breakglass: tuple[str, ...] = ()


def _source(state: PolicyState, user: str, grant: GrantRecord) -> str:
    kind, subject = grant.subject
    if kind == "user":
        return "direct"
    if subject in state.local_groups_of(user):
        return f"group {subject}"
    return f"idp-group {subject}"


def _status(grant: GrantRecord, now: datetime) -> GrantStatus:
    if grant.expires_at is not None and now >= grant.expires_at:
        return "expired"
    if grant.not_before is not None and now < grant.not_before:
        return "not-yet-valid"
    return "active"


def _grant_view(
    state: PolicyState, user: str, grant: GrantRecord, cluster: ClusterRecord, now: datetime
) -> GrantView:
    status = _status(grant, now)
    rules = roles.rules_for(grant.role, grant.issued.rules)
    valid_bg = state.valid_breakglass(grant, cluster.cluster) is not None
    note = ""
    effect: Effect = "full"
    if cluster.sensitive and not valid_bg:
        if state.settings.standing_access == "read-only":
            effect, rules = "read-only", read_only(rules)
            note = "sensitive cluster: standing grants allow get, list and watch only"
        else:
            effect, rules = "none", ()
            note = "sensitive cluster: standing access is disabled"
    if grant.breakglass_id and not valid_bg:
        note = (note + "; " if note else "") + "break-glass id does not match an approval"
    if not rules and grant.role not in roles.BUILTIN_ROLES and grant.role != roles.CUSTOM:
        note = (note + "; " if note else "") + f"unknown role {grant.role!r} allows nothing"
    if status != "active":
        effect, rules = "none", ()
    return GrantView(
        grant_id=grant.grant_id,
        role=grant.role,
        source=_source(state, user, grant),
        namespaces=() if grant.all_namespaces else tuple(sorted(grant.namespaces)),
        mode=grant.mode,
        status=status,
        effect=effect if rules else "none",
        not_before=grant.not_before,
        expires_at=grant.expires_at,
        breakglass_id=grant.breakglass_id,
        rules=tuple(rules),
        note=note,
    )


def _switch_views(
    state: PolicyState, cluster: str, user: str, groups: list[str]
) -> list[SwitchView]:
    views: list[SwitchView] = []
    tables = (
        ("kubectl-disabled", state.kubectl_disabled),
        ("browser-only", state.browser_only),
        ("console-session-required", state.console_required),
    )
    for kind, table in tables:
        key = applicable_switch(table, cluster, user, groups)
        if key is not None:
            record = table[key]
            views.append(
                SwitchView(
                    kind=kind,  # type: ignore[arg-type]
                    applies=scope_words(key),
                    reason=record.reason,
                    since=record.time,
                )
            )
    return views


def _cluster_access(
    state: PolicyState, user: str, name: str, now: datetime, live_session: bool
) -> ClusterAccess:
    cluster = state.clusters.get(name)
    if cluster is None:
        return ClusterAccess(
            cluster=name, registered=False, requirements=(f"cluster {name} is not registered",)
        )
    grants = sorted(
        (g for s in state.subjects_of(user) for g in state.grants_on(s, cluster)),
        key=lambda g: g.grant_id,
    )
    views = tuple(_grant_view(state, user, g, cluster, now) for g in grants)
    groups = sorted(state.groups_of(user))
    switches = _switch_views(state, name, user, groups)
    kinds = {s.kind for s in switches}
    usable = [v for v in views if v.effect != "none"]
    requirements: list[str] = []
    for switch in switches:
        if switch.kind == "kubectl-disabled":
            requirements.append(f"kubectl is disabled {switch.applies}")
        elif switch.kind == "browser-only":
            requirements.append(f"kubeconfigs are refused {switch.applies}: use the browser shell")
        elif not live_session:
            requirements.append(f"a live console session is required {switch.applies}")
    if not usable:
        requirements.append("no active grant on this cluster")
    if cluster.sensitive:
        requirements.append("writes need an approved break-glass request (sensitive cluster)")
    blocked = "kubectl-disabled" in kinds
    cli = (
        not blocked
        and "browser-only" not in kinds
        and ("console-session-required" not in kinds or live_session)
        and any(v.mode in ("cli", "both") for v in usable)
    )
    browser = not blocked and any(v.mode in ("browser", "both") for v in usable)
    return ClusterAccess(
        cluster=name,
        registered=True,
        labels=dict(cluster.labels),
        sensitive=cluster.sensitive,
        grants=views,
        switches=tuple(switches),
        kubeconfig_usable=cli,
        browser_usable=browser,
        requirements=tuple(requirements),
    )


def explain(
    state: PolicyState, user: str, now: datetime, clusters: Iterable[str] | None = None
) -> Explanation:
    """The user's access at `now`, for the given clusters or every cluster the user holds an
    unrevoked grant on (registered or not)."""
    require_aware(now, "now")
    record = state.users.get(user)
    if record is None:
        return Explanation(user=user, known=False, status=f"user {user} is not known")
    if record.enabled:
        status = "enabled"
    elif record.disabled_by == "revoked":
        status = f"access revoked at {record.disabled_at.isoformat() if record.disabled_at else ''}"
    else:
        status = "disabled"
    if clusters is None:
        names: set[str] = set()
        for subject in state.subjects_of(user):
            for grant in state.subject_grants(subject):
                names.update(grant.cluster_names)
                if grant.all_clusters or grant.selector:
                    names.update(
                        c.cluster for c in state.clusters.values() if grant.matches_cluster(c)
                    )
        clusters = names
    session = state.live_session(user, now)
    access = tuple(
        _cluster_access(state, user, name, now, session is not None) for name in sorted(clusters)
    )
    local = state.local_groups_of(user)
    pending = tuple(
        sorted(
            r.request_id
            for r in state.breakglass.values()
            if r.user == user and r.status == "pending"
        )
    )
    return Explanation(
        user=user,
        known=True,
        enabled=record.enabled,
        status=status,
        local_groups=tuple(sorted(local)),
        idp_groups=tuple(sorted(record.idp_groups)),
        live_console_session=session.session_id if session is not None else "",
        clusters=access,
        pending_breakglass=pending,
    )
