"""The audit store: every event of both streams in a DuckDB file, queryable with SQL.

Rows and the stream position are written in one transaction per batch, so the store resumes
from its own `positions` table and a replay from sequence 0 never duplicates a row (records at
or below the stored position are dropped, and `(stream, seq)` is each table's primary key).

Ad-hoc SQL goes through `query`, which takes exactly one SELECT and runs it in a read-only
transaction on a connection that cannot touch the file system (no `read_csv('/etc/...')`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import msgspec
from nats.aio.client import Client as NatsClient
from prometheus_client import CollectorRegistry

from domain import codec, events
from projections import audit_schema as schema
from projections.errors import AuditError, AuditSchemaError, QueryFailedError, QueryRefusedError
from projections.records import LogRecord, Malformed
from projections.runner import ProjectionRunner

log = logging.getLogger("kubegate.projections.audit")

_READ_STATEMENTS = {duckdb.StatementType.SELECT}

COMMIT_ROWS = 250_000
"""Staged records at which `apply_batch` commits without waiting for the runner's `settle`.

A commit of less than a DuckDB row group (122,880 rows) goes through the WAL and a checkpoint
soon rewrites it (~10 us a row); a larger INSERT ... SELECT writes whole row groups straight to
the file at under 1 us a row. So while catching up the store commits rarely, and bounds what a
crash would make it read again (and the staging memory: peak RSS of `bench audit_ingest`
rose ~50 MB, 383 -> 430 MB, for 200k staged rows) with this."""

_UNCHECKED = Malformed(error="")
"""Payload of a staged row read back for the record-by-record path (its event is not needed:
the row is typed from its JSON, and if refused is kept raw)."""
_envelope = msgspec.json.Decoder(codec.Envelope)


class _Stage:
    """One family's rows of one stream waiting for the commit, and the statements on them."""

    __slots__ = ("appender", "delete_sql", "insert_one_sql", "insert_sql", "select_sql", "stream")

    def __init__(self, table: schema.FamilyTable, stream: str, appender: Any) -> None:
        name = schema.quote(table.stage_name(stream))
        self.stream = stream
        self.appender = appender
        self.insert_sql = table.insert_sql(stream)
        self.insert_one_sql = table.insert_sql(stream, "WHERE seq = $2")
        self.select_sql = f"SELECT seq, log_subject, ts, raw FROM {name}"
        self.delete_sql = f"DELETE FROM {name}"


@dataclass
class _RawColumns:
    """Parallel lists for raw_events rows."""

    seqs: list[int] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    times: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    types: list[str | None] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    schemas: list[int | None] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def add(self, record: LogRecord, kind: str, error: str | None = None) -> None:
        event = record.event
        if isinstance(event, events.Event):
            etype, eid, schema_v = type(event).__name__, event.id, event.schema
        elif isinstance(event, codec.UnknownEvent):
            etype, eid, schema_v = event.type, event.id, event.schema
        else:  # malformed: the envelope may still say what it meant to be
            try:
                env = _envelope.decode(record.raw)
                etype, eid, schema_v = env.type, env.id, env.schema
            except msgspec.DecodeError:
                etype = eid = schema_v = None
            error = error or getattr(event, "error", None)
        self.seqs.append(record.seq)
        self.subjects.append(record.subject)
        self.times.append(record.time_ns)
        self.kinds.append(kind)
        self.types.append(etype)
        self.ids.append(eid)
        self.schemas.append(schema_v)
        self.errors.append(error)
        self.raws.append(record.raw)
        self.texts.append(record.raw.decode("utf-8", errors="replace"))

    def params(self, stream: str) -> list[Any]:
        return [
            stream,
            self.seqs,
            self.subjects,
            self.times,
            self.kinds,
            self.types,
            self.ids,
            self.schemas,
            self.errors,
            self.raws,
            self.texts,
        ]


class AuditStore:
    """A DuckDB audit database at `path` (`:memory:` for a throwaway one).

    One writer at a time (the runner's batches); `query` may run concurrently from any thread.
    """

    def __init__(self, path: str | Path, *, commit_rows: int = COMMIT_ROWS) -> None:
        self.path = str(path)
        self.commit_rows = commit_rows
        try:
            self._db = duckdb.connect(self.path, config={"enable_external_access": False})
        except duckdb.Error as exc:
            raise AuditError(f"cannot open audit store {self.path}: {exc}") from exc
        self._write_lock = threading.Lock()
        self._tables = schema.TABLES
        self._stages: dict[tuple[str, str], _Stage] = {}
        self._staged: dict[str, int] = {}
        """Last staged sequence per stream (above `_positions`), while rows wait for a commit."""
        self._staged_in: set[_Stage] = set()
        self._staged_raw: list[tuple[LogRecord, str]] = []
        self._staged_rows = 0
        try:
            self._db.execute("SET GLOBAL TimeZone = 'UTC'")
            self._migrate()
            self._db.execute("SET lock_configuration = true")
            self._positions: dict[str, int] = dict(
                self._db.execute("SELECT stream, seq FROM positions").fetchall()
            )
            self._writer = self._db.cursor()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, duckdb.Error):
                raise AuditError(f"cannot prepare audit store {self.path}: {exc}") from exc
            raise

    # --- schema -------------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Create what is missing; add columns new events brought; refuse contradictions."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute(schema.POSITIONS_SQL)
            db.execute(schema.RAW_EVENTS_SQL)
            for table in self._tables.values():
                db.execute(table.create_sql())
                have = {
                    name: dtype
                    for name, dtype in db.execute(
                        "SELECT column_name, data_type FROM information_schema.columns"
                        " WHERE table_name = ?",
                        [table.table],
                    ).fetchall()
                }
                for column in table.columns:
                    found = have.get(column.name)
                    if found is None:
                        db.execute(
                            f"ALTER TABLE {schema.quote(table.table)} ADD COLUMN"
                            f" {schema.quote(column.name)} {column.sql_type}"
                        )
                    elif _normal(found) != _normal(column.sql_type):
                        raise AuditSchemaError(table.table, column.name, found, column.sql_type)
            db.execute(schema.events_view_sql(self._tables))
            for sql in schema.GRANTS_SQL:
                db.execute(sql)
            db.execute(schema.KUBECTL_REQUESTS_SQL)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # --- writing --------------------------------------------------------------------------------

    def positions(self) -> dict[str, int]:
        """Last committed sequence per stream (what a runner starts after)."""
        return dict(self._positions)

    @property
    def staged_rows(self) -> int:
        """Records staged and not yet committed."""
        return self._staged_rows

    async def apply_batch(self, records: Sequence[LogRecord]) -> None:
        """The runner's batch hook: stages in a worker thread so the loop keeps reading;
        commits once `commit_rows` are staged, else at the runner's `settle`."""
        await asyncio.to_thread(self.stage, records, commit_at=self.commit_rows)

    async def settle(self) -> None:
        """The runner's hook for "nothing more is right behind": commit what is staged."""
        if self._staged:
            await asyncio.to_thread(self.commit)

    def write(self, records: Sequence[LogRecord]) -> int:
        """Store records now (with anything staged before); returns how many were new.

        Records at or below the stored (or staged) position are skipped, so replays are
        harmless.
        """
        return self.stage(records, commit_at=0)

    def stage(self, records: Sequence[LogRecord], *, commit_at: int | None = None) -> int:
        """Stage records for the next commit (invisible to queries until then); commits if
        `commit_at` is given and that many are staged. Returns how many were new."""
        with self._write_lock:
            try:
                staged = self._stage(records)
            except BaseException:
                self._discard()
                raise
            if commit_at is not None and self._staged_rows >= commit_at:
                self._commit()
            return staged

    def commit(self) -> int:
        """Store everything staged, with the positions, in one transaction; returns rows."""
        with self._write_lock:
            return self._commit()

    def _stage_for(self, family: str, stream: str) -> _Stage:
        stage = self._stages.get((family, stream))
        if stage is None:
            table = self._tables[family]
            self._writer.execute(table.stage_sql(stream))
            stage = _Stage(table, stream, self._writer.appender(table.stage_name(stream)))
            self._stages[(family, stream)] = stage
        return stage

    def _floor(self, stream: str) -> int:
        return self._staged.get(stream) or self._positions.get(stream, 0)

    def _stage(self, records: Sequence[LogRecord]) -> int:
        floors: dict[str, int] = {}
        last: dict[str, int] = {}
        rows: dict[tuple[str, str], list[tuple[int, str, int, bytes, str | None]]] = {}
        raws: list[tuple[LogRecord, str]] = []
        event_base = events.Event
        upcast = _UPCAST
        for record in records:
            stream, seq, subject, time_ns, event, raw = record
            floor = floors.get(stream)
            if floor is None:
                floor = floors[stream] = self._floor(stream)
            if seq <= floor:
                continue
            if seq > last.get(stream, 0):
                last[stream] = seq
            if isinstance(event, event_base):
                key = (event.FAMILY, stream)
                staged = rows.get(key)
                if staged is None:
                    staged = rows[key] = []
                source = _typing_source(raw, event) if type(event) in upcast else None
                staged.append((seq, subject, time_ns, raw, source))
            else:
                raws.append((record, "malformed" if isinstance(event, Malformed) else "unknown"))
        for (family, stream), staged in rows.items():
            try:
                stage = self._stage_for(family, stream)
                self._staged_in.add(stage)
                stage.appender.append_rows(staged)
                stage.appender.flush()
            except duckdb.Error as exc:
                raise AuditError(f"cannot stage {family} rows: {exc}") from exc
        self._staged_raw.extend(raws)
        self._staged.update(last)
        count = sum(map(len, rows.values())) + len(raws)
        self._staged_rows += count
        return count

    def _discard(self) -> None:
        """Forget what is staged (a failed stage or commit): the committed positions stay the
        truth, so a runner resuming from them reads those records again."""
        for stage in self._staged_in:
            stage.appender.clear()
            try:
                self._writer.execute(stage.delete_sql)
            except duckdb.Error as exc:
                log.error("audit staging not cleared", extra={"error": str(exc)})
        self._staged.clear()
        self._staged_in.clear()
        self._staged_raw.clear()
        self._staged_rows = 0

    def _commit(self) -> int:
        if not self._staged:
            return 0
        rows, staged = self._staged_rows, dict(self._staged)
        db = self._writer
        try:
            db.execute("BEGIN")
            try:
                for stage in self._staged_in:
                    db.execute(stage.insert_sql, [stage.stream])
                    db.execute(stage.delete_sql)
                by_stream: dict[str, _RawColumns] = {}
                for record, kind in self._staged_raw:
                    by_stream.setdefault(record.stream, _RawColumns()).add(record, kind)
                for stream, raw in by_stream.items():
                    db.execute(schema.RAW_INSERT_SQL, raw.params(stream))
                for stream, seq in staged.items():
                    db.execute("INSERT OR REPLACE INTO positions VALUES (?, ?)", [stream, seq])
                db.execute("COMMIT")
            except duckdb.Error as exc:
                db.execute("ROLLBACK")
                log.warning(
                    "audit batch refused, storing record by record",
                    extra={"rows": rows, "error": str(exc)},
                )
                self._commit_one_by_one()
            else:
                self._positions.update(staged)
        finally:
            self._discard()
        return rows

    def _commit_one_by_one(self) -> None:
        """Slow path: a row DuckDB refuses goes to raw_events as `rejected`, nothing is lost."""
        db = self._writer
        entries: list[tuple[str, int, _Stage | None, LogRecord, str]] = [
            (record.stream, record.seq, None, record, kind) for record, kind in self._staged_raw
        ]
        for stage in self._staged_in:
            for seq, subject, time_ns, raw in db.execute(stage.select_sql).fetchall():
                record = LogRecord(stage.stream, seq, subject, time_ns, _UNCHECKED, raw)
                entries.append((stage.stream, seq, stage, record, "known"))
        entries.sort(key=lambda e: (e[0], e[1]))
        for stream, seq, stage, record, kind in entries:
            db.execute("BEGIN")
            try:
                if stage is not None:
                    db.execute(stage.insert_one_sql, [stream, seq])
                else:
                    rows = _RawColumns()
                    rows.add(record, kind)
                    db.execute(schema.RAW_INSERT_SQL, rows.params(stream))
            except duckdb.Error as exc:
                db.execute("ROLLBACK")
                db.execute("BEGIN")
                rows = _RawColumns()
                rows.add(record, "rejected", error=str(exc))
                db.execute(schema.RAW_INSERT_SQL, rows.params(stream))
                log.error(
                    "audit row rejected, kept raw",
                    extra={"stream": stream, "seq": seq, "error": str(exc)},
                )
            db.execute("INSERT OR REPLACE INTO positions VALUES (?, ?)", [stream, seq])
            db.execute("COMMIT")
            self._positions[stream] = seq

    # --- reading --------------------------------------------------------------------------------

    def query(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        max_rows: int = 100_000,
        timeout_s: float = 30.0,
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Run one read statement; returns (column names, rows).

        Raises `QueryRefusedError` for anything but a single SELECT (including WITH, VALUES,
        DESCRIBE, SHOW) or a result over `max_rows`, `QueryFailedError` when DuckDB cannot run
        it (or it runs past `timeout_s`).
        """
        try:
            statements = duckdb.extract_statements(sql)
        except duckdb.Error as exc:
            raise QueryFailedError(str(exc)) from exc
        kinds = tuple(str(s.type).rsplit(".", 1)[-1] for s in statements)
        if len(statements) != 1:
            raise QueryRefusedError(f"expected one statement, got {len(statements)}", kinds)
        if statements[0].type not in _READ_STATEMENTS:
            raise QueryRefusedError(f"{kinds[0]} is not a read statement", kinds)
        try:
            cur = self._db.cursor()
        except duckdb.Error as exc:
            raise QueryFailedError(str(exc)) from exc
        timer = threading.Timer(timeout_s, cur.interrupt)
        timer.start()
        try:
            cur.execute("BEGIN TRANSACTION READ ONLY")
            try:
                cur.execute(sql, params)
                columns = [d[0] for d in cur.description or ()]
                rows = cur.fetchmany(max_rows + 1)
            finally:
                cur.execute("ROLLBACK")
        except duckdb.Error as exc:
            raise QueryFailedError(str(exc)) from exc
        finally:
            timer.cancel()
            cur.close()
        if len(rows) > max_rows:
            raise QueryRefusedError(f"result exceeds {max_rows} rows; add a LIMIT", kinds)
        return columns, rows

    async def query_async(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None, **options: Any
    ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """`query` in a worker thread, for request handlers."""
        return await asyncio.to_thread(self.query, sql, params, **options)

    def close(self) -> None:
        """Commit what is staged (a failure only logs: those records are read again on the
        next start) and close."""
        with self._write_lock:
            try:
                self._commit()
            except (duckdb.Error, AuditError) as exc:
                log.error("audit staged rows not committed at close", extra={"error": str(exc)})
            self._writer.close()
            self._db.close()

    def __enter__(self) -> AuditStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _normal(sql_type: str) -> str:
    return sql_type.upper().replace(" ", "").replace("TIMESTAMPWITHTIMEZONE", "TIMESTAMPTZ")


_UPCAST = frozenset(cls for name, cls in events.CATALOG.items() if codec.current_schema(name) > 1)
"""Event types with older schemas (whose raw JSON may have another shape than the columns)."""


def _typing_source(raw: bytes, event: events.Event) -> str | None:
    """JSON to type the row's columns from: None (the raw itself) unless decoding upcast the
    event from an older schema, whose raw JSON has another shape."""
    if _envelope.decode(raw).schema == codec.current_schema(type(event).__name__):
        return None
    return codec.encode(event).decode()


def audit_runner(
    nc: NatsClient,
    store: AuditStore,
    *,
    registry: CollectorRegistry,
    name: str = "audit",
    batch_size: int = 10000,
    linger_s: float = 0.5,
    **options: Any,
) -> ProjectionRunner:
    """A runner feeding `store` from both streams, resuming after its stored positions.

    A DuckDB transaction costs ~9 ms of CPU whatever its size, so under a steady trickle of
    kubectl requests (two events each) the runner gathers `linger_s` worth of records per batch:
    audit rows land up to that much later, and the edge sharing this process keeps its CPU (at
    0.5 s the writer's bursts take ~2% of a core instead of ~9% at 0.1 s, which showed in the
    proxy's p99 latency)."""
    return ProjectionRunner(
        nc,
        store,
        name=name,
        registry=registry,
        streams=("control", "activity"),
        start_after=store.positions(),
        batch_size=batch_size,
        linger_s=linger_s,
        **options,
    )
