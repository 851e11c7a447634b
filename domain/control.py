"""The control plane's command layer: an eventsourcing `Application` over the aggregates.

Every command takes the acting identity (`actor`) and a caller-chosen `command_id`, and:

- loads the aggregates it needs, checks the rules and raises a `CommandRejectedError`
  subclass (`NotFoundError`, `AlreadyExistsError`, `InvalidCommandError`) when one is broken;
- records catalog events (`domain.events`) whose ids derive from the command id, the aggregate
  and the event's rank, so the same command always produces the same event ids (which the
  JetStream persistence uses as message ids);
- stores everything it recorded in one `save`, atomically, even across aggregates;
- is idempotent: an aggregate remembers the command ids that changed it, and a command whose
  id it has seen returns `CommandResult(duplicate=True)` without storing anything (and without
  re-checking rules, which the first run passed). A command whose goal already holds (disable
  a disabled user) stores nothing and reports no events;
- retries a lost optimistic-concurrency race (eventsourcing's `IntegrityError`: another writer
  changed one of its aggregates in between) by reloading, re-checking and re-applying, up to
  `max_attempts` times, then raises `ConcurrentUpdateError`.

Persistence is the application's: the environment (`PERSISTENCE_MODULE`, e.g.
`broker.es_persistence` for JetStream) or the `env` passed in picks it; this module imports no
infrastructure. Time comes from the `clock` passed in.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import msgspec
from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.persistence import IntegrityError, Mapper
from eventsourcing.utils import EnvType

from domain import events
from domain.aggregates import (
    AGGREGATES,
    BreakGlass,
    Certificate,
    Cluster,
    ConsoleSession,
    ControlAggregate,
    Credential,
    Grant,
    Group,
    Settings,
    Switch,
    User,
    aggregate_id,
    fact_aggregate_id,
)
from domain.errors import (
    AlreadyExistsError,
    CommandRejectedError,
    ConcurrentUpdateError,
    InvalidCommandError,
    NotFoundError,
)
from domain.mapping import CatalogMapper

log = logging.getLogger("kubegate.domain.control")

A = TypeVar("A", bound=ControlAggregate)

EVENT_ID_NAMESPACE = uuid.UUID("6f1c7d1e-2b8a-4c55-9a57-3f0e9f6c1b20")
ROLES = ("view", "edit", "admin", "cluster-admin", "custom")
KNOWN_SETTINGS = (
    "breakglass.standing_access",
    "breakglass.approver_group",
    "breakglass.allow_self_approval",
    "breakglass.max_duration_s",
    "breakglass.min_duration_s",
)
MODES = ("cli", "browser", "both")
SCOPES = ("global", "cluster", "user", "group")
MAX_NAME = 253


def event_id(command_id: str, aggregate: str, rank: int) -> str:
    """The id of the `rank`-th event a command records on an aggregate (stable across runs)."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{command_id}\n{aggregate}\n{rank}"))


@dataclass(frozen=True)
class CommandResult:
    """What a command stored: its events and their log positions (none if nothing changed);
    `duplicate` if this command id had been applied before."""

    command_id: str
    events: tuple[events.Event, ...] = ()
    positions: tuple[int, ...] = ()
    duplicate: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.events)


class _Attempt:
    """One attempt at one command: the aggregates it read and the facts it recorded."""

    def __init__(self, app: ControlPlane, command_id: str, actor: str, now: datetime) -> None:
        self.app = app
        self.command_id = command_id
        self.actor = actor
        self.now = now
        self.loaded: dict[str, ControlAggregate | None] = {}
        self.changed: dict[str, ControlAggregate] = {}
        self.facts: list[events.Event] = []
        self.seen = False
        self._ranks: dict[str, int] = {}

    def get(self, cls: type[A], key: str) -> A | None:
        agg_id = aggregate_id(cls.FAMILY, key)
        if agg_id not in self.loaded:
            try:
                found = self.app.repository.get(agg_id)
            except AggregateNotFoundError:
                found = None
            if found is not None and self.command_id in found.causes:
                self.seen = True
            self.loaded[agg_id] = found
        found = self.loaded[agg_id]
        if found is not None and not isinstance(found, cls):
            raise InvalidCommandError(f"{agg_id} is a {type(found).__name__}")
        return found

    def require(self, cls: type[A], key: str) -> A:
        found = self.get(cls, key)
        if found is None:
            raise NotFoundError(f"no {cls.FAMILY} {key!r}")
        return found

    def record(self, fact_cls: type[events.Event], **fields: Any) -> events.Event:
        """Record a new fact (id, time, actor and cause filled in) on its aggregate."""
        draft = fact_cls(id="", time=self.now, actor=self.actor, cause=self.command_id, **fields)
        agg_id = fact_aggregate_id(draft)
        rank = self._ranks.get(agg_id, 0)
        self._ranks[agg_id] = rank + 1
        fact = msgspec.structs.replace(draft, id=event_id(self.command_id, agg_id, rank))
        family, key = fact.key()
        current = self.get(AGGREGATES[family], key)
        if current is None:
            current = AGGREGATES[family].start(fact)
            self.loaded[agg_id] = current
        else:
            current.record(fact)
        self.changed[agg_id] = current
        self.facts.append(fact)
        return fact


class ControlPlane(Application[str]):
    """Commands that change users, groups, clusters, grants, switches, break-glass requests,
    console sessions and certificates. Construct with a `clock` (aware datetimes)."""

    name = "ControlPlane"

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        clock: Callable[[], datetime],
        max_attempts: int = 5,
    ) -> None:
        self.clock = clock
        self.max_attempts = max_attempts
        super().__init__(env)

    def construct_mapper(self) -> Mapper[str]:
        return CatalogMapper()

    # --- reading ---------------------------------------------------------------------------

    def find(self, cls: type[A], key: str) -> A | None:
        """The current state of one aggregate, or None."""
        try:
            found = self.repository.get(aggregate_id(cls.FAMILY, key))
        except AggregateNotFoundError:
            return None
        return found if isinstance(found, cls) else None

    # --- users -----------------------------------------------------------------------------

    def register_user(
        self,
        user: str,
        *,
        actor: str,
        command_id: str,
        display_name: str = "",
        email: str = "",
        source: str = "local",
        issuer: str = "",
        oidc_subject: str = "",
        groups: Iterable[str] = (),
    ) -> CommandResult:
        """A new user, member of `groups` (which must exist), all in one atomic append."""
        _name(user, "user")
        wanted_groups = list(dict.fromkeys(groups))
        if source not in ("local", "oidc"):
            raise InvalidCommandError(f"user source must be local or oidc, not {source!r}")
        if source == "oidc" and not (issuer and oidc_subject):
            raise InvalidCommandError("an oidc user needs its issuer and subject")

        def decide(c: _Attempt) -> None:
            if c.get(User, user) is not None:
                raise AlreadyExistsError(f"user {user!r} exists")
            members = [_active_group(c, g) for g in wanted_groups]
            c.record(
                events.UserRegistered,
                user=user,
                display_name=display_name,
                email=email,
                source=source,
                issuer=issuer,
                oidc_subject=oidc_subject,
            )
            for group in members:
                c.record(events.MemberAdded, group=group.key, user=user)

        return self._run(command_id, actor, decide)

    def disable_user(
        self, user: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        def decide(c: _Attempt) -> None:
            if c.require(User, user).enabled:
                c.record(events.UserDisabled, user=user, reason=reason)

        return self._run(command_id, actor, decide)

    def enable_user(
        self, user: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        """Enable a user; also lifts an access revocation (older certificates stay refused)."""

        def decide(c: _Attempt) -> None:
            found = c.require(User, user)
            if not found.enabled or found.revoked:
                c.record(events.UserEnabled, user=user, reason=reason)

        return self._run(command_id, actor, decide)

    def revoke_user_access(
        self, user: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        """Cut everything the user holds, now. Always recorded: each revocation is a moment."""

        def decide(c: _Attempt) -> None:
            c.require(User, user)
            c.record(events.UserAccessRevoked, user=user, reason=reason)

        return self._run(command_id, actor, decide)

    def set_password_hash(
        self, user: str, password_hash: str, *, actor: str, command_id: str
    ) -> CommandResult:
        """A local user's password, as an argon2 PHC hash (never the password itself)."""
        if not password_hash.startswith("$argon2"):
            raise InvalidCommandError("a password hash must be an argon2 PHC string")

        def decide(c: _Attempt) -> None:
            found = c.require(User, user)
            if found.source != "local":
                raise InvalidCommandError(f"user {user!r} signs in through {found.source}")
            credential = c.get(Credential, user)
            if credential is None or credential.password_hash != password_hash:
                c.record(events.PasswordSet, user=user, password_hash=password_hash)

        return self._run(command_id, actor, decide)

    def sync_idp_groups(
        self, user: str, issuer: str, groups: Iterable[str], *, actor: str, command_id: str
    ) -> CommandResult:
        """The groups an identity provider asserted at login (replaces that issuer's set)."""
        asserted = tuple(sorted(set(groups)))
        if not issuer:
            raise InvalidCommandError("IdP groups need their issuer")

        def decide(c: _Attempt) -> None:
            found = c.require(User, user)
            if found.idp_groups.get(issuer) != asserted:
                c.record(events.IdpGroupsSynced, user=user, issuer=issuer, groups=asserted)

        return self._run(command_id, actor, decide)

    # --- groups ----------------------------------------------------------------------------

    def create_group(
        self, group: str, *, actor: str, command_id: str, description: str = ""
    ) -> CommandResult:
        _name(group, "group")

        def decide(c: _Attempt) -> None:
            found = c.get(Group, group)
            if found is not None and not found.deleted:
                raise AlreadyExistsError(f"group {group!r} exists")
            c.record(events.GroupCreated, group=group, description=description)

        return self._run(command_id, actor, decide)

    def delete_group(
        self, group: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        def decide(c: _Attempt) -> None:
            found = c.require(Group, group)
            if not found.deleted:
                c.record(events.GroupDeleted, group=group, reason=reason)

        return self._run(command_id, actor, decide)

    def add_member(self, group: str, user: str, *, actor: str, command_id: str) -> CommandResult:
        def decide(c: _Attempt) -> None:
            found = _active_group(c, group)
            c.require(User, user)
            if user not in found.members:
                c.record(events.MemberAdded, group=group, user=user)

        return self._run(command_id, actor, decide)

    def remove_member(
        self, group: str, user: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        def decide(c: _Attempt) -> None:
            if user in _active_group(c, group).members:
                c.record(events.MemberRemoved, group=group, user=user, reason=reason)

        return self._run(command_id, actor, decide)

    # --- clusters --------------------------------------------------------------------------

    def register_cluster(
        self,
        cluster: str,
        *,
        actor: str,
        command_id: str,
        labels: Mapping[str, str] | None = None,
        display_name: str = "",
    ) -> CommandResult:
        _name(cluster, "cluster")
        wanted = _labels(labels or {})

        def decide(c: _Attempt) -> None:
            found = c.get(Cluster, cluster)
            if found is not None and not found.removed:
                raise AlreadyExistsError(f"cluster {cluster!r} exists")
            c.record(
                events.ClusterRegistered, cluster=cluster, labels=wanted, display_name=display_name
            )

        return self._run(command_id, actor, decide)

    def set_cluster_labels(
        self, cluster: str, labels: Mapping[str, str], *, actor: str, command_id: str
    ) -> CommandResult:
        wanted = _labels(labels)

        def decide(c: _Attempt) -> None:
            if _active_cluster(c, cluster).labels != wanted:
                c.record(events.ClusterLabelsSet, cluster=cluster, labels=wanted)

        return self._run(command_id, actor, decide)

    def remove_cluster(
        self, cluster: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        def decide(c: _Attempt) -> None:
            if not c.require(Cluster, cluster).removed:
                c.record(events.ClusterRemoved, cluster=cluster, reason=reason)

        return self._run(command_id, actor, decide)

    # --- grants ----------------------------------------------------------------------------

    def issue_grant(
        self,
        grant_id: str,
        *,
        actor: str,
        command_id: str,
        subject_kind: str,
        subject: str,
        role: str,
        clusters: Iterable[str] = (),
        cluster_selector: Mapping[str, str] | None = None,
        namespaces: Iterable[str] = (),
        rules: Iterable[events.Rule] = (),
        not_before: datetime | None = None,
        expires_at: datetime | None = None,
        mode: str = "both",
        reason: str = "",
    ) -> CommandResult:
        """Access for an existing user or group to named (registered) or labelled clusters."""
        _name(grant_id, "grant")
        spec = _grant_spec(
            subject_kind=subject_kind,
            subject=subject,
            role=role,
            clusters=tuple(dict.fromkeys(clusters)),
            cluster_selector=_labels(cluster_selector or {}),
            namespaces=tuple(dict.fromkeys(namespaces)),
            rules=tuple(rules),
            not_before=not_before,
            expires_at=expires_at,
            mode=mode,
            reason=reason,
        )

        def decide(c: _Attempt) -> None:
            if c.get(Grant, grant_id) is not None:
                raise AlreadyExistsError(f"grant {grant_id!r} exists")
            _check_grant(c, spec)
            c.record(events.GrantIssued, grant_id=grant_id, **spec)

        return self._run(command_id, actor, decide)

    def revoke_grant(
        self, grant_id: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        def decide(c: _Attempt) -> None:
            if not c.require(Grant, grant_id).revoked:
                c.record(events.GrantRevoked, grant_id=grant_id, reason=reason)

        return self._run(command_id, actor, decide)

    def record_grant_expiry(self, grant_id: str, *, actor: str, command_id: str) -> CommandResult:
        """Write down, for audit, that a grant's window has closed. Access already ended on
        the second without this event (projections time it); nothing is recorded for a grant
        still in its window, revoked, or whose expiry is already recorded."""

        def decide(c: _Attempt) -> None:
            grant = c.require(Grant, grant_id)
            issued = grant.issued
            assert issued is not None
            if grant.revoked or grant.expired or issued.expires_at is None:
                return
            if issued.expires_at > c.now:
                raise InvalidCommandError(f"grant {grant_id!r} has not expired yet")
            c.record(events.GrantExpired, grant_id=grant_id, expired_at=issued.expires_at)

        return self._run(command_id, actor, decide)

    # --- switches --------------------------------------------------------------------------

    def disable_kubectl(
        self, scope: str, target: str = "", *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        return self._switch(scope, target, actor, command_id, "kubectl_disabled", True, reason)

    def enable_kubectl(
        self, scope: str, target: str = "", *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        return self._switch(scope, target, actor, command_id, "kubectl_disabled", False, reason)

    def set_browser_only(
        self,
        scope: str,
        target: str = "",
        *,
        enabled: bool,
        actor: str,
        command_id: str,
        reason: str = "",
    ) -> CommandResult:
        return self._switch(scope, target, actor, command_id, "browser_only", enabled, reason)

    def set_console_session_required(
        self,
        scope: str,
        target: str = "",
        *,
        enabled: bool,
        actor: str,
        command_id: str,
        reason: str = "",
    ) -> CommandResult:
        return self._switch(
            scope, target, actor, command_id, "console_session_required", enabled, reason
        )

    def _switch(
        self,
        scope: str,
        target: str,
        actor: str,
        command_id: str,
        setting: str,
        value: bool,
        reason: str,
    ) -> CommandResult:
        if scope not in SCOPES:
            raise InvalidCommandError(f"switch scope must be one of {SCOPES}, not {scope!r}")
        if (scope == "global") != (target == ""):
            raise InvalidCommandError("a global switch has no target; any other needs one")

        def decide(c: _Attempt) -> None:
            if scope == "user":
                c.require(User, target)
            elif scope == "group":
                _active_group(c, target)
            elif scope == "cluster":
                _active_cluster(c, target)
            key = f"{scope}:{target}"
            current = c.get(Switch, key)
            if current is not None and getattr(current, setting) == value:
                return
            where = {"scope": scope, "target": target, "reason": reason}
            if setting == "kubectl_disabled":
                c.record(events.KubectlDisabled if value else events.KubectlEnabled, **where)
            elif setting == "browser_only":
                c.record(events.BrowserOnlySet, enabled=value, **where)
            else:
                c.record(events.ConsoleSessionRequiredSet, enabled=value, **where)

        return self._run(command_id, actor, decide)

    # --- break-glass -----------------------------------------------------------------------

    def change_settings(
        self,
        values: Mapping[str, str | int | float | bool],
        *,
        actor: str,
        command_id: str,
    ) -> CommandResult:
        """Change fleet settings (only the keys given); unknown keys are refused."""
        unknown = sorted(set(values) - set(KNOWN_SETTINGS))
        if unknown:
            raise InvalidCommandError(
                f"unknown setting {unknown[0]!r}: known are {', '.join(KNOWN_SETTINGS)}"
            )
        if not values:
            raise InvalidCommandError("name at least one setting")

        def decide(c: _Attempt) -> None:
            current = c.get(Settings, "fleet")
            have = current.values if current is not None else {}
            changed = {k: v for k, v in values.items() if have.get(k) != v}
            if changed:
                c.record(events.SettingsChanged, settings=changed)

        return self._run(command_id, actor, decide)

    def request_breakglass(
        self,
        request_id: str,
        *,
        actor: str,
        command_id: str,
        user: str,
        cluster: str,
        reason: str,
        duration_s: int,
        role: str = "cluster-admin",
        namespaces: Iterable[str] = (),
    ) -> CommandResult:
        """An emergency access request; it grants nothing until approved."""
        _name(request_id, "break-glass request")
        if not reason.strip():
            raise InvalidCommandError("a break-glass request needs a reason")
        if duration_s <= 0:
            raise InvalidCommandError("a break-glass duration must be positive")
        if role not in ROLES or role == "custom":
            raise InvalidCommandError(f"break-glass role must be a built-in role, not {role!r}")

        def decide(c: _Attempt) -> None:
            if c.get(BreakGlass, request_id) is not None:
                raise AlreadyExistsError(f"break-glass request {request_id!r} exists")
            c.require(User, user)
            _active_cluster(c, cluster)
            c.record(
                events.BreakGlassRequested,
                request_id=request_id,
                user=user,
                cluster=cluster,
                reason=reason,
                duration_s=duration_s,
                role=role,
                namespaces=tuple(namespaces),
            )

        return self._run(command_id, actor, decide)

    def approve_breakglass(
        self,
        request_id: str,
        *,
        actor: str,
        command_id: str,
        grant_id: str,
        self_approved: bool = False,
        reason: str = "",
    ) -> CommandResult:
        """Approve a pending request: the approval and the grant it issues (valid from now
        for the requested duration) are stored together. The requester may approve only as
        an explicit self-approval (`self_approved`, which policy decides to allow)."""
        _name(grant_id, "grant")

        def decide(c: _Attempt) -> None:
            pending = c.require(BreakGlass, request_id)
            request = pending.request
            assert request is not None
            if pending.status != "requested":
                raise InvalidCommandError(f"break-glass request {request_id!r} is {pending.status}")
            if (actor == request.user) != self_approved:
                raise InvalidCommandError(
                    "only the requester self-approves, and only explicitly"
                    if actor == request.user
                    else "self_approved is for the requester"
                )
            if c.get(Grant, grant_id) is not None:
                raise AlreadyExistsError(f"grant {grant_id!r} exists")
            c.record(
                events.BreakGlassApproved,
                request_id=request_id,
                approver=actor,
                grant_id=grant_id,
                self_approved=self_approved,
                reason=reason,
            )
            c.record(
                events.GrantIssued,
                grant_id=grant_id,
                subject_kind="user",
                subject=request.user,
                role=request.role,
                clusters=(request.cluster,),
                namespaces=request.namespaces,
                not_before=c.now,
                expires_at=c.now + timedelta(seconds=request.duration_s),
                reason=request.reason,
                breakglass_id=request_id,
            )

        return self._run(command_id, actor, decide)

    def deny_breakglass(
        self, request_id: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        def decide(c: _Attempt) -> None:
            pending = c.require(BreakGlass, request_id)
            if pending.status != "requested":
                raise InvalidCommandError(f"break-glass request {request_id!r} is {pending.status}")
            c.record(events.BreakGlassDenied, request_id=request_id, approver=actor, reason=reason)

        return self._run(command_id, actor, decide)

    # --- console sessions and certificates -------------------------------------------------

    def start_console_session(
        self,
        session_id: str,
        *,
        actor: str,
        command_id: str,
        user: str,
        expires_at: datetime,
        idle_timeout_s: int,
        token_hash: str = "",
        method: str = "password",
    ) -> CommandResult:
        _name(session_id, "session")
        if idle_timeout_s <= 0:
            raise InvalidCommandError("an idle timeout must be positive")

        def decide(c: _Attempt) -> None:
            if c.get(ConsoleSession, session_id) is not None:
                raise AlreadyExistsError(f"session {session_id!r} exists")
            found = c.require(User, user)
            if not found.enabled or found.revoked:
                raise InvalidCommandError(f"user {user!r} is disabled or revoked")
            if expires_at <= c.now:
                raise InvalidCommandError("a session must expire in the future")
            c.record(
                events.ConsoleSessionStarted,
                session_id=session_id,
                user=user,
                expires_at=expires_at,
                idle_timeout_s=idle_timeout_s,
                token_hash=token_hash,
                method=method,
            )

        return self._run(command_id, actor, decide)

    def end_console_session(
        self, session_id: str, *, actor: str, command_id: str, reason: str = "logout"
    ) -> CommandResult:
        if reason not in ("logout", "idle", "expired", "revoked"):
            raise InvalidCommandError(f"unknown session end reason {reason!r}")

        def decide(c: _Attempt) -> None:
            found = c.require(ConsoleSession, session_id)
            if not found.ended:
                c.record(
                    events.ConsoleSessionEnded,
                    session_id=session_id,
                    user=found.user,
                    reason=reason,
                )

        return self._run(command_id, actor, decide)

    def touch_console_session(
        self, session_id: str, *, actor: str, command_id: str
    ) -> CommandResult:
        """Activity on a live session (callers throttle it), so every reader of the log can
        judge its idleness. A session that has ended, expired or gone idle stays over."""

        def decide(c: _Attempt) -> None:
            found = c.require(ConsoleSession, session_id)
            over = _session_over(found, c.now)
            if over:
                raise InvalidCommandError(f"session {session_id!r} is over ({over})")
            c.record(events.ConsoleSessionTouched, session_id=session_id, user=found.user)

        return self._run(command_id, actor, decide)

    def expire_console_session(
        self, session_id: str, *, actor: str, command_id: str
    ) -> CommandResult:
        """End a session whose absolute expiry or idle timeout has passed (reason `expired`
        or `idle`), judged here on the session's own history; nothing if it is still live
        or already ended. Sweepers on several replicas may race: one stores the end."""

        def decide(c: _Attempt) -> None:
            found = c.require(ConsoleSession, session_id)
            over = _session_over(found, c.now)
            if over in ("expired", "idle"):
                c.record(
                    events.ConsoleSessionEnded,
                    session_id=session_id,
                    user=found.user,
                    reason=over,
                )

        return self._run(command_id, actor, decide)

    def issue_certificate(
        self,
        serial: str,
        *,
        actor: str,
        command_id: str,
        user: str,
        not_before: datetime,
        not_after: datetime,
        fingerprint: str = "",
        clusters: Iterable[str] = (),
        session_id: str = "",
    ) -> CommandResult:
        """Record a client certificate kubegate issued; `session_id` names the console
        session of a browser-shell certificate."""
        _name(serial, "certificate serial")
        if not_after <= not_before:
            raise InvalidCommandError("a certificate must be valid for some time")

        def decide(c: _Attempt) -> None:
            if c.get(Certificate, serial) is not None:
                raise AlreadyExistsError(f"certificate {serial!r} exists")
            found = c.require(User, user)
            if not found.enabled or found.revoked:
                raise InvalidCommandError(f"user {user!r} is disabled or revoked")
            if session_id:
                session = c.require(ConsoleSession, session_id)
                if session.user != user:
                    raise InvalidCommandError(f"session {session_id!r} is not {user!r}'s")
                if session.ended:
                    raise InvalidCommandError(f"session {session_id!r} has ended")
                if session.expires_at is not None and not_after > session.expires_at:
                    raise InvalidCommandError(
                        "a browser certificate must not outlive its console session"
                    )
            c.record(
                events.CertificateIssued,
                serial=serial,
                user=user,
                not_before=not_before,
                not_after=not_after,
                fingerprint=fingerprint,
                clusters=tuple(clusters),
                session_id=session_id,
            )

        return self._run(command_id, actor, decide)

    def revoke_certificate(
        self, serial: str, *, actor: str, command_id: str, reason: str = ""
    ) -> CommandResult:
        def decide(c: _Attempt) -> None:
            found = c.require(Certificate, serial)
            if not found.revoked:
                c.record(events.CertificateRevoked, serial=serial, user=found.user, reason=reason)

        return self._run(command_id, actor, decide)

    # --- the command loop ------------------------------------------------------------------

    def _run(
        self, command_id: str, actor: str, decide: Callable[[_Attempt], None]
    ) -> CommandResult:
        if not command_id or not isinstance(command_id, str):
            raise InvalidCommandError("a command needs a command id")
        if not actor or not isinstance(actor, str):
            raise InvalidCommandError("a command needs an actor")
        for attempt_number in range(1, self.max_attempts + 1):
            now = self.clock()
            if now.tzinfo is None:
                raise InvalidCommandError("the clock must give timezone-aware times")
            attempt = _Attempt(self, command_id, actor, now)
            try:
                decide(attempt)
            except CommandRejectedError:
                if attempt.seen:
                    return CommandResult(command_id, duplicate=True)
                raise
            if attempt.seen:
                return CommandResult(command_id, duplicate=True)
            if not attempt.facts:
                return CommandResult(command_id)
            try:
                recordings = self.save(*attempt.changed.values())
            except IntegrityError as conflict:
                log.info(
                    "command lost a concurrent-update race; retrying",
                    extra={
                        "command_id": command_id,
                        "attempt": attempt_number,
                        "error": str(conflict),
                    },
                )
                continue
            return CommandResult(
                command_id,
                events=tuple(attempt.facts),
                positions=tuple(r.notification.id for r in recordings),
            )
        raise ConcurrentUpdateError(command_id, self.max_attempts)


# --- rules -----------------------------------------------------------------------------------


def _name(value: str, what: str) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidCommandError(f"a {what} needs a name")
    if len(value) > MAX_NAME:
        raise InvalidCommandError(f"a {what} name is at most {MAX_NAME} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise InvalidCommandError(f"{what} name {value!r} holds whitespace or control characters")


def _session_over(session: ConsoleSession, now: datetime) -> str:
    """Why a console session is over at `now` ("ended", "expired", "idle"), or ""."""
    if session.ended:
        return "ended"
    if session.expires_at is not None and now >= session.expires_at:
        return "expired"
    idle = timedelta(seconds=session.idle_timeout_s)
    if session.last_active is not None and now - session.last_active >= idle:
        return "idle"
    return ""


def _labels(labels: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidCommandError("labels map strings to strings")
        _name(key, "label")
        if any(ch.isspace() or not ch.isprintable() for ch in value):
            raise InvalidCommandError(f"label {key}={value!r} holds whitespace")
        out[key] = value
    return dict(sorted(out.items()))


def _active_group(c: _Attempt, group: str) -> Group:
    found = c.require(Group, group)
    if found.deleted:
        raise NotFoundError(f"group {group!r} was deleted")
    return found


def _active_cluster(c: _Attempt, cluster: str) -> Cluster:
    found = c.require(Cluster, cluster)
    if found.removed:
        raise NotFoundError(f"cluster {cluster!r} was removed")
    return found


def _grant_spec(**spec: Any) -> dict[str, Any]:
    """Check a grant's arguments on their own."""
    if spec["subject_kind"] not in ("user", "group"):
        raise InvalidCommandError("a grant's subject is a user or a group")
    _name(spec["subject"], spec["subject_kind"])
    if spec["role"] not in ROLES:
        raise InvalidCommandError(f"role must be one of {ROLES}, not {spec['role']!r}")
    if (spec["role"] == "custom") != bool(spec["rules"]):
        raise InvalidCommandError("rules go with the custom role, and only with it")
    if spec["mode"] not in MODES:
        raise InvalidCommandError(f"mode must be one of {MODES}, not {spec['mode']!r}")
    if not spec["clusters"] and not spec["cluster_selector"]:
        raise InvalidCommandError("a grant names clusters or selects them by labels")
    for moment in ("not_before", "expires_at"):
        if spec[moment] is not None and spec[moment].tzinfo is None:
            raise InvalidCommandError(f"{moment} must be timezone-aware")
    start, end = spec["not_before"], spec["expires_at"]
    if start is not None and end is not None and end <= start:
        raise InvalidCommandError("a grant must end after it starts")
    return spec


def _check_grant(c: _Attempt, spec: Mapping[str, Any]) -> None:
    """Check a grant against the state: its subject and named clusters exist, and it has not
    already ended."""
    if spec["subject_kind"] == "user":
        c.require(User, spec["subject"])
    else:
        _active_group(c, spec["subject"])
    for cluster in spec["clusters"]:
        if cluster != "*":
            _active_cluster(c, cluster)
    if spec["expires_at"] is not None and spec["expires_at"] <= c.now:
        raise InvalidCommandError("the grant would already have expired")
