"""The JetStream persistence module passes eventsourcing's own recorder contract suites,
against the real nats-server, each test on a stream of its own."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    DataError,
    InfrastructureFactory,
    IntegrityError,
    OperationalError,
    ProcessRecorder,
    StoredEvent,
    TrackingRecorder,
)
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.utils import Environment
from nats.js.errors import NotFoundError

from broker import es_persistence as jes
from broker.log import MAX_BATCH, Log
from broker.server import free_port
from domain.errors import KubegateError


@pytest.fixture(scope="class")
def _nats_for_class(request: pytest.FixtureRequest, nats_url: str) -> None:
    request.cls.nats_url = nats_url


def scratch_env(nats_url: str) -> dict[str, str]:
    tag = uuid.uuid4().hex[:12]
    return {
        "PERSISTENCE_MODULE": "broker.es_persistence",
        jes.NATS_URL: nats_url,
        jes.ES_STREAM: f"ES_{tag}",
        jes.ES_SUBJECT_PREFIX: f"es{tag}",
    }


async def _delete_stream(factory: jes.JetStreamFactory) -> None:
    with contextlib.suppress(NotFoundError):  # no recorder made: no stream
        await factory.connection.bridge.nc.jetstream().delete_stream(factory.settings.stream)


def discard(factory: jes.JetStreamFactory) -> None:
    """Delete the test's stream and close the factory's connection."""
    try:
        factory.connection.bridge.call(_delete_stream, factory)
    finally:
        factory.close()


@pytest.mark.usefixtures("_nats_for_class")
class JetStreamCase:
    nats_url: str

    def new_factory(self) -> jes.JetStreamFactory:
        factory = jes.JetStreamFactory(Environment(env=scratch_env(self.nats_url)))
        self.addCleanup(discard, factory)  # type: ignore[attr-defined]
        return factory


class TestAggregateRecorder(JetStreamCase, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.new_factory().aggregate_recorder()


class TestSnapshotRecorder(JetStreamCase, AggregateRecorderTestCase):
    def create_recorder(self) -> AggregateRecorder:
        return self.new_factory().aggregate_recorder(purpose="snapshots")


class TestApplicationRecorder(JetStreamCase, ApplicationRecorderTestCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.new_factory().application_recorder()

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestApplicationRecorderWithStringIds(TestApplicationRecorder):
    def new_originator_id(self) -> str:
        return f"user:{uuid.uuid4()}"


class TestNonInterleavingNotificationIds(JetStreamCase, NonInterleavingNotificationIDsBaseCase):
    def create_recorder(self) -> ApplicationRecorder:
        return self.new_factory().application_recorder()


class TestTrackingRecorder(JetStreamCase, TrackingRecorderTestCase):
    def create_recorder(self) -> TrackingRecorder:
        return self.new_factory().tracking_recorder()


class TestProcessRecorder(JetStreamCase, ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        return self.new_factory().process_recorder()


class CustomTrackingRecorder(jes.JetStreamTrackingRecorder):
    pass


@pytest.mark.usefixtures("_nats_for_class")
class TestFactory(InfrastructureFactoryTestCase[jes.JetStreamFactory]):
    nats_url: str

    def setUp(self) -> None:
        self.env = Environment("TestCase", scratch_env(self.nats_url))
        super().setUp()

    def tearDown(self) -> None:
        self.factory.connection.bridge.call(_delete_stream, self.factory)
        super().tearDown()

    def expected_factory_class(self) -> type[jes.JetStreamFactory]:
        return jes.JetStreamFactory

    def expected_aggregate_recorder_class(self) -> type[AggregateRecorder]:
        return jes.JetStreamAggregateRecorder

    def expected_application_recorder_class(self) -> type[ApplicationRecorder]:
        return jes.JetStreamApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[TrackingRecorder]:
        return jes.JetStreamTrackingRecorder

    def tracking_recorder_subclass(self) -> type[TrackingRecorder]:
        return CustomTrackingRecorder

    def expected_process_recorder_class(self) -> type[ProcessRecorder]:
        return jes.JetStreamProcessRecorder


def test_module_topic_resolves_to_the_one_factory(nats_url: str) -> None:
    factory: Any = InfrastructureFactory.construct(Environment(env=scratch_env(nats_url)))
    try:
        assert type(factory) is jes.JetStreamFactory
    finally:
        discard(factory)


# --- kubegate's own expectations of the module ---------------------------------------------


@pytest.fixture
def factory(nats_url: str):  # type: ignore[no-untyped-def]
    made = jes.JetStreamFactory(Environment(env=scratch_env(nats_url)))
    yield made
    discard(made)


def raw_log(factory: jes.JetStreamFactory) -> tuple[Any, Log]:
    """Run log calls on the factory's bridge: (call, log)."""
    return factory.connection.bridge.call, factory.connection.log


def test_string_ids_land_on_catalog_subjects_with_headers(factory: jes.JetStreamFactory) -> None:
    recorder = factory.application_recorder()
    state = b'{"type":"UserRegistered","id":"e1"}'
    ids = recorder.insert_events(
        [StoredEvent("user:alice@example.com", 1, "domain.aggregates:User.Registered", state)]
    )
    call, log = raw_log(factory)
    subject = f"{factory.settings.prefix}.user.alice@example%2Ecom"
    (message,) = call(log.read_subject, subject)
    assert message.seq == ids[0]
    assert message.data == state
    assert message.headers[jes.H_VERSION] == "1"
    assert message.headers[jes.H_TOPIC] == "domain.aggregates:User.Registered"
    assert message.headers[jes.H_ID] == "user:alice@example.com"
    assert jes.H_ID_TYPE not in message.headers


def test_foreign_messages_are_skipped_and_do_not_block(factory: jes.JetStreamFactory) -> None:
    recorder = factory.application_recorder()
    call, log = raw_log(factory)
    subject = f"{factory.settings.prefix}.cluster.prod"
    call(log.append, subject, b'{"type":"RelayConnected"}')
    first = StoredEvent("cluster:prod", 1, "t:Registered", b"1")
    (seq1,) = recorder.insert_events([first])
    call(log.append, subject, b'{"type":"RelayDisconnected"}')
    (seq2,) = recorder.insert_events([StoredEvent("cluster:prod", 2, "t:Labelled", b"2")])
    assert seq2 > seq1 + 1
    assert [e.originator_version for e in recorder.select_events("cluster:prod")] == [1, 2]
    notes = recorder.select_notifications(start=None, limit=10)
    assert [n.id for n in notes] == [seq1, seq2]
    with pytest.raises(IntegrityError):
        recorder.insert_events([StoredEvent("cluster:prod", 2, "t:Labelled", b"again")])
    assert len(call(log.read_subject, subject)) == 4


def test_a_stale_writer_conflicts_and_stores_nothing(factory: jes.JetStreamFactory) -> None:
    writer_a = factory.application_recorder()
    writer_b = factory.application_recorder()
    writer_a.insert_events([StoredEvent("grant:g1", 1, "t:Issued", b"1")])
    assert len(writer_b.select_events("grant:g1")) == 1  # b caches head version 1
    writer_a.insert_events([StoredEvent("grant:g1", 2, "t:Revoked", b"a")])
    with pytest.raises(IntegrityError) as conflict:
        writer_b.insert_events(
            [
                StoredEvent("grant:g1", 2, "t:Revoked", b"b"),
                StoredEvent("grant:g2", 1, "t:Issued", b"b"),
            ]
        )
    assert isinstance(conflict.value, KubegateError)
    assert [e.state for e in writer_b.select_events("grant:g1")] == [b"1", b"a"]
    assert writer_b.select_events("grant:g2") == []


@dataclass(frozen=True)
class IdentifiedEvent(StoredEvent):
    msg_id: str = ""


def test_a_stored_events_msg_id_is_the_nats_msg_id(factory: jes.JetStreamFactory) -> None:
    recorder = factory.application_recorder()
    recorder.insert_events([IdentifiedEvent("user:bob", 1, "t:Registered", b"{}", msg_id="cmd-1")])
    call, log = raw_log(factory)
    (message,) = call(log.read_subject, f"{factory.settings.prefix}.user.bob")
    assert message.msg_id == "cmd-1"


def test_more_than_one_batch_is_refused_whole(factory: jes.JetStreamFactory) -> None:
    recorder = factory.application_recorder()
    too_many = [StoredEvent("user:carol", v, "t:E", b"x") for v in range(1, MAX_BATCH + 2)]
    with pytest.raises(DataError):
        recorder.insert_events(too_many)
    assert recorder.select_events("user:carol") == []


def test_unreachable_nats_is_an_operational_error() -> None:
    env = scratch_env(f"nats://127.0.0.1:{free_port()}")
    with pytest.raises(OperationalError) as err:
        jes.JetStreamFactory(Environment(env=env))
    assert isinstance(err.value, KubegateError)
    assert "cannot reach NATS" in str(err.value)
