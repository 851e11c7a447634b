"""Edge failures, rooted in `KubegateError`."""

from __future__ import annotations

from domain.errors import KubegateError


class EdgeError(KubegateError):
    """Root of edge failures."""


class IdentityError(EdgeError):
    """A refused login, session or OIDC step. `status` is the HTTP status the admin API
    answers with, `code` a stable word for programs; the message is one readable line."""

    status = 400
    code = "invalid"


class BadLoginRequestError(IdentityError):
    """A login or logout request that is malformed on its own (not JSON, no user name)."""


class LoginRefusedError(IdentityError):
    """Wrong user name or password (deliberately one message for both); `reason` is what the
    audit event records, never shown to the caller."""

    status = 401
    code = "login-refused"

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class UserDisabledError(LoginRefusedError):
    """Right credentials, but the user is disabled or their access revoked."""

    status = 403
    code = "disabled"


class LockedOutError(IdentityError):
    """Too many failed logins for this user name; refused until `until`."""

    status = 429
    code = "locked"

    def __init__(self, message: str, until: object) -> None:
        super().__init__(message)
        self.until = until


class LoginBusyError(IdentityError):
    """Too many password checks already waiting (each costs memory and CPU)."""

    status = 503
    code = "busy"


class SessionInvalidError(IdentityError):
    """A session token that is unknown, malformed, ended, expired or idle."""

    status = 401
    code = "unauthenticated"


class OidcError(IdentityError):
    """An OIDC login failed; `reason` is the stable word the audit event records
    (`bad-issuer`, `bad-audience`, `expired`, `bad-signature`, `bad-nonce`, ...)."""

    status = 401
    code = "oidc-refused"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class OidcDisabledError(OidcError):
    """This instance has no OIDC provider configured."""

    status = 404
    code = "oidc-disabled"


class OidcStateError(OidcError):
    """The callback's state is unknown, used, expired, or not this browser's."""

    status = 400
    code = "oidc-bad-state"


class OidcProviderError(OidcError):
    """The identity provider is unreachable or answered something unusable (discovery, keys,
    token endpoint)."""

    status = 502
    code = "oidc-provider"


class IdTokenError(OidcError):
    """The ID token failed validation (signature, algorithm, issuer, audience, nonce, times)."""

    status = 401
    code = "oidc-invalid-token"


class OidcAccountError(OidcError):
    """A valid ID token whose identity cannot become a kubegate user (no usable name, a name
    taken by a local user or another IdP account, a disabled user)."""

    status = 403
    code = "oidc-account"
