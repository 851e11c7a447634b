"""The sessions read model: console sessions, issued certificates, JIT service accounts per
cluster, and kubectl requests still open (requested, not yet completed).

`SessionsState.apply(event)` is the fold: no I/O, time only from events, so the same events
always give the same state (replay uses it as is). `SessionsProjection` wires it to a runner.
Ended sessions and revoked certificates are kept so questions "at time t" stay answerable;
`prune` drops what ended before a horizon.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry

from domain import events as ev
from projections.records import LogRecord
from projections.runner import ProjectionRunner


@dataclass
class ConsoleSession:
    session_id: str
    user: str
    started_at: datetime
    expires_at: datetime
    idle_timeout_s: int
    last_active: datetime
    method: str = "password"
    ended_at: datetime | None = None
    end_reason: str = ""

    def live_at(self, now: datetime) -> bool:
        """Started, not ended, not past its expiry, and active within its idle timeout."""
        if self.ended_at is not None and self.ended_at <= now:
            return False
        if not self.started_at <= now < self.expires_at:
            return False
        return now - self.last_active < timedelta(seconds=self.idle_timeout_s)

    def over_by(self) -> datetime:
        """When it stopped being live at the latest (end, expiry or idleness)."""
        idle_end = self.last_active + timedelta(seconds=self.idle_timeout_s)
        ends = [self.expires_at, idle_end]
        if self.ended_at is not None:
            ends.append(self.ended_at)
        return min(ends)


@dataclass
class Certificate:
    serial: str
    user: str
    not_before: datetime
    not_after: datetime
    issued_at: datetime
    fingerprint: str = ""
    clusters: tuple[str, ...] = ()
    revoked_at: datetime | None = None
    revoke_reason: str = ""

    def valid_at(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.not_before <= now < self.not_after


@dataclass
class ServiceAccount:
    cluster: str
    user: str
    namespace: str
    name: str
    provisioned_at: datetime
    relay_id: str = ""
    bindings: tuple[str, ...] = ()


@dataclass
class KubectlStream:
    """An allowed kubectl request not yet completed (a watch, exec, port-forward, or any
    request in flight)."""

    request_id: str
    user: str
    cluster: str
    started_at: datetime
    verb: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    grant_id: str = ""
    via: str = "cli"
    edge_id: str = ""


@dataclass
class SessionsState:
    sessions: dict[str, ConsoleSession] = field(default_factory=dict)
    certificates: dict[str, Certificate] = field(default_factory=dict)
    service_accounts: dict[tuple[str, str], ServiceAccount] = field(default_factory=dict)
    """(cluster, user) -> the user's JIT service account in that cluster."""
    streams: dict[str, KubectlStream] = field(default_factory=dict)
    """request id -> open kubectl request."""
    _sessions_by_user: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _certs_by_user: dict[str, set[str]] = field(default_factory=dict, repr=False)

    # --- the fold -----------------------------------------------------------------------------

    def apply(self, event: Any) -> None:
        """Fold one event in; events of no concern here (and unknown ones) change nothing."""
        match event:
            case ev.ConsoleSessionStarted():
                self.sessions[event.session_id] = ConsoleSession(
                    session_id=event.session_id,
                    user=event.user,
                    started_at=event.time,
                    expires_at=event.expires_at,
                    idle_timeout_s=event.idle_timeout_s,
                    last_active=event.time,
                    method=event.method,
                )
                self._sessions_by_user.setdefault(event.user, set()).add(event.session_id)
            case ev.ConsoleSessionTouched():
                session = self.sessions.get(event.session_id)
                if session is not None and event.time > session.last_active:
                    session.last_active = event.time
            case ev.ConsoleSessionEnded():
                session = self.sessions.get(event.session_id)
                if session is not None and session.ended_at is None:
                    session.ended_at, session.end_reason = event.time, event.reason
            case ev.CertificateIssued():
                self.certificates[event.serial] = Certificate(
                    serial=event.serial,
                    user=event.user,
                    not_before=event.not_before,
                    not_after=event.not_after,
                    issued_at=event.time,
                    fingerprint=event.fingerprint,
                    clusters=event.clusters,
                )
                self._certs_by_user.setdefault(event.user, set()).add(event.serial)
            case ev.CertificateRevoked():
                cert = self.certificates.get(event.serial)
                if cert is not None and cert.revoked_at is None:
                    cert.revoked_at, cert.revoke_reason = event.time, event.reason
            case ev.UserAccessRevoked():
                self._cut_user(event.user, event.time, event.reason)
            case ev.ServiceAccountProvisioned():
                self.service_accounts[(event.cluster, event.user)] = ServiceAccount(
                    cluster=event.cluster,
                    user=event.user,
                    namespace=event.namespace,
                    name=event.name,
                    provisioned_at=event.time,
                    relay_id=event.relay_id,
                    bindings=event.bindings,
                )
            case ev.ServiceAccountRemoved():
                self.service_accounts.pop((event.cluster, event.user), None)
            case ev.KubectlRequested() if event.decision == "allow":
                self.streams[event.request_id] = KubectlStream(
                    request_id=event.request_id,
                    user=event.user,
                    cluster=event.cluster,
                    started_at=event.time,
                    verb=event.verb,
                    resource=event.resource,
                    subresource=event.subresource,
                    namespace=event.namespace,
                    name=event.name,
                    grant_id=event.grant_id,
                    via=event.via,
                    edge_id=event.edge_id,
                )
            case ev.KubectlCompleted():
                self.streams.pop(event.request_id, None)
            case _:
                pass

    def apply_all(self, events: Iterable[Any]) -> SessionsState:
        for event in events:
            self.apply(event)
        return self

    def _cut_user(self, user: str, at: datetime, reason: str) -> None:
        """UserAccessRevoked: the user's sessions end and certificates issued so far are
        revoked (they stay refused even if the user is enabled again)."""
        for sid in self._sessions_by_user.get(user, ()):
            session = self.sessions[sid]
            if session.ended_at is None:
                session.ended_at, session.end_reason = at, "revoked"
        for serial in self._certs_by_user.get(user, ()):
            cert = self.certificates[serial]
            if cert.revoked_at is None:
                cert.revoked_at = at
                cert.revoke_reason = reason or "user access revoked"

    # --- questions ------------------------------------------------------------------------

    def live_sessions(self, now: datetime, user: str | None = None) -> list[ConsoleSession]:
        ids = self._sessions_by_user.get(user, set()) if user is not None else self.sessions
        return [self.sessions[s] for s in ids if self.sessions[s].live_at(now)]

    def has_live_session(self, user: str, now: datetime) -> bool:
        """For the "console session required" switch: does `user` hold a live session now?"""
        return any(self.sessions[s].live_at(now) for s in self._sessions_by_user.get(user, ()))

    def certificates_of(self, user: str) -> list[Certificate]:
        return [self.certificates[s] for s in sorted(self._certs_by_user.get(user, ()))]

    def certificate_valid(self, serial: str, now: datetime) -> bool:
        """Issued by kubegate, within its validity window, not revoked by `now`."""
        cert = self.certificates.get(serial)
        return cert is not None and cert.valid_at(now)

    def service_accounts_in(self, cluster: str) -> list[ServiceAccount]:
        return sorted(
            (sa for (c, _), sa in self.service_accounts.items() if c == cluster),
            key=lambda sa: sa.user,
        )

    def active_streams(
        self, *, user: str | None = None, cluster: str | None = None
    ) -> list[KubectlStream]:
        return [
            s
            for s in self.streams.values()
            if (user is None or s.user == user) and (cluster is None or s.cluster == cluster)
        ]

    def prune(self, before: datetime) -> int:
        """Forget sessions no longer live and certificates no longer valid before `before`;
        returns how many were dropped."""
        dropped = 0
        for sid, session in list(self.sessions.items()):
            if session.over_by() < before:
                del self.sessions[sid]
                self._sessions_by_user[session.user].discard(sid)
                dropped += 1
        for serial, cert in list(self.certificates.items()):
            end = (
                cert.not_after if cert.revoked_at is None else min(cert.revoked_at, cert.not_after)
            )
            if end < before:
                del self.certificates[serial]
                self._certs_by_user[cert.user].discard(serial)
                dropped += 1
        return dropped


class SessionsProjection:
    """Runner wiring: folds every record's event into `state`."""

    def __init__(self, state: SessionsState | None = None) -> None:
        self.state = state if state is not None else SessionsState()

    def apply(self, record: LogRecord) -> None:
        self.state.apply(record.event)


def sessions_runner(
    nc: NatsClient,
    projection: SessionsProjection,
    *,
    registry: CollectorRegistry,
    name: str = "sessions",
    **options: Any,
) -> ProjectionRunner:
    """A runner following both streams (kubectl activity gives the open requests)."""
    return ProjectionRunner(
        nc,
        projection,
        name=name,
        registry=registry,
        streams=("control", "activity"),
        **options,
    )
