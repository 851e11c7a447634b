"""The DuckDB audit store: typed rows per family, idempotent, resumable, read-only SQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import duckdb
import pytest
from prometheus_client import CollectorRegistry

from broker import subjects
from domain import codec
from domain import events as ev
from projections import audit_schema
from projections.audit import AuditStore, audit_runner
from projections.errors import AuditSchemaError, QueryFailedError, QueryRefusedError
from projections.records import LogRecord, Malformed
from projections.runner import ProjectionRunner
from tests.projections.helpers import T0, kubectl_requests, publish, publish_many, users

STORED_NS = 1_740_830_400_123_456_789


def record(seq: int, event: ev.Event) -> LogRecord:
    raw = codec.encode(event)
    return LogRecord(
        event.STREAM,
        seq,
        subjects.event_subject(event.STREAM, *event.key()),
        STORED_NS + seq,
        codec.decode(raw),
        raw,
    )


def bad(seq: int, raw: bytes, stream: str = "control") -> LogRecord:
    try:
        event = codec.decode(raw)
    except Exception as exc:
        event = Malformed(error=str(exc))
    return LogRecord(stream, seq, "kg.evt.user.x", STORED_NS, event, raw)


def one(store: AuditStore, sql: str, params: list | None = None):
    _, rows = store.query(sql, params)
    assert len(rows) == 1, rows
    return rows[0]


GRANT = ev.GrantIssued(
    id="g1",
    time=T0,
    actor="admin",
    cause="cmd-1",
    grant_id="g1",
    subject_kind="group",
    subject="dev",
    role="custom",
    clusters=("prod", "stage"),
    cluster_selector={"env": "prod"},
    namespaces=("default",),
    rules=(ev.Rule(verbs=("get", "list"), resources=("pods",)),),
    expires_at=T0 + timedelta(hours=8),
    reason="on call",
)


def test_every_family_has_a_table() -> None:
    assert set(audit_schema.TABLES) == set(ev.FAMILIES)
    for family, table in audit_schema.TABLES.items():
        assert set(table.event_types) == {
            name for name, cls in ev.CATALOG.items() if cls.FAMILY == family
        }


def test_rows_have_typed_columns(tmp_path) -> None:
    chunk = ev.SessionRecordingChunk(
        id="c1",
        time=T0,
        actor="alice",
        request_id="r1",
        seq=7,
        channel=1,
        offset_ms=12.5,
        data=b"\x00\x01hi",
    )
    cluster = ev.ClusterRegistered(
        id="k1", time=T0, actor="admin", cluster="prod", labels={"sensitive": "true"}
    )
    settings = ev.SettingsChanged(
        id="s1", time=T0, actor="admin", settings={"idle_minutes": 30, "banner": "hi"}
    )
    request = kubectl_requests("typed", 1)[0]
    with AuditStore(tmp_path / "audit.duckdb") as store:
        store.write([record(1, GRANT), record(2, cluster), record(3, settings)])
        store.write([record(1, request), record(2, chunk)])

        row = one(
            store,
            "SELECT stream, seq, log_subject, stored_at, type, id, time, actor, cause, schema,"
            " subject_kind, subject, clusters, cluster_selector, namespaces, rules, not_before,"
            " expires_at, mode, typeof(expires_at), typeof(clusters), typeof(cluster_selector),"
            " typeof(rules), raw FROM grant_events",
        )
        assert row[:10] == (
            "control",
            1,
            "kg.evt.grant.g1",
            datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC),
            "GrantIssued",
            "g1",
            T0,
            "admin",
            "cmd-1",
            1,
        )
        assert row[10:19] == (
            "group",
            "dev",
            ["prod", "stage"],
            {"env": "prod"},
            ["default"],
            '[{"verbs":["get","list"],"resources":["pods"]}]',
            None,
            T0 + timedelta(hours=8),
            "both",
        )
        assert row[19:23] == (
            "TIMESTAMP WITH TIME ZONE",
            "VARCHAR[]",
            "MAP(VARCHAR, VARCHAR)",
            "JSON",
        )
        assert row[23] == codec.encode(GRANT).decode()

        assert one(store, "SELECT labels['sensitive'] FROM cluster_events") == ("true",)
        assert one(store, "SELECT settings->>'$.idle_minutes' FROM settings_events") == ("30",)
        assert one(
            store,
            "SELECT recording_seq, channel, offset_ms, data, typeof(data) FROM recording_events",
        ) == (7, 1, 12.5, b"\x00\x01hi", "BLOB")
        assert one(
            store,
            "SELECT stream, user, groups, verb, decision, typeof(groups) FROM kubectl_events",
        ) == ("activity", "alice", ["dev", "ops"], "list", "allow", "VARCHAR[]")
        assert store.query("SELECT stream, seq, type FROM events ORDER BY stream, seq")[1] == [
            ("activity", 1, "KubectlRequested"),
            ("activity", 2, "SessionRecordingChunk"),
            ("control", 1, "GrantIssued"),
            ("control", 2, "ClusterRegistered"),
            ("control", 3, "SettingsChanged"),
        ]
        assert one(store, "SELECT data->>'$.role' FROM events WHERE type = 'GrantIssued'") == (
            "custom",
        )
        assert store.positions() == {"control": 3, "activity": 2}


def test_writing_the_same_records_again_adds_nothing(tmp_path) -> None:
    records = [record(i + 1, e) for i, e in enumerate(users("dup", 10))]
    path = tmp_path / "audit.duckdb"
    with AuditStore(path) as store:
        assert store.write(records[:6]) == 6
        assert store.write(records) == 4
        assert store.write(records) == 0
    with AuditStore(path) as store:
        assert store.positions() == {"control": 10}
        assert store.write(records) == 0
        assert one(store, "SELECT count(*), count(DISTINCT seq) FROM user_events") == (10, 10)


def test_malformed_and_unknown_go_to_raw_events(tmp_path) -> None:
    with AuditStore(tmp_path / "audit.duckdb") as store:
        store.write(
            [
                bad(1, b"\xff\xfe garbage"),
                bad(2, b'{"type":"HologramBooked","id":"h1","time":"2025-03-01T12:00:00Z",'
                b'"actor":"bob"}'),
                record(3, users("raw", 1)[0]),
                bad(4, b'{"type":"UserRegistered","id":"u-half","schema":1}'),
            ]
        )  # fmt: skip
        _, rows = store.query("SELECT seq, kind, type, id, raw, error FROM raw_events ORDER BY seq")
        assert [r[:4] for r in rows] == [
            (1, "malformed", None, None),
            (2, "unknown", "HologramBooked", "h1"),
            (4, "malformed", "UserRegistered", "u-half"),
        ]
        assert rows[0][4] == b"\xff\xfe garbage" and "not an event" in rows[0][5]
        _, rows = store.query("SELECT seq, type, actor, time FROM events ORDER BY seq")
        assert rows == [
            (2, "HologramBooked", "bob", datetime(2025, 3, 1, 12, tzinfo=UTC)),
            (3, "UserRegistered", "admin", T0),
        ]
        assert store.positions() == {"control": 4}


def _stored_then_rewound(path, records: list) -> None:
    """Store the first three `records`, then move the stored position back to 1: a position
    behind the rows (as a restored backup might leave it) must not duplicate them."""
    with AuditStore(path) as store:
        store.write(records[:3])
    con = duckdb.connect(str(path))
    con.execute("UPDATE positions SET seq = 1")
    con.close()


def test_a_row_duckdb_refuses_is_kept_raw_and_the_rest_stored(tmp_path) -> None:
    path = tmp_path / "audit.duckdb"
    records = [record(i + 1, e) for i, e in enumerate(users("rej", 5))]
    _stored_then_rewound(path, records)
    with AuditStore(path) as store:
        assert store.write(records) == 4
        _, rows = store.query("SELECT seq, kind FROM raw_events ORDER BY seq")
        assert rows == [(2, "rejected"), (3, "rejected")]
        assert one(store, "SELECT count(*), max(seq) FROM user_events") == (5, 5)
        assert store.positions() == {"control": 5}


def test_staged_records_wait_for_the_commit_and_closing_commits_them(tmp_path) -> None:
    path = tmp_path / "audit.duckdb"
    records = [record(i + 1, e) for i, e in enumerate(users("stg", 6))]
    with AuditStore(path) as store:
        assert store.stage(records[:3]) == 3
        assert store.stage(records[:5]) == 2  # staged records are not staged twice
        assert store.positions() == {}
        assert one(store, "SELECT count(*) FROM user_events") == (0,)
        assert store.commit() == 5
        assert store.positions() == {"control": 5}
        assert one(store, "SELECT count(*), max(seq) FROM user_events") == (5, 5)
        assert store.stage(records) == 1
    with AuditStore(path) as store:
        assert store.positions() == {"control": 6}
        assert one(store, "SELECT count(*), count(DISTINCT seq) FROM user_events") == (6, 6)


async def test_apply_batch_commits_once_commit_rows_are_staged(tmp_path) -> None:
    records = [record(i + 1, e) for i, e in enumerate(users("cr", 5))]
    with AuditStore(tmp_path / "audit.duckdb", commit_rows=4) as store:
        await store.apply_batch(records[:3])
        assert (store.positions(), store.staged_rows) == ({}, 3)
        await store.apply_batch(records[3:])
        assert (store.positions(), store.staged_rows) == ({"control": 5}, 0)
        assert one(store, "SELECT count(*) FROM user_events") == (5,)


def test_a_refused_row_in_a_commit_of_several_batches_loses_nothing(tmp_path) -> None:
    path = tmp_path / "audit.duckdb"
    records = [record(i + 1, e) for i, e in enumerate(users("rej2", 6))]
    _stored_then_rewound(path, records)
    with AuditStore(path) as store:
        store.stage(records[:2])
        store.stage([*records[2:4], bad(5, b"not json")])
        store.stage(records[5:])
        assert store.commit() == 5
        _, rows = store.query("SELECT seq, kind FROM raw_events ORDER BY seq")
        assert rows == [(2, "rejected"), (3, "rejected"), (5, "malformed")]
        assert one(store, "SELECT count(*), max(seq) FROM user_events") == (5, 6)
        assert store.positions() == {"control": 6}


def test_grants_view_computes_state_at_query_time(tmp_path) -> None:
    now = datetime.now(UTC)

    def grant(gid: str, **kw) -> ev.GrantIssued:
        base = {"id": gid, "time": now - timedelta(hours=2), "actor": "admin", "grant_id": gid,
                "subject_kind": "user", "subject": "alice", "role": "view"}  # fmt: skip
        return ev.GrantIssued(**{**base, **kw})

    events = [
        grant("active", expires_at=now + timedelta(hours=1)),
        grant("expired", expires_at=now - timedelta(minutes=1)),
        grant("pending", not_before=now + timedelta(hours=1)),
        grant("revoked"),
        ev.GrantRevoked(
            id="rv", time=now - timedelta(hours=1), actor="bob", grant_id="revoked", reason="x"
        ),
    ]
    with AuditStore(tmp_path / "audit.duckdb") as store:
        store.write([record(i + 1, e) for i, e in enumerate(events)])
        _, rows = store.query("SELECT grant_id, state, revoked_by FROM grants ORDER BY grant_id")
        assert rows == [
            ("active", "active", None),
            ("expired", "expired", None),
            ("pending", "pending", None),
            ("revoked", "revoked", "bob"),
        ]
        _, rows = store.query(
            "SELECT grant_id, state FROM grants_at(?) ORDER BY grant_id",
            [now - timedelta(minutes=90)],
        )
        assert dict(rows)["revoked"] == "active"
        assert dict(rows)["expired"] == "active"


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE user_events",
        "INSERT INTO positions VALUES ('control', 99)",
        "DELETE FROM user_events",
        "UPDATE positions SET seq = 0",
        "SELECT 1; DROP TABLE user_events",
        "SELECT 1; SELECT 2",
        "CREATE TABLE x AS SELECT 1",
        "PRAGMA database_list",
        "CALL pragma_version()",
        "ATTACH '/tmp/other.duckdb' AS other",
        "COPY user_events TO '/tmp/out.csv'",
        "SET threads = 1",
        "EXPLAIN SELECT 1",
    ],
)
def test_query_refuses_anything_but_one_read(tmp_path, sql: str) -> None:
    with AuditStore(tmp_path / "audit.duckdb") as store:
        store.write([record(1, users("ro", 1)[0])])
        with pytest.raises(QueryRefusedError):
            store.query(sql)
        assert one(store, "SELECT count(*) FROM user_events") == (1,)
        assert store.positions() == {"control": 1}


def test_query_cannot_reach_files_and_reports_errors(tmp_path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cr3t")
    with AuditStore(tmp_path / "audit.duckdb") as store:
        with pytest.raises(QueryFailedError):
            store.query(f"SELECT * FROM read_text('{secret}')")
        with pytest.raises(QueryFailedError):
            store.query("SELECT no_such_column FROM user_events")
        with pytest.raises(QueryFailedError):
            store.query("SELEC nonsense")
        with pytest.raises(QueryFailedError):
            store.query("SELECT * FROM query('DROP TABLE user_events')")
        assert one(store, "SELECT count(*) FROM user_events") == (0,)
        with pytest.raises(QueryFailedError) as interrupted:
            store.query("SELECT sum(range) FROM range(100000000000)", timeout_s=0.2)
        assert "interrupt" in str(interrupted.value).lower()
        store.write([record(i + 1, e) for i, e in enumerate(users("lim", 5))])
        with pytest.raises(QueryRefusedError):
            store.query("SELECT * FROM user_events", max_rows=4)
        columns, rows = store.query(
            "WITH u AS (SELECT user FROM user_events WHERE seq > ?) SELECT count(*) AS n FROM u",
            [2],
        )
        assert (columns, rows) == (["n"], [(3,)])


def test_new_event_fields_become_columns_and_contradictions_are_refused(tmp_path) -> None:
    path = tmp_path / "audit.duckdb"
    AuditStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("DROP VIEW events")
    con.execute("ALTER TABLE user_events DROP COLUMN email")
    con.close()
    with AuditStore(path) as store:
        columns, _ = store.query("SELECT * FROM user_events")
        assert "email" in columns

    other = tmp_path / "other.duckdb"
    con = duckdb.connect(str(other))
    con.execute("CREATE TABLE user_events (stream VARCHAR, seq UBIGINT, display_name INTEGER)")
    con.close()
    with pytest.raises(AuditSchemaError) as refused:
        AuditStore(other)
    assert (refused.value.table, refused.value.column) == ("user_events", "display_name")


async def test_ingests_both_streams_and_resumes_from_its_stored_position(evlog, tmp_path) -> None:
    path = tmp_path / "audit.duckdb"
    await publish(evlog.js, users("res", 20))
    await publish_many(evlog.js, kubectl_requests("res", 300))
    with AuditStore(path) as store:
        async with audit_runner(
            evlog.nc, store, registry=CollectorRegistry(), batch_size=64
        ) as runner:
            async with asyncio.timeout(30):
                await runner.wait_caught_up()
        assert store.positions() == {"control": 20, "activity": 300}

    await publish(evlog.js, users("res", 5, start=20))
    await publish_many(evlog.js, kubectl_requests("res", 50, start=300))
    with AuditStore(path) as store:
        assert store.positions() == {"control": 20, "activity": 300}
        async with audit_runner(evlog.nc, store, registry=CollectorRegistry()) as runner:
            async with asyncio.timeout(30):
                await runner.wait_caught_up()
            counts = runner.counts()
        assert (counts["control"].applied, counts["activity"].applied) == (5, 50)
        assert one(store, "SELECT count(*), count(DISTINCT seq) FROM kubectl_events") == (350, 350)
        assert one(store, "SELECT count(*) FROM user_events") == (25,)


async def test_replaying_the_whole_log_never_duplicates(evlog, tmp_path) -> None:
    path = tmp_path / "audit.duckdb"
    await publish(evlog.js, users("rep", 15))
    await publish_many(evlog.js, kubectl_requests("rep", 100))
    for _ in range(2):
        with AuditStore(path) as store:
            runner = ProjectionRunner(
                evlog.nc,
                store,
                name="audit-replay",
                registry=CollectorRegistry(),
                streams=("control", "activity"),
            )  # from sequence 0 each time, ignoring the stored position
            async with runner:
                async with asyncio.timeout(30):
                    await runner.wait_caught_up()
            assert runner.counts()["activity"].applied == 100
            assert one(store, "SELECT count(*) FROM events") == (115,)
            assert one(store, "SELECT count(DISTINCT (stream, seq)) FROM events") == (115,)
