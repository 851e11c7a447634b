"""A small asyncio HTTP/1.1 server (httptools' llhttp parser) that can hand over raw bytes.

Why not aiohttp here: the kubectl proxy must pass any `Upgrade` through (WebSocket *and*
`SPDY/3.1`), and after the upstream's 101 carry raw bytes both ways. aiohttp's server only
recognises `websocket`/`tcp` upgrades and parses anything else as the next request. This
module does only protocol work: framing, keep-alive, limits, backpressure and upgrades. It
knows nothing about routing or policy; the handler gets a `Request` and a `Response`.

Flow control: request bodies and upgraded bytes go through bounded buffers; reading from the
socket pauses when one fills and resumes when it drains to half. Writes wait for the transport
to drain. There is no timeout on a request once its head arrived (watches, logs -f, exec are
long-running by nature); only slow heads and idle keep-alive connections are cut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast

import httptools

from broker.chunk_queue import ChunkQueue
from broker.nats_parser import Buffer
from broker.tls_objects import FastSSLObject
from broker.write_gate import WriteGate

log = logging.getLogger("kubegate.edge.http1")

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Limits:
    max_head_bytes: int = 64 * 1024
    max_body_bytes: int = 64 * 1024 * 1024
    buffer_bytes: int = 256 * 1024
    head_timeout_s: float = 30.0
    keepalive_timeout_s: float = 300.0
    max_pipelined: int = 16


class HttpError(Exception):
    """A protocol error answered with a plain status before any handler runs."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ByteBuffer(ChunkQueue):
    """A request body or the client's side of a tunnel: a `ChunkQueue` that pauses reading
    the connection when full, read whole (`read` takes everything queued) or by iteration."""

    def __init__(self, conn: _Connection, limit: int) -> None:
        super().__init__(limit, lambda: conn.pause_reading(self), lambda: conn.resume_reading(self))

    async def read(self) -> bytes:
        """Everything buffered so far (waiting for at least one byte), or b"" at end of stream.
        Raises the connection's error, if any."""
        return await self.read_all()

    def __aiter__(self) -> _ByteBuffer:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk


class Request:
    """What the client sent: head fields, peer facts and a streaming body."""

    def __init__(self, conn: _Connection, method: str, target: bytes, headers: Headers) -> None:
        self.method = method
        self.target = target.decode("latin-1")
        path, _, query = self.target.partition("?")
        self.path = path
        self.query_string = query
        self.headers = headers
        self.body = _ByteBuffer(conn, conn.limits.buffer_bytes)
        self.upgrade = False
        self.keep_alive = True
        self.http_version = "1.1"
        self.peer = conn.peer
        self.peer_cert_der = conn.peer_cert_der
        self.conn_id = conn.conn_id
        self.body_bytes = 0

    def header(self, name: str, default: str = "") -> str:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return default


HOLD_LIMIT = 64 * 1024
"""Most body bytes `Response.write(more=True)` holds back before sending anyway."""


class Response:
    """Writes one response: a head, then a body (chunked unless a length was given)."""

    def __init__(self, conn: _Connection, request: Request) -> None:
        self._conn = conn
        self._request = request
        self.started = False
        self.finished = False
        self.status = 0
        self.bytes_out = 0
        self._chunked = False
        self._upgraded = False
        self._held: list[bytes] = []
        self._held_bytes = 0

    @property
    def client_gone(self) -> asyncio.Event:
        """Set once the client's connection has closed. A quiet watch writes nothing, so it
        would never hit a write error: long responses wait on this instead."""
        return self._conn._closed

    async def start(
        self,
        status: int,
        headers: Headers,
        *,
        content_length: int | None = None,
        hold: bool = False,
    ) -> None:
        """Send the head; with `hold=True` keep it for the first `write`, `flush` or `finish`,
        so a response already in memory leaves in one TLS record and one syscall."""
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        self.status = status
        no_body = status in (204, 304) or 100 <= status < 200 or self._request.method == "HEAD"
        out = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
        for name, value in headers:
            lname = name.lower()
            if lname in ("content-length", "transfer-encoding", "connection", "keep-alive"):
                continue
            out.append(f"{name}: {value}\r\n")
        if status == 101:
            out.append("Connection: Upgrade\r\n")
        else:
            if content_length is not None:
                out.append(f"Content-Length: {content_length}\r\n")
            elif not no_body:
                self._chunked = True
                out.append("Transfer-Encoding: chunked\r\n")
            if not self._request.keep_alive:
                out.append("Connection: close\r\n")
        out.append("\r\n")
        self._held.append("".join(out).encode("latin-1"))
        if not hold:
            await self.flush()

    async def write(self, data: bytes, *, more: bool = False) -> None:
        """Send body bytes now: watches and logs -f need every chunk at once. `more=True` says
        the next piece is already in memory: hold this one (up to `HOLD_LIMIT` bytes) to send
        them together."""
        if not self.started:
            raise RuntimeError("write before start")
        if data:
            self.bytes_out += len(data)
            framed = self._framed(data)
            self._held.append(framed)
            self._held_bytes += len(framed)
        if not more or self._held_bytes >= HOLD_LIMIT:
            await self.flush()

    def write_nowait(self, data: Buffer) -> bool:
        """`write(data)` if it can happen at once (nothing held back, the client reading); False,
        writing nothing, otherwise. For a callback that has the bytes in hand."""
        if not self.started or self.finished or self._held or not data:
            return False
        if not self._conn.write_nowait(self._framed(data)):
            return False
        self.bytes_out += len(data)
        return True

    def _framed(self, data: Buffer) -> bytes | Buffer:
        """Body bytes as they go on the wire: one HTTP chunk, or as they are with a length."""
        return b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data

    async def flush(self) -> None:
        """Send whatever `start(hold=True)` or `write(more=True)` held back."""
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        self._held_bytes = 0
        await self._conn.write(data)

    async def finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self._chunked:
            self._held.append(b"0\r\n\r\n")
        await self.flush()

    async def send(
        self, status: int, body: bytes, content_type: str = "application/json", extra: Headers = ()
    ) -> None:
        """A whole small response in one go (one write)."""
        await self.start(
            status, [("Content-Type", content_type), *extra], content_length=len(body), hold=True
        )
        await self.write(body)
        await self.finish()

    async def upgrade(self, headers: Headers) -> Tunnel:
        """Answer 101 with `headers` and switch this connection to raw bytes both ways."""
        if not self._request.upgrade:
            raise RuntimeError("request did not ask for an upgrade")
        await self.start(101, headers)
        self.finished = True
        self._upgraded = True
        self._conn.switch_to_raw(self._request)
        return Tunnel(self._conn, self._request.body, self)


class Tunnel:
    """Raw bytes after a 101: `read()` from the client (b"" at EOF), `write()` to it."""

    def __init__(self, conn: _Connection, incoming: _ByteBuffer, response: Response) -> None:
        self._conn = conn
        self._incoming = incoming
        self._response = response
        self.bytes_in = 0

    async def read(self) -> bytes:
        data = await self._incoming.read()
        self.bytes_in += len(data)
        return data

    def forward(self, sink: Callable[[bytes], bool]) -> None:
        """Hand bytes from the client to `sink` as they arrive, in the connection's callback,
        when it can take them at once (True); what it refuses waits for `read()`, in order.
        Saves a bulk stream a task wake-up per read."""

        def take(data: bytes) -> bool:
            if not sink(data):
                return False
            self.bytes_in += len(data)
            return True

        self._incoming.set_sink(take)

    async def write(self, data: bytes) -> None:
        self._response.bytes_out += len(data)
        await self._conn.write(data)

    def write_nowait(self, data: Buffer) -> bool:
        """`write(data)` if the client is reading (it would not wait); False, writing nothing,
        otherwise."""
        if not self._conn.write_nowait(data):
            return False
        self._response.bytes_out += len(data)
        return True

    def close(self) -> None:
        self._conn.close()


Handler = Callable[[Request, Response], Awaitable[None]]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


class _Connection(asyncio.Protocol):
    """One client connection: parses requests and runs the handler for each, in order."""

    _next_id = 0

    def __init__(self, server: Http1Server) -> None:
        self.server = server
        self.limits = server.limits
        _Connection._next_id += 1
        self.conn_id = _Connection._next_id
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] | None = None
        self.peer_cert_der: bytes | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._requests: deque[Request] = deque()
        self._request_ready = asyncio.Event()
        self._current: Request | None = None
        self._url = bytearray()
        self._headers: Headers = []
        self._head_bytes = 0
        self._raw: _ByteBuffer | None = None
        self._paused_by: set[int] = set()
        self._writable = WriteGate()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: HttpError | None = None

    # -- transport callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None:
            self.peer_cert_der = sslobj.getpeercert(binary_form=True)
        self._task = asyncio.get_running_loop().create_task(self._serve())
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed.set()
        self.server._connections.discard(self)
        err = ConnectionResetError("client closed the connection")
        for req in (self._current, *self._requests):
            if req is not None and not req.body.at_eof:
                req.body.set_error(err)
        if self._raw is not None:
            self._raw.feed_eof()
        self._request_ready.set()
        self._writable.fail(err)

    def data_received(self, data: bytes) -> None:
        if self._raw is not None:
            self._raw.feed(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # Everything after the upgrade request's head is the new protocol's: it goes to
            # that request's buffer, unparsed, whether or not the upgrade is then accepted.
            offset = upgrade.args[0] if upgrade.args else len(data)
            req = self._requests[-1] if self._requests else self._current
            if req is not None:
                self._raw = req.body
                req.body.feed(data[offset:])
        except httptools.HttpParserError as exc:
            # httptools wraps errors raised in our callbacks (limits); keep their status.
            cause = exc.__context__
            if isinstance(cause, HttpError):
                self._fail(cause)
            else:
                self._fail(HttpError(400, f"malformed HTTP request: {exc}"))
        except HttpError as exc:
            self._fail(exc)

    def pause_writing(self) -> None:
        self._writable.pause()

    def resume_writing(self) -> None:
        self._writable.resume()

    # -- parser callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url.clear()
        self._headers = []
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value))
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.limits.max_head_bytes:
            raise HttpError(431, "request head too large")

    def on_headers_complete(self) -> None:
        method = self._parser.get_method().decode("ascii", "replace")
        req = Request(self, method, bytes(self._url), self._headers)
        req.keep_alive = self._parser.should_keep_alive()
        req.upgrade = self._parser.should_upgrade()
        if req.upgrade:
            # An upgrade request is the connection's last HTTP request, accepted or not.
            req.keep_alive = False
        req.http_version = self._parser.get_http_version()
        self._requests.append(req)
        if len(self._requests) >= self.limits.max_pipelined:
            self.pause_reading(self._requests)
        self._request_ready.set()

    def on_body(self, body: bytes) -> None:
        req = self._requests[-1] if self._requests else self._current
        if req is None:
            return
        req.body_bytes += len(body)
        if req.body_bytes > self.limits.max_body_bytes:
            req.body.set_error(HttpError(413, "request body too large"))
            raise HttpError(413, "request body too large")
        req.body.feed(body)

    def on_message_complete(self) -> None:
        req = self._requests[-1] if self._requests else self._current
        if req is not None and not req.upgrade:
            req.body.feed_eof()

    # -- flow control ---------------------------------------------------------------------

    def pause_reading(self, by: object) -> None:
        if self.transport is not None and not self._paused_by:
            with contextlib.suppress(RuntimeError):
                self.transport.pause_reading()
        self._paused_by.add(id(by))

    def resume_reading(self, by: object) -> None:
        if id(by) not in self._paused_by:
            return
        self._paused_by.discard(id(by))
        if self.transport is not None and not self._paused_by:
            with contextlib.suppress(RuntimeError):
                self.transport.resume_reading()

    async def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("client connection closed")
        self.transport.write(data)
        await self._writable.wait()

    def write_nowait(self, data: Buffer) -> bool:
        """Write `data` unless `write` would have to wait (the client is not reading, or the
        connection closed): then False, and nothing is written."""
        if self._writable.paused or self.transport is None or self.transport.is_closing():
            return False
        self.transport.write(data)
        return True

    def switch_to_raw(self, request: Request) -> None:
        self._raw = request.body

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: HttpError) -> None:
        self._error = exc
        self._request_ready.set()

    # -- request loop ---------------------------------------------------------------------

    async def _next_request(self, idle_s: float) -> Request | None:
        while not self._requests:
            if self._closed.is_set() or self._error is not None:
                return None
            self._request_ready.clear()
            try:
                async with asyncio.timeout(idle_s):  # not wait_for: see projections.policy
                    await self._request_ready.wait()
            except TimeoutError:
                return None
        req = self._requests.popleft()
        self.resume_reading(self._requests)
        return req

    async def _serve(self) -> None:
        try:
            first = True
            while True:
                idle_s = self.limits.head_timeout_s if first else self.limits.keepalive_timeout_s
                req = await self._next_request(idle_s)
                first = False
                if req is None:
                    if self._error is not None and not self._closed.is_set():
                        await self._answer_error(self._error)
                    break
                self._current = req
                resp = Response(self, req)
                await self._run_handler(req, resp)
                self._current = None
                if resp._upgraded or not req.keep_alive or self._closed.is_set():
                    break
                # Drain an unread request body so the next request parses cleanly.
                while not req.body.at_eof:
                    if not await req.body.read():
                        break
        except (ConnectionError, HttpError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("connection failed", extra={"conn": self.conn_id})
        finally:
            self.close()

    async def _run_handler(self, req: Request, resp: Response) -> None:
        try:
            await self.server.handler(req, resp)
        except (ConnectionError, asyncio.CancelledError):
            req.keep_alive = False
            if not self._closed.is_set():
                raise
            return
        except HttpError as exc:
            req.keep_alive = False
            if not resp.started:
                await self._answer_error(exc)
            return
        except Exception:
            log.exception("handler failed", extra={"path": req.path})
            req.keep_alive = False
            if not resp.started:
                await self.server.on_error(req, resp, HttpError(500, "internal error"))
            return
        if not resp.started:
            await self.server.on_error(req, resp, HttpError(500, "handler sent no response"))
        elif not resp.finished:
            await resp.finish()

    async def _answer_error(self, exc: HttpError) -> None:
        req = Request(self, "GET", b"/", [])
        req.keep_alive = False
        with contextlib.suppress(ConnectionError):
            await self.server.on_error(req, Response(self, req), exc)


async def _plain_error(_req: Request, resp: Response, exc: HttpError) -> None:
    await resp.send(exc.status, (exc.message + "\n").encode(), "text/plain; charset=utf-8")


class AlertingSSLObject(FastSSLObject):
    """Server TLS whose failed handshake reports its error one step late, so the alert
    OpenSSL wrote reaches the client first.

    asyncio's and uvloop's TLS layers both abort a connection whose handshake failed without
    sending what OpenSSL queued, so a client with a foreign or expired certificate sees only
    "EOF" or "connection reset". Answered "want read" instead, either layer writes out the
    queued alert and waits: kubectl prints "remote error: tls: unknown certificate authority"
    (or "... expired") and closes, which ends the connection (as the next handshake step, or
    the handshake timeout, would). `Http1Server` installs it as its context's
    `sslobject_class`.
    """

    _refused: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self._refused is not None:
            raise self._refused
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self._refused = exc
            log.info("TLS handshake refused", extra={"error": str(exc)})
            raise ssl.SSLWantReadError("handshake refused; its alert goes out first") from exc


class Http1Server:
    """Serves `handler` on host:port (TLS when `ssl_context` is given)."""

    def __init__(
        self,
        handler: Handler,
        *,
        ssl_context: ssl.SSLContext | None = None,
        limits: Limits | None = None,
        on_error: Callable[[Request, Response, HttpError], Awaitable[None]] = _plain_error,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        if ssl_context is not None:
            ssl_context.sslobject_class = AlertingSSLObject
        self.limits = limits or Limits()
        self.on_error = on_error
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        loop = asyncio.get_running_loop()
        tls: dict[str, Any] = {}
        if self.ssl_context is not None:
            # the loop's own TLS (uvloop's in kubegate's processes: its per-record work is
            # compiled, asyncio's is Python)
            tls = {"ssl": self.ssl_context, "ssl_handshake_timeout": 30.0}
        self._server = await loop.create_server(
            lambda: _Connection(self), host, port, backlog=1024, **tls
        )
        return self._server.sockets[0].getsockname()[1]

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            conn.close()
        tasks = [c._task for c in list(self._connections) if c._task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
