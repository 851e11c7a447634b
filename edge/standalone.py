"""A standalone edge process (`kubegate edge`): serves at once, and fails closed until it can.

An edge that cannot reach NATS has no policy, so it must not proxy anything. Rather than exit
(and leave kubectl with "connection refused"), it listens on its port from the start and answers
every request with a 503 Status saying why, while it keeps dialing NATS. Once connected it hands
the port to the real `EdgeService`, which itself answers 503 until its policy has caught up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from typing import Any

from broker.connection import connect
from broker.errors import NatsUnavailableError
from edge.http1 import Http1Server, Request, Response
from edge.service import EdgeService, EdgeSettings, kubectl_ssl_context
from edge.status import status_body, warning_header

log = logging.getLogger("kubegate.edge.standalone")


class StandaloneEdge:
    """`async with StandaloneEdge(nats_url, settings)`: listening as soon as it is entered."""

    def __init__(
        self, nats_url: str, settings: EdgeSettings, *, creds: str | None = None,
        retry_s: float = 1.0,
    ) -> None:  # fmt: skip
        self.nats_url = nats_url
        self.settings = settings
        self.creds = creds
        self.retry_s = retry_s
        self.nc: Any = None
        self.edge: EdgeService | None = None
        self.url = ""
        self._fallback: Http1Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.last_error = ""

    async def _unavailable(self, req: Request, resp: Response) -> None:
        detail = f": {self.last_error}" if self.last_error else ""
        message = (
            f"kubegate edge is not serving: cannot reach the event log at {self.nats_url}{detail}"
        )
        await resp.send(
            503, status_body(503, message), "application/json", extra=[warning_header(message)]
        )

    async def __aenter__(self) -> StandaloneEdge:
        s = self.settings
        ctx = kubectl_ssl_context(s.ca_file, s.cert_file, s.key_file)
        self._fallback = Http1Server(self._unavailable, ssl_context=ctx)
        port = await self._fallback.start(s.host, s.port)
        self.settings = replace(s, port=port)
        self.url = f"https://{s.public_host or s.host}:{port}"
        self._task = asyncio.create_task(self._connect_and_serve(), name="edge-connect")
        return self

    async def _connect_and_serve(self) -> None:
        while True:
            try:
                self.nc = await connect(self.nats_url, name="kubegate-edge", creds=self.creds)
                break
            except NatsUnavailableError as exc:
                self.last_error = exc.detail or str(exc)
                log.warning("NATS unreachable; refusing to serve", extra={"url": self.nats_url})
                await asyncio.sleep(self.retry_s)
        assert self._fallback is not None
        await self._fallback.stop()
        self._fallback = None
        self.edge = EdgeService(self.nc, self.settings)
        await self.edge.start()
        log.info("edge serving", extra={"url": self.url, "edge_id": self.edge.edge_id})

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._fallback is not None:
            await self._fallback.stop()
        if self.edge is not None:
            await self.edge.stop()
        if self.nc is not None:
            await self.nc.close()
