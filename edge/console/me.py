"""What a console user asks about themselves: `GET /v1/me/clusters`, `POST /v1/me/kubeconfig`.

Both need a console session (an admin token is not a person). The session comes as a bearer
token, or as the `kg_session` cookie an OIDC browser login sets (HttpOnly, SameSite=Strict, so
other sites cannot ride on it; the kubeconfig POST also needs a JSON body, which a cross-site
form cannot send without a CORS preflight).

- clusters: those where the user holds a grant active now (the policy projection's
  `clusters_for`), each saying whether it is browser-only for them (then only the shell
  reaches it);
- kubeconfig: a client certificate for the caller (recorded as CertificateIssued, actor = the
  user), in a kubeconfig with a context per cluster asked for (default: every reachable one
  that is not browser-only). 403 when a browser-only switch covers every cluster asked for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass

import msgspec
from aiohttp import web

from domain.policy.decide import switch_scope
from edge import kubeconfig as kcfg
from edge.admin_api import CONTEXT, ApiError, Principal, _principal
from edge.console.shell import SESSION_COOKIE


@dataclass(frozen=True)
class KubeconfigSettings:
    default_ttl: dt.timedelta = dt.timedelta(hours=8)
    max_ttl: dt.timedelta = dt.timedelta(hours=24)


class KubeconfigIn(msgspec.Struct, forbid_unknown_fields=True):
    clusters: list[str] = []
    ttl_seconds: int | None = None


def session_principal(request: web.Request) -> Principal:
    """The console user behind this request (bearer token, else the session cookie)."""
    ctx = request.app[CONTEXT]
    if not request.headers.get("Authorization"):
        token = request.cookies.get(SESSION_COOKIE, "")
        found = ctx.authenticate_session(token) if token and ctx.authenticate_session else None
        if found is None:
            raise ApiError(401, "log in to the console first")
        principal = found
    else:
        principal = _principal(request)
    if not principal.session_id:
        raise ApiError(403, "this needs a console session: an admin token is not a user")
    return principal


def _json(data: object, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(data),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _browser_only(policy: object, user: str, cluster: str) -> str | None:
    state = policy.state  # type: ignore[attr-defined]
    groups = sorted(state.groups_of(user))
    return switch_scope(state.browser_only, cluster, user, groups)


class MeHandlers:
    def __init__(self, settings: KubeconfigSettings | None = None) -> None:
        self.settings = settings or KubeconfigSettings()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/me/clusters", self.clusters),
            web.post("/v1/me/kubeconfig", self.kubeconfig),
        ]

    async def clusters(self, request: web.Request) -> web.Response:
        principal = session_principal(request)
        ctx = request.app[CONTEXT]
        if ctx.policy is None:
            raise ApiError(503, "policy is not available on this instance")
        state = ctx.policy.state
        out = []
        for name in ctx.policy.clusters_for(principal.name):
            record = state.clusters.get(name)
            scope = _browser_only(ctx.policy, principal.name, name)
            out.append(
                {
                    "name": name,
                    "display_name": record.display_name if record else "",
                    "browser_only": scope is not None,
                }
            )
        return _json(
            {
                "user": principal.name,
                "admin": principal.admin,
                "session_id": principal.session_id,
                "clusters": out,
            }
        )

    async def kubeconfig(self, request: web.Request) -> web.Response:
        principal = session_principal(request)
        ctx = request.app[CONTEXT]
        if ctx.policy is None:
            raise ApiError(503, "policy is not available on this instance")
        if request.content_type != "application/json":
            raise ApiError(415, "send a JSON body (Content-Type: application/json)", "invalid")
        try:
            body = msgspec.json.decode(await request.read() or b"{}", type=KubeconfigIn)
        except msgspec.DecodeError as exc:
            raise ApiError(400, f"invalid request: {exc}") from exc
        ttl = (
            dt.timedelta(seconds=body.ttl_seconds)
            if body.ttl_seconds is not None
            else self.settings.default_ttl
        )
        if ttl <= dt.timedelta(0) or ttl > self.settings.max_ttl:
            raise ApiError(
                400, f"ttl must be between 1 second and {self.settings.max_ttl.total_seconds():.0f}"
            )
        user = principal.name
        reachable = ctx.policy.clusters_for(user)
        asked = body.clusters or reachable
        unknown = [c for c in asked if c not in reachable]
        if unknown:
            raise ApiError(403, f"you may not reach cluster {unknown[0]}")
        blocked = {c: _browser_only(ctx.policy, user, c) for c in asked}
        clusters = [c for c in asked if blocked[c] is None]
        if not clusters:
            if asked:
                first = asked[0]
                raise ApiError(
                    403,
                    f"access is browser-only {blocked[first]}: use the browser shell",
                    "browser-only",
                )
            raise ApiError(400, "you may reach no cluster yet")
        if body.clusters and len(clusters) < len(asked):
            first = next(c for c in asked if blocked[c] is not None)
            raise ApiError(
                403,
                f"cluster {first}: access is browser-only {blocked[first]}",
                "browser-only",
            )
        issued = ctx.ca.issue_client(user, ttl, now=ctx.clock())
        result = await asyncio.to_thread(
            ctx.control.issue_certificate,
            issued.serial,
            actor=user,
            command_id=f"me-kubeconfig-{uuid.uuid4().hex}",  # each call is a new certificate
            user=user,
            not_before=issued.not_before,
            not_after=issued.not_after,
            fingerprint=issued.fingerprint,
            clusters=clusters,
        )
        config = kcfg.build(
            user=user, edge_url=ctx.edge_url, ca_pem=ctx.ca.cert_pem, cert=issued, clusters=clusters
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
