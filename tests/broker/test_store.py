"""The typed event store: catalog events on their aggregate subjects, checked and atomic."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from nats.aio.client import Client

from broker import streams, subjects
from broker.connection import connect
from broker.errors import ConcurrencyError, InvalidBatchError
from broker.server import EmbeddedNats
from broker.store import EventStore, UndecodableMessageError, UnknownFamilyError
from domain import codec, events

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def registered(user: str) -> events.UserRegistered:
    return events.UserRegistered(id=uid("e"), time=NOW, actor="admin", user=user, email=f"{user}@x")


@pytest.fixture
async def store(nc: Client) -> AsyncIterator[EventStore]:
    await streams.ensure_streams(nc.jetstream())
    yield EventStore(nc)


async def test_append_and_load_catalog_json(store: EventStore, nc: Client) -> None:
    user = uid("alice")
    event = registered(user)
    seq = await store.append(event, expect_last_seq=0)
    (recorded,) = await store.load("user", user)
    assert recorded.event == event
    assert (recorded.seq, recorded.stream) == (seq, subjects.CONTROL_STREAM)
    assert recorded.subject == f"kg.evt.user.{user}"
    raw = await store.log("control").get(seq)
    assert raw is not None and codec.decode(raw.data) == event
    assert raw.msg_id == event.id
    assert await store.last_seq("user", user) == seq


async def test_conflicts_and_duplicates(store: EventStore) -> None:
    user = uid("bob")
    first = registered(user)
    seq = await store.append(first, expect_last_seq=0)
    assert await store.append(first, expect_last_seq=0) == seq  # a retry stores nothing
    disabled = events.UserDisabled(id=uid("e"), time=NOW, actor="admin", user=user)
    with pytest.raises(ConcurrencyError) as conflict:
        await store.append(disabled, expect_last_seq=0)
    assert conflict.value.subject == f"kg.evt.user.{user}"
    assert conflict.value.actual == seq
    later = await store.append(disabled, expect_last_seq=seq)
    assert [r.seq for r in await store.load("user", user)] == [seq, later]


async def test_append_many_is_all_or_nothing(store: EventStore) -> None:
    user, group = uid("carol"), uid("devs")
    created = events.GroupCreated(id=uid("e"), time=NOW, actor="admin", group=group)
    group_seq = await store.append(created, expect_last_seq=0)
    member = events.MemberAdded(id=uid("e"), time=NOW, actor="admin", group=group, user=user)
    with pytest.raises(ConcurrencyError):
        await store.append_many([(registered(user), 0), (member, 0)])  # group is not empty
    assert await store.load("user", user) == []
    seqs = await store.append_many([(registered(user), 0), (member, group_seq)])
    assert seqs[1] == seqs[0] + 1
    assert [r.event for r in await store.load("group", group)][1] == member


async def test_append_many_stays_in_one_stream(store: EventStore) -> None:
    request = events.KubectlRequested(
        id=uid("e"), time=NOW, actor="u", request_id="r", user="u", cluster="c"
    )
    with pytest.raises(InvalidBatchError):
        await store.append_many([(registered(uid("dan")), None), (request, None)])


async def test_read_from_a_sequence_and_follow(store: EventStore) -> None:
    start = await store.latest_seq("control") + 1
    users = [uid("reader") for _ in range(3)]
    for user in users[:2]:
        await store.append(registered(user))
    seen = [
        r.event.user async for r in store.read("KG_CONTROL", start) if r.event.key()[0] == "user"
    ]
    assert [u for u in seen if u in users] == users[:2]

    async def follow() -> list[str]:
        got = []
        async for recorded in store.read("control", start, follow=True):
            if getattr(recorded.event, "user", None) in users:
                got.append(recorded.event.user)
                if len(got) == 3:
                    return got
        return got

    follower = asyncio.create_task(follow())
    await store.append(registered(users[2]))
    assert await asyncio.wait_for(follower, 10) == users


async def test_unknown_family(store: EventStore) -> None:
    with pytest.raises(UnknownFamilyError):
        await store.load("nonsense", "x")


async def test_a_message_that_is_not_an_event_is_named(tmp_path) -> None:
    with EmbeddedNats(data_dir=tmp_path / "n") as server:
        nc = await connect(server.url, name="t")
        try:
            await streams.ensure_streams(nc.jetstream())
            store = EventStore(nc)
            await store.log("control").append("kg.evt.junk.x", b"not json")
            good = registered("erin")
            await store.append(good)
            with pytest.raises(UndecodableMessageError) as bad:
                [r async for r in store.read("control")]
            assert (bad.value.seq, bad.value.subject) == (1, "kg.evt.junk.x")
            assert [r.event async for r in store.read("control", bad.value.seq + 1)] == [good]
        finally:
            await nc.close()
