"""Throughput of the event log: conflict-checked control appends, and hot-path activity.

Each function connects to the NATS at `url` (streams created if missing), runs its workload on
ids of its own, and returns events per second. Timing goals belong here, not in tests.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

from broker import streams
from broker.activity import ActivityPublisher
from broker.connection import connect
from broker.store import EventStore
from domain import events


async def control_appends_per_s(url: str, *, appends: int = 2000, writers: int = 8) -> float:
    """Conflict-checked appends through the EventStore: `writers` concurrent writers, each on
    its own aggregate, each append expecting the aggregate's previous sequence."""
    nc = await connect(url, name="kubegate-bench-control")
    try:
        await streams.ensure_streams(nc.jetstream())
        store = EventStore(nc)
        run = uuid.uuid4().hex[:8]
        per_writer = max(appends // writers, 1)
        now = datetime.now(UTC)

        async def writer(number: int) -> None:
            user = f"bench-{run}-{number}"
            last = 0
            for i in range(per_writer):
                event = events.UserDisabled(
                    id=f"{user}-{i}", time=now, actor="bench", user=user, reason="bench"
                )
                last = await store.append(event, expect_last_seq=last)

        started = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(writers)))
        elapsed = time.perf_counter() - started
        return per_writer * writers / elapsed
    finally:
        await nc.close()


async def activity_events_per_s(url: str, *, count: int = 20000, window: int = 4096) -> float:
    """KubectlRequested events through the ActivityPublisher, until all are acknowledged."""
    nc = await connect(url, name="kubegate-bench-activity")
    try:
        await streams.ensure_streams(nc.jetstream())
        publisher = ActivityPublisher(nc, window=window, stall=5.0)
        cluster = f"bench-{uuid.uuid4().hex[:8]}"
        now = datetime.now(UTC)
        batch = [
            events.KubectlRequested(
                id=f"{cluster}-{i}",
                time=now,
                actor="alice",
                request_id=f"r{i}",
                user="alice",
                cluster=cluster,
                verb="get",
                resource="pods",
                namespace="default",
                path="/api/v1/namespaces/default/pods",
            )
            for i in range(count)
        ]
        started = time.perf_counter()
        for event in batch:
            await publisher.publish(event)
        await publisher.flush(within=120)
        elapsed = time.perf_counter() - started
        await publisher.close()
        if publisher.failed or publisher.dropped:
            raise RuntimeError(
                f"activity bench lost events: {publisher.failed} failed, "
                f"{publisher.dropped} dropped"
            )
        return count / elapsed
    finally:
        await nc.close()


async def control_commands_per_s(url: str, *, commands: int = 500, users: int = 50) -> float:
    """Control-plane commands end to end: `ControlPlane` (eventsourcing, synchronous) over the
    JetStream persistence module through the bridge; each command loads its aggregate (one of
    `users`) and appends one conflict-checked event."""
    from domain.control import ControlPlane  # the write model, only for this benchmark

    def run() -> float:
        plane = ControlPlane(
            {"PERSISTENCE_MODULE": "broker.es_persistence", "KUBEGATE_NATS_URL": url},
            clock=lambda: datetime.now(UTC),
        )
        try:
            run = uuid.uuid4().hex[:8]
            names = [f"bench-{run}-{n}" for n in range(max(users, 1))]
            for name in names:
                plane.register_user(name, actor="bench", command_id=f"{name}-register")
            started = time.perf_counter()
            for i in range(commands):
                name = names[i % len(names)]
                plane.sync_idp_groups(
                    name, "https://idp", [f"g{i}"], actor="bench", command_id=f"{run}-{i}"
                )
            return commands / (time.perf_counter() - started)
        finally:
            plane.close()

    return await asyncio.to_thread(run)
