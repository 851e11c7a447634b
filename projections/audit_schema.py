"""The audit store's tables, derived from the event catalog: one table per event family.

Each table has the log envelope (stream, seq, log_subject, stored_at), the event envelope (type,
id, time, actor, cause, schema), one typed column per field of the family's events, and the raw
JSON. Typed columns are filled by DuckDB itself (`from_json` with the structure below), which is
several times faster than converting every field in Python. Pure: no I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec.inspect as mi

from domain import events

LOG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("stream", "VARCHAR NOT NULL"),
    ("seq", "UBIGINT NOT NULL"),
    ("log_subject", "VARCHAR NOT NULL"),
    ("stored_at", "TIMESTAMPTZ NOT NULL"),
)
"""Where a message sits in the log. `log_subject` is the NATS subject (`subject` is a field of
grant events)."""

ENVELOPE_FIELDS: tuple[tuple[str, str], ...] = (
    ("type", "VARCHAR"),
    ("id", "VARCHAR"),
    ("time", "TIMESTAMPTZ"),
    ("actor", "VARCHAR"),
    ("cause", "VARCHAR"),
    ("schema", "INTEGER"),
)

RESERVED = {name for name, _ in LOG_COLUMNS} | {"raw"}


class UnsupportedFieldError(TypeError):
    """An event field whose type has no column mapping (a catalog change needs one here)."""


@dataclass(frozen=True)
class Column:
    name: str
    """Column name (an event field's name unless it collides with a log column)."""
    field: str
    """JSON key in the event."""
    sql_type: str
    json_type: str
    """The type `from_json` extracts; differs from `sql_type` for bytes (base64 text)."""

    def select(self, struct: str) -> str:
        expr = f"{struct}.{quote(self.field)}"
        if self.sql_type == "BLOB":
            return f"from_base64({expr})"
        return expr


@dataclass(frozen=True)
class FamilyTable:
    family: str
    table: str
    stream: str
    columns: tuple[Column, ...]
    """Envelope and payload columns, in table order (log columns and raw excluded)."""
    event_types: tuple[str, ...]

    def structure(self) -> str:
        """The `from_json` structure for this family's events."""
        body = ", ".join(f'"{c.field}": "{c.json_type}"' for c in self.columns)
        return "{" + body + "}"

    def create_sql(self) -> str:
        cols = [f"{quote(n)} {t}" for n, t in LOG_COLUMNS]
        cols += [f"{quote(c.name)} {c.sql_type}" for c in self.columns]
        cols += ["raw JSON NOT NULL", "PRIMARY KEY (stream, seq)"]
        return f"CREATE TABLE IF NOT EXISTS {quote(self.table)} (\n  " + ",\n  ".join(cols) + "\n)"

    def stage_name(self, stream: str) -> str:
        """The TEMP table holding this family's rows of `stream` until the store's commit."""
        return f"stage_{self.table}_{stream}"

    def stage_sql(self, stream: str) -> str:
        return (
            f"CREATE TEMP TABLE IF NOT EXISTS {quote(self.stage_name(stream))} ("
            "seq UBIGINT NOT NULL, log_subject VARCHAR NOT NULL, ts BIGINT NOT NULL,"
            " raw BLOB NOT NULL, src VARCHAR)"
        )

    def insert_sql(self, stream: str, where: str = "") -> str:
        """Move staged rows of `stream` (given as $1) into the table: stored-at from
        nanoseconds, typed columns from `src` (JSON to type from) or else `raw`. `where` picks
        some staged rows (parameters from $2)."""
        names = [n for n, _ in LOG_COLUMNS] + [c.name for c in self.columns] + ["raw"]
        values = [
            "$1",
            "b.seq",
            "b.log_subject",
            "make_timestamptz(b.ts // 1000)",
            *(c.select("b.j") for c in self.columns),
            "b.raw",
        ]
        structure = self.structure().replace("'", "''")
        return (
            f"INSERT INTO {quote(self.table)} ({', '.join(quote(n) for n in names)})\n"
            f"SELECT {', '.join(values)}\n"
            f"FROM (SELECT a.seq, a.log_subject, a.ts, a.raw,"
            f" from_json(coalesce(a.src, a.raw), '{structure}') AS j\n"
            f"      FROM (SELECT seq, log_subject, ts, decode(raw) AS raw, src"
            f" FROM {quote(self.stage_name(stream))} {where}) AS a) AS b"
        )


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def column_type(t: Any) -> tuple[str, str]:
    """(SQL type, from_json type) of one msgspec type."""
    if isinstance(t, mi.UnionType):
        inner = [x for x in t.types if not isinstance(x, mi.NoneType)]
        if len(inner) == 1:
            return column_type(inner[0])
        return ("JSON", "JSON")
    if isinstance(t, mi.StrType):
        return ("VARCHAR", "VARCHAR")
    if isinstance(t, mi.LiteralType):
        if all(isinstance(v, str) for v in t.values):
            return ("VARCHAR", "VARCHAR")
        if all(isinstance(v, int) for v in t.values):
            return ("BIGINT", "BIGINT")
        return ("JSON", "JSON")
    if isinstance(t, mi.BoolType):
        return ("BOOLEAN", "BOOLEAN")
    if isinstance(t, mi.IntType):
        return ("BIGINT", "BIGINT")
    if isinstance(t, mi.FloatType):
        return ("DOUBLE", "DOUBLE")
    if isinstance(t, mi.DateTimeType):
        return ("TIMESTAMPTZ", "TIMESTAMPTZ")
    if isinstance(t, mi.BytesType):
        return ("BLOB", "VARCHAR")
    if isinstance(t, mi.VarTupleType | mi.ListType) and isinstance(t.item_type, mi.StrType):
        return ("VARCHAR[]", "VARCHAR[]")
    if isinstance(t, mi.DictType):
        if isinstance(t.key_type, mi.StrType) and isinstance(t.value_type, mi.StrType):
            return ("MAP(VARCHAR, VARCHAR)", "MAP(VARCHAR, VARCHAR)")
        return ("JSON", "JSON")
    if isinstance(t, mi.VarTupleType | mi.ListType | mi.StructType):
        return ("JSON", "JSON")
    raise UnsupportedFieldError(f"no audit column type for {t!r}")


def table_name(family: str) -> str:
    return f"{family}_events"


def build_tables(catalog: dict[str, type[events.Event]]) -> dict[str, FamilyTable]:
    """One table per family, its columns the union of its events' fields.

    Raises `UnsupportedFieldError` if two events of a family give one field different types.
    """
    by_family: dict[str, list[type[events.Event]]] = {}
    for cls in catalog.values():
        by_family.setdefault(cls.FAMILY, []).append(cls)
    tables: dict[str, FamilyTable] = {}
    for family, classes in sorted(by_family.items()):
        streams = {cls.STREAM for cls in classes}
        if len(streams) != 1:
            raise UnsupportedFieldError(f"family {family} spans streams {sorted(streams)}")
        columns: dict[str, Column] = {
            name: Column(name, name, sql, sql) for name, sql in ENVELOPE_FIELDS
        }
        for cls in classes:
            for f in mi.type_info(cls).fields:
                if f.encode_name in columns and f.encode_name in dict(ENVELOPE_FIELDS):
                    continue
                sql_type, json_type = column_type(f.type)
                name = f"{family}_{f.name}" if f.name in RESERVED else f.name
                found = columns.get(name)
                if found is not None and found.sql_type != sql_type:
                    raise UnsupportedFieldError(
                        f"{family}.{f.name} is {found.sql_type} in one event, {sql_type} in "
                        f"{cls.__name__}"
                    )
                columns[name] = Column(name, f.encode_name, sql_type, json_type)
        tables[family] = FamilyTable(
            family=family,
            table=table_name(family),
            stream=streams.pop(),
            columns=tuple(columns.values()),
            event_types=tuple(sorted(cls.__name__ for cls in classes)),
        )
    return tables


TABLES: dict[str, FamilyTable] = build_tables(events.CATALOG)
"""Family -> its table, for this build's catalog."""

RAW_EVENTS_SQL = """CREATE TABLE IF NOT EXISTS raw_events (
  stream VARCHAR NOT NULL,
  seq UBIGINT NOT NULL,
  log_subject VARCHAR NOT NULL,
  stored_at TIMESTAMPTZ NOT NULL,
  kind VARCHAR NOT NULL,
  type VARCHAR,
  id VARCHAR,
  schema INTEGER,
  error VARCHAR,
  raw BLOB NOT NULL,
  raw_text VARCHAR NOT NULL,
  PRIMARY KEY (stream, seq)
)"""
"""Records kept verbatim: `kind` is `malformed` (no event), `unknown` (a type or schema this
build does not know) or `rejected` (decoded, but its row could not be stored)."""

RAW_INSERT_SQL = """INSERT INTO raw_events
SELECT $1, unnest($2::UBIGINT[]), unnest($3::VARCHAR[]),
  make_timestamptz(unnest($4::BIGINT[]) // 1000),
  unnest($5::VARCHAR[]), unnest($6::VARCHAR[]), unnest($7::VARCHAR[]), unnest($8::INTEGER[]),
  unnest($9::VARCHAR[]), unnest($10::BLOB[]), unnest($11::VARCHAR[])"""

POSITIONS_SQL = """CREATE TABLE IF NOT EXISTS positions (
  stream VARCHAR PRIMARY KEY,
  seq UBIGINT NOT NULL
)"""
"""The last sequence stored per stream, written in the same transaction as the rows."""


def events_view_sql(tables: dict[str, FamilyTable]) -> str:
    """`events`: every stored event (known families and unknown types) for ad-hoc SQL."""
    parts = [
        f"SELECT stream, seq, log_subject AS subject, type, time, actor, raw AS data, id,"
        f" stored_at FROM {quote(t.table)}"
        for t in tables.values()
    ]
    parts.append(
        "SELECT stream, seq, log_subject AS subject, type,"
        " try_cast(json_extract_string(raw_text, '$.time') AS TIMESTAMPTZ) AS time,"
        " json_extract_string(raw_text, '$.actor') AS actor, try_cast(raw_text AS JSON) AS data,"
        " id, stored_at FROM raw_events WHERE kind <> 'malformed'"
    )
    return "CREATE OR REPLACE VIEW events AS\n" + "\nUNION ALL ".join(parts)


GRANTS_SQL = (
    """CREATE OR REPLACE MACRO grants_at(at_time) AS TABLE
WITH issued AS (
  SELECT * FROM grant_events
  WHERE type = 'GrantIssued' AND time <= at_time
  QUALIFY row_number() OVER (PARTITION BY grant_id ORDER BY seq) = 1
), revoked AS (
  SELECT grant_id, min(time) AS revoked_at, arg_min(actor, time) AS revoked_by,
         arg_min(reason, time) AS revoke_reason
  FROM grant_events WHERE type = 'GrantRevoked' AND time <= at_time GROUP BY grant_id
)
SELECT i.grant_id, i.subject_kind, i.subject, i.role, i.clusters, i.cluster_selector,
       i.namespaces, i.rules, i.mode, i.not_before, i.expires_at, i.reason, i.breakglass_id,
       i.time AS issued_at, i.actor AS issued_by, r.revoked_at, r.revoked_by, r.revoke_reason,
       CASE WHEN r.revoked_at IS NOT NULL THEN 'revoked'
            WHEN i.expires_at IS NOT NULL AND i.expires_at <= at_time THEN 'expired'
            WHEN i.not_before IS NOT NULL AND i.not_before > at_time THEN 'pending'
            ELSE 'active' END AS state
FROM issued i LEFT JOIN revoked r USING (grant_id)""",
    "CREATE OR REPLACE VIEW grants AS SELECT * FROM grants_at(current_timestamp)",
)
"""`grants_at(ts)`: every grant issued by `ts` with its state then (active, pending, expired,
revoked); `grants`: the same now, computed at query time, so expiry needs no event."""

KUBECTL_REQUESTS_SQL = """CREATE OR REPLACE VIEW kubectl_requests AS
SELECT q.request_id, q.time AS requested_at, q.user, q.groups, q.cluster, q.verb, q.api_group,
       q.resource, q.subresource, q.namespace, q.name, q.decision, q.reason, q.grant_id, q.via,
       q.method, q.path, q.edge_id, q.client_ip, q.user_agent,
       c.time AS completed_at, c.status, c.bytes_in, c.bytes_out, c.duration_ms, c.ended_by,
       c.relay_id
FROM kubectl_events q
LEFT JOIN kubectl_events c ON c.type = 'KubectlCompleted' AND c.request_id = q.request_id
WHERE q.type = 'KubectlRequested'"""
"""One row per kubectl request with how it ended (NULL while still open)."""
