"""The event catalog: every fact kubegate records, as versioned, frozen msgspec structs.

Events are JSON on the wire so auditors can read them with any NATS tool. Each carries an
envelope (event id, type, schema version, time, actor, cause) and its payload. Names are past
tense; a shipped event is never edited: add a field with a default, or bump `schema` and add an
upcaster in `domain.codec`.

Every event names the aggregate it belongs to with `key()`: a family (`user`, `grant`, ...) and
an id within it. The broker turns that into the NATS subject (`kg.evt.<family>.<id>` for control
events, `kg.act.<family>.<id>` for activity), so optimistic concurrency is per aggregate.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

import msgspec

AccessMode = Literal["cli", "browser", "both"]
SwitchScope = Literal["global", "cluster", "user", "group"]
SubjectKind = Literal["user", "group"]
Decision = Literal["allow", "deny"]
StreamName = Literal["control", "activity"]


class Rule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One RBAC rule, with Kubernetes' own semantics (`*` matches all)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ("",)
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type", tag=True):
    """Envelope shared by every event.

    `id` is unique per event and doubles as the JetStream `Nats-Msg-Id`, so a retried append
    of the same event stores it once. `cause` is the id of the command or request that caused
    it. `schema` is the payload's schema version.
    """

    FAMILY: ClassVar[str] = ""
    STREAM: ClassVar[StreamName] = "control"

    id: str
    time: datetime
    actor: str
    cause: str = ""
    schema: int = 1

    def key(self) -> tuple[str, str]:
        """(family, aggregate id): where this event lives in the log."""
        raise NotImplementedError


# --- users and groups ---------------------------------------------------------------------


class _UserEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "user"
    user: str

    def key(self) -> tuple[str, str]:
        return ("user", self.user)


class UserRegistered(_UserEvent, frozen=True, kw_only=True):
    """A user exists. `source` is `local` or `oidc` (then `issuer` and `oidc_subject` are set)."""

    display_name: str = ""
    email: str = ""
    source: Literal["local", "oidc"] = "local"
    issuer: str = ""
    oidc_subject: str = ""


class UserDisabled(_UserEvent, frozen=True, kw_only=True):
    reason: str = ""


class UserEnabled(_UserEvent, frozen=True, kw_only=True):
    reason: str = ""


class UserAccessRevoked(_UserEvent, frozen=True, kw_only=True):
    """Cut everything the user holds, now: new requests, open streams, service accounts.

    The user stays refused until `UserEnabled`; certificates issued before this event stay
    refused even then.
    """

    reason: str = ""


class PasswordSet(Event, frozen=True, kw_only=True):
    """A local user's password hash (argon2id, PHC string); the password itself never.

    Its own family (`credential`), so relays and other least-privileged readers of the control
    stream can follow users without ever receiving a hash.
    """

    FAMILY: ClassVar[str] = "credential"
    user: str
    password_hash: str

    def key(self) -> tuple[str, str]:
        return ("credential", self.user)


class IdpGroupsSynced(_UserEvent, frozen=True, kw_only=True):
    """The groups an identity provider asserted at login; replaces the previous IdP set."""

    issuer: str
    groups: tuple[str, ...] = ()


class _GroupEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "group"
    group: str

    def key(self) -> tuple[str, str]:
        return ("group", self.group)


class GroupCreated(_GroupEvent, frozen=True, kw_only=True):
    description: str = ""


class GroupDeleted(_GroupEvent, frozen=True, kw_only=True):
    reason: str = ""


class MemberAdded(_GroupEvent, frozen=True, kw_only=True):
    user: str


class MemberRemoved(_GroupEvent, frozen=True, kw_only=True):
    user: str
    reason: str = ""


# --- clusters and relays ------------------------------------------------------------------


class _ClusterEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "cluster"
    cluster: str

    def key(self) -> tuple[str, str]:
        return ("cluster", self.cluster)


class ClusterRegistered(_ClusterEvent, frozen=True, kw_only=True):
    """A cluster kubegate can reach. Label `sensitive=true` puts it behind break-glass."""

    labels: dict[str, str] = {}
    display_name: str = ""


class ClusterLabelsSet(_ClusterEvent, frozen=True, kw_only=True):
    labels: dict[str, str] = {}


class ClusterRemoved(_ClusterEvent, frozen=True, kw_only=True):
    reason: str = ""


class RelayConnected(_ClusterEvent, frozen=True, kw_only=True):
    """A relay replica came up for a cluster (relays register themselves)."""

    relay_id: str
    version: str = ""
    host: str = ""


class RelayDisconnected(_ClusterEvent, frozen=True, kw_only=True):
    relay_id: str
    reason: str = ""


# --- grants -------------------------------------------------------------------------------


class _GrantEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "grant"
    grant_id: str

    def key(self) -> tuple[str, str]:
        return ("grant", self.grant_id)


class GrantIssued(_GrantEvent, frozen=True, kw_only=True):
    """Access for a user or group.

    Clusters by name (`clusters`, `*` for all) or by labels (`cluster_selector`, all must
    match); either may match. `namespaces` empty or `*` means all namespaces (and
    cluster-scoped resources). `role` is `view`, `edit`, `admin`, `cluster-admin` or `custom`
    (then `rules` apply). The grant is active in [not_before, expires_at).
    """

    subject_kind: SubjectKind
    subject: str
    role: str
    clusters: tuple[str, ...] = ()
    cluster_selector: dict[str, str] = {}
    namespaces: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    not_before: datetime | None = None
    expires_at: datetime | None = None
    mode: AccessMode = "both"
    reason: str = ""
    breakglass_id: str = ""


class GrantRevoked(_GrantEvent, frozen=True, kw_only=True):
    reason: str = ""


class GrantExpired(_GrantEvent, frozen=True, kw_only=True):
    """Recorded after the fact for audit; expiry itself needs no event (projections time it)."""

    expired_at: datetime


# --- switches and settings ----------------------------------------------------------------


class _SwitchEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "switch"
    scope: SwitchScope
    target: str = ""

    def key(self) -> tuple[str, str]:
        return ("switch", f"{self.scope}:{self.target}")


class KubectlDisabled(_SwitchEvent, frozen=True, kw_only=True):
    reason: str = ""


class KubectlEnabled(_SwitchEvent, frozen=True, kw_only=True):
    reason: str = ""


class BrowserOnlySet(_SwitchEvent, frozen=True, kw_only=True):
    """Downloaded kubeconfigs refused, browser-shell sessions allowed (or lifted)."""

    enabled: bool
    reason: str = ""


class ConsoleSessionRequiredSet(_SwitchEvent, frozen=True, kw_only=True):
    """A kubeconfig works only while its user has a live console session (or lifted)."""

    enabled: bool
    reason: str = ""


class SettingsChanged(Event, frozen=True, kw_only=True):
    """Fleet-wide settings, as a partial update: only the keys present change."""

    FAMILY: ClassVar[str] = "settings"
    settings: dict[str, str | int | float | bool] = {}

    def key(self) -> tuple[str, str]:
        return ("settings", "fleet")


# --- identity: logins, console sessions, certificates -------------------------------------


class _LoginEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "login"
    user: str
    method: Literal["password", "oidc", "token"] = "password"
    source_ip: str = ""

    def key(self) -> tuple[str, str]:
        return ("login", self.user)


class LoginSucceeded(_LoginEvent, frozen=True, kw_only=True):
    session_id: str = ""


class LoginFailed(_LoginEvent, frozen=True, kw_only=True):
    reason: str = ""


class UserLockedOut(_LoginEvent, frozen=True, kw_only=True):
    until: datetime
    failures: int = 0


class _SessionEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "session"
    session_id: str
    user: str

    def key(self) -> tuple[str, str]:
        return ("session", self.session_id)


class ConsoleSessionStarted(_SessionEvent, frozen=True, kw_only=True):
    """`token_hash` is a SHA-256 of the session token; the token itself is never logged."""

    expires_at: datetime
    idle_timeout_s: int
    token_hash: str = ""
    method: str = "password"


class ConsoleSessionTouched(_SessionEvent, frozen=True, kw_only=True):
    """Activity on a console session (throttled), so every edge can judge its idleness."""


class ConsoleSessionEnded(_SessionEvent, frozen=True, kw_only=True):
    reason: Literal["logout", "idle", "expired", "revoked"] = "logout"


class _CertificateEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "cert"
    serial: str

    def key(self) -> tuple[str, str]:
        return ("cert", self.serial)


class CertificateIssued(_CertificateEvent, frozen=True, kw_only=True):
    """A client certificate (CN = user) for a downloaded kubeconfig, or, with `session_id`,
    for the browser shell of that console session."""

    user: str
    not_before: datetime
    not_after: datetime
    fingerprint: str = ""
    clusters: tuple[str, ...] = ()
    session_id: str = ""


class CertificateRevoked(_CertificateEvent, frozen=True, kw_only=True):
    user: str
    reason: str = ""


# --- JIT service accounts -----------------------------------------------------------------


class _ServiceAccountEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "serviceaccount"
    cluster: str
    user: str
    namespace: str
    name: str

    def key(self) -> tuple[str, str]:
        return ("serviceaccount", f"{self.cluster}:{self.user}")


class ServiceAccountProvisioned(_ServiceAccountEvent, frozen=True, kw_only=True):
    relay_id: str = ""
    bindings: tuple[str, ...] = ()


class ServiceAccountRemoved(_ServiceAccountEvent, frozen=True, kw_only=True):
    relay_id: str = ""
    reason: Literal["idle", "revoked", "access-changed", "manual"] = "idle"


# --- break-glass --------------------------------------------------------------------------


class _BreakGlassEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "breakglass"
    request_id: str

    def key(self) -> tuple[str, str]:
        return ("breakglass", self.request_id)


class BreakGlassRequested(_BreakGlassEvent, frozen=True, kw_only=True):
    user: str
    cluster: str
    reason: str
    duration_s: int
    role: str = "cluster-admin"
    namespaces: tuple[str, ...] = ()


class BreakGlassApproved(_BreakGlassEvent, frozen=True, kw_only=True):
    """`self_approved` is an emergency approval by the requester, allowed only by policy."""

    approver: str
    grant_id: str
    self_approved: bool = False
    reason: str = ""


class BreakGlassDenied(_BreakGlassEvent, frozen=True, kw_only=True):
    approver: str
    reason: str = ""


class BreakGlassUsed(Event, frozen=True, kw_only=True):
    """A request allowed by a break-glass grant: recorded for every such request, loudly.

    Activity, not control: edges write it on the hot path (family `breakglass_use`), so it
    never races the control plane's break-glass aggregate.
    """

    FAMILY: ClassVar[str] = "breakglass_use"
    STREAM: ClassVar[StreamName] = "activity"
    request_id: str
    user: str
    cluster: str
    request: str
    verb: str = ""
    resource: str = ""
    namespace: str = ""
    grant_id: str = ""

    def key(self) -> tuple[str, str]:
        return ("breakglass_use", self.request_id)


# --- kubectl activity (the high-volume stream) --------------------------------------------


class _KubectlEvent(Event, frozen=True, kw_only=True):
    FAMILY: ClassVar[str] = "kubectl"
    STREAM: ClassVar[StreamName] = "activity"
    request_id: str
    user: str
    cluster: str
    verb: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    decision: Decision = "allow"
    reason: str = ""

    def key(self) -> tuple[str, str]:
        return ("kubectl", self.cluster)


class KubectlRequested(_KubectlEvent, frozen=True, kw_only=True):
    groups: tuple[str, ...] = ()
    method: str = ""
    path: str = ""
    query: str = ""
    grant_id: str = ""
    via: AccessMode = "cli"
    edge_id: str = ""
    client_ip: str = ""
    user_agent: str = ""
    session_id: str = ""
    """The console session of a browser-shell request (`via="browser"`)."""


class KubectlCompleted(_KubectlEvent, frozen=True, kw_only=True):
    """How a request ended. `ended_by` tells a client hang-up from a revocation cut."""

    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duration_ms: float = 0.0
    ended_by: Literal["complete", "client", "revoked", "error", "timeout"] = "complete"
    relay_id: str = ""
    recording: str = ""


class SessionRecordingChunk(Event, frozen=True, kw_only=True):
    """A slice of an exec/attach session's bytes (channel 0 stdin, 1 stdout, 2 stderr)."""

    FAMILY: ClassVar[str] = "recording"
    STREAM: ClassVar[StreamName] = "activity"
    request_id: str
    seq: int
    channel: int
    offset_ms: float
    data: bytes

    def key(self) -> tuple[str, str]:
        return ("recording", self.request_id)


CATALOG: dict[str, type[Event]] = {
    cls.__name__: cls
    for cls in (
        UserRegistered,
        UserDisabled,
        UserEnabled,
        UserAccessRevoked,
        PasswordSet,
        IdpGroupsSynced,
        GroupCreated,
        GroupDeleted,
        MemberAdded,
        MemberRemoved,
        ClusterRegistered,
        ClusterLabelsSet,
        ClusterRemoved,
        RelayConnected,
        RelayDisconnected,
        GrantIssued,
        GrantRevoked,
        GrantExpired,
        KubectlDisabled,
        KubectlEnabled,
        BrowserOnlySet,
        ConsoleSessionRequiredSet,
        SettingsChanged,
        LoginSucceeded,
        LoginFailed,
        UserLockedOut,
        ConsoleSessionStarted,
        ConsoleSessionTouched,
        ConsoleSessionEnded,
        CertificateIssued,
        CertificateRevoked,
        ServiceAccountProvisioned,
        ServiceAccountRemoved,
        BreakGlassRequested,
        BreakGlassApproved,
        BreakGlassDenied,
        BreakGlassUsed,
        KubectlRequested,
        KubectlCompleted,
        SessionRecordingChunk,
    )
}
"""Every known event type by its wire name (the `type` field)."""

FAMILIES: tuple[str, ...] = tuple(sorted({cls.FAMILY for cls in CATALOG.values()}))
