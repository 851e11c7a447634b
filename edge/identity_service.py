"""Logins and console sessions for the admin API, wired together: `IdentityService`.

Routes (added to the admin API by `build_app` when `AdminContext.identity` is set):

- `POST /v1/login {user, password}` -> `{token, session_id, user, expires_at, idle_timeout_s,
  admin, groups}`; 400 malformed, 401 wrong name or password (one message for both), 403
  disabled, 429 locked out, 503 too busy;
- `POST /v1/logout` with the session token as bearer (or the `kg_session` cookie) -> ends it;
- `GET /v1/oidc/login[?response=json|browser]` -> redirect to the identity provider;
- `GET /v1/oidc/callback` -> the session as JSON, or (browsers, with a console URL set) a
  redirect to the console with the token in a `Secure; HttpOnly; SameSite=Strict` cookie.

`authenticate(token)` is the admin API's check for bearer tokens that are not admin tokens:
a live session's principal, an administrator when the user is in `admin_group`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web
from argon2 import PasswordHasher
from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry, Counter

from broker.store import EventStore
from edge.console_sessions import ConsoleSessions, SessionPrincipal, StartedSession
from edge.errors import BadLoginRequestError, IdentityError, OidcDisabledError
from edge.identity_feed import IdentityFeed
from edge.identity_settings import IdentitySettings
from edge.lockout import LoginLedger
from edge.login import LoginAudit, PasswordLogin
from edge.oidc import OidcLogin
from edge.oidc_client import ProviderClient
from edge.passwords import PasswordChecker
from edge.sessions import SessionBook
from projections.policy import PolicyProjection

log = logging.getLogger("kubegate.edge.identity_service")

SESSION_COOKIE = "kg_session"
STATE_COOKIE = "kg_oidc_state"


class LoginIn(msgspec.Struct, forbid_unknown_fields=True):
    user: str
    password: str


class IdentityService:
    def __init__(
        self,
        nc: NatsClient,
        *,
        control: Any,  # domain.control.ControlPlane
        policy: PolicyProjection,
        clock: Callable[[], datetime],
        settings: IdentitySettings | None = None,
        registry: CollectorRegistry | None = None,
        hasher: PasswordHasher | None = None,
        name: str = "identity",
    ) -> None:
        self.settings = settings = settings or IdentitySettings()
        self.policy = policy
        self.clock = clock
        registry = registry if registry is not None else CollectorRegistry()
        self.ledger = LoginLedger(keep=settings.lockout_failures)
        self.book = SessionBook()
        self.feed = IdentityFeed(
            nc, ledger=self.ledger, book=self.book, registry=registry, name=name
        )
        self.audit = LoginAudit(EventStore(nc), clock)
        self.sessions = ConsoleSessions(
            control=control,
            book=self.book,
            feed=self.feed,
            policy=policy,
            settings=settings,
            clock=clock,
        )
        self.passwords = PasswordLogin(
            control=control,
            audit=self.audit,
            ledger=self.ledger,
            feed=self.feed,
            checker=PasswordChecker(
                hasher, concurrency=settings.password_checks, queue=settings.password_queue
            ),
            sessions=self.sessions,
            settings=settings,
            clock=clock,
        )
        self.provider: ProviderClient | None = None
        self.oidc: OidcLogin | None = None
        if settings.oidc is not None:
            self.provider = ProviderClient(settings.oidc)
            self.oidc = OidcLogin(
                settings=settings.oidc,
                provider=self.provider,
                control=control,
                audit=self.audit,
                sessions=self.sessions,
                clock=clock,
            )
        self.logins = Counter(
            "kubegate_logins",
            "Login attempts by method and outcome (ok or the refusal code)",
            ["method", "outcome"],
            registry=registry,
        )

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, *, sweeper: bool = True) -> None:
        """Follow the log, and (by default) sweep sessions that are over."""
        await self.feed.start()
        if self.provider is not None:
            await self.provider.start()
        self.policy.on_change(lambda _users: self.feed.changed.set())
        if sweeper:
            self.sessions.start_sweeper()

    async def wait_ready(self) -> None:
        """Until the login ledger and session book have caught up with the log."""
        await self.feed.wait_ready()

    async def stop(self) -> None:
        await self.sessions.stop()
        if self.provider is not None:
            await self.provider.close()
        await self.feed.stop()

    # --- for the admin API -----------------------------------------------------------------

    def authenticate(self, token: str) -> SessionPrincipal | None:
        return self.sessions.authenticate(token)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/login", self._login),
            web.post("/v1/logout", self._logout),
            web.get("/v1/oidc/login", self._oidc_login),
            web.get("/v1/oidc/callback", self._oidc_callback),
        ]

    # --- handlers --------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        try:
            body = msgspec.json.decode(await request.read() or b"{}", type=LoginIn)
        except msgspec.DecodeError as exc:  # ValidationError included
            raise BadLoginRequestError(f"a login is JSON {{user, password}}: {exc}") from exc
        try:
            started = await self.passwords.login(
                body.user,
                body.password,
                source_ip=request.remote or "",
                cause=uuid.uuid4().hex,
            )
        except IdentityError as exc:
            self.logins.labels("password", exc.code).inc()
            raise
        self.logins.labels("password", "ok").inc()
        return _json(started.as_json())

    async def _logout(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            token = request.cookies.get(SESSION_COOKIE, "")
        ended = await self.sessions.logout(token.strip())
        response = _json({"ended": True, "session_id": ended.session_id, "user": ended.user})
        response.del_cookie(SESSION_COOKIE, path="/")
        return response

    def _require_oidc(self) -> OidcLogin:
        if self.oidc is None:
            raise OidcDisabledError("no OIDC provider is configured here", "disabled")
        return self.oidc

    async def _oidc_login(self, request: web.Request) -> web.Response:
        oidc = self._require_oidc()
        wanted = request.query.get("response", "")
        if wanted not in ("", "json", "browser"):
            raise BadLoginRequestError("response is json or browser")
        if not wanted:
            wanted = "browser" if oidc.settings.console_url else "json"
        if wanted == "browser" and not oidc.settings.console_url:
            raise BadLoginRequestError("no console URL is configured: use response=json")
        url, pending = await oidc.begin(wanted)
        response = web.Response(status=302, headers={"Location": url})
        response.set_cookie(
            STATE_COOKIE,
            pending.state,
            path="/v1/oidc/",
            secure=True,
            httponly=True,
            samesite="Lax",
            max_age=int(oidc.settings.login_timeout.total_seconds()),
        )
        return response

    async def _oidc_callback(self, request: web.Request) -> web.Response:
        oidc = self._require_oidc()
        query = request.query
        try:
            started, pending = await oidc.complete(
                state=query.get("state", ""),
                code=query.get("code", ""),
                error=query.get("error", ""),
                error_description=query.get("error_description", ""),
                cookie_state=request.cookies.get(STATE_COOKIE),
                source_ip=request.remote or "",
            )
        except IdentityError as exc:
            self.logins.labels("oidc", exc.code).inc()
            raise
        self.logins.labels("oidc", "ok").inc()
        if pending.response == "browser":
            response = web.Response(status=303, headers={"Location": oidc.settings.console_url})
            self._session_cookie(response, started)
        else:
            response = _json(started.as_json())
        response.del_cookie(STATE_COOKIE, path="/v1/oidc/")
        return response

    def _session_cookie(self, response: web.Response, started: StartedSession) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            started.token,
            path="/",
            secure=True,
            httponly=True,
            samesite="Strict",
            max_age=int(self.settings.session_absolute.total_seconds()),
        )


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )
