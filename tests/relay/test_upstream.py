"""The relay's forwarding session towards the API server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from relay.upstream import SMALL_BODY, Upstream


@asynccontextmanager
async def api_server(
    path: str, handler: Callable[[web.Request], Awaitable[web.Response]]
) -> AsyncIterator[int]:
    """A one-route HTTP server standing in for the API server; yields its port."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def test_cookies_an_api_server_sets_are_never_replayed_to_it() -> None:
    """One relay session forwards every user's requests: a cookie the API server (or an
    aggregated API behind it) sets for one request must not ride along on the next, which
    may be another user's."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Cookie"))
        resp = web.json_response({"kind": "Status"})
        resp.set_cookie("session", "alice-only", path="/")
        return resp

    async with api_server("/api/v1/namespaces", handler) as port:
        upstream = Upstream(f"http://localhost:{port}", None)  # a name: jars ignore IP hosts
        try:
            for user_token in ("alice", "bob"):
                resp = await upstream.request(
                    "GET",
                    "/api/v1/namespaces",
                    "",
                    [("Authorization", f"Bearer {user_token}")],
                    None,
                )
                assert resp.status == 200
                assert any(k.lower() == "set-cookie" for k, _ in resp.headers)
                async for _ in resp.chunks:
                    pass
                await resp.close()
            assert seen == [None, None]
        finally:
            await upstream.close()


async def test_only_a_small_body_already_here_is_reported_complete() -> None:
    """`complete` lets the relay answer in one frame; a body over one chunk must stream as
    chunks even when all of it came with the head (not be joined into one copy first)."""
    small, large = b"s" * 1000, b"L" * (SMALL_BODY + 20_000)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=large if request.query.get("size") == "large" else small)

    async with api_server("/body", handler) as port:
        upstream = Upstream(f"http://127.0.0.1:{port}", None)
        try:
            resp = await upstream.request("GET", "/body", "size=small", [], None)
            assert resp.complete and await resp.read() == small
            await resp.close()
            for _ in range(5):
                resp = await upstream.request("GET", "/body", "size=large", [], None)
                assert not resp.complete
                assert await resp.read() == large
                await resp.close()
        finally:
            await upstream.close()
