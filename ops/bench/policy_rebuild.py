"""Benchmark: rebuilding the policy projection from N control events already in the log.

This is what an edge or relay does at start (and after losing its memory): follow KG_CONTROL
from sequence 1 into a fresh `PolicyState` until caught up. The history is a realistic mix:
users, groups, memberships, clusters, grants (some expiring, some revoked), switches, logins,
console sessions and certificates.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from broker import streams, subjects
from broker.connection import connect
from domain import codec
from domain import events as ev
from projections.policy import PolicyProjection

_T0 = datetime(2026, 1, 1, tzinfo=UTC)


def control_history(n: int, seed: int = 7) -> Iterator[ev.Event]:
    """`n` control events shaped like a fleet's history (deterministic for a seed)."""
    rng = random.Random(seed)
    users = max(10, n // 20)
    groups = max(3, n // 500)
    clusters = max(2, n // 2000)
    made = 0
    t = _T0

    def nxt(cls: type[ev.Event], **fields: object) -> ev.Event:
        nonlocal made, t
        made += 1
        t += timedelta(milliseconds=50)
        return cls(id=f"b{made}", time=t, actor="admin", cause=f"c{made}", **fields)

    for c in range(clusters):
        yield nxt(
            ev.ClusterRegistered, cluster=f"c{c}", labels={"env": rng.choice(["dev", "prod"])}
        )
    for g in range(groups):
        yield nxt(ev.GroupCreated, group=f"g{g}")
    for u in range(users):
        if made >= n:
            return
        yield nxt(ev.UserRegistered, user=f"u{u}")
    grant = 0
    while made < n:
        roll = rng.random()
        u = f"u{rng.randrange(users)}"
        if roll < 0.25:
            yield nxt(ev.MemberAdded, group=f"g{rng.randrange(groups)}", user=u)
        elif roll < 0.55:
            grant += 1
            by_group = rng.random() < 0.5
            expires = t + timedelta(hours=rng.choice([1, 8, 24, 24 * 30]))
            yield nxt(
                ev.GrantIssued,
                grant_id=f"gr{grant}",
                subject_kind="group" if by_group else "user",
                subject=f"g{rng.randrange(groups)}" if by_group else u,
                role=rng.choice(["view", "edit", "admin"]),
                clusters=(f"c{rng.randrange(clusters)}",),
                namespaces=(f"ns{rng.randrange(20)}",),
                expires_at=expires if rng.random() < 0.5 else None,
            )
        elif roll < 0.62 and grant:
            yield nxt(ev.GrantRevoked, grant_id=f"gr{rng.randrange(1, grant + 1)}")
        elif roll < 0.7:
            yield nxt(ev.MemberRemoved, group=f"g{rng.randrange(groups)}", user=u)
        elif roll < 0.8:
            yield nxt(ev.LoginSucceeded, user=u, session_id=f"s{made}")
        elif roll < 0.9:
            yield nxt(
                ev.ConsoleSessionStarted,
                session_id=f"s{made}",
                user=u,
                expires_at=t + timedelta(hours=12),
                idle_timeout_s=1800,
            )
        elif roll < 0.97:
            yield nxt(
                ev.CertificateIssued,
                serial=f"{made:x}",
                user=u,
                not_before=t,
                not_after=t + timedelta(hours=8),
            )
        else:
            yield nxt(ev.KubectlDisabled, scope="user", target=u)


async def publish_history(url: str, n: int) -> None:
    """Store the history with headers as kubegate's control log stores them: the event's id
    and the stream expected (checked appends also carry the subject's last sequence)."""
    nc = await connect(url, name="kubegate-bench-history")
    js = nc.jetstream()
    pending = []
    for event in control_history(n):
        subject = subjects.event_subject("control", *event.key())
        headers = {"Nats-Expected-Stream": streams.CONTROL.name, "Nats-Msg-Id": event.id}
        pending.append(await js.publish_async(subject, codec.encode(event), headers=headers))
        if len(pending) >= 4000:
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    await nc.close()


async def rebuild_seconds(url: str) -> tuple[float, int]:
    """Seconds for a fresh policy projection to catch up with the log, and events applied."""
    nc = await connect(url, name="kubegate-bench-rebuild")  # as an edge or relay connects
    projection = PolicyProjection(nc, name="bench-rebuild", registry=CollectorRegistry())
    started = time.perf_counter()
    await projection.start()
    await projection.wait_ready()
    took = time.perf_counter() - started
    applied = projection.version
    await projection.stop()
    await nc.close()
    return took, applied
