"""The admin API: one HTTPS JSON API for the `kubegate` CLI and the web console.

Every state change is a command on the control plane (`domain.control.ControlPlane`), which
appends events; reads come from projections (policy, sessions, audit). Commands run in worker
threads because the eventsourcing library is synchronous. Each request names a command id
(header `Idempotency-Key`, or one is made up), so a retried request stores its events once.

Errors are JSON `{"error": "...", "code": "..."}` with a status that says what went wrong:
400 bad input or a broken rule, 401/403 credentials, 404 unknown thing, 409 exists or lost race,
503 the log is unreachable.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from broker import errors as berr
from broker.auth import CredentialsError
from domain import errors as derr
from domain import events
from edge import kubeconfig as kcfg
from edge.ca import CertificateAuthority
from edge.errors import IdentityError
from projections import errors as perr

log = logging.getLogger("kubegate.edge.admin_api")

MAX_TTL = dt.timedelta(days=366)


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code or {400: "invalid", 401: "unauthenticated", 403: "forbidden"}.get(
            status, "error"
        )


@dataclass
class Principal:
    """Who calls the admin API: the admin token holder, or a console user with a session."""

    name: str
    admin: bool
    session_id: str = ""


@dataclass
class AdminContext:
    """Everything the admin API reaches, wired by the service that runs it."""

    control: Any  # domain.control.ControlPlane
    ca: CertificateAuthority
    edge_url: str
    admin_tokens: dict[str, str]  # token -> principal name
    clock: Callable[[], dt.datetime]
    audit_query: Callable[[str, list[Any]], Awaitable[tuple[list[str], list[list[Any]]]]] | None = (
        None
    )
    policy: Any = None  # projections.policy.PolicyProjection
    registry: CollectorRegistry | None = None
    extra_routes: list[web.RouteDef] = field(default_factory=list)
    authenticate_session: Callable[[str], Principal | None] | None = None
    relay_credentials: Callable[[str], Awaitable[Any]] | None = None
    identity: Any = None  # edge.identity_service.IdentityService: logins, console sessions


CONTEXT = web.AppKey("kubegate_admin_context", AdminContext)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type="application/json"
    )


async def _body(request: web.Request, typ: type) -> Any:
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=typ)
    except msgspec.ValidationError as exc:
        raise ApiError(400, f"invalid request: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise ApiError(400, f"request body is not JSON: {exc}") from exc


def _principal(request: web.Request) -> Principal:
    ctx = request.app[CONTEXT]
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "missing bearer token: use an admin config (KUBEGATE_CONFIG)")
    for known, name in ctx.admin_tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            return Principal(name=name, admin=True)
    if ctx.authenticate_session is not None:
        found = ctx.authenticate_session(token)
        if found is not None:
            return found
    raise ApiError(401, "invalid or expired token")


def _admin(request: web.Request) -> Principal:
    principal = _principal(request)
    if not principal.admin:
        raise ApiError(403, f"{principal.name} is not an administrator")
    return principal


def _command_id(request: web.Request) -> str:
    return request.headers.get("Idempotency-Key") or uuid.uuid4().hex


async def _run(request: web.Request, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a synchronous control-plane command in a worker thread, as the calling admin."""
    principal = _admin(request)
    kwargs.setdefault("actor", principal.name)
    kwargs.setdefault("command_id", _command_id(request))
    return await asyncio.to_thread(fn, *args, **kwargs)


def _result(result: Any) -> dict[str, Any]:
    return {
        "changed": bool(result.events),
        "duplicate": result.duplicate,
        "events": [type(e).__name__ for e in result.events],
        "positions": list(result.positions),
    }


# --- request bodies -----------------------------------------------------------------------


class UserIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    groups: list[str] = []
    display_name: str = ""
    email: str = ""


class ReasonIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


class PasswordHashIn(msgspec.Struct, forbid_unknown_fields=True):
    password_hash: str


class GroupIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    description: str = ""


class MemberIn(msgspec.Struct, forbid_unknown_fields=True):
    user: str


class ClusterIn(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    labels: dict[str, str] = {}
    display_name: str = ""


class LabelsIn(msgspec.Struct, forbid_unknown_fields=True):
    labels: dict[str, str]


class GrantIn(msgspec.Struct, forbid_unknown_fields=True):
    subject_kind: str
    subject: str
    role: str
    id: str = ""
    clusters: list[str] = []
    cluster_selector: dict[str, str] = {}
    namespaces: list[str] = []
    rules: list[events.Rule] = []
    not_before: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    for_seconds: int | None = None
    mode: str = "both"
    reason: str = ""


class SwitchIn(msgspec.Struct, forbid_unknown_fields=True):
    scope: str = "global"
    target: str = ""
    reason: str = ""
    enabled: bool = True


class KubeconfigIn(msgspec.Struct, forbid_unknown_fields=True):
    user: str
    clusters: list[str] = []
    ttl_seconds: int = 8 * 3600


class SqlIn(msgspec.Struct, forbid_unknown_fields=True):
    sql: str
    params: list[Any] = []


# --- handlers -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return _json({"ok": True})


async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    data = generate_latest(ctx.registry) if ctx.registry is not None else b""
    return web.Response(body=data, content_type="text/plain", charset="utf-8")


async def whoami(request: web.Request) -> web.Response:
    p = _principal(request)
    return _json({"name": p.name, "admin": p.admin, "session_id": p.session_id})


async def add_user(request: web.Request) -> web.Response:
    body = await _body(request, UserIn)
    ctl = request.app[CONTEXT].control
    result = await _run(
        request,
        ctl.register_user,
        body.name,
        groups=body.groups,
        display_name=body.display_name,
        email=body.email,
    )
    return _json(_result(result), 201)


async def _user_command(request: web.Request, method: str) -> web.Response:
    body = await _body(request, ReasonIn)
    ctl = request.app[CONTEXT].control
    user = request.match_info["user"]
    result = await _run(request, getattr(ctl, method), user, reason=body.reason)
    return _json(_result(result))


async def disable_user(request: web.Request) -> web.Response:
    return await _user_command(request, "disable_user")


async def enable_user(request: web.Request) -> web.Response:
    return await _user_command(request, "enable_user")


async def revoke_user(request: web.Request) -> web.Response:
    return await _user_command(request, "revoke_user_access")


async def set_password(request: web.Request) -> web.Response:
    body = await _body(request, PasswordHashIn)
    ctl = request.app[CONTEXT].control
    result = await _run(
        request, ctl.set_password_hash, request.match_info["user"], body.password_hash
    )
    return _json(_result(result))


async def add_group(request: web.Request) -> web.Response:
    body = await _body(request, GroupIn)
    ctl = request.app[CONTEXT].control
    result = await _run(request, ctl.create_group, body.name, description=body.description)
    return _json(_result(result), 201)


async def add_member(request: web.Request) -> web.Response:
    body = await _body(request, MemberIn)
    ctl = request.app[CONTEXT].control
    result = await _run(request, ctl.add_member, request.match_info["group"], body.user)
    return _json(_result(result))


async def remove_member(request: web.Request) -> web.Response:
    ctl = request.app[CONTEXT].control
    result = await _run(
        request, ctl.remove_member, request.match_info["group"], request.match_info["user"]
    )
    return _json(_result(result))


async def add_cluster(request: web.Request) -> web.Response:
    body = await _body(request, ClusterIn)
    ctl = request.app[CONTEXT].control
    result = await _run(
        request,
        ctl.register_cluster,
        body.name,
        labels=body.labels,
        display_name=body.display_name,
    )
    return _json(_result(result), 201)


async def set_cluster_labels(request: web.Request) -> web.Response:
    body = await _body(request, LabelsIn)
    ctl = request.app[CONTEXT].control
    result = await _run(request, ctl.set_cluster_labels, request.match_info["cluster"], body.labels)
    return _json(_result(result))


async def issue_grant(request: web.Request) -> web.Response:
    body = await _body(request, GrantIn)
    ctx = request.app[CONTEXT]
    grant_id = body.id or f"g-{uuid.uuid4().hex[:12]}"
    expires_at = body.expires_at
    if body.for_seconds is not None:
        if body.for_seconds <= 0:
            raise ApiError(400, "--for must be a positive duration")
        start = body.not_before or ctx.clock()
        expires_at = start + dt.timedelta(seconds=body.for_seconds)
    result = await _run(
        request,
        ctx.control.issue_grant,
        grant_id,
        subject_kind=body.subject_kind,
        subject=body.subject,
        role=body.role,
        clusters=body.clusters,
        cluster_selector=body.cluster_selector,
        namespaces=body.namespaces,
        rules=body.rules,
        not_before=body.not_before,
        expires_at=expires_at,
        mode=body.mode,
        reason=body.reason,
    )
    out = _result(result)
    out["grant_id"] = grant_id
    out["expires_at"] = expires_at.isoformat() if expires_at else None
    return _json(out, 201)


async def revoke_grant(request: web.Request) -> web.Response:
    body = await _body(request, ReasonIn)
    ctl = request.app[CONTEXT].control
    result = await _run(request, ctl.revoke_grant, request.match_info["grant"], reason=body.reason)
    return _json(_result(result))


async def kubectl_switch(request: web.Request) -> web.Response:
    body = await _body(request, SwitchIn)
    ctl = request.app[CONTEXT].control
    action = request.match_info["action"]
    if action not in ("disable", "enable"):
        raise ApiError(404, f"no kubectl action {action!r}")
    method = ctl.disable_kubectl if action == "disable" else ctl.enable_kubectl
    result = await _run(request, method, body.scope, body.target, reason=body.reason)
    return _json(_result(result))


async def access_switch(request: web.Request) -> web.Response:
    body = await _body(request, SwitchIn)
    ctl = request.app[CONTEXT].control
    which = request.match_info["switch"]
    methods = {
        "browser-only": ctl.set_browser_only,
        "console-session-required": ctl.set_console_session_required,
    }
    if which not in methods:
        raise ApiError(404, f"no switch {which!r}")
    result = await _run(
        request, methods[which], body.scope, body.target, enabled=body.enabled, reason=body.reason
    )
    return _json(_result(result))


async def make_kubeconfig(request: web.Request) -> web.Response:
    """Issue a client certificate (recorded as CertificateIssued) and return a kubeconfig."""
    body = await _body(request, KubeconfigIn)
    ctx = request.app[CONTEXT]
    principal = _admin(request)
    ttl = dt.timedelta(seconds=body.ttl_seconds)
    if ttl <= dt.timedelta(0) or ttl > MAX_TTL:
        raise ApiError(400, "ttl must be between 1 second and 366 days")
    clusters = body.clusters or (ctx.policy.clusters_for(body.user) if ctx.policy else [])
    if not clusters:
        raise ApiError(400, f"user {body.user} may reach no cluster: name one with --cluster")
    issued = ctx.ca.issue_client(body.user, ttl, now=ctx.clock())
    result = await asyncio.to_thread(
        ctx.control.issue_certificate,
        issued.serial,
        actor=principal.name,
        command_id=_command_id(request),
        user=body.user,
        not_before=issued.not_before,
        not_after=issued.not_after,
        fingerprint=issued.fingerprint,
        clusters=clusters,
    )
    config = kcfg.build(
        user=body.user,
        edge_url=ctx.edge_url,
        ca_pem=ctx.ca.cert_pem,
        cert=issued,
        clusters=clusters,
    )
    return _json(
        {
            "kubeconfig": kcfg.render(config),
            "serial": issued.serial,
            "not_after": issued.not_after.isoformat(),
            "clusters": clusters,
            "positions": list(result.positions),
        },
        201,
    )


async def relay_credentials(request: web.Request) -> web.Response:
    """NATS credentials a relay of this cluster runs with (least privilege: its cluster only)."""
    _admin(request)
    ctx = request.app[CONTEXT]
    if ctx.relay_credentials is None:
        raise ApiError(503, "this instance does not manage NATS credentials")
    cluster = request.match_info["cluster"]
    cred = await ctx.relay_credentials(cluster)
    return _json(
        {"user": cred.user, "password": cred.password, "role": cred.role, "cluster": cred.cluster}
    )


async def audit_sql(request: web.Request) -> web.Response:
    _admin(request)
    body = await _body(request, SqlIn)
    ctx = request.app[CONTEXT]
    if ctx.audit_query is None:
        raise ApiError(503, "the audit store is not running on this instance")
    columns, rows = await ctx.audit_query(body.sql, body.params)
    return _json({"columns": columns, "rows": rows})


# --- wiring -------------------------------------------------------------------------------

_STATUS_BY_ERROR: list[tuple[type[BaseException], int, str]] = [
    (perr.QueryRefusedError, 400, "query-refused"),
    (perr.QueryFailedError, 400, "query-failed"),
    (derr.NotFoundError, 404, "not-found"),
    (derr.AlreadyExistsError, 409, "exists"),
    (derr.CommandRejectedError, 400, "rejected"),
    (derr.DomainError, 400, "invalid"),
    (CredentialsError, 400, "credentials"),
    (berr.NatsUnavailableError, 503, "log-unavailable"),
    (berr.BrokerError, 503, "log-unavailable"),
]


def _classify(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, IdentityError):
        return exc.status, exc.code
    name = type(exc).__name__
    if name == "ConcurrentUpdateError":
        return 409, "conflict"
    for cls, status, code in _STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status, code
    if name in ("EventLogUnavailableError", "OperationalError"):
        return 503, "log-unavailable"
    return 500, "internal"


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _json({"error": exc.message, "code": exc.code}, exc.status)
    except web.HTTPException:
        raise
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        status, code = _classify(exc)
        if status == 500:
            log.exception("admin API failure", extra={"path": request.path})
            message = "internal error (see the control plane's log)"
        else:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return _json({"error": message, "code": code}, status)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
        web.get("/v1/whoami", whoami),
        web.post("/v1/users", add_user),
        web.post("/v1/users/{user}/disable", disable_user),
        web.post("/v1/users/{user}/enable", enable_user),
        web.post("/v1/users/{user}/revoke", revoke_user),
        web.post("/v1/users/{user}/password-hash", set_password),
        web.post("/v1/groups", add_group),
        web.post("/v1/groups/{group}/members", add_member),
        web.delete("/v1/groups/{group}/members/{user}", remove_member),
        web.post("/v1/clusters", add_cluster),
        web.put("/v1/clusters/{cluster}/labels", set_cluster_labels),
        web.post("/v1/clusters/{cluster}/relay-credentials", relay_credentials),
        web.post("/v1/grants", issue_grant),
        web.delete("/v1/grants/{grant}", revoke_grant),
        web.post("/v1/kubectl/{action}", kubectl_switch),
        web.post("/v1/switches/{switch}", access_switch),
        web.post("/v1/kubeconfigs", make_kubeconfig),
        web.post("/v1/audit/sql", audit_sql),
    ]


def build_app(ctx: AdminContext) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=4 * 1024 * 1024)
    app[CONTEXT] = ctx
    from edge import admin_policy  # it builds on this module's helpers

    app.add_routes(routes())
    app.add_routes(admin_policy.routes())
    app.add_routes(ctx.extra_routes)
    if ctx.identity is not None:
        app.add_routes(ctx.identity.routes())
        if ctx.authenticate_session is None:
            ctx.authenticate_session = _session_principals(ctx.identity)
    return app


def _session_principals(identity: Any) -> Callable[[str], Principal | None]:
    """The admin API's view of a console session token (see edge.identity_service)."""

    def authenticate(token: str) -> Principal | None:
        found = identity.authenticate(token)
        if found is None:
            return None
        return Principal(name=found.user, admin=found.admin, session_id=found.session_id)

    return authenticate
