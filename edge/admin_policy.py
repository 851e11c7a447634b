"""Admin API routes about policy itself: break-glass, "what can U do where and why", settings.

Break-glass is for users, not only administrators: a logged-in user (console session token)
requests access to a sensitive cluster; an approver (a member of the approver group, another
user) approves or denies it. The rules are the pure `domain.policy.breakglass` functions, checked
against this instance's policy projection before the command is stored; the control plane then
stores the request, or the approval together with the time-bound grant it creates.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

import msgspec
from aiohttp import web

from domain.policy import breakglass as bg
from domain.policy.explain import explain
from edge.admin_api import (
    CONTEXT,
    ApiError,
    _admin,
    _body,
    _command_id,
    _json,
    _principal,
    _result,
)


class BreakGlassIn(msgspec.Struct, forbid_unknown_fields=True):
    cluster: str
    reason: str
    duration_seconds: int
    role: str = "cluster-admin"
    namespaces: list[str] = []


class DecisionIn(msgspec.Struct, forbid_unknown_fields=True):
    reason: str = ""


class SettingsIn(msgspec.Struct, forbid_unknown_fields=True):
    settings: dict[str, str | int | float | bool]


def _projection(request: web.Request) -> Any:
    policy = request.app[CONTEXT].policy
    if policy is None:
        raise ApiError(503, "no policy projection on this instance")
    return policy


async def _caught_up(policy: Any, positions: tuple[int, ...], within: float = 5.0) -> None:
    """Wait until this instance's policy has applied what a command just stored, so the
    caller's next request (an approval right after a request) sees it."""
    if not positions:
        return
    target = max(positions)
    deadline = time.monotonic() + within
    while policy.runner.positions().get("control", 0) < target:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.005)


def _view(record: Any) -> dict[str, Any]:
    return msgspec.to_builtins(
        {
            "id": record.request_id,
            "user": record.user,
            "cluster": record.cluster,
            "role": record.role,
            "namespaces": list(record.namespaces),
            "reason": record.reason,
            "duration_seconds": record.duration_s,
            "requested_at": record.requested_at,
            "status": record.status,
            "approver": record.approver,
            "grant_id": record.grant_id,
            "self_approved": record.self_approved,
            "decided_at": record.decided_at,
            "decision_reason": record.decision_reason,
        }
    )


async def request_breakglass(request: web.Request) -> web.Response:
    principal = _principal(request)
    body = await _body(request, BreakGlassIn)
    ctx = request.app[CONTEXT]
    policy = _projection(request)
    now: datetime = ctx.clock()
    request_id = f"bg-{uuid.uuid4().hex[:10]}"
    bg.request(
        policy.state,
        event_id="check",
        request_id=request_id,
        user=principal.name,
        cluster=body.cluster,
        reason=body.reason,
        duration_s=body.duration_seconds,
        now=now,
        role=body.role,
        namespaces=tuple(body.namespaces),
    )
    result = await asyncio.to_thread(
        ctx.control.request_breakglass,
        request_id,
        actor=principal.name,
        command_id=_command_id(request),
        user=principal.name,
        cluster=body.cluster,
        reason=body.reason,
        duration_s=body.duration_seconds,
        role=body.role,
        namespaces=body.namespaces,
    )
    await _caught_up(policy, result.positions)
    out = _result(result)
    out["id"] = request_id
    out["approvers"] = sorted(bg.approver_candidates(policy.state, request_id))
    return _json(out, 201)


async def approve_breakglass(request: web.Request) -> web.Response:
    principal = _principal(request)
    body = await _body(request, DecisionIn)
    ctx = request.app[CONTEXT]
    policy = _projection(request)
    request_id = request.match_info["id"]
    grant_id = f"{request_id}-grant"
    now = ctx.clock()
    approval, _grant = bg.approve(
        policy.state,
        request_id=request_id,
        approver=principal.name,
        now=now,
        event_id="check",
        grant_event_id="check-grant",
        grant_id=grant_id,
        reason=body.reason,
    )
    result = await asyncio.to_thread(
        ctx.control.approve_breakglass,
        request_id,
        actor=principal.name,
        command_id=_command_id(request),
        grant_id=grant_id,
        self_approved=approval.self_approved,
        reason=body.reason,
    )
    await _caught_up(policy, result.positions)
    out = _result(result)
    out.update(id=request_id, grant_id=grant_id, self_approved=approval.self_approved)
    record = policy.state.breakglass.get(request_id)
    if record is not None:
        out["expires_at"] = msgspec.to_builtins(
            policy.state.grants[grant_id].expires_at if grant_id in policy.state.grants else None
        )
    return _json(out)


async def deny_breakglass(request: web.Request) -> web.Response:
    principal = _principal(request)
    body = await _body(request, DecisionIn)
    ctx = request.app[CONTEXT]
    policy = _projection(request)
    request_id = request.match_info["id"]
    bg.deny(
        policy.state,
        request_id=request_id,
        approver=principal.name,
        now=ctx.clock(),
        event_id="check",
        reason=body.reason,
    )
    result = await asyncio.to_thread(
        ctx.control.deny_breakglass,
        request_id,
        actor=principal.name,
        command_id=_command_id(request),
        reason=body.reason,
    )
    await _caught_up(policy, result.positions)
    out = _result(result)
    out["id"] = request_id
    return _json(out)


async def list_breakglass(request: web.Request) -> web.Response:
    principal = _principal(request)
    policy = _projection(request)
    records = sorted(policy.state.breakglass.values(), key=lambda r: r.requested_at)
    if not principal.admin:
        records = [
            r
            for r in records
            if r.user == principal.name
            or principal.name in bg.approver_candidates(policy.state, r.request_id)
        ]
    return _json({"requests": [_view(r) for r in records]})


async def show_policy(request: web.Request) -> web.Response:
    """What a user can do where, and why (users may ask about themselves; admins about all)."""
    principal = _principal(request)
    user = request.match_info["user"]
    if not principal.admin and principal.name != user:
        raise ApiError(403, f"{principal.name} may only ask about themselves")
    ctx = request.app[CONTEXT]
    policy = _projection(request)
    explanation = explain(policy.state, user, ctx.clock())
    return _json(msgspec.to_builtins(explanation))


async def change_settings(request: web.Request) -> web.Response:
    principal = _admin(request)
    body = await _body(request, SettingsIn)
    ctx = request.app[CONTEXT]
    result = await asyncio.to_thread(
        ctx.control.change_settings,
        body.settings,
        actor=principal.name,
        command_id=_command_id(request),
    )
    return _json(_result(result))


def routes() -> list[web.RouteDef]:
    return [
        web.post("/v1/breakglass", request_breakglass),
        web.get("/v1/breakglass", list_breakglass),
        web.post("/v1/breakglass/{id}/approve", approve_breakglass),
        web.post("/v1/breakglass/{id}/deny", deny_breakglass),
        web.get("/v1/policy/{user}", show_policy),
        web.post("/v1/settings", change_settings),
    ]
