"""The relay's forwarding session towards the API server."""

from __future__ import annotations

from aiohttp import web

from relay.upstream import Upstream


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

    app = web.Application()
    app.router.add_get("/api/v1/namespaces", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    upstream = Upstream(f"http://localhost:{port}", None)  # a name: jars ignore IP hosts
    try:
        for user_token in ("alice", "bob"):
            resp = await upstream.request(
                "GET", "/api/v1/namespaces", "", [("Authorization", f"Bearer {user_token}")], None
            )
            assert resp.status == 200
            assert any(k.lower() == "set-cookie" for k, _ in resp.headers)
            async for _ in resp.chunks:
                pass
            await resp.close()
        assert seen == [None, None]
    finally:
        await upstream.close()
        await runner.cleanup()
