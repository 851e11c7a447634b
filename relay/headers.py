"""Header hygiene between the frames and the kube-apiserver.

The edge already strips identity headers, but the relay is the last stop before the API server
and holds credentials that act with the user's grants: whatever still claims an identity
(`Authorization`, `Impersonate-*`, `X-Remote-*`, ...) is dropped again, and the only credential
that goes upstream is the user's just-in-time service-account token. Hop-by-hop headers belong
to one connection and are dropped, except `Connection: Upgrade` / `Upgrade` on an upgrade
request (exec, attach, port-forward), which the API server needs to see verbatim.
"""

from __future__ import annotations

Headers = list[tuple[str, str]]

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)

_IDENTITY = frozenset({"authorization", "cookie", "x-forwarded-client-cert", "x-client-cert"})
_IDENTITY_PREFIXES = ("impersonate-", "x-remote-")


def _connection_tokens(headers: Headers) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def is_identity(name: str) -> bool:
    lname = name.lower()
    return lname in _IDENTITY or lname.startswith(_IDENTITY_PREFIXES)


def is_upgrade(headers: Headers) -> bool:
    """An upgrade request: `Connection` lists `upgrade` and an `Upgrade` header names a protocol."""
    return "upgrade" in _connection_tokens(headers) and any(
        name.lower() == "upgrade" and value.strip() for name, value in headers
    )


def upstream_headers(headers: Headers, *, token: str, upgrade: bool) -> tuple[Headers, list[str]]:
    """Headers for the API server, with `Authorization: Bearer <token>`, and the names of
    identity headers that were dropped (they should never arrive; worth a log line)."""
    listed = _connection_tokens(headers)
    out: Headers = []
    dropped: list[str] = []
    for name, value in headers:
        lname = name.lower()
        if is_identity(lname):
            dropped.append(name)
            continue
        if lname in HOP_BY_HOP or lname in listed:
            if upgrade and lname == "upgrade":
                out.append((name, value))
            continue
        out.append((name, value))
    if upgrade:
        out.append(("Connection", "Upgrade"))
    out.append(("Authorization", f"Bearer {token}"))
    return out, dropped


def downstream_headers(headers: Headers, *, upgrade: bool) -> Headers:
    """API server response headers for the edge (the 101's `Upgrade` kept for a tunnel)."""
    listed = _connection_tokens(headers)
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in listed:
            if upgrade and lname == "upgrade":
                out.append((name, value))
            continue
        out.append((name, value))
    if upgrade:
        out.append(("Connection", "Upgrade"))
    return out
