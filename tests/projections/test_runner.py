"""The runner hands every log record to its model once, in order, and knows where it stands."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from domain import events as ev
from domain.codec import UnknownEvent
from projections.errors import LogPositionError, ModelFailedError
from projections.records import LogRecord, Malformed
from projections.runner import ProjectionRunner
from tests.projections.helpers import eventually, kubectl_requests, publish, publish_many, users


class Collect:
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        self.records: list[LogRecord] = []

    def apply(self, record: LogRecord) -> None:
        self.records.append(record)

    def seqs(self, stream: str = "control") -> list[int]:
        return [r.seq for r in self.records if r.stream == stream]


class Gated(Collect):
    """A batch model that holds each batch until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.waiting = 0

    async def apply_batch(self, records: list[LogRecord]) -> None:
        self.waiting += 1
        await self.gate.wait()
        self.records.extend(records)


class Inline(Collect):
    """A synchronous batch model the runner may call from the subscription's handler; notes
    which task handed over each batch."""

    applies_inline = True

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[str] = []

    def apply_batch(self, records: list[LogRecord]) -> None:
        task = asyncio.current_task()
        self.tasks.append(task.get_name() if task is not None else "")
        self.records.extend(records)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.mark.parametrize("model_class", [Collect, Inline])
async def test_applies_every_record_in_order_and_catches_up(
    evlog, model_class: type[Collect]
) -> None:
    await publish(evlog.js, users("ord", 30))
    model, registry = model_class(), CollectorRegistry()
    async with ProjectionRunner(
        evlog.nc, model, name="t", registry=registry, batch_size=7
    ) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        assert runner.caught_up
        assert model.seqs() == list(range(1, 31))
        assert [r.event.user for r in model.records] == [f"ord-user{i}" for i in range(30)]
        assert runner.positions() == {"control": 30}
        assert model.records[0].time.tzinfo is not None

        await publish(evlog.js, users("ord", 5, start=30))
        await eventually(lambda: len(model.records) == 35, lambda: f"{model.seqs()}")
        assert model.seqs() == list(range(1, 36))
        assert runner.caught_up
        await eventually(lambda: runner.lags() == {"control": 0}, lambda: f"{runner.lags()}")
        assert (
            sample(
                registry,
                "kubegate_projection_applied_events_total",
                projection="t",
                stream="control",
            )
            == 35
        )
        assert (
            sample(registry, "kubegate_projection_position", projection="t", stream="control") == 35
        )
        assert sample(registry, "kubegate_projection_caught_up", projection="t") == 1
        assert runner.staleness() < float("inf")
    assert not runner.caught_up
    assert runner.staleness() == float("inf")


async def test_not_caught_up_until_the_start_position_is_applied(evlog) -> None:
    await publish(evlog.js, users("gate", 12))
    model, registry = Gated(), CollectorRegistry()
    async with ProjectionRunner(
        evlog.nc, model, name="g", registry=registry, batch_size=5
    ) as runner:
        await eventually(lambda: model.waiting >= 1, "the model was never handed a batch")
        assert not runner.caught_up
        assert runner.last_contact is None
        assert runner.lags()["control"] > 0
        assert (
            sample(registry, "kubegate_projection_lag_events", projection="g", stream="control") > 0
        )
        assert sample(registry, "kubegate_projection_caught_up", projection="g") == 0
        model.gate.set()
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        assert model.seqs() == list(range(1, 13))


async def test_empty_log_is_caught_up_at_once(evlog) -> None:
    async with ProjectionRunner(
        evlog.nc, Collect(), name="e", registry=CollectorRegistry(), streams=("control", "activity")
    ) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        assert runner.positions() == {"control": 0, "activity": 0}


async def test_starts_after_a_given_position_per_stream(evlog) -> None:
    await publish(evlog.js, users("pos", 10))
    await publish_many(evlog.js, kubectl_requests("pos", 20))
    model = Collect()
    async with ProjectionRunner(
        evlog.nc,
        model,
        name="p",
        registry=CollectorRegistry(),
        streams=("control", "activity"),
        start_after={"control": 6, "activity": 15},
    ) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        assert model.seqs("control") == [7, 8, 9, 10]
        assert model.seqs("activity") == [16, 17, 18, 19, 20]
        assert runner.positions() == {"control": 10, "activity": 20}


async def test_malformed_and_unknown_events_are_counted_and_later_events_apply(evlog) -> None:
    await publish(evlog.js, users("bad", 1))
    await evlog.js.publish("kg.evt.user.x", b"\xff not json at all")
    await evlog.js.publish("kg.evt.user.y", b'{"type":"UserRegistered","id":"no-fields"}')
    await evlog.js.publish("kg.evt.future.z", b'{"type":"HologramBooked","id":"h1","schema":1}')
    await evlog.js.publish("kg.evt.user.bad-user0", b'{"type":"UserRegistered","schema":9}')
    await publish(evlog.js, users("bad", 1, start=1))
    model, registry = Collect(), CollectorRegistry()
    async with ProjectionRunner(evlog.nc, model, name="m", registry=registry) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        kinds = [type(r.event) for r in model.records]
        assert kinds == [
            ev.UserRegistered,
            Malformed,
            Malformed,
            UnknownEvent,
            UnknownEvent,
            ev.UserRegistered,
        ]
        assert model.records[1].raw == b"\xff not json at all"
        assert model.records[3].event.type == "HologramBooked"
        assert model.records[-1].event.user == "bad-user1"
        counts = runner.counts()["control"]
        assert (counts.applied, counts.malformed, counts.unknown) == (6, 2, 2)
        labels = {"projection": "m", "stream": "control"}
        assert registry.get_sample_value("kubegate_projection_malformed_events_total", labels) == 2
        assert registry.get_sample_value("kubegate_projection_unknown_events_total", labels) == 2


@pytest.mark.parametrize("model_class", [Collect, Inline])
async def test_resumes_after_the_server_restarts_without_gaps_or_duplicates(
    evlog, model_class: type[Collect]
) -> None:
    await publish_many(evlog.js, kubectl_requests("rs", 300))
    await publish(evlog.js, users("rs", 20))
    model, registry = model_class(), CollectorRegistry()
    async with ProjectionRunner(
        evlog.nc,
        model,
        name="r",
        registry=registry,
        streams=("control", "activity"),
        batch_size=50,
        heartbeat_s=0.25,
        pull_expires_s=5,
    ) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        contact_before = runner.last_contact
        assert contact_before is not None

        await asyncio.to_thread(evlog.server.stop)
        await eventually(
            lambda: runner.staleness() > 1.0, "staleness did not grow while the log was gone"
        )
        await asyncio.to_thread(evlog.server.start)
        await eventually(lambda: evlog.nc.is_connected, "client did not reconnect")
        await publish_many(evlog.js, kubectl_requests("rs", 200, start=300))
        await publish(evlog.js, users("rs", 10, start=20))

        await eventually(
            lambda: len(model.records) == 530,
            lambda: f"{len(model.records)} records, counts {runner.counts()}",
        )
        assert model.seqs("activity") == list(range(1, 501))
        assert model.seqs("control") == list(range(1, 31))
        await eventually(lambda: runner.staleness() < 1.0, "contact was not restored")
        assert runner.last_contact > contact_before
        assert runner.caught_up
        resets = sum(c.resets for c in runner.counts().values())
        assert resets >= 1


@pytest.mark.parametrize("model_class", [Collect, Inline])
async def test_resumes_when_its_consumer_is_deleted(evlog, model_class: type[Collect]) -> None:
    await publish(evlog.js, users("del", 10))
    model = model_class()
    async with ProjectionRunner(evlog.nc, model, name="d", registry=CollectorRegistry()) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        consumers = await evlog.js.consumers_info("KG_CONTROL")
        assert len(consumers) == 1
        await evlog.js.delete_consumer("KG_CONTROL", consumers[0].name)
        await eventually(
            lambda: runner.counts()["control"].resets >= 1, "the lost consumer went unnoticed"
        )
        await publish(evlog.js, users("del", 5, start=10))
        await eventually(lambda: len(model.records) == 15, lambda: f"{model.seqs()}")
        assert model.seqs() == list(range(1, 16))


async def test_a_failing_model_stops_the_runner(evlog) -> None:
    await publish(evlog.js, users("fail", 3))

    class Broken(Collect):
        def apply(self, record: LogRecord) -> None:
            if record.seq == 2:
                raise RuntimeError("disk on fire")
            super().apply(record)

    model = Broken()
    runner = ProjectionRunner(evlog.nc, model, name="f", registry=CollectorRegistry())
    await runner.start()
    with pytest.raises(ModelFailedError) as failed:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
    assert failed.value.seq == 2
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert not runner.caught_up and not runner.running
    assert model.seqs() == [1]
    await runner.stop()


async def test_idle_heartbeats_keep_contact_fresh(evlog) -> None:
    await publish(evlog.js, users("hb", 3))
    async with ProjectionRunner(
        evlog.nc,
        Collect(),
        name="h",
        registry=CollectorRegistry(),
        heartbeat_s=0.2,
        pull_expires_s=0.6,
    ) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        first = runner.last_contact
        assert first is not None
        await eventually(
            lambda: runner.last_contact > first + 1.5,
            "no heartbeat refreshed the contact while the log was idle",
        )
        # pulls expired (408) and were renewed several times without losing the consumer
        assert runner.counts()["control"].resets == 0
        await publish(evlog.js, users("hb", 1, start=3))
        await eventually(lambda: runner.positions() == {"control": 4}, "a later event not applied")


async def test_a_position_past_the_end_of_the_log_stops_the_runner(evlog) -> None:
    await publish(evlog.js, users("ahead", 4))
    runner = ProjectionRunner(
        evlog.nc, Collect(), name="a", registry=CollectorRegistry(), start_after={"control": 9}
    )
    await runner.start()
    with pytest.raises(LogPositionError) as failed:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
    assert (failed.value.position, failed.value.last_seq) == (9, 4)
    assert not runner.caught_up and isinstance(runner.failed, LogPositionError)
    await runner.stop()


class Batches(Collect):
    """A batch model that remembers the size of every batch it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def apply_batch(self, records: list[LogRecord]) -> None:
        self.sizes.append(len(records))
        self.records.extend(records)


async def test_linger_gathers_a_trickle_into_few_batches_in_order(evlog) -> None:
    model = Batches()
    async with ProjectionRunner(
        evlog.nc, model, name="l", registry=CollectorRegistry(), linger_s=1.0
    ) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        for i in range(20):  # one acknowledged append at a time: a trickle
            await publish(evlog.js, users("trickle", 1, start=i))
        await eventually(lambda: len(model.records) == 20, lambda: f"{model.seqs()}")
        assert model.seqs() == list(range(1, 21))
        assert len(model.sizes) < 20, model.sizes


class Settling(Batches):
    """A batch model that holds batches back until the runner settles it (as audit does)."""

    def __init__(self) -> None:
        super().__init__()
        self.settled: list[LogRecord] = []
        self.settles = 0

    def settle(self) -> None:
        self.settles += 1
        self.settled.extend(self.records[len(self.settled) :])


async def test_a_settling_model_is_settled_when_caught_up_not_after_every_batch(evlog) -> None:
    await publish_many(evlog.js, kubectl_requests("settle", 500))
    model = Settling()
    async with ProjectionRunner(
        evlog.nc,
        model,
        name="s",
        registry=CollectorRegistry(),
        streams=("activity",),
        batch_size=50,
        linger_s=30.0,
    ) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        assert [r.seq for r in model.settled] == list(range(1, 501))
        assert model.settles < len(model.sizes), (model.settles, model.sizes)


async def test_a_settling_model_is_settled_after_a_live_trickle(evlog) -> None:
    model = Settling()
    async with ProjectionRunner(
        evlog.nc, model, name="s", registry=CollectorRegistry(), linger_s=0.2
    ) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        for i in range(5):
            await publish(evlog.js, users("live", 1, start=i))
        await eventually(
            lambda: len(model.settled) == 5, lambda: f"{len(model.settled)} of 5 settled"
        )
        assert [r.seq for r in model.settled] == list(range(1, 6))


async def test_a_settling_model_is_settled_when_the_log_goes_quiet_behind_it(evlog) -> None:
    # activity matches nothing here, yet the runner first counts its whole stream as pending:
    # the control batch is held back until the runner goes idle, then settled
    await publish_many(evlog.js, kubectl_requests("quiet", 200))
    await publish(evlog.js, users("quiet", 5))
    model = Settling()
    async with ProjectionRunner(
        evlog.nc,
        model,
        name="q",
        registry=CollectorRegistry(),
        streams=("control", "activity"),
        filter_subjects={"activity": ["kg.act.nothing.>"]},
        linger_s=0.2,
        heartbeat_s=0.2,
    ):
        await eventually(
            lambda: len(model.settled) == 5, lambda: f"{len(model.settled)} of 5 settled"
        )
        assert model.seqs() == [1, 2, 3, 4, 5]


async def test_an_inline_model_is_handed_live_batches_without_the_apply_task(evlog) -> None:
    await publish(evlog.js, users("in", 3))
    model = Inline()
    async with ProjectionRunner(evlog.nc, model, name="i", registry=CollectorRegistry()) as runner:
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
        model.tasks.clear()
        for i in range(5):
            await publish(evlog.js, users("in", 1, start=3 + i))
            await eventually(lambda i=i: len(model.records) == 4 + i, "the live event applied")
        assert model.seqs() == list(range(1, 9))
        assert len(model.tasks) == 5 and "projection-i-apply" not in model.tasks, model.tasks


async def test_an_inline_model_that_fails_stops_the_runner(evlog) -> None:
    class Failing(Inline):
        def apply_batch(self, records: list[LogRecord]) -> None:
            if any(r.seq == 4 for r in records):
                raise RuntimeError("disk on fire")
            super().apply_batch(records)

    await publish(evlog.js, users("if", 3))
    model = Failing()
    runner = ProjectionRunner(evlog.nc, model, name="if", registry=CollectorRegistry())
    await runner.start()
    async with asyncio.timeout(20):
        await runner.wait_caught_up()
    await publish(evlog.js, users("if", 1, start=3))
    with pytest.raises(ModelFailedError) as failed:
        async with asyncio.timeout(20):
            await runner.wait()
    assert failed.value.seq == 4
    assert isinstance(failed.value.__cause__, RuntimeError)
    assert not runner.running and isinstance(runner.failed, ModelFailedError)
    assert model.seqs() == [1, 2, 3]
    await runner.stop()


async def test_an_inline_model_that_turns_out_asynchronous_stops_the_runner(evlog) -> None:
    class Pretending(Inline):
        def apply_batch(self, records: list[LogRecord]):  # type: ignore[override]
            super().apply_batch(records)
            return asyncio.sleep(0)

    await publish(evlog.js, users("ia", 2))
    runner = ProjectionRunner(evlog.nc, Pretending(), name="ia", registry=CollectorRegistry())
    await runner.start()
    with pytest.raises(ModelFailedError, match=r"batch 1\.\.2: not synchronous"):
        async with asyncio.timeout(20):
            await runner.wait_caught_up()
    assert not runner.caught_up and not runner.running
    await runner.stop()
