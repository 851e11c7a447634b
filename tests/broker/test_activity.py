"""The activity publisher: fire-and-forget with a bounded window, every outcome counted."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client
from prometheus_client import CollectorRegistry

from broker import streams
from broker.activity import ActivityPublisher, ActivityQueue, NotActivityError
from broker.connection import connect
from broker.server import EmbeddedNats
from broker.store import EventStore
from domain import events
from tests.support import eventually

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def requested(cluster: str, n: int) -> events.KubectlRequested:
    return events.KubectlRequested(
        id=f"{cluster}-{n}",
        time=NOW,
        actor="alice",
        request_id=f"r{n}",
        user="alice",
        cluster=cluster,
        verb="get",
        resource="pods",
    )


async def test_publishes_everything_and_counts_it(nc: Client) -> None:
    await streams.ensure_streams(nc.jetstream())
    registry = CollectorRegistry()
    publisher = ActivityPublisher(nc, window=64, registry=registry)
    cluster = f"c-{uuid.uuid4().hex[:8]}"
    start = await EventStore(nc).latest_seq("activity") + 1
    for n in range(300):
        assert await publisher.publish(requested(cluster, n))
    assert await publisher.publish(requested(cluster, 0))  # a re-sent event is stored once
    await publisher.flush()
    assert (publisher.published, publisher.failed, publisher.dropped) == (301, 0, 0)
    assert registry.get_sample_value("kubegate_activity_published_total") == 301
    stored = [
        r.event.id
        async for r in EventStore(nc).read("activity", start)
        if r.subject == f"kg.act.kubectl.{cluster}"
    ]
    assert stored == [f"{cluster}-{n}" for n in range(300)]
    await publisher.close()


async def test_control_events_are_refused(nc: Client) -> None:
    publisher = ActivityPublisher(nc)
    disabled = events.UserDisabled(id="e", time=NOW, actor="a", user="u")
    with pytest.raises(NotActivityError):
        await publisher.publish(disabled)


async def test_a_full_window_drops_and_lost_acks_fail(tmp_path) -> None:
    server = EmbeddedNats(data_dir=tmp_path / "n").start()
    nc = await connect(server.url, name="t")
    try:
        await streams.ensure_streams(nc.jetstream())
        registry = CollectorRegistry()
        publisher = ActivityPublisher(nc, window=2, stall=0.01, ack_timeout=0.5, registry=registry)
        server.kill()  # nothing will be acknowledged now
        results = [await publisher.publish(requested("c", n)) for n in range(3)]
        assert results == [True, True, False]
        await publisher.flush()
        assert (publisher.published, publisher.failed, publisher.dropped) == (0, 2, 1)
        assert (
            registry.get_sample_value("kubegate_activity_failed_total", {"reason": "timeout"}) == 2
        )
        assert registry.get_sample_value("kubegate_activity_dropped_total") == 1
        assert publisher.in_flight == 0
    finally:
        await nc.close()
        server.stop()


async def test_concurrent_first_publishes_share_one_ack_inbox(nc: Client) -> None:
    await streams.ensure_streams(nc.jetstream())
    publisher = ActivityPublisher(nc)
    cluster = f"c-{uuid.uuid4().hex[:8]}"
    sent = await asyncio.gather(*(publisher.publish(requested(cluster, n)) for n in range(50)))
    assert all(sent)
    await publisher.flush()
    assert (publisher.published, publisher.failed) == (50, 0)
    await publisher.close()


async def _queue_on(nc: Client) -> tuple[ActivityPublisher, ActivityQueue, str]:
    """A publisher, its queue, and a cluster name no other test uses."""
    await streams.ensure_streams(nc.jetstream())
    publisher = ActivityPublisher(nc)
    return publisher, ActivityQueue(publisher), f"c-{uuid.uuid4().hex[:8]}"


async def test_a_hold_postpones_the_queue_and_loses_nothing(nc: Client) -> None:
    publisher, queue, cluster = await _queue_on(nc)
    loop = asyncio.get_running_loop()
    start = loop.time()
    queue.hold(0.5)
    queue.hold(0.1)  # a shorter hold does not cut a longer one short
    for n in range(5):
        queue.put(requested(cluster, n))
    await eventually(lambda: publisher.published == 5, "the held events sent", within=10)
    assert loop.time() - start >= 0.5
    queue.put(requested(cluster, 5))  # the hold is over: sent within the linger
    await eventually(lambda: publisher.published == 6, "the next event sent", within=10)
    await queue.close()
    await publisher.close()


async def test_closing_ends_a_hold_and_sends_what_is_queued(nc: Client) -> None:
    publisher, queue, cluster = await _queue_on(nc)
    queue.hold(3600)
    for n in range(5):
        queue.put(requested(cluster, n))
    await asyncio.sleep(0.1)
    assert publisher.published + publisher.in_flight == 0
    await queue.close(within=5.0)
    await publisher.flush()
    assert (publisher.published, queue.dropped) == (5, 0)
    await publisher.close()


async def test_holds_renewed_without_pause_delay_the_audit_but_never_stop_it(nc: Client) -> None:
    publisher, queue, cluster = await _queue_on(nc)
    queue.hold(0.1)
    queue.put(requested(cluster, 0))
    for _ in range(100):  # 2 s of holds, each renewed before it ends
        queue.hold(0.1)
        await asyncio.sleep(0.02)
        if publisher.published + publisher.in_flight:
            break
    assert publisher.published + publisher.in_flight == 1
    await queue.close()
    await publisher.close()


async def test_every_kind_of_answer_is_counted_by_what_it_says(tmp_path) -> None:
    """No stream (NATS answers 503), a JetStream error, and answers that are not an ack."""
    server = EmbeddedNats(data_dir=tmp_path / "n").start()
    nc = await connect(server.url, name="t")
    answerer = await connect(server.url, name="t-answers")
    try:
        registry = CollectorRegistry()
        publisher = ActivityPublisher(nc, ack_timeout=10, registry=registry)
        assert await publisher.publish(requested("nostream", 0))  # no stream holds kg.act.>
        await eventually(lambda: publisher.failed == 1, "the no-responders answer")

        answers = iter([b'{"error": {"code": 503, "description": "no"}}', b"not json", b"5"])

        async def answer(msg) -> None:
            await answerer.publish(msg.reply, next(answers))

        await answerer.subscribe("kg.act.>", cb=answer)  # stands in for JetStream
        await answerer.flush()
        for n in range(3):
            assert await publisher.publish(requested("answered", n))
        await publisher.flush()
        assert (publisher.published, publisher.failed) == (0, 4)

        def failed(reason: str) -> float | None:
            return registry.get_sample_value("kubegate_activity_failed_total", {"reason": reason})

        assert (failed("no-stream"), failed("rejected"), failed("timeout")) == (1, 3, None)
        await publisher.close()
    finally:
        await answerer.close()
        await nc.close()
        server.stop()
