"""Connecting to NATS: fail fast at start, then reconnect forever.

A service that cannot reach NATS when it starts should say so at once (`NatsUnavailableError`
naming the URL, within `start_timeout` seconds) rather than hang or print a traceback. Once it
has connected, a lost connection is a transient fault: the client reconnects without limit and
buffers outgoing messages meanwhile, and every state change is logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import nats
from nats.aio.client import Client

from broker.auth import connect_options
from broker.errors import NatsUnavailableError
from broker.nats_client import NatsClient

log = logging.getLogger("kubegate.broker.connection")

START_ATTEMPTS = 3
"""Attempts per server before giving up at start (each bounded by `connect_timeout`)."""


def servers_of(url: str) -> list[str]:
    """`nats://a:4222,nats://b:4222` -> one URL per server."""
    return [u.strip() for u in url.split(",") if u.strip()]


async def connect(
    url: str,
    *,
    name: str,
    creds: str | None = None,
    start_timeout: float = 5.0,
    connect_timeout: float = 2.0,
    **opts: Any,
) -> Client:
    """A connected NATS client labelled `name` (shown in NATS monitoring).

    `url` may list several servers separated by commas; `creds` is a NATS credentials file.
    Other keyword options go to `nats.connect` unchanged (callbacks you pass replace the
    logging ones). Raises `NatsUnavailableError` if no server answers within `start_timeout`.
    """
    servers = servers_of(url)
    if not servers:
        raise NatsUnavailableError(url, "no server URL given")

    start_errors: list[BaseException] = []  # only while starting, to explain a failure

    async def on_error(exc: Exception) -> None:
        if not nc.is_connected and not nc.is_reconnecting and len(start_errors) < 16:
            start_errors.append(exc)
        log.warning("nats error", extra={"nats_name": name, "error": repr(exc)})

    async def on_disconnected() -> None:
        if nc.is_closed or nc.is_draining:
            return  # a deliberate close, reported by on_closed
        log.warning("nats disconnected", extra={"nats_name": name})

    async def on_reconnected() -> None:
        log.info(
            "nats reconnected",
            extra={"nats_name": name, "server": str(getattr(nc.connected_url, "netloc", ""))},
        )

    async def on_closed() -> None:
        log.info("nats connection closed", extra={"nats_name": name})

    settings: dict[str, Any] = {
        "servers": servers,
        "name": name,
        "connect_timeout": connect_timeout,
        "allow_reconnect": True,
        "max_reconnect_attempts": START_ATTEMPTS,
        "reconnect_time_wait": 0.25,
        "error_cb": on_error,
        "disconnected_cb": on_disconnected,
        "reconnected_cb": on_reconnected,
        "closed_cb": on_closed,
    }
    if creds:
        settings.update(connect_options(creds))
    settings.update(opts)

    nc = NatsClient()
    try:
        await asyncio.wait_for(nc.connect(**settings), timeout=start_timeout)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        await _abandon(nc)
        cause = start_errors[-1] if start_errors else exc
        detail = "no answer" if isinstance(cause, TimeoutError) else _describe(cause)
        raise NatsUnavailableError(url, detail) from exc
    # Connected once: from now on a lost connection is retried forever, 2 s apart at most.
    nc.options["max_reconnect_attempts"] = opts.get("max_reconnect_attempts", -1)
    nc.options["reconnect_time_wait"] = opts.get("reconnect_time_wait", 2.0)
    log.info("nats connected", extra={"nats_name": name, "url": url})
    return nc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    text = str(exc).strip()
    return text or type(exc).__name__


async def _abandon(nc: Client) -> None:
    """Stop a client that never connected (it may be sleeping between attempts)."""
    try:
        await asyncio.wait_for(nc.close(), timeout=1.0)
    except (TimeoutError, nats.errors.Error, OSError, AttributeError):
        pass
