"""Header hygiene between kubectl and the relay, in both directions.

The edge is the identity boundary: whatever a client says about who it is (`Authorization`,
`Impersonate-*`, `X-Remote-*`) is dropped, never forwarded; identity comes from the client
certificate alone. Hop-by-hop headers belong to one connection and are dropped too, except the
`Connection: Upgrade` / `Upgrade` pair of an upgrade request, which the relay must repeat to
the API server for exec, attach and port-forward to work.
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
    }
)

_IDENTITY_PREFIXES = ("impersonate-", "x-remote-")
_IDENTITY = frozenset({"authorization", "cookie", "x-forwarded-client-cert", "x-client-cert"})


def _connection_tokens(headers: Headers) -> set[str]:
    tokens: set[str] = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def identity_headers(headers: Headers) -> list[str]:
    """Names of client headers that claim an identity (dropped; worth an audit note)."""
    return [
        name
        for name, _ in headers
        if name.lower() in _IDENTITY or name.lower().startswith(_IDENTITY_PREFIXES)
    ]


def request_headers(headers: Headers, *, upgrade: bool) -> Headers:
    """Client request headers safe to forward to the relay."""
    listed = _connection_tokens(headers)
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname in _IDENTITY or lname.startswith(_IDENTITY_PREFIXES) or lname == "host":
            continue
        if lname in HOP_BY_HOP or lname in listed:
            if upgrade and lname == "upgrade":
                out.append((name, value))
            continue
        out.append((name, value))
    if upgrade:
        out.append(("Connection", "Upgrade"))
    return out


def response_headers(headers: Headers, *, upgrade: bool) -> Headers:
    """Upstream response headers safe to return to the client."""
    listed = _connection_tokens(headers)
    out: Headers = []
    for name, value in headers:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in listed:
            if upgrade and lname == "upgrade":
                out.append((name, value))
            continue
        out.append((name, value))
    return out


def content_length(headers: Headers) -> int | None:
    for name, value in headers:
        if name.lower() == "content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def has_request_body(method: str, headers: Headers) -> bool:
    if method in ("GET", "HEAD", "OPTIONS"):
        return False
    length = content_length(headers)
    if length is not None:
        return length > 0
    return any(n.lower() == "transfer-encoding" and "chunked" in v.lower() for n, v in headers)
