"""The handler behind `RelayServer` for one cluster: one stream in, one API server request out.

For every stream: refuse while the relay's policy is not current (`overloaded`, the edge answers
503); refuse with a 403 Status when that policy grants the user nothing on this cluster (defense
in depth: the edge decided first); get the user's just-in-time token; forward with it and nothing
else that claims an identity; stream the answer back chunk by chunk as it arrives (watches and
`logs -f` are flushed per chunk, never buffered). An upgrade that the API server accepts (101)
becomes a raw byte tunnel both ways; any other answer to an upgrade is passed back unchanged
(kubectl falls back from WebSocket to SPDY on a 403). Failures before the response head become
`Error(upstream)` with one readable line. When the edge cancels, the transport cancels this
handler and the `finally` blocks close the upstream request or socket at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import msgspec

from broker import frames
from broker.errors import StreamError
from broker.transport import ServerStream
from relay import headers as hdr
from relay.errors import JitError, NoAccessError, UpstreamError
from relay.jit import JitAccounts
from relay.metrics import RelayMetrics
from relay.upstream import Upstream, UpstreamResponse

log = logging.getLogger("kubegate.relay.agent")


def status_body(code: int, reason: str, message: str) -> bytes:
    """A Kubernetes failure `Status` as JSON (what kubectl prints as "Error from server")."""
    return msgspec.json.encode(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    )


class RelayAgent:
    """Serves streams for one cluster; an instance is the `RelayServer` handler."""

    def __init__(
        self,
        *,
        cluster: str,
        upstream: Upstream,
        accounts: JitAccounts,
        metrics: RelayMetrics,
        not_ready: Callable[[], str | None],
    ) -> None:
        self.cluster = cluster
        self.upstream = upstream
        self.accounts = accounts
        self.m = metrics
        self.not_ready = not_ready
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def wait_idle(self) -> None:
        """Until no stream is being served (for a graceful drain; callers bound it)."""
        await self._idle.wait()

    async def __call__(self, stream: ServerStream) -> None:
        o = stream.open
        outcome = "aborted"
        self.in_flight += 1
        self._idle.clear()
        try:
            outcome = await self._serve(stream)
        finally:
            self.m.request(o.method, outcome)
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    async def _serve(self, stream: ServerStream) -> str:
        o = stream.open
        reason = self.not_ready()
        if reason is not None:
            await stream.fail(frames.ErrorCode.OVERLOADED, f"relay not ready: {reason}")
            return "not_ready"
        upgrade = hdr.is_upgrade(o.headers)
        # A request that sends nothing before its answer (GET, watch, an upgrade) can be sent
        # again: if the API server no longer knows the cached token (the account was deleted
        # behind our back), provision afresh and retry once.
        retriable = upgrade or o.end
        for attempt in (1, 2):
            token, outcome = await self._token(stream)
            if token is None:
                return outcome
            forward, dropped = hdr.upstream_headers(o.headers, token=token, upgrade=upgrade)
            if dropped and attempt == 1:
                log.warning(
                    "identity headers dropped",
                    extra={"user": o.user, "headers": dropped, "request_id": o.request_id},
                )
            started = time.monotonic()
            try:
                if upgrade:
                    resp = await self.upstream.upgrade(o.method, o.path, o.query, forward)
                else:
                    body = None if o.end else stream.request_body()
                    resp = await self.upstream.request(o.method, o.path, o.query, forward, body)
            except UpstreamError as exc:
                await stream.fail(frames.ErrorCode.UPSTREAM, _one_line(str(exc)))
                return "upstream_error"
            self.m.upstream_head("upgrade" if upgrade else "http").observe(
                time.monotonic() - started
            )
            if resp.status == 401 and retriable and attempt == 1:
                await resp.close()
                log.warning("token refused by the API server; provisioning again",
                            extra={"user": o.user, "request_id": o.request_id})  # fmt: skip
                self.accounts.invalidate(o.user)
                continue
            try:
                if upgrade:
                    return await self._tunnel(stream, resp)
                return await self._http(stream, resp)
            finally:
                await resp.close()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _token(self, stream: ServerStream) -> tuple[str | None, str]:
        """The user's token, or None after answering the stream (and the outcome to count)."""
        o = stream.open
        try:
            return await self.accounts.token_for(o.user, cause=o.request_id), ""
        except NoAccessError as exc:
            log.warning(
                "request of a user without access refused",
                extra={"user": o.user, "cluster": self.cluster, "request_id": o.request_id},
            )
            await self._answer(stream, 403, "Forbidden", f"kubegate relay: {exc}")
            return None, "no_access"
        except JitError as exc:
            log.error("service account not ready", extra={"user": o.user, "error": str(exc)})
            await stream.fail(frames.ErrorCode.UPSTREAM, _one_line(str(exc)))
            return None, "upstream_error"

    async def _answer(self, stream: ServerStream, code: int, reason: str, message: str) -> None:
        body = status_body(code, reason, message)
        await stream.respond(
            code, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))], body
        )

    async def _http(self, stream: ServerStream, resp: UpstreamResponse) -> str:
        headers = hdr.downstream_headers(resp.headers, upgrade=False)
        if resp.complete:  # a small answer, all here: one frame to the edge if it fits
            try:
                body = await resp.read()
            except UpstreamError as exc:
                await stream.fail(frames.ErrorCode.UPSTREAM, _one_line(str(exc)))
                return "upstream_error"
            await stream.respond(resp.status, headers, body)
            return str(resp.status)
        await stream.send_head(resp.status, headers)
        try:
            async for chunk in resp.chunks:
                await stream.send(chunk)
        except UpstreamError as exc:
            # Mid-body: the edge must see a failure, not a short body that looks complete.
            await stream.fail(frames.ErrorCode.UPSTREAM, _one_line(str(exc)))
            return "upstream_error"
        await stream.end()
        return str(resp.status)

    async def _tunnel(self, stream: ServerStream, resp: UpstreamResponse) -> str:
        if resp.status != 101 or resp.tunnel is None:
            return await self._pass_back(stream, resp)
        await stream.send_head(101, hdr.downstream_headers(resp.headers, upgrade=True))
        await self._pump(stream, resp)
        return "101"

    async def _pass_back(self, stream: ServerStream, resp: UpstreamResponse) -> str:
        """A refused upgrade: status, headers and body exactly as the API server sent them."""
        body = await resp.read()
        out = [
            (k, v)
            for k, v in hdr.downstream_headers(resp.headers, upgrade=False)
            if k.lower() != "content-length"
        ]
        out.append(("Content-Length", str(len(body))))
        await stream.respond(resp.status, out, body)
        return str(resp.status)

    async def _pump(self, stream: ServerStream, resp: UpstreamResponse) -> None:
        """Raw bytes both ways until the API server closes the connection."""
        conn = resp.tunnel
        assert conn is not None

        async def up() -> None:
            try:
                async for chunk in stream.request_body():
                    await conn.write(chunk)
                conn.write_eof()  # the client half-closed
            except (OSError, ConnectionError) as exc:
                log.info("tunnel upstream write failed", extra={"error": str(exc)})
                await conn.close()

        stream.set_sink(conn.write_nowait)
        conn.forward(stream.send_nowait)
        upward = asyncio.create_task(up(), name=f"kubegate-relay-up-{stream.id}")
        try:
            while True:
                try:
                    data = await conn.read()
                except (OSError, ConnectionError) as exc:
                    await stream.fail(frames.ErrorCode.UPSTREAM, f"tunnel broke: {exc}")
                    return
                if not data:
                    break
                await stream.send(data)
            await stream.end()
        finally:
            upward.cancel()
            with contextlib.suppress(asyncio.CancelledError, StreamError):
                await upward


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line[:500]
