"""How the relay talks to its kube-apiserver: streaming requests and raw upgrades.

Ordinary requests use the aiohttp session kubernetes-asyncio configured for the cluster (its TLS
settings), streaming both bodies without buffering, never decompressing, with no read timeout
(watches and `logs -f` run for days). Upgrades (exec, attach, port-forward; WebSocket or SPDY)
use a plain TLS connection of our own, HTTP/1.1, so that after the 101 the socket is ours: raw
bytes both ways. A non-101 answer comes back whole, unchanged, so kubectl's fallback works.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
import httptools

from relay.errors import UpstreamError

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


@dataclass
class UpstreamResponse:
    """Status and headers, then the body as chunks (or raw tunnel bytes after a 101)."""

    status: int
    headers: Headers
    chunks: AsyncIterator[bytes]
    tunnel: UpgradedConnection | None = None
    _release: list = field(default_factory=list)

    async def close(self) -> None:
        for release in self._release:
            with contextlib.suppress(Exception):
                await release()
        self._release.clear()


class UpgradedConnection:
    """The raw socket after a 101: `read()` (b"" at EOF), `write()`, `close()`."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, early: bytes
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._early = early

    async def read(self, n: int = 65536) -> bytes:
        if self._early:
            data, self._early = self._early, b""
            return data
        return await self._reader.read(n)

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def write_eof(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            if self._writer.can_write_eof():
                self._writer.write_eof()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(Exception):
            await self._writer.wait_closed()


class _ResponseHead:
    """httptools callbacks collecting one response head (and, for non-101, its body)."""

    def __init__(self) -> None:
        self.headers: Headers = []
        self.head_done = False
        self.body: list[bytes] = []
        self.complete = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self.head_done = True

    def on_body(self, body: bytes) -> None:
        self.body.append(bytes(body))

    def on_message_complete(self) -> None:
        self.complete = True


class Upstream:
    """One kube-apiserver: base URL, TLS context and the aiohttp session for plain requests."""

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | bool,
        session: aiohttp.ClientSession,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or "localhost"
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.ssl_context = ssl_context
        self.session = session
        self.connect_timeout_s = connect_timeout_s

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
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.connect_timeout_s, sock_read=None
                ),
                ssl=self.ssl_context,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise UpstreamError(f"kube-apiserver unreachable: {exc}") from exc

        async def chunks() -> AsyncIterator[bytes]:
            try:
                async for data in resp.content.iter_any():
                    yield data
            except (aiohttp.ClientError, OSError) as exc:
                raise UpstreamError(f"kube-apiserver stream broke: {exc}") from exc
            finally:
                resp.release()

        async def release() -> None:
            resp.close()

        out_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers]
        return UpstreamResponse(resp.status, out_headers, chunks(), _release=[release])

    async def upgrade(
        self, method: str, path: str, query: str, headers: Headers
    ) -> UpstreamResponse:
        """Send an upgrade request on a fresh HTTP/1.1 connection and read the answer."""
        ssl_arg = self.ssl_context if self.scheme == "https" else None
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=ssl_arg,
                    server_hostname=self.host if ssl_arg else None,
                    limit=1 << 20,
                ),
                self.connect_timeout_s,
            )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise UpstreamError(f"kube-apiserver unreachable: {exc}") from exc
        target = self.base_path + path + (f"?{query}" if query else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        head += [f"{k}: {v}" for k, v in headers if k.lower() != "host"]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        parsed = _ResponseHead()
        parser = httptools.HttpResponseParser(parsed)
        early = b""
        try:
            while not parsed.complete:
                data = await reader.read(65536)
                if not data:
                    if parsed.head_done and not parsed.complete:
                        parsed.complete = True  # body delimited by close
                        break
                    raise UpstreamError("kube-apiserver closed the connection during upgrade")
                try:
                    parser.feed_data(data)
                except httptools.HttpParserUpgrade as up:
                    offset = up.args[0] if up.args else len(data)
                    early = data[offset:]
                    break
        except (OSError, httptools.HttpParserError) as exc:
            writer.close()
            raise UpstreamError(f"bad upgrade answer from kube-apiserver: {exc}") from exc
        status = parser.get_status_code()
        if status == 101:
            conn = UpgradedConnection(reader, writer, early)
            return UpstreamResponse(
                101, parsed.headers, _empty(), tunnel=conn, _release=[conn.close]
            )
        writer.close()
        body = b"".join(parsed.body)
        return UpstreamResponse(status, parsed.headers, _once(body))


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _once(data: bytes) -> AsyncIterator[bytes]:
    if data:
        yield data
