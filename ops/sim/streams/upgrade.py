"""Upgrade negotiation shared by exec, attach and port-forward: which transport, which protocol.

Mirrors apimachinery's `httpstream.Handshake` for SPDY (X-Stream-Protocol-Version, 400 when the
header is missing, 403 plus X-Accepted-Stream-Protocol-Versions when nothing matches) and the
WebSocket handshake kubelet and kube-apiserver run (403 when no subprotocol matches).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import hdrs, web

from ops.sim.streams.errors import UpgradeRefusedError
from ops.sim.streams.transports import RawUpgrade

PROTOCOL_VERSION = "X-Stream-Protocol-Version"
ACCEPTED_VERSIONS = "X-Accepted-Stream-Protocol-Versions"
SPDY_31 = "SPDY/3.1"


def _tokens(request: web.BaseRequest, header: str) -> list[str]:
    return [
        t.strip() for v in request.headers.getall(header, []) for t in v.split(",") if t.strip()
    ]


def is_upgrade(request: web.BaseRequest) -> bool:
    return any(t.lower() == "upgrade" for t in _tokens(request, hdrs.CONNECTION))


def is_websocket(request: web.BaseRequest) -> bool:
    return is_upgrade(request) and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"


def is_spdy(request: web.BaseRequest) -> bool:
    return is_upgrade(request) and SPDY_31.lower() in request.headers.get(hdrs.UPGRADE, "").lower()


def websocket_protocols(request: web.BaseRequest) -> list[str]:
    return _tokens(request, hdrs.SEC_WEBSOCKET_PROTOCOL)


def websocket_refused(requested: Sequence[str], supported: Sequence[str]) -> UpgradeRefusedError:
    return UpgradeRefusedError(
        403,
        f"unable to upgrade: requested protocol(s) are not supported: [{' '.join(requested)}]; "
        f"supports [{' '.join(supported)}]",
    )


def spdy_handshake(request: web.BaseRequest, server_protocols: Sequence[str]) -> str:
    """Pick the first of the client's protocols that the server speaks."""
    if PROTOCOL_VERSION not in request.headers:
        raise UpgradeRefusedError(
            400,
            f"unable to upgrade: header {PROTOCOL_VERSION} does not exist in request with "
            f"{len(request.headers)} headers",
        )
    client = _tokens(request, PROTOCOL_VERSION)
    if not client:
        raise UpgradeRefusedError(
            400, f"unable to upgrade: header {PROTOCOL_VERSION} contains no valid protocols"
        )
    for protocol in client:
        if protocol in server_protocols:
            return protocol
    raise UpgradeRefusedError(
        403,
        f"unable to upgrade: unable to negotiate protocol: client supports [{' '.join(client)}], "
        f"server accepts [{' '.join(server_protocols)}]",
        {ACCEPTED_VERSIONS: ", ".join(server_protocols)},
    )


async def accept_spdy(request: web.BaseRequest, protocol: str) -> RawUpgrade:
    """Answer 101 Switching Protocols to SPDY/3.1 and return the raw connection."""
    return await RawUpgrade.accept(
        request,
        {
            hdrs.CONNECTION: "Upgrade",
            hdrs.UPGRADE: SPDY_31,
            PROTOCOL_VERSION: protocol,
        },
    )
