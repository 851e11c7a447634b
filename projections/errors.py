"""Projection failures, rooted in `KubegateError`; NATS and DuckDB errors kept as `__cause__`."""

from __future__ import annotations

from domain.errors import KubegateError


class ProjectionError(KubegateError):
    """Root of projection failures."""


class ModelFailedError(ProjectionError):
    """A read model raised while applying a record; the runner stops rather than skip it.

    Skipping a valid event could leave a policy model wrong in the permissive direction, so a
    failing model stops its runner, which then reports not caught up (the edge fails closed).
    """

    def __init__(self, projection: str, stream: str, seq: int, detail: str) -> None:
        super().__init__(f"projection {projection} failed at {stream} seq {seq}: {detail}")
        self.projection = projection
        self.stream = stream
        self.seq = seq


class LogPositionError(ProjectionError):
    """The model's position does not fit the log: it is past the stream's end (the stream was
    recreated or restored from an older backup) or before its first message (records gone).

    Either way the model cannot be brought up to date exactly, so the runner stops.
    """

    def __init__(
        self, projection: str, stream: str, position: int, first_seq: int, last_seq: int
    ) -> None:
        super().__init__(
            f"projection {projection} holds {stream} up to seq {position}, but the stream holds"
            f" seq {first_seq}..{last_seq}"
        )
        self.projection = projection
        self.stream = stream
        self.position = position
        self.first_seq = first_seq
        self.last_seq = last_seq


class AuditError(ProjectionError):
    """Root of audit store failures."""


class AuditSchemaError(AuditError):
    """The DuckDB file holds a table whose columns contradict this build's event catalog."""

    def __init__(self, table: str, column: str, have: str, want: str) -> None:
        super().__init__(f"audit table {table}.{column} is {have}, this build needs {want}")
        self.table = table
        self.column = column
        self.have = have
        self.want = want


class QueryRefusedError(AuditError):
    """`query` takes exactly one read statement; this one was something else."""

    def __init__(self, reason: str, statement_types: tuple[str, ...] = ()) -> None:
        super().__init__(f"query refused: {reason}")
        self.reason = reason
        self.statement_types = statement_types


class QueryFailedError(AuditError):
    """A read statement that DuckDB could not run (syntax, unknown column, permission)."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"query failed: {detail}")
        self.detail = detail
