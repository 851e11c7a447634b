"""OpenID Connect login: the authorization-code flow with PKCE (S256), state and nonce.

`begin()` makes a pending login (state, nonce, PKCE verifier; all 256-bit random) and the
provider URL to send the browser to. `complete()` takes the callback: the state must be a
pending one, unexpired, used once, and equal to the state cookie set on this browser at
`begin()` (so nobody can make a victim's browser finish the attacker's login); then the code
is exchanged with the verifier, the ID token validated (`edge.oidc_tokens`), the user created
on first login (`register_user` source `oidc`, with issuer and subject) or checked to be the
very same IdP account on later ones, the IdP's groups re-synced (`sync_idp_groups`), and a
console session opened. Every refusal is a `LoginFailed` (method `oidc`, reason the failed
check; user empty while the token is not yet validated) before the error reaches the caller.

Pending logins live in this replica's memory for `login_timeout`: the callback must reach the
replica that began the login (sticky routing, or one admin API replica).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from domain import errors as derr
from domain.aggregates import User
from domain.control import MAX_NAME
from edge.console_sessions import ConsoleSessions, StartedSession
from edge.errors import OidcAccountError, OidcError, OidcStateError
from edge.identity_settings import OidcSettings
from edge.login import Attempt, LoginAudit
from edge.oidc_client import ProviderClient
from edge.oidc_tokens import unverified_header, validate_id_token
from edge.sessions import mint

log = logging.getLogger("kubegate.edge.oidc")

MAX_PENDING = 10_000


@dataclass(frozen=True)
class PendingLogin:
    login_id: str
    state: str
    nonce: str
    verifier: str
    started: datetime
    response: str
    """`json` or `browser`: how the callback answers."""


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class PendingLogins:
    """Logins begun and not yet called back, oldest dropped first beyond `limit`."""

    def __init__(self, limit: int = MAX_PENDING) -> None:
        self.limit = limit
        self._by_state: OrderedDict[str, PendingLogin] = OrderedDict()

    def add(self, pending: PendingLogin) -> None:
        self._by_state[pending.state] = pending
        while len(self._by_state) > self.limit:
            self._by_state.popitem(last=False)

    def take(self, state: str) -> PendingLogin | None:
        return self._by_state.pop(state, None)

    def __len__(self) -> int:
        return len(self._by_state)


def _valid_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_NAME
        and not any(ch.isspace() or not ch.isprintable() for ch in value)
    )


class OidcLogin:
    def __init__(
        self,
        *,
        settings: OidcSettings,
        provider: ProviderClient,
        control: Any,  # domain.control.ControlPlane
        audit: LoginAudit,
        sessions: ConsoleSessions,
        clock: Callable[[], datetime],
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.control = control
        self.audit = audit
        self.sessions = sessions
        self.clock = clock
        self.pending = PendingLogins()

    async def begin(self, response: str) -> tuple[str, PendingLogin]:
        """The provider's authorization URL for a new pending login."""
        meta = await self.provider.metadata()
        pending = PendingLogin(
            login_id=uuid.uuid4().hex,
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            started=self.clock(),
            response=response,
        )
        self.pending.add(pending)
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.settings.client_id,
                "redirect_uri": self.settings.redirect_uri,
                "scope": " ".join(self.settings.scopes),
                "state": pending.state,
                "nonce": pending.nonce,
                "code_challenge": pkce_challenge(pending.verifier),
                "code_challenge_method": "S256",
            }
        )
        separator = "&" if "?" in meta.authorization_endpoint else "?"
        return f"{meta.authorization_endpoint}{separator}{query}", pending

    async def complete(
        self,
        *,
        state: str,
        code: str,
        error: str = "",
        error_description: str = "",
        cookie_state: str | None,
        source_ip: str = "",
    ) -> tuple[StartedSession, PendingLogin]:
        user = ""
        cause = ""
        try:
            pending = self._take(state, cookie_state)
            cause = pending.login_id
            if error:
                raise OidcError(
                    f"the identity provider refused the login: {error} {error_description}".strip(),
                    "idp-error",
                )
            if not code:
                raise OidcError("the callback carries no authorization code", "malformed")
            tokens = await self.provider.exchange(code, pending.verifier)
            raw = tokens["id_token"]
            keys = await self.provider.keys_for(unverified_header(raw).get("kid"))
            claims = validate_id_token(
                raw, keys=keys, settings=self.settings, nonce=pending.nonce, now=self.clock()
            )
            user = self._user_name(claims)
            groups = self._groups(claims)
            await asyncio.to_thread(self._link, user, claims, pending.login_id)
            await asyncio.to_thread(
                self.control.sync_idp_groups,
                user,
                self.settings.issuer,
                groups,
                actor=user,
                command_id=f"oidc-groups:{pending.login_id}",
            )
        except OidcError as exc:
            log.info("OIDC login refused", extra={"user": user, "reason": exc.reason})
            attempt = Attempt(user=user, method="oidc", source_ip=source_ip, cause=cause)
            try:
                await self.audit.failed(attempt, f"oidc:{exc.reason}", None)
            except Exception:
                log.error("could not record a refused OIDC login", exc_info=True)
            raise
        minted = mint()
        attempt = Attempt(user=user, method="oidc", source_ip=source_ip, cause=cause)
        await self.audit.succeeded(attempt, minted.session_id, None)
        return await self.sessions.open(minted, user, "oidc"), pending

    def _take(self, state: str, cookie_state: str | None) -> PendingLogin:
        pending = self.pending.take(state) if state else None
        if pending is None:
            raise OidcStateError("unknown or already used login state; start again", "bad-state")
        if self.clock() - pending.started > self.settings.login_timeout:
            raise OidcStateError("the login took too long; start again", "bad-state")
        if cookie_state is None or not hmac.compare_digest(cookie_state, state):
            raise OidcStateError("this login was not started in this browser", "bad-state")
        return pending

    def _user_name(self, claims: dict[str, Any]) -> str:
        value = claims.get(self.settings.username_claim)
        name = f"{self.settings.username_prefix}{value}" if isinstance(value, str) else None
        if not _valid_name(name):
            raise OidcAccountError(
                f"the ID token's {self.settings.username_claim} is not a usable user name",
                "bad-username",
            )
        assert name is not None
        return name

    def _groups(self, claims: dict[str, Any]) -> list[str]:
        value = claims.get(self.settings.groups_claim, [])
        listed = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        kept = [g for g in listed if _valid_name(g)]
        if len(kept) != len(listed):
            log.warning(
                "ignored unusable IdP group names", extra={"dropped": len(listed) - len(kept)}
            )
        return kept

    def _link(self, user: str, claims: dict[str, Any], login_id: str) -> None:
        """Create the user on first login; later, require the same issuer and subject."""
        found = self.control.find(User, user)
        if found is None:
            try:
                self.control.register_user(
                    user,
                    actor=user,
                    command_id=f"oidc-register:{login_id}",
                    display_name=str(claims.get("name", ""))[:MAX_NAME],
                    email=str(claims.get("email", ""))[:MAX_NAME],
                    source="oidc",
                    issuer=self.settings.issuer,
                    oidc_subject=claims["sub"],
                )
                return
            except derr.AlreadyExistsError:
                found = self.control.find(User, user)
            except derr.CommandRejectedError as exc:
                raise OidcAccountError(f"cannot register {user}: {exc}", "bad-username") from exc
        if found is None:
            raise OidcAccountError(f"user {user} vanished during login", "not-linked")
        if (found.source, found.issuer, found.oidc_subject) != (
            "oidc",
            self.settings.issuer,
            claims["sub"],
        ):
            raise OidcAccountError(
                f"user {user} exists and is not this identity provider account", "not-linked"
            )
        if not found.enabled or found.revoked:
            raise OidcAccountError(f"user {user} is disabled", "disabled")
