"""PolicyState: everything `decide` needs, folded from catalog events.

`apply(event)` folds one event and returns whether it could change a decision; events the
policy does not use (logins, relays, kubectl activity, `UnknownEvent`s from the codec) are
ignored. Folding is lenient about order the write model already guards against (a member added
to a group nobody created still counts; a second approval of a break-glass request is ignored),
so replaying any prefix of the log never raises.

Time: event times and datetimes inside events without a timezone are taken as UTC.

Indexes kept for the hot path: grants by subject and, within a subject, by cluster name, with
grants that match clusters by `*` or labels apart; effective groups per user; a sorted timeline
of every instant at which a decision can change without an event (`next_deadline`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sortedcontainers import SortedList

from domain import events as ev
from domain.policy import roles
from domain.policy.errors import NaiveTimeError
from domain.policy.rules import RuleSet
from domain.policy.settings import PolicySettings, SettingValue, policy_settings

ALL = "*"
Via = Literal["cli", "browser"]


def utc(moment: datetime) -> datetime:
    """The same instant, timezone-aware (naive datetimes are taken as UTC)."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def require_aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None:
        raise NaiveTimeError(what)
    return moment


def _opt_utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else utc(moment)


# --- records ------------------------------------------------------------------------------


@dataclass(slots=True)
class UserRecord:
    user: str
    registered_at: datetime
    display_name: str = ""
    source: str = "local"
    enabled: bool = True
    disabled_by: Literal["", "disabled", "revoked"] = ""
    disabled_at: datetime | None = None
    disabled_reason: str = ""
    revoked_at: datetime | None = None
    """The last `UserAccessRevoked`: credentials issued before it never work again."""
    idp_issuer: str = ""
    idp_groups: frozenset[str] = frozenset()


@dataclass(slots=True)
class ClusterRecord:
    cluster: str
    labels: dict[str, str]
    display_name: str = ""

    @property
    def sensitive(self) -> bool:
        return self.labels.get("sensitive") == "true"


@dataclass(slots=True, eq=False)
class GrantRecord:
    """A grant as the policy uses it; `issued` is the event itself for anything else."""

    grant_id: str
    issued: ev.GrantIssued
    issued_at: datetime
    rules: RuleSet
    cluster_names: frozenset[str]
    all_clusters: bool
    selector: dict[str, str]
    namespaces: frozenset[str]
    all_namespaces: bool
    not_before: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None = None
    revoked_reason: str = ""
    expiry_recorded: bool = False  # a GrantExpired is in the log

    @property
    def subject(self) -> tuple[str, str]:
        return (self.issued.subject_kind, self.issued.subject)

    @property
    def role(self) -> str:
        return self.issued.role

    @property
    def mode(self) -> str:
        return self.issued.mode

    @property
    def breakglass_id(self) -> str:
        return self.issued.breakglass_id

    def matches_cluster(self, cluster: ClusterRecord) -> bool:
        if self.all_clusters or cluster.cluster in self.cluster_names:
            return True
        if not self.selector:
            return False
        labels = cluster.labels
        return all(labels.get(k) == v for k, v in self.selector.items())

    def active_at(self, now: datetime) -> bool:
        """Within [not_before, expires_at) and not revoked."""
        if self.revoked_at is not None:
            return False
        if self.not_before is not None and now < self.not_before:
            return False
        return self.expires_at is None or now < self.expires_at

    def allows_via(self, via: str) -> bool:
        return self.issued.mode == "both" or self.issued.mode == via

    def covers_namespace(self, namespace: str) -> bool:
        """Namespaced grants apply inside their namespaces only; cluster-scoped and
        all-namespace requests (namespace "") need an all-namespace grant."""
        return self.all_namespaces or (namespace != "" and namespace in self.namespaces)


@dataclass(slots=True)
class SwitchRecord:
    scope: str
    target: str
    time: datetime
    actor: str
    reason: str = ""


@dataclass(slots=True)
class SessionRecord:
    session_id: str
    user: str
    started_at: datetime
    expires_at: datetime
    idle_timeout: timedelta
    last_activity: datetime
    ended_at: datetime | None = None
    end_reason: str = ""

    @property
    def idle_deadline(self) -> datetime:
        return self.last_activity + self.idle_timeout

    def live_at(self, now: datetime, revoked_at: datetime | None) -> bool:
        """Started, not ended, before its absolute expiry and its idle deadline, and not
        started before the user's last access revocation."""
        if self.ended_at is not None or now < self.started_at:
            return False
        if revoked_at is not None and self.started_at < revoked_at:
            return False
        return now < self.expires_at and now < self.idle_deadline


@dataclass(slots=True)
class CertificateRecord:
    serial: str
    user: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    revoked_at: datetime | None = None
    revoked_reason: str = ""


@dataclass(slots=True)
class BreakGlassRecord:
    request_id: str
    user: str
    cluster: str
    reason: str
    duration_s: int
    role: str
    namespaces: tuple[str, ...]
    requested_at: datetime
    status: Literal["pending", "approved", "denied"] = "pending"
    approver: str = ""
    grant_id: str = ""
    self_approved: bool = False
    decided_at: datetime | None = None
    decision_reason: str = ""


@dataclass(slots=True)
class _SubjectGrants:
    by_cluster: dict[str, dict[str, GrantRecord]] = field(default_factory=dict)
    dynamic: dict[str, GrantRecord] = field(default_factory=dict)
    """Grants that match clusters by `*` or by labels."""
    all: dict[str, GrantRecord] = field(default_factory=dict)


SwitchKey = tuple[str, str]
CANDIDATE_CACHE_LIMIT = 200_000
_RESHAPES_CANDIDATES = frozenset(
    {
        ev.GrantIssued,
        ev.GrantRevoked,
        ev.ClusterRegistered,
        ev.ClusterLabelsSet,
        ev.ClusterRemoved,
        ev.MemberAdded,
        ev.MemberRemoved,
        ev.GroupDeleted,
        ev.IdpGroupsSynced,
    }
)
"""Events after which the cached (user, cluster) -> grants lists may be wrong."""


def switch_key(scope: str, target: str) -> SwitchKey:
    """Global switches have no target, whatever an event carries."""
    return (scope, "" if scope == "global" else target)


class PolicyState:
    """The in-memory policy projection. Mutated only by `apply`; read by decide/explain."""

    def __init__(self) -> None:
        self.users: dict[str, UserRecord] = {}
        self.clusters: dict[str, ClusterRecord] = {}
        self.group_members: dict[str, set[str]] = {}
        self.groups_created: set[str] = set()
        self.grants: dict[str, GrantRecord] = {}
        """Every grant ever issued, revoked ones included (see `GrantRecord.revoked_at`)."""
        self.kubectl_disabled: dict[SwitchKey, SwitchRecord] = {}
        self.browser_only: dict[SwitchKey, SwitchRecord] = {}
        self.console_required: dict[SwitchKey, SwitchRecord] = {}
        self.sessions: dict[str, SessionRecord] = {}
        self.certificates: dict[str, CertificateRecord] = {}
        self.breakglass: dict[str, BreakGlassRecord] = {}
        self.raw_settings: dict[str, SettingValue] = {}
        self.settings: PolicySettings = policy_settings({})
        self.events_applied = 0
        self._local_groups: dict[str, set[str]] = {}
        self._groups: dict[str, frozenset[str]] = {}
        self._live: dict[tuple[str, str], _SubjectGrants] = {}
        self._candidates: dict[tuple[str, str], tuple[GrantRecord, ...]] = {}
        self._retired: dict[tuple[str, str], dict[str, GrantRecord]] = {}
        self._user_sessions: dict[str, set[str]] = {}
        self._timeline: SortedList = SortedList()
        self.timeline_version = 0
        """Bumped whenever the set of deadlines changes: a timer armed for `next_deadline` at
        one version stays right until the version moves."""
        self._deadlines: dict[tuple[str, str], tuple[datetime, ...]] = {}
        self._handlers: dict[type, Callable[[Any], None]] = {
            ev.UserRegistered: self._user_registered,
            ev.UserDisabled: self._user_disabled,
            ev.UserEnabled: self._user_enabled,
            ev.UserAccessRevoked: self._user_revoked,
            ev.IdpGroupsSynced: self._idp_groups,
            ev.GroupCreated: self._group_created,
            ev.GroupDeleted: self._group_deleted,
            ev.MemberAdded: self._member_added,
            ev.MemberRemoved: self._member_removed,
            ev.ClusterRegistered: self._cluster_registered,
            ev.ClusterLabelsSet: self._cluster_labels,
            ev.ClusterRemoved: self._cluster_removed,
            ev.GrantIssued: self._grant_issued,
            ev.GrantRevoked: self._grant_revoked,
            ev.GrantExpired: self._grant_expired,
            ev.KubectlDisabled: self._kubectl_disabled,
            ev.KubectlEnabled: self._kubectl_enabled,
            ev.BrowserOnlySet: self._browser_only,
            ev.ConsoleSessionRequiredSet: self._console_required,
            ev.SettingsChanged: self._settings_changed,
            ev.ConsoleSessionStarted: self._session_started,
            ev.ConsoleSessionTouched: self._session_touched,
            ev.ConsoleSessionEnded: self._session_ended,
            ev.CertificateIssued: self._cert_issued,
            ev.CertificateRevoked: self._cert_revoked,
            ev.BreakGlassRequested: self._bg_requested,
            ev.BreakGlassApproved: self._bg_approved,
            ev.BreakGlassDenied: self._bg_denied,
        }

    # --- folding --------------------------------------------------------------------------

    @classmethod
    def folded_types(cls) -> frozenset[type]:
        """The event types `apply` folds; no other event can change a decision."""
        return frozenset(cls()._handlers)

    def apply(self, event: object) -> bool:
        """Fold one event. True if it is a kind of event that can change a decision."""
        handler = self._handlers.get(type(event))
        if handler is None:
            return False
        handler(event)
        self.events_applied += 1
        if type(event) in _RESHAPES_CANDIDATES:
            self._candidates.clear()
        return True

    def apply_all(self, events: Iterable[object]) -> PolicyState:
        for event in events:
            self.apply(event)
        return self

    # users and groups

    def _user_registered(self, e: ev.UserRegistered) -> None:
        record = self.users.get(e.user)
        if record is None:
            self.users[e.user] = UserRecord(
                user=e.user, registered_at=utc(e.time), display_name=e.display_name,
                source=e.source,
            )  # fmt: skip
        else:
            record.display_name, record.source = e.display_name, e.source

    def _user_disabled(self, e: ev.UserDisabled) -> None:
        record = self.users.get(e.user)
        if record is not None:
            record.enabled, record.disabled_by = False, "disabled"
            record.disabled_at, record.disabled_reason = utc(e.time), e.reason

    def _user_enabled(self, e: ev.UserEnabled) -> None:
        record = self.users.get(e.user)
        if record is not None:
            record.enabled, record.disabled_by = True, ""
            record.disabled_at, record.disabled_reason = None, ""

    def _user_revoked(self, e: ev.UserAccessRevoked) -> None:
        record = self.users.get(e.user)
        if record is not None:
            at = utc(e.time)
            record.enabled, record.disabled_by = False, "revoked"
            record.disabled_at, record.disabled_reason = at, e.reason
            record.revoked_at = at if record.revoked_at is None else max(record.revoked_at, at)

    def _idp_groups(self, e: ev.IdpGroupsSynced) -> None:
        record = self.users.get(e.user)
        if record is not None:
            record.idp_issuer, record.idp_groups = e.issuer, frozenset(e.groups)
            self._groups.pop(e.user, None)

    def _group_created(self, e: ev.GroupCreated) -> None:
        self.groups_created.add(e.group)

    def _group_deleted(self, e: ev.GroupDeleted) -> None:
        self.groups_created.discard(e.group)
        for user in self.group_members.pop(e.group, set()):
            self._local_groups.get(user, set()).discard(e.group)
            self._groups.pop(user, None)

    def _member_added(self, e: ev.MemberAdded) -> None:
        self.group_members.setdefault(e.group, set()).add(e.user)
        self._local_groups.setdefault(e.user, set()).add(e.group)
        self._groups.pop(e.user, None)

    def _member_removed(self, e: ev.MemberRemoved) -> None:
        self.group_members.get(e.group, set()).discard(e.user)
        self._local_groups.get(e.user, set()).discard(e.group)
        self._groups.pop(e.user, None)

    # clusters

    def _cluster_registered(self, e: ev.ClusterRegistered) -> None:
        self.clusters[e.cluster] = ClusterRecord(e.cluster, dict(e.labels), e.display_name)

    def _cluster_labels(self, e: ev.ClusterLabelsSet) -> None:
        record = self.clusters.get(e.cluster)
        if record is not None:
            record.labels = dict(e.labels)

    def _cluster_removed(self, e: ev.ClusterRemoved) -> None:
        self.clusters.pop(e.cluster, None)

    # grants

    def _grant_issued(self, e: ev.GrantIssued) -> None:
        old = self.grants.get(e.grant_id)
        if old is not None:
            self._unindex(old)
        namespaces = frozenset(e.namespaces)
        record = GrantRecord(
            grant_id=e.grant_id,
            issued=e,
            issued_at=utc(e.time),
            rules=roles.compiled(e.role, e.rules),
            cluster_names=frozenset(c for c in e.clusters if c != ALL),
            all_clusters=ALL in e.clusters,
            selector=dict(e.cluster_selector),
            namespaces=namespaces,
            all_namespaces=not namespaces or ALL in namespaces,
            not_before=_opt_utc(e.not_before),
            expires_at=_opt_utc(e.expires_at),
        )
        self.grants[e.grant_id] = record
        subject = (e.subject_kind, e.subject)
        bucket = self._live.get(subject)
        if bucket is None:  # not setdefault: that builds a throwaway bucket per grant
            bucket = self._live[subject] = _SubjectGrants()
        bucket.all[record.grant_id] = record
        for name in record.cluster_names:
            bucket.by_cluster.setdefault(name, {})[record.grant_id] = record
        if record.all_clusters or record.selector:
            bucket.dynamic[record.grant_id] = record
        self._set_deadlines(("grant", e.grant_id), record.not_before, record.expires_at)

    def _unindex(self, record: GrantRecord) -> None:
        bucket = self._live.get(record.subject)
        if bucket is not None:
            bucket.all.pop(record.grant_id, None)
            bucket.dynamic.pop(record.grant_id, None)
            for name in record.cluster_names:
                bucket.by_cluster.get(name, {}).pop(record.grant_id, None)
        self._retired.get(record.subject, {}).pop(record.grant_id, None)
        self._set_deadlines(("grant", record.grant_id))

    def _grant_revoked(self, e: ev.GrantRevoked) -> None:
        record = self.grants.get(e.grant_id)
        if record is None or record.revoked_at is not None:
            return
        self._unindex(record)
        record.revoked_at, record.revoked_reason = utc(e.time), e.reason
        self._retired.setdefault(record.subject, {})[record.grant_id] = record

    def _grant_expired(self, e: ev.GrantExpired) -> None:
        record = self.grants.get(e.grant_id)
        if record is None or record.revoked_at is not None:
            return
        record.expiry_recorded = True
        at = utc(e.expired_at)
        if record.expires_at is None or at < record.expires_at:
            record.expires_at = at
            self._set_deadlines(("grant", e.grant_id), record.not_before, record.expires_at)

    # switches and settings

    def _switch(self, table: dict[SwitchKey, SwitchRecord], e: Any, on: bool) -> None:
        key = switch_key(e.scope, e.target)
        if on:
            table[key] = SwitchRecord(key[0], key[1], utc(e.time), e.actor, e.reason)
        else:
            table.pop(key, None)

    def _kubectl_disabled(self, e: ev.KubectlDisabled) -> None:
        self._switch(self.kubectl_disabled, e, True)

    def _kubectl_enabled(self, e: ev.KubectlEnabled) -> None:
        self._switch(self.kubectl_disabled, e, False)

    def _browser_only(self, e: ev.BrowserOnlySet) -> None:
        self._switch(self.browser_only, e, e.enabled)

    def _console_required(self, e: ev.ConsoleSessionRequiredSet) -> None:
        self._switch(self.console_required, e, e.enabled)

    def _settings_changed(self, e: ev.SettingsChanged) -> None:
        self.raw_settings.update(e.settings)
        self.settings = policy_settings(self.raw_settings)

    # console sessions and certificates

    def _session_started(self, e: ev.ConsoleSessionStarted) -> None:
        started = utc(e.time)
        record = SessionRecord(
            session_id=e.session_id,
            user=e.user,
            started_at=started,
            expires_at=utc(e.expires_at),
            idle_timeout=timedelta(seconds=e.idle_timeout_s),
            last_activity=started,
        )
        old = self.sessions.get(e.session_id)
        if old is not None:
            self._user_sessions.get(old.user, set()).discard(e.session_id)
        self.sessions[e.session_id] = record
        self._user_sessions.setdefault(e.user, set()).add(e.session_id)
        self._set_deadlines(
            ("session", e.session_id), started, record.expires_at, record.idle_deadline
        )

    def _session_touched(self, e: ev.ConsoleSessionTouched) -> None:
        record = self.sessions.get(e.session_id)
        if record is None or record.ended_at is not None:
            return
        at = utc(e.time)
        if at > record.last_activity:
            record.last_activity = at
            self._set_deadlines(
                ("session", e.session_id), record.started_at, record.expires_at,
                record.idle_deadline,
            )  # fmt: skip

    def _session_ended(self, e: ev.ConsoleSessionEnded) -> None:
        record = self.sessions.get(e.session_id)
        if record is None or record.ended_at is not None:
            return
        record.ended_at, record.end_reason = utc(e.time), e.reason
        self._user_sessions.get(record.user, set()).discard(e.session_id)
        self._set_deadlines(("session", e.session_id))

    def _cert_issued(self, e: ev.CertificateIssued) -> None:
        self.certificates[e.serial] = CertificateRecord(
            serial=e.serial,
            user=e.user,
            not_before=utc(e.not_before),
            not_after=utc(e.not_after),
            issued_at=utc(e.time),
        )
        self._set_deadlines(("cert", e.serial), utc(e.not_before), utc(e.not_after))

    def _cert_revoked(self, e: ev.CertificateRevoked) -> None:
        record = self.certificates.get(e.serial)
        if record is not None and record.revoked_at is None:
            record.revoked_at, record.revoked_reason = utc(e.time), e.reason
            self._set_deadlines(("cert", e.serial))

    # break-glass

    def _bg_requested(self, e: ev.BreakGlassRequested) -> None:
        if e.request_id in self.breakglass:
            return
        self.breakglass[e.request_id] = BreakGlassRecord(
            request_id=e.request_id,
            user=e.user,
            cluster=e.cluster,
            reason=e.reason,
            duration_s=e.duration_s,
            role=e.role,
            namespaces=tuple(e.namespaces),
            requested_at=utc(e.time),
        )

    def _bg_approved(self, e: ev.BreakGlassApproved) -> None:
        record = self.breakglass.get(e.request_id)
        if record is None or record.status != "pending":
            return
        record.status, record.approver, record.grant_id = "approved", e.approver, e.grant_id
        record.self_approved, record.decided_at = e.self_approved, utc(e.time)
        record.decision_reason = e.reason

    def _bg_denied(self, e: ev.BreakGlassDenied) -> None:
        record = self.breakglass.get(e.request_id)
        if record is None or record.status != "pending":
            return
        record.status, record.approver = "denied", e.approver
        record.decided_at, record.decision_reason = utc(e.time), e.reason

    # --- deadlines ------------------------------------------------------------------------

    def _set_deadlines(self, key: tuple[str, str], *instants: datetime | None) -> None:
        old = self._deadlines.pop(key, None)
        if old is not None:
            self.timeline_version += 1
            for instant in old:
                self._timeline.discard((instant, key))
        # sorted and deduplicated by comparison: hashing aware datetimes is the slow part of
        # a set, and this runs for most events of a rebuild
        ordered = sorted([i for i in instants if i is not None])
        if not ordered:
            return
        kept = [ordered[0]]
        for instant in ordered[1:]:
            if instant != kept[-1]:
                kept.append(instant)
        self._deadlines[key] = tuple(kept)
        self.timeline_version += 1
        add = self._timeline.add
        for instant in kept:
            add((instant, key))

    def next_deadline(self, now: datetime) -> datetime | None:
        """The first instant after `now` at which a decision may change with no new event:
        a grant's not_before or expiry, a console session's absolute or idle expiry, a
        certificate's not_before or not_after. Arm one timer for it and re-check then."""
        require_aware(now, "now")
        index = self._timeline.bisect_right((now, ("\U0010ffff", "")))
        if index >= len(self._timeline):
            return None
        return self._timeline[index][0]

    # --- queries --------------------------------------------------------------------------

    def groups_of(self, user: str) -> frozenset[str]:
        """Local memberships and the groups the user's identity provider asserted."""
        groups = self._groups.get(user)
        if groups is None:
            record = self.users.get(user)
            idp = record.idp_groups if record is not None else frozenset()
            groups = frozenset(self._local_groups.get(user, ())) | idp
            self._groups[user] = groups
        return groups

    def local_groups_of(self, user: str) -> frozenset[str]:
        return frozenset(self._local_groups.get(user, ()))

    def subjects_of(self, user: str) -> list[tuple[str, str]]:
        """The grant subjects that reach a user: the user, then each group (sorted)."""
        return [("user", user)] + [("group", g) for g in sorted(self.groups_of(user))]

    def grants_on(self, subject: tuple[str, str], cluster: ClusterRecord) -> Iterator[GrantRecord]:
        """Unrevoked grants of one subject that match a cluster (in any time window)."""
        bucket = self._live.get(subject)
        if bucket is None:
            return
        named = bucket.by_cluster.get(cluster.cluster)
        if named:
            yield from named.values()
        for record in bucket.dynamic.values():
            if (not named or record.grant_id not in named) and record.matches_cluster(cluster):
                yield record

    def candidates(self, user: str, cluster: ClusterRecord) -> tuple[GrantRecord, ...]:
        """Every unrevoked grant that reaches `user` (directly or through a group) and matches
        `cluster`, in any time window, sorted by grant id. Cached until a grant, membership
        or cluster event; this is the edge's per-request lookup."""
        key = (user, cluster.cluster)
        found = self._candidates.get(key)
        if found is None:
            unique = {
                g.grant_id: g for s in self.subjects_of(user) for g in self.grants_on(s, cluster)
            }
            found = tuple(unique[k] for k in sorted(unique))
            if len(self._candidates) >= CANDIDATE_CACHE_LIMIT:
                self._candidates.clear()
            self._candidates[key] = found
        return found

    def subject_grants(self, subject: tuple[str, str]) -> Iterator[GrantRecord]:
        """Every unrevoked grant of one subject, whatever cluster."""
        bucket = self._live.get(subject)
        if bucket is not None:
            yield from bucket.all.values()

    def revoked_grants(self, subject: tuple[str, str]) -> Iterator[GrantRecord]:
        yield from self._retired.get(subject, {}).values()

    def live_session(self, user: str, now: datetime) -> SessionRecord | None:
        """One console session of the user that is live at `now`, if any."""
        record = self.users.get(user)
        revoked_at = record.revoked_at if record is not None else None
        for session_id in sorted(self._user_sessions.get(user, ())):
            session = self.sessions[session_id]
            if session.live_at(now, revoked_at):
                return session
        return None

    def valid_breakglass(self, grant: GrantRecord, cluster: str) -> BreakGlassRecord | None:
        """The approved break-glass request behind a grant, if the grant really is one for
        this cluster: the request was approved with this grant id, for this grant's user."""
        if not grant.breakglass_id:
            return None
        request = self.breakglass.get(grant.breakglass_id)
        if (
            request is None
            or request.status != "approved"
            or request.grant_id != grant.grant_id
            or request.cluster != cluster
            or grant.subject != ("user", request.user)
        ):
            return None
        return request
