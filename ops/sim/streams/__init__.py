"""The simulator's streaming pod subresources: log, exec, attach, portforward.

Contract with the simulator core: after authentication, RBAC and the pod lookup, its router
calls `await handle(request, subresource, pod, runtime)` and returns what it gets. Refusals the
API server makes before an upgrade come back as `Status` responses (or, where kubelet answers,
its bare text); after an upgrade, the session handles its own errors and never raises.

Modules: `spdy` (SPDY/3.1 codec), `spdy_session` (a server session), `channel` (the WebSocket
channel protocol), `transports`, `upgrade` (negotiation); `remotecommand` (exec, attach) with
`remote`, `remote_websocket`, `remote_spdy` and `sessions`; `portforward` (SPDY, tunnelled or
plain) and `portforward_websocket` (kubelet's channel protocol); `logs` with `podlog` (CRI log
files); `containers` (processes), `pods` (per-pod state), `podspec` (reading the pod object),
`status`, `errors`. The runtime they share is
`ops.sim.runtime.PodRuntime`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from ops.sim.streams import logs, portforward, remotecommand, status
from ops.sim.streams.errors import StreamStatusError, UpgradeRefusedError

if TYPE_CHECKING:
    from ops.sim.runtime import PodRuntime

SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward"})


async def handle(
    request: web.Request, subresource: str, pod: dict[str, Any], runtime: PodRuntime
) -> web.StreamResponse:
    """Serve one streaming subresource request for `pod` (already authorized)."""
    try:
        if subresource == "log":
            return await logs.serve(request, pod, runtime)
        if subresource in ("exec", "attach"):
            return await remotecommand.serve(request, subresource, pod, runtime)
        if subresource == "portforward":
            return await portforward.serve(request, pod, runtime)
        raise status.not_found("the server could not find the requested resource")
    except (StreamStatusError, UpgradeRefusedError) as exc:
        return status.response(exc)


__all__ = ["SUBRESOURCES", "handle"]
