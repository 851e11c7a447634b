"""The bytes-level log against a real nats-server: idempotent, conflict-checked, atomic."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from broker.connection import connect
from broker.errors import (
    AtomicBatchDisabledError,
    ConcurrencyError,
    InvalidBatchError,
    NoStreamError,
)
from broker.log import MAX_BATCH, Log, Outgoing, subject_matches
from tests.broker.conftest import ScratchStream, make_stream


@pytest.fixture
def log(nc: Client, scratch: ScratchStream) -> Log:
    return Log(nc, scratch.name)


async def test_append_is_idempotent_by_message_id(log: Log, scratch: ScratchStream) -> None:
    first = await log.append(scratch.subject("a"), b"one", msg_id="m1")
    second = await log.append(scratch.subject("a"), b"two", msg_id="m2")
    again = await log.append(scratch.subject("a"), b"one", msg_id="m1")
    assert (first.seq, second.seq) == (1, 2)
    assert not first.duplicate and not second.duplicate
    assert again.seq == first.seq and again.duplicate
    assert await log.last_seq() == 2


async def test_expectation_refuses_a_stale_append_and_stores_nothing(
    log: Log, scratch: ScratchStream
) -> None:
    subject = scratch.subject("user", "alice")
    created = await log.append(subject, b"created", expect_last_seq=0)
    await log.append(scratch.subject("other"), b"x")
    with pytest.raises(ConcurrencyError) as conflict:
        await log.append(subject, b"created again", expect_last_seq=0)
    assert conflict.value.subject == subject
    assert conflict.value.expected == 0
    assert conflict.value.actual == created.seq
    changed = await log.append(subject, b"changed", expect_last_seq=created.seq)
    assert [m.data for m in await log.read_subject(subject)] == [b"created", b"changed"]
    assert await log.last_subject_seq(subject) == changed.seq


async def test_retried_checked_append_comes_back_as_duplicate(
    log: Log, scratch: ScratchStream
) -> None:
    subject = scratch.subject("grant", "g1")
    stored = await log.append(subject, b"issued", msg_id="e1", expect_last_seq=0)
    # The ack was "lost": the writer retries the very same append.
    retried = await log.append(subject, b"issued", msg_id="e1", expect_last_seq=0)
    assert retried.seq == stored.seq and retried.duplicate
    # Another writer's event with the same stale expectation is a conflict, not a duplicate.
    with pytest.raises(ConcurrencyError):
        await log.append(subject, b"other", msg_id="e2", expect_last_seq=0)
    assert len(await log.read_subject(subject)) == 1


async def test_batch_is_atomic_and_contiguous(log: Log, scratch: ScratchStream) -> None:
    a, b, c = (scratch.subject(x) for x in "abc")
    await log.append(a, b"a1")
    appended = await log.append_batch(
        [
            Outgoing(a, b"a2", msg_id="a2", expect_last_seq=1),
            Outgoing(b, b"b1", msg_id="b1", expect_last_seq=0),
            Outgoing(a, b"a3", msg_id="a3"),
            Outgoing(c, b"c1", msg_id="c1"),
        ]
    )
    assert [x.seq for x in appended] == [2, 3, 4, 5]
    assert [m.data for m in await log.read_subject(a)] == [b"a1", b"a2", b"a3"]
    before = await log.last_seq()
    with pytest.raises(ConcurrencyError) as conflict:
        await log.append_batch(
            [
                Outgoing(c, b"c2", expect_last_seq=5),
                Outgoing(b, b"b2", expect_last_seq=0),  # stale: b holds seq 3
                Outgoing(scratch.subject("d"), b"d1"),
            ]
        )
    assert conflict.value.subject == b
    assert conflict.value.expected == 0 and conflict.value.actual == 3
    assert await log.last_seq() == before
    assert await log.last_message(scratch.subject("d")) is None


async def test_retried_batch_comes_back_as_duplicates(log: Log, scratch: ScratchStream) -> None:
    batch = [
        Outgoing(scratch.subject("x"), b"1", msg_id="x1", expect_last_seq=0),
        Outgoing(scratch.subject("y"), b"2", msg_id="y1", expect_last_seq=0),
    ]
    stored = await log.append_batch(batch)
    retried = await log.append_batch(batch)
    assert [r.seq for r in retried] == [s.seq for s in stored]
    assert all(r.duplicate for r in retried)
    unchecked = [
        Outgoing(scratch.subject("z"), b"1", msg_id="z1"),
        Outgoing(scratch.subject("z"), b"2", msg_id="z2"),
    ]
    stored = await log.append_batch(unchecked)
    retried = await log.append_batch(unchecked)
    assert [r.seq for r in retried] == [s.seq for s in stored]
    assert await log.last_seq() == stored[-1].seq


async def test_batch_limits_are_checked_before_sending(log: Log, scratch: ScratchStream) -> None:
    subject = scratch.subject("a")
    with pytest.raises(InvalidBatchError):
        await log.append_batch(
            [Outgoing(subject, b"1", expect_last_seq=0), Outgoing(subject, b"2", expect_last_seq=1)]
        )
    with pytest.raises(InvalidBatchError):
        await log.append_batch([Outgoing(subject, b"x")] * (MAX_BATCH + 1))
    assert await log.append_batch([]) == []
    full = await log.append_batch([Outgoing(subject, b"%d" % i) for i in range(MAX_BATCH)])
    assert [a.seq for a in full] == list(range(1, MAX_BATCH + 1))


async def test_batch_on_a_stream_without_atomic_publish(nc: Client) -> None:
    plain = await make_stream(nc, atomic=False)
    try:
        log = Log(nc, plain.name)
        with pytest.raises(AtomicBatchDisabledError):
            await log.append_batch([Outgoing(plain.subject("a"), b"1")] * 2)
        assert await log.last_seq() == 0
    finally:
        await nc.jetstream().delete_stream(plain.name)


async def test_subject_without_stream(log: Log) -> None:
    with pytest.raises(NoStreamError) as missing:
        await log.append(f"nowhere.{uuid.uuid4().hex}", b"x")
    assert missing.value.subject.startswith("nowhere.")


async def test_reads_in_order_and_stop_at_the_end(log: Log, scratch: ScratchStream) -> None:
    for i in range(10):
        await log.append(scratch.subject("even" if i % 2 == 0 else "odd"), b"%d" % i)
    everything = [m async for m in log.read(batch=3)]
    assert [m.seq for m in everything] == list(range(1, 11))
    assert [m.data for m in everything] == [b"%d" % i for i in range(10)]
    assert everything[0].subject == scratch.subject("even")
    assert everything[0].time <= everything[-1].time
    tail = [m.seq async for m in log.read(8)]
    assert tail == [8, 9, 10]
    odd = await log.read_subject(scratch.subject("odd"), from_seq=5)
    assert [m.data for m in odd] == [b"5", b"7", b"9"]
    assert [m async for m in log.read(11)] == []
    assert await log.get(4) is not None and await log.get(99) is None


async def test_follow_yields_what_is_appended_later(log: Log, scratch: ScratchStream) -> None:
    await log.append(scratch.subject("a"), b"before")
    received: list[bytes] = []

    async def follow() -> None:
        async for message in log.read(1, follow=True):
            received.append(message.data)
            if len(received) == 3:
                return

    follower = asyncio.create_task(follow())
    try:
        await log.append(scratch.subject("b"), b"after-1")
        await log.append(scratch.subject("a"), b"after-2")
        await asyncio.wait_for(follower, timeout=10)
    finally:
        follower.cancel()
    assert received == [b"before", b"after-1", b"after-2"]


async def test_empty_stream_positions(log: Log, scratch: ScratchStream) -> None:
    assert await log.last_seq() == 0
    assert await log.last_subject_seq(scratch.subject("a")) == 0
    assert await log.read_subject(scratch.subject("a")) == []


operations = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.none(), st.just("right"), st.integers(min_value=0, max_value=12)),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_conflict_checks_match_a_model(nats_url: str, ops: list[tuple[str, object]]) -> None:
    """Whatever the interleaving of checked and unchecked appends, the log accepts exactly
    those whose expectation equals the subject's last sequence, and stores nothing else."""

    async def run() -> None:
        client = await connect(nats_url, name="kubegate-test-model")
        stream = await make_stream(client)
        try:
            log = Log(client, stream.name)
            last: dict[str, int] = {}
            kept: list[tuple[str, bytes]] = []
            for number, (name, expectation) in enumerate(ops):
                subject = stream.subject(name)
                expect = last.get(subject, 0) if expectation == "right" else expectation
                data = b"%d" % number
                should_pass = expect is None or expect == last.get(subject, 0)
                try:
                    appended = await log.append(subject, data, expect_last_seq=expect)
                except ConcurrencyError as conflict:
                    assert not should_pass
                    assert conflict.actual == last.get(subject, 0)
                    continue
                assert should_pass
                last[subject] = appended.seq
                kept.append((subject, data))
            stored = [(m.subject, m.data) async for m in log.read()]
            assert stored == kept
        finally:
            await client.jetstream().delete_stream(stream.name)
            await client.close()

    asyncio.run(run())


async def test_an_id_does_not_make_a_foreign_subject_wait(log: Log) -> None:
    with pytest.raises(NoStreamError):
        await log.append(f"nowhere.{uuid.uuid4().hex}", b"x", msg_id="id-1")


@pytest.mark.parametrize(
    ("pattern", "subject", "matches"),
    [
        ("kg.evt.>", "kg.evt.user.alice", True),
        ("kg.evt.>", "kg.evt", False),
        ("kg.*.user", "kg.evt.user", True),
        ("kg.*.user", "kg.evt.group", False),
        ("kg.evt", "kg.evt", True),
        ("kg.evt", "kg.evt.x", False),
    ],
)
def test_subject_matching(pattern: str, subject: str, matches: bool) -> None:
    assert subject_matches(pattern, subject) is matches
