"""Helpers for projection tests: publish events as writers do, poll until something holds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from nats.js import JetStreamContext

from broker import subjects
from domain import codec
from domain import events as ev

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def publish(js: JetStreamContext, events: Iterable[ev.Event]) -> list[int]:
    """Append events the way writers do; returns their stream sequences."""
    seqs = []
    for event in events:
        ack = await js.publish(
            subjects.event_subject(event.STREAM, *event.key()),
            codec.encode(event),
            headers={"Nats-Msg-Id": event.id},
        )
        seqs.append(ack.seq)
    return seqs


async def publish_many(js: JetStreamContext, events: Iterable[ev.Event]) -> None:
    """Fast append (async publish) for volume tests."""
    pending = 0
    for event in events:
        await js.publish_async(
            subjects.event_subject(event.STREAM, *event.key()),
            codec.encode(event),
            headers={"Nats-Msg-Id": event.id},
        )
        pending += 1
        if pending >= 2000:
            await js.publish_async_completed()
            pending = 0
    await js.publish_async_completed()


async def eventually(
    check: Callable[[], bool], message: str | Callable[[], str], within: float = 20.0
) -> None:
    """Poll `check` until it holds; fail with `message` when `within` seconds pass first."""
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(message() if callable(message) else message)
        await asyncio.sleep(0.02)


def users(prefix: str, n: int, start: int = 0) -> list[ev.Event]:
    return [
        ev.UserRegistered(
            id=f"{prefix}-u{i}",
            time=T0 + timedelta(seconds=i),
            actor="admin",
            user=f"{prefix}-user{i}",
            display_name=f"User {i}",
        )
        for i in range(start, start + n)
    ]


def kubectl_requests(prefix: str, n: int, start: int = 0) -> list[ev.Event]:
    return [
        ev.KubectlRequested(
            id=f"{prefix}-r{i}",
            time=T0 + timedelta(milliseconds=i),
            actor="alice",
            request_id=f"{prefix}-r{i}",
            user="alice",
            cluster="prod",
            verb="list",
            resource="pods",
            namespace="default",
            groups=("dev", "ops"),
            method="GET",
            path="/api/v1/namespaces/default/pods",
            edge_id="edge-1",
        )
        for i in range(start, start + n)
    ]
