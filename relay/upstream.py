"""How the relay talks to its kube-apiserver: streaming requests and raw upgrades.

Forwarded requests carry the user's just-in-time token, never the relay's own identity: the
session here has the cluster's CA (and server name) but no client certificate, because an API
server that sees both a client certificate and a bearer token authenticates the certificate
first, which would run every user's request as the relay.

Ordinary requests stream both bodies without buffering, never decompress, and have no read
timeout (watches and `logs -f` run for days). Upgrades (exec, attach, port-forward; WebSocket or
SPDY) use a plain TLS connection of our own, HTTP/1.1, so that after the 101 the socket is ours:
raw bytes both ways. A non-101 answer comes back whole, unchanged, so kubectl's fallback works.
Cancelling a call (the edge gave up) closes the connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httptools

from broker.tls_objects import FastSSLObject
from relay.errors import UpstreamError
from relay.tunnel_conn import TunnelConnection

Headers = list[tuple[str, str]]

_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_MAX_ERROR_BODY = 1 << 20
"""Largest non-101 answer to an upgrade the relay reads (a Status is a few hundred bytes)."""
SMALL_BODY = 256 * 1024
"""Largest body `UpstreamResponse.complete` reports: one data chunk, the most that can travel
in the response head. A larger body already here streams as chunks rather than being joined
into one copy first."""


@dataclass
class UpstreamResponse:
    """Status and headers, then the body as chunks (or raw tunnel bytes after a 101)."""

    status: int
    headers: Headers
    chunks: AsyncIterator[bytes]
    tunnel: UpgradedConnection | None = None
    complete: bool = False
    """The whole body, at most `SMALL_BODY`, was already here with the head: `read` will not
    wait."""
    _release: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def read(self) -> bytes:
        """The whole body, read to its end (for answers known to be small or already here)."""
        return b"".join([chunk async for chunk in self.chunks])

    async def close(self) -> None:
        """Give the connection up (closing it if the body was not read to the end)."""
        for release in self._release:
            with contextlib.suppress(Exception):
                await release()
        self._release.clear()


class UpgradedConnection:
    """The raw connection after a 101: `read()` (b"" at EOF), `write()`, `write_nowait()`,
    `forward()` (see `relay.tunnel_conn`), `close()`."""

    def __init__(self, conn: TunnelConnection) -> None:
        self._conn = conn

    async def read(self) -> bytes:
        """What came next from the API server, as one read received it; b"" at EOF."""
        return await self._conn.read()

    def forward(self, sink: Callable[[bytes], bool]) -> None:
        """Offer what the API server sends to `sink` as it arrives (True: taken), once `read`
        has taken what is already queued (the bytes that came with the 101 among them)."""
        self._conn.forward(sink)

    async def write(self, data: bytes) -> None:
        self._conn.write(data)
        await self._conn.drain()

    def write_nowait(self, data: bytes | memoryview) -> bool:
        """Write `data` if the connection takes it without `drain` having to wait (its transport
        is not holding back a backlog); False, writing nothing, otherwise."""
        return self._conn.write_nowait(data)

    def write_eof(self) -> None:
        """Half-close towards the API server where the transport can (not over TLS)."""
        with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
            self._conn.write_eof()

    async def close(self) -> None:
        self._conn.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._conn.wait_closed(), 2.0)


class _ResponseHead:
    """httptools callbacks collecting one response head (and, for non-101, its body)."""

    def __init__(self) -> None:
        self.headers: Headers = []
        self.head_done = False
        self.body: list[bytes] = []
        self.body_size = 0
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size <= _MAX_ERROR_BODY:
            self.body.append(bytes(body))

    def on_message_complete(self) -> None:
        self.complete = True


def client_ssl_context(
    ca_file: str | None, *, verify: bool = True, strict: bool = True
) -> ssl.SSLContext:
    """TLS towards the API server: its CA, no client certificate (see the module docstring)."""
    ctx = ssl.create_default_context(cafile=ca_file)
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if not strict:
        ctx.verify_flags &= ~ssl.VERIFY_X509_STRICT
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.sslobject_class = FastSSLObject
    return ctx


class Upstream:
    """One kube-apiserver: base URL, TLS settings and a session of its own for forwarding.

    Create it inside a running event loop; `close()` it on shutdown.
    """

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None,
        *,
        server_hostname: str | None = None,
        connect_timeout_s: float = 10.0,
        upgrade_head_timeout_s: float = 60.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.ssl_context = ssl_context if self.scheme == "https" else None
        self.server_hostname = server_hostname or None
        self.connect_timeout_s = connect_timeout_s
        self.upgrade_head_timeout_s = upgrade_head_timeout_s
        # Watches hold a connection each for as long as they run: no pool limit.
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=0, ssl=self.ssl_context if self.ssl_context else False
        )
        # One session carries every user's requests: it must never keep a cookie the API
        # server sets and send it with the next (another user's) request.
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            read_bufsize=2**21,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout_s, sock_read=None
        )

    @classmethod
    def from_configuration(cls, configuration: Any, **kw: Any) -> Upstream:
        """From a kubernetes-asyncio `Configuration`: its host, CA, verification and TLS
        server name, but not its credentials."""
        ctx = client_ssl_context(
            configuration.ssl_ca_cert,
            verify=configuration.verify_ssl,
            strict=not getattr(configuration, "disable_strict_ssl_verification", False),
        )
        return cls(
            configuration.host,
            ctx,
            server_hostname=getattr(configuration, "tls_server_name", None),
            **kw,
        )

    async def close(self) -> None:
        await self.session.close()

    def url(self, path: str, query: str) -> str:
        return f"{self.base_url}{path}" + (f"?{query}" if query else "")

    async def request(
        self,
        method: str,
        path: str,
        query: str,
        headers: Headers,
        body: AsyncIterator[bytes] | bytes | None,
    ) -> UpstreamResponse:
        """Send a request, return once the response head is in; the body streams after."""
        try:
            resp = await self.session.request(
                method,
                self.url(path, query),
                headers=headers,
                data=body,
                allow_redirects=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                timeout=self._timeout,
                server_hostname=self.server_hostname,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise UpstreamError(f"kube-apiserver unreachable: {_describe(exc)}") from exc

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for data in resp.content.iter_any():
                    yield data
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(f"kube-apiserver stream broke: {_describe(exc)}") from exc

        async def release() -> None:
            # A body read to its end has already given its connection back to the pool. One
            # left mid-way (a cut watch, a cancelled request) cannot be reused: drop it at once
            # rather than negotiate a TLS close with the API server, which costs both sides a
            # read and a write per connection (a revocation cuts many at once).
            conn = resp.connection
            if conn is not None and conn.transport is not None:
                conn.transport.abort()
            resp.close()

        out_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        complete = resp.content.is_eof() and resp.content.total_bytes <= SMALL_BODY
        return UpstreamResponse(
            resp.status, out_headers, chunks(), complete=complete, _release=[release]
        )

    async def upgrade(
        self, method: str, path: str, query: str, headers: Headers
    ) -> UpstreamResponse:
        """Send an upgrade request on a fresh HTTP/1.1 connection and read the answer."""
        hostname = (self.server_hostname or self.host) if self.ssl_context else None
        try:
            conn = await asyncio.wait_for(
                TunnelConnection.connect(self.host, self.port, self.ssl_context, hostname),
                self.connect_timeout_s,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise UpstreamError(f"kube-apiserver unreachable: {_describe(exc)}") from exc
        try:
            return await asyncio.wait_for(
                self._upgrade_on(conn, method, path, query, headers),
                self.upgrade_head_timeout_s,
            )
        except BaseException as exc:
            conn.close()
            if isinstance(exc, TimeoutError):
                raise UpstreamError("the kube-apiserver did not answer the upgrade") from exc
            raise

    async def _upgrade_on(
        self,
        conn: TunnelConnection,
        method: str,
        path: str,
        query: str,
        headers: Headers,
    ) -> UpstreamResponse:
        target = self.base_path + path + (f"?{query}" if query else "")
        host = self.host if self.port in (80, 443) else f"{self.host}:{self.port}"
        head = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        head += [f"{k}: {v}" for k, v in headers if k.lower() != "host"]
        try:
            conn.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            await conn.drain()
        except (OSError, UnicodeEncodeError) as exc:
            raise UpstreamError(f"cannot send the upgrade request: {_describe(exc)}") from exc
        parsed = _ResponseHead()
        parser = httptools.HttpResponseParser(parsed)
        early = b""
        try:
            while not parsed.complete:
                data = await conn.read()
                if not data:
                    if parsed.head_done:
                        parsed.complete = True  # body delimited by close
                        break
                    raise UpstreamError("kube-apiserver closed the connection during upgrade")
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade as up:
                    offset = up.args[0] if up.args else len(data)
                    early = data[offset:]
                    break
                if parsed.body_size > _MAX_ERROR_BODY:
                    raise UpstreamError("the kube-apiserver's answer to an upgrade is too large")
        except (OSError, httptools.HttpParserError) as exc:
            raise UpstreamError(f"bad upgrade answer from kube-apiserver: {exc}") from exc
        status = parser.get_status_code()
        if status == 101:
            conn.unread(early)  # the tunnel's first bytes, ahead of any read since
            tunnel = UpgradedConnection(conn)
            return UpstreamResponse(
                101, parsed.headers, _empty(), tunnel=tunnel, _release=[tunnel.close]
            )
        conn.close()
        body = b"".join(parsed.body)
        return UpstreamResponse(status, parsed.headers, _once(body))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text or type(exc).__name__


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _once(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data
