"""Settings for logins and console sessions, validated once with sane defaults.

Console sessions: `session_idle` (30 min without activity ends a session), `session_absolute`
(12 h after login it ends whatever happens), `touch_every` (activity is logged at most once a
minute per session, so the logged last activity trails the real one by at most that much).

Lockout: `lockout_failures` failed password logins for one user name within `lockout_window`
lock that name for `lockout_for`. Counted from the log, so every replica agrees.

`admin_group`: members of this group (local or asserted by the IdP) get an administrator
principal on the admin API; everyone else a plain one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from edge.errors import IdentityError

DEFAULT_ADMIN_GROUP = "kubegate-admins"


class IdentitySettingsError(IdentityError):
    """A setting outside its domain (a non-positive duration, an empty group)."""


@dataclass(frozen=True)
class OidcSettings:
    """One OpenID Connect provider, used with the authorization-code flow and PKCE (S256).

    `redirect_uri` is this admin API's `/v1/oidc/callback` as the browser reaches it, and must
    be registered at the provider. `client_secret` empty means a public client. `ca_file`
    trusts a private CA for the provider's HTTPS (default: the system's trust store).
    """

    issuer: str
    client_id: str
    redirect_uri: str
    client_secret: str = ""
    scopes: tuple[str, ...] = ("openid", "profile", "email", "groups")
    username_claim: str = "preferred_username"
    username_prefix: str = ""
    groups_claim: str = "groups"
    algorithms: tuple[str, ...] = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA")
    leeway: timedelta = timedelta(seconds=60)
    max_token_age: timedelta = timedelta(minutes=10)
    login_timeout: timedelta = timedelta(minutes=10)
    ca_file: Path | None = None
    console_url: str = ""
    """Where a browser lands after login (the token in a secure cookie); empty: JSON only."""
    http_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.issuer.startswith("https://"):
            raise IdentitySettingsError(f"the OIDC issuer must be an https URL: {self.issuer!r}")
        if not self.client_id:
            raise IdentitySettingsError("OIDC needs a client id")
        if not self.redirect_uri.startswith("https://"):
            raise IdentitySettingsError("the OIDC redirect URI must be an https URL")
        if "openid" not in self.scopes:
            raise IdentitySettingsError("the OIDC scopes must include openid")
        symmetric = [a for a in self.algorithms if a.startswith("HS") or a.lower() == "none"]
        if symmetric or not self.algorithms:
            raise IdentitySettingsError(
                f"ID tokens must be signed with asymmetric algorithms, not {symmetric}"
            )


@dataclass(frozen=True)
class IdentitySettings:
    session_idle: timedelta = timedelta(minutes=30)
    session_absolute: timedelta = timedelta(hours=12)
    touch_every: timedelta = timedelta(minutes=1)
    lockout_failures: int = 5
    lockout_window: timedelta = timedelta(minutes=15)
    lockout_for: timedelta = timedelta(minutes=15)
    admin_group: str = DEFAULT_ADMIN_GROUP
    max_password_bytes: int = 4096
    password_checks: int = 2
    """Password hashes verified at once (argon2id uses 64 MiB and one core each)."""
    password_queue: int = 64
    """Logins allowed to wait for a check before new ones are refused as busy."""
    visible_within: timedelta = timedelta(seconds=5)
    """How long a login waits for its own session to reach this replica's read models."""
    oidc: OidcSettings | None = None

    def __post_init__(self) -> None:
        for name in ("session_idle", "session_absolute", "touch_every", "lockout_window"):
            if getattr(self, name) <= timedelta(0):
                raise IdentitySettingsError(f"{name} must be a positive duration")
        if self.lockout_for <= timedelta(0) or self.lockout_failures < 1:
            raise IdentitySettingsError("lockout needs at least one failure and a duration")
        if self.touch_every >= self.session_idle:
            raise IdentitySettingsError("touch_every must be shorter than session_idle")
        if not self.admin_group:
            raise IdentitySettingsError("admin_group must name a group")
        if self.password_checks < 1 or self.password_queue < 1:
            raise IdentitySettingsError("password_checks and password_queue must be positive")
