"""The log on a 3-node JetStream cluster: R3 streams, and appends that survive a dead node."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from broker import streams
from broker.connection import connect
from broker.log import Log, Outgoing
from tests.conftest import NatsCluster

pytestmark = pytest.mark.cluster


@pytest.fixture
async def cnc(nats_cluster: NatsCluster) -> AsyncIterator[Client]:
    client = await connect(nats_cluster.url, name="kubegate-cluster-test")
    yield client
    await client.close()


async def until(check, what: str, within: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll `check()` (async) until it returns a truthy value; fail naming `what`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last_error: Exception | None = None
    while loop.time() < deadline:
        try:
            result = await check()
            if result:
                return result
        except Exception as exc:  # the cluster may be mid-election
            last_error = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {within}s (last error: {last_error!r})")


async def r3_stream(nc: Client) -> str:
    name = f"R3_{uuid.uuid4().hex[:10]}"
    spec = streams.StreamSpec(name, (f"{name.lower()}.>",), "R3 test stream")
    await nc.jetstream().add_stream(streams.stream_config(spec, replicas=3))
    return name


async def test_ensure_streams_with_three_replicas(cnc: Client) -> None:
    js = cnc.jetstream()
    await until(lambda: _ensured(js), "stream creation on the cluster")
    for spec in streams.ALL:
        info = await js.stream_info(spec.name)
        assert info.config.num_replicas == 3
        assert info.cluster is not None and info.cluster.leader
        assert len(info.cluster.replicas or []) == 2
    await streams.ensure_streams(js, replicas=3)  # idempotent on the cluster too


async def _ensured(js) -> bool:  # type: ignore[no-untyped-def]
    await streams.ensure_streams(js, replicas=3)
    return True


async def test_appends_survive_killing_the_stream_leader(
    cnc: Client, nats_cluster: NatsCluster
) -> None:
    name = await r3_stream(cnc)
    subject = f"{name.lower()}.agg"
    log = Log(cnc, name, timeout=2.0, retry_window=30.0)
    last = 0
    for i in range(20):
        last = (await log.append(subject, b"%d" % i, msg_id=f"m{i}", expect_last_seq=last)).seq
    leader = (await cnc.jetstream().stream_info(name)).cluster.leader
    node = nats_cluster.node(leader)
    node.kill()
    try:
        for i in range(20, 40):
            appended = await log.append(subject, b"%d" % i, msg_id=f"m{i}", expect_last_seq=last)
            last = appended.seq
        batch = await log.append_batch(
            [
                Outgoing(subject, b"40", msg_id="m40", expect_last_seq=last),
                Outgoing(f"{name.lower()}.other", b"41", msg_id="m41"),
            ]
        )
        assert [b.seq for b in batch] == [last + 1, last + 2]
        new_leader = (await cnc.jetstream().stream_info(name)).cluster.leader
        assert new_leader and new_leader != leader
        stored = await log.read_subject(subject)
        assert [m.data for m in stored] == [b"%d" % i for i in range(41)]
        assert [m.seq for m in stored] == list(range(1, 42))
    finally:
        await asyncio.to_thread(nats_cluster.restart, node)
    # The restarted node catches up: every replica current again.
    await until(lambda: _all_current(cnc, name), "replicas catching up")


async def _all_current(nc: Client, stream: str) -> bool:
    info = await nc.jetstream().stream_info(stream)
    replicas = info.cluster.replicas or []
    return len(replicas) == 2 and all(r.current for r in replicas)
